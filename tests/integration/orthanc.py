"""A throw-away Orthanc (the Debian package's /usr/sbin/Orthanc) standing in for a PACS, with REST helpers.

:class:`Orthanc` writes a JSON configuration into its folder (storage and index there, no plugins, no WebDAV, no
Lua), starts Orthanc with ``TCP_NODELAY=1`` (read by DCMTK inside Orthanc), waits until ``GET /system`` answers
and stops it at the end. Orthanc 1.10 has no option to bind to one address, so it listens on every interface;
what it accepts is confined to the loopback instead: HTTP only from the local host (``RemoteAccessAllowed``
false, no authentication needed there) and DICOM only from the modalities it is given, each checked against its
address 127.0.0.1 (``DicomAlwaysAllow*`` false, ``DicomCheckModalityHost`` true).

REST helpers: :meth:`Orthanc.upload`, :meth:`~Orthanc.studies`, :meth:`~Orthanc.study_series`,
:meth:`~Orthanc.series_instances`, :meth:`~Orthanc.send_to_modality`, :meth:`~Orthanc.find_study`,
:meth:`~Orthanc.instance_tags`, :meth:`~Orthanc.instance_file`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tests.integration.conftest import LOOPBACK, find_free_port

ORTHANC = Path("/usr/sbin/Orthanc")
ORTHANC_AE = "ORTHANC"


def orthanc_available() -> bool:
    return ORTHANC.is_file() and os.access(ORTHANC, os.X_OK)


@dataclass(frozen=True)
class Modality:
    """A DICOM peer Orthanc knows: it accepts associations from it and can send to it."""

    ae_title: str
    port: int
    host: str = LOOPBACK

    def as_config(self) -> list[object]:
        return [self.ae_title, self.host, self.port]


@dataclass
class Orthanc:
    """One Orthanc process in ``folder`` on free DICOM and HTTP ports (use as a context manager or call
    :meth:`start` and :meth:`stop`)."""

    folder: Path
    modalities: Mapping[str, Modality] = field(default_factory=dict)
    ae_title: str = ORTHANC_AE
    dicom_port: int = field(default_factory=find_free_port)
    http_port: int = field(default_factory=find_free_port)
    process: subprocess.Popen | None = None
    _client: httpx.Client | None = None

    @property
    def config_file(self) -> Path:
        return self.folder / "orthanc.json"

    @property
    def log_file(self) -> Path:
        return self.folder / "orthanc.log"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    def config(self) -> dict[str, Any]:
        storage = self.folder / "storage"
        return {
            "Name": "myomap-test-pacs",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "Plugins": [],
            "LuaScripts": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "WebDavEnabled": False,
            "ExecuteLuaEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "DicomAlwaysAllowFind": False,
            "DicomAlwaysAllowGet": False,
            "DicomAlwaysAllowMove": False,
            "DicomCheckModalityHost": True,
            "DicomModalities": {name: modality.as_config() for name, modality in self.modalities.items()},
            "DicomScuTimeout": 10,
            "DicomAssociationCloseDelay": 0,
            "StableAge": 1,
            "SaveJobs": False,
            "ConcurrentJobs": 1,
            "HttpThreadsCount": 8,
        }

    def start(self, *, timeout_s: float = 60.0) -> None:
        """Write the configuration, start Orthanc and wait until its REST API answers.

        Raises
        ------
        RuntimeError
            If Orthanc exits or does not answer within ``timeout_s`` (the message holds its log).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(json.dumps(self.config(), indent=2))
        log = self.log_file.open("ab")
        self.process = subprocess.Popen(
            [str(ORTHANC), str(self.config_file)], cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        self._client = httpx.Client(base_url=self.url, timeout=60.0)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}:\n{self.log()}")
            try:
                if self._client.get("/system").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer GET /system within {timeout_s} s:\n{self.log()}")

    def stop(self, *, timeout_s: float = 30.0) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def remove(self) -> None:
        """Stop and delete the folder (storage, index, configuration, log)."""
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def __enter__(self) -> Orthanc:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # REST API.

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            raise RuntimeError("Orthanc is not running")
        return self._client

    def _json(self, response: httpx.Response) -> Any:
        if response.is_error:
            raise RuntimeError(f"Orthanc {response.request.method} {response.request.url.path}: "
                               f"{response.status_code} {response.text[:500]}")
        return response.json()

    def get(self, path: str) -> Any:
        return self._json(self.client.get(path))

    def post(self, path: str, body: Any) -> Any:
        if isinstance(body, bytes | str):
            return self._json(self.client.post(path, content=body))
        return self._json(self.client.post(path, json=body))

    def upload(self, path: Path) -> dict[str, Any]:
        """Store one DICOM file through the REST API (POST /instances); Orthanc's answer (ID, ParentStudy...)."""
        return self.post("/instances", path.read_bytes())

    def studies(self) -> list[str]:
        """Orthanc's identifiers of the studies it holds."""
        return self.get("/studies")

    def study_series(self, study_id: str) -> list[dict[str, Any]]:
        """The series of a study (each with ``ID``, ``MainDicomTags``, ``Instances``)."""
        return self.get(f"/studies/{study_id}/series")

    def series_instances(self, series_id: str) -> list[dict[str, Any]]:
        return self.get(f"/series/{series_id}/instances")

    def find_study(self, study_instance_uid: str) -> str | None:
        """Orthanc's identifier of the study with this Study Instance UID, None if it holds none."""
        matches = self.post("/tools/lookup", study_instance_uid)
        return next((match["ID"] for match in matches if match["Type"] == "Study"), None)

    def send_to_modality(self, name: str, resource_ids: Iterable[str], *, timeout_s: float = 120.0) -> dict:
        """C-STORE patients, studies, series or instances to a configured modality; waits until done.

        Raises
        ------
        RuntimeError
            If Orthanc reports a failure (the peer refused or could not be reached).
        """
        response = self.client.post(
            f"/modalities/{name}/store",
            json={"Resources": list(resource_ids), "Synchronous": True, "Timeout": int(timeout_s)},
            timeout=timeout_s + 10,
        )
        return self._json(response)

    def instance_tags(self, instance_id: str) -> dict[str, Any]:
        """The instance's tags by keyword (GET /instances/{id}/simplified-tags)."""
        return self.get(f"/instances/{instance_id}/simplified-tags")

    def instance_file(self, instance_id: str) -> bytes:
        """The stored DICOM file of an instance."""
        response = self.client.get(f"/instances/{instance_id}/file")
        if response.is_error:
            raise RuntimeError(f"Orthanc GET /instances/{instance_id}/file: {response.status_code}")
        return response.content
