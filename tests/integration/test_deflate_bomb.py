"""Deflate bombs sent at once to a running node (`myomap serve`): three, then sixteen (every association slot an
unknown caller may take). Each is refused with 0xA700 and an Error Comment, the node's peak RSS rises by a bounded
amount, and the console's C-ECHO keeps answering within 1 s throughout.

Each bomb is a valid Deflated Explicit VR Little Endian MR image of about 2 MB whose private padding inflates to
2 GiB (benchmarks/malformed_inputs.py). Inflating whole, three of them took the node to 6.5 GB.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE, _config

from benchmarks.malformed_inputs import MIB, deflate_bomb
from tests.integration.node_harness import CONSOLE_AE, NODE_AE, Console, NodeProcess, requires_dcmtk, serve

pytestmark = [pytest.mark.integration, requires_dcmtk]

INFLATED_BYTES = 2048 * MIB
ECHO_LIMIT_S = 1.0
# Default limits: one data set inflates to at most min(max_inflated_mb = 256 MiB, 16,777,216 pixels x 8 bytes +
# 16 MiB) = 144 MiB, and all together to at most max_inflated_mb = 256 MiB; plus the received 2 MB per bomb, held
# a few times over by pynetdicom's buffers, and the threads of 16 associations. Measured (2 cores, one receiving
# process): 312-354 MiB for 16 with large blocks mapped on their own (dicomnode/store/inflate.py map_large_blocks),
# 412-484 MiB without (and 377-515 MiB over two processes, parent only); inflating whole, 3 bombs took 6.5 GB.
MAX_RSS_RISE_MIB = 512


@pytest.fixture
def node(tmp_path: Path, console: Console) -> Iterator[NodeProcess]:
    # One receiving process, so that every bomb meets the same budget (each SCP process has its own) and the RSS
    # measured is the process that holds them all.
    yield from serve(tmp_path / "node", console.port, overrides={"dicom": {"processes": 1}})


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def _send(port: int, path: Path, statuses: list[tuple[int, str]]) -> None:
    ae = AE(ae_title="SCANNER")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    ae.add_requested_context(MRImageStorage, DeflatedExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(path)
        statuses.append((int(status.Status), str(status.get("ErrorComment", ""))))
    finally:
        assoc.release()


def _echo_latencies(port: int, stop: threading.Event, latencies: list[float]) -> None:
    ae = AE(ae_title=CONSOLE_AE)  # a configured peer: it may take the slots kept for peers
    ae.add_requested_context("1.2.840.10008.1.1")
    while not stop.is_set():
        started = time.monotonic()
        assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE)
        ok = assoc.is_established and assoc.send_c_echo().Status == 0
        if assoc.is_established:
            assoc.release()
        latencies.append(time.monotonic() - started if ok else float("inf"))
        time.sleep(0.2)


@pytest.mark.parametrize("bombs", [3, 16])
def test_deflate_bombs_at_once_are_refused_with_bounded_memory(
    node: NodeProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bombs: int
) -> None:
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # send the file's bytes as they are
    paths = []
    for index in range(bombs):
        path = tmp_path / f"bomb{index}.dcm"
        path.write_bytes(deflate_bomb(INFLATED_BYTES))
        paths.append(path)
    assert node.process is not None
    before_mib = _peak_rss_mib(node.process.pid)
    statuses: list[tuple[int, str]] = []
    latencies: list[float] = []
    stop = threading.Event()
    echo = threading.Thread(target=_echo_latencies, args=(node.dicom_port, stop, latencies))
    echo.start()
    senders = [threading.Thread(target=_send, args=(node.dicom_port, path, statuses)) for path in paths]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(timeout=120)
    time.sleep(1.0)
    stop.set()
    echo.join(timeout=10)

    assert len(statuses) == bombs and {status for status, _ in statuses} == {0xA700}, statuses
    # Each bomb stops at its own limit, or earlier when the others have spent the shared budget.
    assert all("inflates beyond" in comment or "send again later" in comment for _, comment in statuses), statuses
    rise_mib = _peak_rss_mib(node.process.pid) - before_mib
    assert rise_mib < MAX_RSS_RISE_MIB, f"peak RSS rose by {rise_mib:.0f} MiB"
    assert len(latencies) >= 3 and max(latencies) < ECHO_LIMIT_S, latencies
    assert not list((node.data).rglob("*.dcm"))
    print(f"{bombs} bombs: peak RSS rise {rise_mib:.0f} MiB, C-ECHO max {max(latencies) * 1000:.0f} ms over "
          f"{len(latencies)} calls")
