"""The Storage SCP driven by real DCMTK tools (storescu, echoscu) and by pynetdicom as SCU for exact statuses."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRBigEndian, RLELossless
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import EnhancedMRImageStorage, MRImageStorage
from sqlalchemy import func, select

from db.models import Instance, Series, SeriesRole, SeriesState, Study
from dicomnode.store.validate import PREAMBLE, encode_file_meta, split_part10
from tests.dicom_builders import molli_series, mr_image, write_part10
from tests.integration.conftest import LOOPBACK, RunningNode, wait_until

pytestmark = pytest.mark.integration


def _write_series(datasets: list[pydicom.Dataset], folder: Path) -> list[Path]:
    return [write_part10(ds, folder / f"{i:03d}.dcm") for i, ds in enumerate(datasets)]


def _count(node: RunningNode, model: type) -> int:
    with node.session_factory() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def _series(node: RunningNode) -> list[Series]:
    with node.session_factory() as session:
        return list(session.scalars(select(Series).order_by(Series.id)))


def _scu(node: RunningNode, calling_ae: str = "PYSCU"):  # noqa: ANN202 (pynetdicom's Association)
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(MRImageStorage)
    ae.add_requested_context(EnhancedMRImageStorage)
    assoc = ae.associate(LOOPBACK, node.port, ae_title=node.ae_title)
    assert assoc.is_established
    return assoc


def test_echoscu_succeeds(node: RunningNode) -> None:
    result = node.echoscu()
    assert result.returncode == 0, result.stderr
    assert "Received Echo Response (Success)" in result.stdout + result.stderr


def test_storescu_stores_files_and_rows_and_completes_at_once(node: RunningNode, tmp_path: Path) -> None:
    datasets = molli_series()
    files = _write_series(datasets, tmp_path / "in")

    result = node.storescu(files)

    assert result.returncode == 0, result.stdout + result.stderr
    # Complete the moment the last image is stored: ImagesInAcquisition says 8; handed on once the study settled.
    series = _series(node)
    assert len(series) == 1 and series[0].state == SeriesState.COMPLETE
    assert series[0].role == SeriesRole.RAW_IR and series[0].n_instances == 8
    assert wait_until(lambda: node.completed == [(series[0].id, 0)], timeout_s=5)
    with node.session_factory() as session:
        study = session.scalars(select(Study)).one()
        assert (study.patient_name, study.patient_id) == ("Doe^Jane", "MYO-0042")
        instances = session.scalars(select(Instance)).all()
    assert len(instances) == 8
    for ds, sent in zip(datasets, files, strict=True):
        stored = (
            node.settings.storage_root
            / ds.StudyInstanceUID
            / ds.SeriesInstanceUID
            / f"{ds.SOPInstanceUID}.dcm"
        )
        assert stored.is_file()
        copy = pydicom.dcmread(stored)
        assert copy.file_meta.SourceApplicationEntityTitle == "STORESCU"
        # The data set is kept byte for byte as received.
        assert stored.read_bytes().endswith(sent.read_bytes()[-len(ds.PixelData) - 200 :])
        assert copy.PixelData == ds.PixelData


def test_resend_is_idempotent_and_changed_content_is_version_2(node: RunningNode, tmp_path: Path) -> None:
    datasets = molli_series()
    files = _write_series(datasets, tmp_path / "in")
    assert node.storescu(files).returncode == 0

    again = node.storescu(files)

    assert again.returncode == 0
    assert _count(node, Instance) == 8
    series = _series(node)[0]
    assert (series.revision, series.state) == (0, SeriesState.COMPLETE)
    assert wait_until(lambda: node.completed == [(series.id, 0)], timeout_s=5)

    changed = datasets[3].copy()
    changed.file_meta = datasets[3].file_meta
    changed.ImageComments = "re-sent after correction"
    changed_file = write_part10(changed, tmp_path / "changed" / "003.dcm")
    assert node.storescu([changed_file]).returncode == 0

    with node.session_factory() as session:
        instance = session.scalars(
            select(Instance).where(Instance.sop_instance_uid == changed.SOPInstanceUID)
        ).one()
        assert instance.version == 2 and instance.path.endswith(f"{changed.SOPInstanceUID}.v2.dcm")
    folder = node.settings.storage_root / changed.StudyInstanceUID / changed.SeriesInstanceUID
    assert (folder / f"{changed.SOPInstanceUID}.dcm").is_file()
    assert (
        pydicom.dcmread(folder / f"{changed.SOPInstanceUID}.v2.dcm").ImageComments
        == "re-sent after correction"
    )
    assert _count(node, Instance) == 8
    # The series was re-opened and, holding its 8 images, completed again as revision 1.
    assert wait_until(lambda: node.completed == [(series.id, 0), (series.id, 1)], timeout_s=5)


def test_series_without_count_completes_after_quiet_period(node: RunningNode, tmp_path: Path) -> None:
    files = _write_series(molli_series(images_in_acquisition=False), tmp_path / "in")

    assert node.storescu(files).returncode == 0

    assert _series(node)[0].state == SeriesState.RECEIVING
    assert wait_until(lambda: _series(node)[0].state == SeriesState.COMPLETE, timeout_s=5)
    assert wait_until(lambda: node.completed == [(_series(node)[0].id, 0)], timeout_s=5)


def test_bad_inputs_get_specific_statuses_and_the_node_keeps_serving(
    node: RunningNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Send files' bytes as they are (pynetdicom would otherwise decode and re-encode, repairing the truncation).
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)
    valid = mr_image()
    full = write_part10(valid, tmp_path / "valid.dcm").read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(full[:-100])
    no_pixels = mr_image()
    del no_pixels.PixelData
    oversize = mr_image(rows=16, columns=16)
    oversize.Rows = oversize.Columns = 65535
    wrong_length = mr_image()
    wrong_length.PixelData = wrong_length.PixelData[:-32]
    # An MR image offered as Enhanced MR: the file meta names the class the request and context use.
    meta, dataset_bytes = split_part10(write_part10(mr_image(), tmp_path / "mr.dcm").read_bytes())
    meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    mismatch = tmp_path / "mismatch.dcm"
    mismatch.write_bytes(PREAMBLE + encode_file_meta(meta) + dataset_bytes)
    bad_uid = mr_image()
    bad_uid.SeriesInstanceUID = "1.2.3/../../../etc"

    assoc = _scu(node)
    try:
        statuses = {
            "truncated": assoc.send_c_store(truncated).Status,
            "no pixels": assoc.send_c_store(no_pixels).Status,
            "oversize": assoc.send_c_store(oversize).Status,
            "wrong length": assoc.send_c_store(wrong_length).Status,
            "sop class": assoc.send_c_store(mismatch).Status,
            "bad uid": assoc.send_c_store(bad_uid).Status,
            "valid": assoc.send_c_store(valid).Status,
        }
    finally:
        assoc.release()

    assert statuses == {
        "truncated": 0xC000,
        "no pixels": 0xA900,
        "oversize": 0xA700,
        "wrong length": 0xA900,
        "sop class": 0xA900,
        "bad uid": 0xC000,
        "valid": 0x0000,
    }
    assert _count(node, Instance) == 1
    assert (
        not list(node.settings.storage_root.glob("1.2.3*"))
        and not (node.settings.storage_root.parent / "etc").exists()
    )


def test_storescu_reports_missing_pixel_data_and_unknown_sop_class(node: RunningNode, tmp_path: Path) -> None:
    no_pixels = mr_image()
    del no_pixels.PixelData
    bad = write_part10(no_pixels, tmp_path / "nopix.dcm")
    ct = Path(get_testdata_file("CT_small.dcm"))
    good = write_part10(mr_image(), tmp_path / "good.dcm")

    rejected = node.storescu([bad])
    unknown = node.storescu([ct])
    accepted = node.storescu([good])

    assert "Received Store Response (Error: DataSetDoesNotMatchSOPClass)" in rejected.stdout + rejected.stderr
    assert unknown.returncode != 0
    assert "No presentation context for: (CT)" in unknown.stdout + unknown.stderr
    assert accepted.returncode == 0 and "Success" in accepted.stdout + accepted.stderr
    assert _count(node, Instance) == 1


def test_unknown_calling_ae_is_rejected_and_configured_peers_accepted(
    node_factory: Callable[..., RunningNode], tmp_path: Path
) -> None:
    peers = [
        {"ae_title": "SCANNER", "host": LOOPBACK},
        {"ae_title": "FARAWAY", "host": "10.9.9.9"},
        {"ae_title": "VIEWER", "may_store": False},
    ]
    node = node_factory(dicom={"allow_any_calling_ae": False}, peers=peers)
    image = write_part10(mr_image(), tmp_path / "one.dcm")

    unknown = node.storescu([image], calling_ae="INTRUDER")
    wrong_host = node.echoscu(calling_ae="FARAWAY")
    viewer_echo = node.echoscu(calling_ae="VIEWER")
    known = node.storescu([image], calling_ae="SCANNER")

    assert unknown.returncode != 0
    assert "Calling AE Title Not Recognized" in unknown.stdout + unknown.stderr
    assert (
        wrong_host.returncode != 0
        and "Calling AE Title Not Recognized" in wrong_host.stdout + wrong_host.stderr
    )
    assert viewer_echo.returncode == 0
    assert known.returncode == 0
    assert _count(node, Instance) == 1

    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate(LOOPBACK, node.port, ae_title=node.ae_title)
    try:
        status = assoc.send_c_store(mr_image()).Status
    finally:
        assoc.release()
    assert status == 0x0124
    assert _count(node, Instance) == 1


def test_disk_watermark_refuses_associations_and_instances(
    node_factory: Callable[..., RunningNode], tmp_path: Path
) -> None:
    node = node_factory()
    image = write_part10(mr_image(), tmp_path / "one.dcm")
    assoc = _scu(node)
    node.settings.storage.min_free_mb = 10**12  # an absurd watermark: the disk is "full"
    try:
        in_open_association = assoc.send_c_store(mr_image()).Status
    finally:
        assoc.release()
    refused = node.storescu([image])
    echo = node.echoscu()

    assert in_open_association == 0xA700
    assert refused.returncode != 0 and "Association Rejected" in refused.stdout + refused.stderr
    assert "Local Limit Exceeded" in refused.stdout + refused.stderr
    assert echo.returncode == 0  # verification still answers
    assert _count(node, Instance) == 0

    node.settings.storage.min_free_mb = 0
    assert node.storescu([image]).returncode == 0
    assert _count(node, Instance) == 1


def test_rle_and_big_endian_inputs_are_stored_in_their_syntax(
    node: RunningNode, tmp_path: Path, dcmtk_env
) -> None:
    native = write_part10(mr_image(rows=32, columns=32), tmp_path / "native.dcm")
    rle = tmp_path / "rle.dcm"
    subprocess.run(["dcmcrle", str(native), str(rle)], check=True, env=dcmtk_env, capture_output=True)
    big_endian = mr_image(rows=32, columns=32)
    big_endian.file_meta.TransferSyntaxUID = ExplicitVRBigEndian

    assert node.storescu([rle], "-xr").returncode == 0
    # storescu offers Little Endian beside Big Endian (and the node prefers it); pynetdicom can offer Big only.
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(MRImageStorage, [ExplicitVRBigEndian])
    assoc = ae.associate(LOOPBACK, node.port, ae_title=node.ae_title)
    try:
        big_endian_status = assoc.send_c_store(big_endian).Status
    finally:
        assoc.release()

    assert big_endian_status == 0x0000
    with node.session_factory() as session:
        syntaxes = set(session.scalars(select(Instance.transfer_syntax_uid)))
    assert syntaxes == {RLELossless, ExplicitVRBigEndian}
    stored_rle = next(node.settings.storage_root.rglob(f"{pydicom.dcmread(rle).SOPInstanceUID}.dcm"))
    assert pydicom.dcmread(stored_rle).pixel_array.shape == (32, 32)
    stored_big = next(node.settings.storage_root.rglob(f"{big_endian.SOPInstanceUID}.dcm"))
    assert (pydicom.dcmread(stored_big).pixel_array == big_endian.pixel_array).all()


@pytest.mark.slow
def test_parallel_associations_store_everything(node: RunningNode, tmp_path: Path) -> None:
    study_uid = pydicom.uid.generate_uid()
    batches = [_write_series(molli_series(study_uid=study_uid), tmp_path / f"batch{i}") for i in range(4)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(node.storescu, batches))

    assert [r.returncode for r in results] == [0, 0, 0, 0]
    assert _count(node, Instance) == 32
    assert _count(node, Study) == 1
    assert sorted(s.n_instances for s in _series(node)) == [8, 8, 8, 8]
    assert wait_until(lambda: len(node.completed) == 4, timeout_s=5)
