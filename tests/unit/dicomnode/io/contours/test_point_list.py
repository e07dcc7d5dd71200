"""Point lists, on the Sunnybrook Cardiac Data contours and images.

Fixture (see shared/data/README.md): sunnybrook/ holds GE 1.5 T cine short-axis images of five heart-failure
patients with expert endocardial (i) contours, about half of them also epicardial (o) ones, from the Sunnybrook
Cardiac Data (Radau et al., MICCAI 2009 LV segmentation challenge); CC0.
"""

import csv

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from dicomnode.io.contours import (
    ContourFormatError,
    ImageGeometry,
    Structure,
    UnresolvedReferenceError,
    contour_set_from_point_lists,
    parse_point_list,
    read_point_list,
    read_sunnybrook,
)
from tests.shared_data import SHARED_DATA

SUNNYBROOK = SHARED_DATA / "sunnybrook"
#: Patients whose epicardial contours do not enclose their endocardial ones (drawn on another frame or shifted
#: by up to a third of the cavity): their epicardium must not be used as truth for the myocardium.
DISPLACED_EPICARDIUM = frozenset({"SC-HF-I-6"})
# The Sunnybrook images carry UIDs with zero-padded components, which pydicom warns about on access.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")


def linked_folders():
    """(DICOM folder, contour folder) pairs of link.csv that are present."""
    with (SUNNYBROOK / "link.csv").open() as handle:
        pairs = [(SUNNYBROOK / "dicoms" / row["patient_id"], SUNNYBROOK / "contourfiles" / row["original_id"])
                 for row in csv.DictReader(handle)]
    return [(images, contours) for images, contours in pairs if images.is_dir() and contours.is_dir()]


def _patient(image_folder, contour_folder):
    images = [pydicom.dcmread(path) for path in sorted(image_folder.glob("*.dcm"))]
    paths = sorted(contour_folder.glob("*-contours/*.txt"))
    return images, paths


@pytest.fixture(scope="module")
def sunnybrook():
    """The first patient's images and contour files."""
    return _patient(*linked_folders()[0])


@pytest.mark.parametrize("folders", linked_folders(), ids=lambda folders: folders[1].name)
def test_point_lists_round_trip_onto_every_sunnybrook_image(folders):
    images, paths = _patient(*folders)
    assert len(paths) >= len(images)  # every image has an endocardial contour, about half an epicardial one too
    contours = read_sunnybrook(paths, images, reader="Sunnybrook expert")
    masks = contours.to_masks()
    assert masks.source_format == "Sunnybrook point list"
    assert set(masks.masks) == {"cavity", "epicardium", "myocardium"}
    assert sorted(masks.sop_instance_uids) == sorted(str(ds.SOPInstanceUID) for ds in images)
    with_epicardium = [ds for ds in images if masks.mask(Structure.EPICARDIUM, str(ds.SOPInstanceUID)) is not None]
    assert with_epicardium
    pixel_area_mm2 = float(np.prod(images[0].PixelSpacing))
    for ds in images:
        cavity = masks.mask(Structure.CAVITY, str(ds.SOPInstanceUID))
        # Apical cavities of these patients are small (from about 1.5 cm2), basal ones tens of cm2.
        assert cavity is not None and 1e2 < cavity.sum() * pixel_area_mm2 < 6e3
    for ds in with_epicardium:
        uid = str(ds.SOPInstanceUID)
        endo, epi = masks.mask(Structure.CAVITY, uid), masks.mask(Structure.EPICARDIUM, uid)
        myocardium = masks.mask(Structure.MYOCARDIUM, uid)
        assert endo.shape == epi.shape == (256, 256) == ds.pixel_array.shape
        assert endo.any() and myocardium.any()
        # Endocardium inside the epicardium: where the experts' borders touch, a few pixels sit at most one
        # pixel outside.
        outside = endo & ~epi
        if folders[1].name in DISPLACED_EPICARDIUM:
            assert outside.sum() > 0.1 * endo.sum()
            continue
        assert outside.sum() <= 10 and not (outside & ~ndimage.binary_dilation(epi)).any()
        # A human LV short-axis slice: myocardium of a few to tens of cm2.
        assert 3e2 < myocardium.sum() * pixel_area_mm2 < 8e3
        # The blood pool is brighter than the myocardium on cine SSFP.
        pixels = ds.pixel_array.astype(float)
        assert pixels[endo].mean() > 1.3 * pixels[myocardium].mean()


def test_points_keep_the_file_values(sunnybrook):
    images, paths = sunnybrook
    path = next(p for p in paths if "0059-icontour" in p.name)
    points = read_point_list(path)
    first = path.read_text().split("\n")[0].split()
    assert points.shape[1] == 2 and points.shape[0] == len(path.read_text().splitlines())
    np.testing.assert_allclose(points[0], [float(first[0]), float(first[1])])
    contours = read_sunnybrook([path], images, reader="r")
    uid = next(str(ds.SOPInstanceUID) for ds in images if int(ds.InstanceNumber) == 59)
    np.testing.assert_array_equal(contours.contours["cavity"][uid][0], points)


def test_unknown_instance_numbers_raise(sunnybrook):
    images, paths = sunnybrook
    with pytest.raises(UnresolvedReferenceError, match="Instance Number 99"):
        read_sunnybrook(paths, [ds for ds in images if int(ds.InstanceNumber) != 99], reader="r")
    with pytest.raises(ContourFormatError, match="does not match"):
        read_sunnybrook([paths[0].with_name("contour.txt")], images, reader="r")


def test_point_list_parsing_rules():
    points = parse_point_list("# header\n1 2\n\n3,4\n5\t6\n")
    np.testing.assert_array_equal(points, [[1, 2], [3, 4], [5, 6]])
    with pytest.raises(ContourFormatError, match="line 2"):
        parse_point_list("1 2\n3 4 5\n6 7\n")
    with pytest.raises(ContourFormatError, match="at least 3"):
        parse_point_list("1 2\n3 4\n")


def test_generic_point_lists_need_known_images():
    geometry = ImageGeometry(8, 8, (1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0), "1.2.3", "1.2")
    square = np.array([[1.0, 1.0], [5.0, 1.0], [5.0, 5.0], [1.0, 5.0]])
    masks = contour_set_from_point_lists({"cavity": {"1.2.3": [square]}}, [geometry], reader="r").to_masks()
    assert int(masks.mask("cavity", "1.2.3").sum()) == 25  # pixel centres 1..5 on both axes
    with pytest.raises(UnresolvedReferenceError, match="1.2.4"):
        contour_set_from_point_lists({"cavity": {"1.2.4": [square]}}, [geometry], reader="r")
