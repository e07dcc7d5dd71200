"""Analysis units: series of one map kind that show the same slice of one acquisition are analysed together."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from db.models import SeriesRole
from dicomnode.io.slice_groups import MappingSeries, linked, mapping_units, slice_places, unit_key

FRAME = generate_uid()


def _header(z_mm: float, *, time: str = "101500", ti_ms: float | None = None, protocol: str = "MOLLI SAX",
            sources: tuple[str, ...] = (), frame: str = FRAME, flip: bool = False) -> Dataset:
    ds = Dataset()
    ds.SOPInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = frame
    ds.ImagePositionPatient = [-100.0, -100.0, z_mm]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, -1.0, 0.0] if flip else [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.AcquisitionTime = time
    ds.ProtocolName = protocol
    if ti_ms is not None:
        ds.InversionTime = ti_ms
    if sources:
        ds.SourceImageSequence = [Dataset() for _ in sources]
        for item, uid in zip(ds.SourceImageSequence, sources, strict=True):
            item.ReferencedSOPInstanceUID = uid
    return ds


def _series(series_id: int, role: SeriesRole, *headers: Dataset, revision: int = 0) -> MappingSeries:
    return MappingSeries(series_id, revision, role, f"1.2.3.{series_id}", headers)


def test_raw_and_map_of_one_slice_form_one_unit_per_slice() -> None:
    raw_basal = _series(1, SeriesRole.RAW_IR, *(_header(10.0, ti_ms=t) for t in (100.0, 180.0, 1100.0)))
    map_basal = _series(2, SeriesRole.T1_MAP, _header(10.2))
    raw_mid = _series(3, SeriesRole.RAW_IR, *(_header(0.0, ti_ms=t) for t in (100.0, 180.0, 1100.0)))
    map_mid = _series(4, SeriesRole.T1_MAP, _header(0.0))
    units = mapping_units([raw_basal, map_basal, raw_mid, map_mid])
    assert [[s.series_id for s in unit] for unit in units] == [[1, 2], [3, 4]]


def test_a_map_names_its_source_images_and_is_linked_to_them_only() -> None:
    native = _series(1, SeriesRole.RAW_IR, _header(0.0, ti_ms=100.0, time="101500"))
    post_contrast = _series(2, SeriesRole.RAW_IR, _header(0.0, ti_ms=100.0, time="103000"))
    native_uid = native.headers[0].SOPInstanceUID
    native_map = _series(3, SeriesRole.T1_MAP, _header(0.0, time="103000", sources=(native_uid,)))
    assert linked(native, native_map)
    assert not linked(post_contrast, native_map)


def test_a_map_naming_motion_corrected_images_is_linked_by_time() -> None:
    raw = _series(1, SeriesRole.RAW_IR, _header(0.0, ti_ms=100.0, time="101500"))
    t1_map = _series(2, SeriesRole.T1_MAP, _header(0.0, time="101520", sources=(generate_uid(),)))
    later_map = _series(3, SeriesRole.T1_MAP, _header(0.0, time="104000", sources=(generate_uid(),)))
    assert [[s.series_id for s in u] for u in mapping_units([raw, t1_map, later_map])] == [[1, 2], [3]]


def test_contrast_phases_of_one_slice_are_separate_units() -> None:
    native = _series(1, SeriesRole.RAW_IR, _header(0.0, ti_ms=100.0, time="101500"))
    native_map = _series(2, SeriesRole.T1_MAP, _header(0.0, time="101530"))
    post = _series(3, SeriesRole.RAW_IR, _header(0.0, ti_ms=100.0, time="103500"))
    post_map = _series(4, SeriesRole.T1_MAP, _header(0.0, time="103530"))
    assert [[s.series_id for s in u] for u in mapping_units([native, native_map, post, post_map])] == [[1, 2], [3, 4]]


def test_per_ti_raw_series_of_one_protocol_are_one_unit_but_a_repeat_is_not() -> None:
    per_ti = [_series(i, SeriesRole.RAW_IR, _header(0.0, ti_ms=ti, protocol=f"MOLLI TI{int(ti)}"))
              for i, ti in enumerate((100.0, 180.0, 1100.0), start=1)]
    assert len(mapping_units(per_ti)) == 1
    repeat = _series(9, SeriesRole.RAW_IR, _header(0.0, ti_ms=100.0, protocol="MOLLI TI100"))
    assert not linked(per_ti[0], repeat)
    other_protocol = _series(8, SeriesRole.RAW_IR, _header(0.0, ti_ms=250.0, protocol="SASHA SAX"))
    assert not linked(per_ti[0], other_protocol)


def test_two_sequences_of_one_slice_are_separate_units() -> None:
    molli = _series(1, SeriesRole.RAW_IR, _header(0.0, ti_ms=100.0, protocol="MOLLI_5(3)3_SAX"))
    molli_map = _series(2, SeriesRole.T1_MAP, _header(0.0, protocol="MOLLI_5(3)3_SAX"))
    shmolli = _series(3, SeriesRole.RAW_IR, _header(0.0, ti_ms=110.0, protocol="ShMOLLI_SAX"))
    shmolli_map = _series(4, SeriesRole.T1_MAP, _header(0.0, protocol="ShMOLLI_SAX"))
    units = mapping_units([molli, molli_map, shmolli, shmolli_map])
    assert [[s.series_id for s in u] for u in units] == [[1, 2], [3, 4]]


def test_t1_and_t2_series_and_other_frames_of_reference_never_link() -> None:
    t1_map = _series(1, SeriesRole.T1_MAP, _header(0.0))
    t2_map = _series(2, SeriesRole.T2_MAP, _header(0.0))
    elsewhere = _series(3, SeriesRole.T1_MAP, _header(0.0, frame=generate_uid()))
    assert not linked(t1_map, t2_map)
    assert not linked(t1_map, elsewhere)


def test_a_flipped_orientation_is_the_same_plane() -> None:
    (upright,) = slice_places(_header(5.0))
    (flipped,) = slice_places(_header(5.0, flip=True))
    assert upright.same_slice(flipped)
    (apart,) = slice_places(_header(7.0))
    assert not upright.same_slice(apart)


def test_the_unit_key_changes_with_a_new_revision_only() -> None:
    raw = _series(1, SeriesRole.RAW_IR, _header(0.0, ti_ms=100.0))
    t1_map = _series(2, SeriesRole.T1_MAP, _header(0.0))
    key = unit_key("1.2", "T1", [raw, t1_map])
    assert key == unit_key("1.2", "T1", [t1_map, raw])
    assert key != unit_key("1.2", "T1", [_series(1, SeriesRole.RAW_IR, *raw.headers, revision=1), t1_map])
    assert key.startswith("1.2/T1/") and len(key) <= 200
