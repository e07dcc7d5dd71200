"""Which execution provider the node's models really run on, as the process that loaded them found it.

The models are loaded by the analysis process of ``myomap serve`` and by each ``myomap worker``, not by the process
that serves the page, so every such process records what its sessions report (``get_providers()``: a CUDA provider
asked for on a machine without a GPU silently becomes the CPU) in one small JSON file per host and process under the
storage root; /healthz and the page's header read them. A process replaces its own record when it loads the
models again and removes the records of the same host's processes that have ended; the newest record of each host
is the one reported.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

#: Folder under the storage root holding one record per host and process.
STATUS_FOLDER = "runtime"
_PREFIX = "models-"


@dataclass(frozen=True)
class ModelRuntime:
    """What one process found when it loaded the models."""

    host: str
    pid: int
    loaded_at: datetime
    device_asked: str  # [models] device: auto, cpu or cuda
    providers: dict[str, str]  # model name -> the provider its session runs on

    @property
    def summary(self) -> str:
        """The providers in words, e.g. ``CPUExecutionProvider`` or ``CUDAExecutionProvider (qc_decoder: CPU...)``."""
        counts: dict[str, int] = {}
        for provider in self.providers.values():
            counts[provider] = counts.get(provider, 0) + 1
        main = max(counts, key=lambda provider: counts[provider])
        others = [f"{name}: {provider}" for name, provider in self.providers.items() if provider != main]
        return main + (f" ({', '.join(others)})" if others else "")


def record_providers(storage_root: Path, providers: dict[str, str], device_asked: str) -> Path:
    """Write this process's record (atomically: a reader never sees half a file); returns its path."""
    folder = storage_root / STATUS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    host, pid = socket.gethostname(), os.getpid()
    path = folder / f"{_PREFIX}{host}-{pid}.json"
    record = {"host": host, "pid": pid, "loaded_at": datetime.now(UTC).isoformat(), "device_asked": device_asked,
              "providers": dict(providers)}
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(record, indent=1))
    partial.replace(path)
    # The same host's records of processes that have ended (a restarted analysis process has a new pid).
    for other in folder.glob(f"{_PREFIX}{host}-*.json"):
        if other != path and not _running(_pid_of(other)):
            other.unlink(missing_ok=True)
    return path


def read_providers(storage_root: Path) -> list[ModelRuntime]:
    """Every record under ``storage_root``, newest first (unreadable files are skipped)."""
    found = []
    for path in (storage_root / STATUS_FOLDER).glob(f"{_PREFIX}*.json"):
        try:
            raw = json.loads(path.read_text())
            found.append(ModelRuntime(host=str(raw["host"]), pid=int(raw["pid"]),
                                      loaded_at=datetime.fromisoformat(raw["loaded_at"]),
                                      device_asked=str(raw["device_asked"]),
                                      providers={str(k): str(v) for k, v in raw["providers"].items()}))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return sorted(found, key=lambda runtime: runtime.loaded_at, reverse=True)


def _pid_of(path: Path) -> int:
    try:
        return int(path.stem.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def _running(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        pass
    return True
