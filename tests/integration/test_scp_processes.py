"""`[dicom] processes = 2`: the node places each connection on the process with the fewest open, a series whose
instances arrive over several processes at once is stored whole and completed exactly once, by its protocol, and
``max_associations`` counts the associations of the whole node."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from db.models import Instance, Series, SeriesState
from tests.integration.node_harness import (
    NODE_AE,
    NodeProcess,
    dcmtk_env,
    echo,
    free_port,
    myomap_executable,
    requires_dcmtk,
    storescu_command,
    wait_until,
)

pytestmark = [pytest.mark.integration, requires_dcmtk]

VERIFICATION = "1.2.840.10008.1.1"

COPIES = 6
ASSOCIATIONS = 4
BATCHES = 4
CHILD_STARTED = re.compile(r"Storage SCP process 1 started \((\d+)\)")
CHILD_SERVING = "Storage SCP process 1 serving the connections the node places on it"


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def _phantom_molli(tmp_path: Path) -> list[Path]:
    phantom = tmp_path / "phantom"
    subprocess.run(
        [*myomap_executable(), "phantom", "--out", str(phantom), "--studies", "1", "--seed", "23", "--sequence",
         "molli", "--vendor", "siemens", "--readers", "", "--slices", "1", "--workers", "1"],
        check=True, capture_output=True, timeout=300,
    )
    sources = sorted((phantom / "study_0000" / "mid").glob("*_magnitude/*.dcm"))
    assert len(sources) == 8
    return sources


def _spread_copies(tmp_path: Path, sources: list[Path], batch: int) -> tuple[list[Path], set[str]]:
    """COPIES new series of the phantom's MOLLI magnitude images, each series' images dealt over ASSOCIATIONS
    folders."""
    folders = [tmp_path / f"send_{batch}" / f"association_{index}" for index in range(ASSOCIATIONS)]
    for folder in folders:
        folder.mkdir(parents=True)
    series_uids = set()
    for copy in range(COPIES):
        series_uid = generate_uid()
        series_uids.add(series_uid)
        for index, source in enumerate(sources):
            ds = pydicom.dcmread(source)
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = 200 + 10 * batch + copy
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.save_as(folders[index % ASSOCIATIONS] / f"{copy:02d}_{index}.dcm", enforce_file_format=True)
    return folders, series_uids


def test_one_series_over_several_processes_is_stored_whole_and_completed_once(tmp_path: Path) -> None:
    sources = _phantom_molli(tmp_path)
    node = NodeProcess(tmp_path / "node", free_port(), free_port(), free_port())
    # Completion must come from the protocol (8 inversion times), not from a quiet period.
    node.write_config(quiet_seconds=600.0, overrides={"dicom": {"processes": 2}})
    node.start()
    try:
        wait_until(lambda: bool(CHILD_STARTED.search(node.log())), timeout_s=30, what="the second SCP process")
        match = CHILD_STARTED.search(node.log())
        assert match is not None
        child = int(match.group(1))

        wait_until(lambda: CHILD_SERVING in node.log(), timeout_s=60, what="the second SCP process serving")
        assert node.process is not None

        # Four connections open at once: two on each process, whatever their addresses.
        held = [socket.create_connection(("127.0.0.1", node.dicom_port)) for _ in range(ASSOCIATIONS)]
        try:
            def owners() -> list[int]:
                listing = subprocess.run(["ss", "-tnpH", "state", "established", f"sport = :{node.dicom_port}"],
                                         capture_output=True, text=True, check=True).stdout
                return [int(pid) for pid in re.findall(r"pid=(\d+),", listing)]

            wait_until(lambda: len(owners()) == ASSOCIATIONS, timeout_s=10, what="the four connections placed")
            assert sorted(owners()) == sorted([node.process.pid, node.process.pid, child, child])
        finally:
            for connection in held:
                connection.close()

        series_uids: set[str] = set()
        for batch in range(BATCHES):
            folders, uids = _spread_copies(tmp_path, sources, batch)
            series_uids |= uids
            cpu_before = _cpu_s(child)
            senders = [
                subprocess.Popen(storescu_command(node.dicom_port, sorted(folder.iterdir())), env=dcmtk_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for folder in folders
            ]
            for sender in senders:
                output, _ = sender.communicate(timeout=120)
                assert sender.returncode == 0, output
            # A sender that ends before the next connects leaves its process free for that one, so a batch may,
            # rarely, run on the node's process alone; another batch is sent then.
            if _cpu_s(child) - cpu_before > 0.05:
                break
        else:
            raise AssertionError(f"the second SCP process received nothing in {BATCHES} batches")

        engine = create_engine(f"sqlite:///{node.data / 'myomap.db'}")
        try:
            def all_complete() -> bool:
                with Session(engine) as session:
                    states = list(session.scalars(
                        select(Series.state).where(Series.series_instance_uid.in_(series_uids))))
                    return len(states) == len(series_uids) and all(s != SeriesState.RECEIVING for s in states)

            wait_until(all_complete, timeout_s=30, what="every series complete")
            with Session(engine) as session:
                rows = session.scalars(select(Series).where(Series.series_instance_uid.in_(series_uids))).all()
                assert len(rows) == len(series_uids)
                for row in rows:
                    assert row.n_instances == 8 and row.revision == 0
                    instances = session.scalars(select(Instance).where(Instance.series_id == row.id)).all()
                    assert len(instances) == 8
        finally:
            engine.dispose()
        log = node.log()
        for row in rows:
            assert len(re.findall(rf"series {row.id} revision 0 complete \(protocol\)", log)) == 1, log
        assert "quiet period" not in log
    finally:
        status = node.stop(timeout_s=90)
    assert status == 0, node.log()


def test_max_associations_holds_for_the_whole_node_over_its_processes(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "node", free_port(), free_port(), free_port())
    node.write_config(overrides={"dicom": {"processes": 2, "max_associations": 2, "reserved_peer_associations": 1}})
    node.start()
    intruder = AE(ae_title="INTRUDER")
    intruder.add_requested_context(VERIFICATION)
    held: list[Association] = []
    try:
        wait_until(lambda: CHILD_SERVING in node.log(), timeout_s=60, what="the second SCP process serving")
        assert node.process is not None
        for _ in range(3):
            held.append(intruder.associate("127.0.0.1", node.dicom_port, ae_title=NODE_AE))
        assert [assoc.is_established for assoc in held] == [True, True, False]
        # The two that got in are on different processes (the node's own had one open when the second came).
        listing = subprocess.run(["ss", "-tnpH", "state", "established", f"sport = :{node.dicom_port}"],
                                 capture_output=True, text=True, check=True).stdout
        owners = re.findall(r"pid=(\d+),", listing)
        assert len(owners) == 2 and len(set(owners)) == 2, listing
        assert "2 associations of callers that are no configured peer open" in node.log()
        # The console, a configured peer, still gets one of the slots kept for peers.
        assert echo(node.dicom_port)
        # A slot given back on one process can be taken on either.
        held[0].release()
        wait_until(lambda: _takes_one(intruder, node.dicom_port, held), timeout_s=10, what="a freed slot taken")
    finally:
        for assoc in held:
            if assoc.is_established:
                assoc.release()
        status = node.stop(timeout_s=90)
    assert status == 0, node.log()


def _takes_one(intruder: AE, port: int, held: list[Association]) -> bool:
    assoc = intruder.associate("127.0.0.1", port, ae_title=NODE_AE)
    held.append(assoc)
    return assoc.is_established
