"""Fuzzing the Storage SCP: a few hundred malformed DICOM files over C-STORE, the node answering every one.

A running node (in-process SCP, SQLite) first stores 20 valid images; then 300 mutated files (seed 20261205:
truncations, random byte flips, corrupted VRs, lying lengths, sequences nested up to 600 deep, garbage RLE
fragments, corrupt and truncated deflate streams, truncated implicit VR data sets, absurd dimensions) and two
deflate bombs go over C-STORE from pynetdicom, the file's bytes as they are (chunked sending), while a second
thread sends C-ECHO every 0.25 s. Asserted: every C-STORE gets a response status (no abort, no timeout), every
C-ECHO answers within 1 s, every instance acknowledged (the 20 and any mutated one that still was valid) is on
disk and in the database with the content it was acknowledged with, and the whole run stays under 3 minutes.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    RLELossless,
)
from pynetdicom import AE, _config
from sqlalchemy import select

from benchmarks.malformed_inputs import MIB, deflate_bomb, mutated_inputs, part10, phantom_like_image
from db.models import Instance
from tests.integration.conftest import RunningNode

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = 20261205
MUTATED = 300
VALID = 20
ECHO_LIMIT_S = 1.0
RUN_LIMIT_S = 180.0
SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, RLELossless)


def _scu() -> AE:
    ae = AE(ae_title="FUZZER")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for syntax in SYNTAXES:  # one context per syntax, so each file goes in its own
        ae.add_requested_context(MRImageStorage, syntax)
    return ae


class Sender:
    """C-STOREs over one association, opening a new one whenever the node ended the last."""

    def __init__(self, port: int) -> None:
        self._ae = _scu()
        self._port = port
        self._assoc = None
        self.associations = 0

    def store(self, path: Path) -> int | None:
        """The response status, None when no response came."""
        if self._assoc is None or not self._assoc.is_established:
            self._assoc = self._ae.associate("127.0.0.1", self._port, ae_title="MYOMAP")
            self.associations += 1
            if not self._assoc.is_established:
                return None
        response = self._assoc.send_c_store(path)
        return int(response.Status) if "Status" in response else None

    def close(self) -> None:
        if self._assoc is not None and self._assoc.is_established:
            self._assoc.release()


def _echo_loop(port: int, stop: threading.Event, latencies: list[float]) -> None:
    ae = AE(ae_title="WATCHER")
    ae.add_requested_context("1.2.840.10008.1.1")
    while not stop.is_set():
        started = time.monotonic()
        assoc = ae.associate("127.0.0.1", port, ae_title="MYOMAP")
        ok = assoc.is_established and int(assoc.send_c_echo().Status) == 0
        if assoc.is_established:
            assoc.release()
        latencies.append(time.monotonic() - started if ok else float("inf"))
        stop.wait(0.25)


def _stored(node: RunningNode) -> dict[str, Instance]:
    with node.session_factory() as session:
        return {row.sop_instance_uid: row for row in session.scalars(select(Instance))}


def test_fuzzed_stores_are_all_answered_and_nothing_acknowledged_is_lost(
    node_factory: Callable[..., RunningNode], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # send the bytes as written, unparsed
    node = node_factory()
    started = time.monotonic()
    folder = tmp_path / "inputs"
    folder.mkdir()
    valid = []
    for index in range(VALID):
        image = phantom_like_image(seed=index, rows=16, columns=16)
        path = folder / f"valid{index:03d}.dcm"
        path.write_bytes(part10(image))
        valid.append((path, image.SOPInstanceUID))
    fuzzed = []
    for index, mutated in enumerate(mutated_inputs(MUTATED, seed=SEED)):
        path = folder / f"fuzz{index:03d}_{mutated.kind}.dcm"
        path.write_bytes(mutated.file_bytes)
        fuzzed.append(path)
    for index in range(2):
        path = folder / f"bomb{index}.dcm"
        path.write_bytes(deflate_bomb(512 * MIB))
        fuzzed.insert(100 * (index + 1), path)

    sender = Sender(node.port)
    acknowledged: dict[str, str] = {}  # SOP Instance UID -> SHA-256 of the data set bytes acknowledged
    for path, uid in valid:
        assert sender.store(path) == 0, path.name
        acknowledged[uid] = path.name
    before = {uid: row.sha256 for uid, row in _stored(node).items()}
    assert set(before) == set(acknowledged)

    stop = threading.Event()
    latencies: list[float] = []
    watcher = threading.Thread(target=_echo_loop, args=(node.port, stop, latencies))
    watcher.start()
    unanswered: list[str] = []
    statuses: Counter[str] = Counter()
    try:
        for path in fuzzed:
            status = sender.store(path)
            if status is None:
                unanswered.append(path.name)
                continue
            statuses[f"0x{status:04X}"] += 1
            if status == 0x0000:
                acknowledged[_meta_sop_instance_uid(path)] = path.name
    finally:
        stop.set()
        watcher.join(timeout=10)
        sender.close()
    elapsed_s = time.monotonic() - started

    print(f"{len(fuzzed)} fuzzed C-STOREs in {elapsed_s:.0f} s over {sender.associations} associations: "
          f"{dict(statuses)}; C-ECHO max {max(latencies) * 1000:.0f} ms over {len(latencies)}")
    assert unanswered == [], unanswered
    assert len(latencies) >= 20 and max(latencies) < ECHO_LIMIT_S, sorted(latencies)[-5:]
    assert statuses["0xA700"] >= 2 and statuses["0xC000"] > MUTATED // 4  # bombs and absurd sizes; parse errors
    stored = _stored(node)
    assert set(acknowledged) <= set(stored)
    for uid, sha256 in before.items():  # the first 20 unchanged by anything the fuzzing sent
        assert stored[uid].sha256 == sha256
    for uid in acknowledged:
        row = stored[uid]
        data = (node.settings.storage_root / row.path).read_bytes()
        assert hashlib.sha256(data[_data_set_offset(data):]).hexdigest() == row.sha256
    assert elapsed_s < RUN_LIMIT_S


def _meta_sop_instance_uid(path: Path) -> str:
    from pydicom.filereader import read_file_meta_info

    return str(read_file_meta_info(path).MediaStorageSOPInstanceUID)


def _data_set_offset(file_bytes: bytes) -> int:
    return 132 + 12 + int.from_bytes(file_bytes[140:144], "little")
