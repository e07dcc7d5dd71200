"""Reader names from the contour object or the sender, in a configurable order."""

import pytest
from pydicom.dataset import Dataset

from dicomnode.io.contours import IdentitySource, UnknownReaderError, reader_name


def dataset(**values):
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def test_default_order_prefers_the_content_creator():
    ds = dataset(ContentCreatorName="Doe^Jane", OperatorsName="op", SeriesDescription="SEG trainee3")
    assert reader_name(ds, calling_ae_title="WS1") == "Doe Jane"
    ds.ContentCreatorName = ""
    assert reader_name(ds) == "op"
    del ds.OperatorsName
    assert reader_name(ds) == "SEG trainee3"


def test_calling_ae_title_is_the_last_resort_and_can_come_first():
    ds = dataset(StructureSetLabel="  ")
    assert reader_name(ds, calling_ae_title="TRAINEE_WS ") == "TRAINEE_WS"
    ds = dataset(StructureSetLabel="expert2")
    assert reader_name(ds, calling_ae_title="WS1", order=["calling_ae_title", "StructureSetLabel"]) == "WS1"
    assert reader_name(ds, calling_ae_title=None, order=[IdentitySource.CALLING_AE_TITLE,
                                                         IdentitySource.STRUCTURE_SET_LABEL]) == "expert2"


def test_multi_valued_operators_take_the_first():
    assert reader_name(dataset(OperatorsName=["first^reader", "second"])) == "first reader"


def test_no_name_raises_listing_the_sources_tried():
    with pytest.raises(UnknownReaderError, match="SeriesDescription"):
        reader_name(dataset(ContentCreatorName=""))
    with pytest.raises(ValueError, match="PatientName"):
        reader_name(dataset(), order=["PatientName"])
