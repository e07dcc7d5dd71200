"""Over the network: a SOP Instance UID re-sent by storescu under another patient is answered 0xA900 with an Error
Comment, the first series keeps its instance, and the log names UIDs only."""

from __future__ import annotations

import logging
from copy import deepcopy
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.models import Instance, RefusedInstance, Series
from tests.dicom_builders import mr_image, write_part10
from tests.integration.conftest import RunningNode
from tests.integration.node_harness import requires_dcmtk

pytestmark = [pytest.mark.integration, requires_dcmtk]


def test_resend_under_another_patient_is_refused_over_c_store(
    node: RunningNode, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = mr_image(images_in_acquisition=1)
    moved = deepcopy(first)
    moved.PatientID = "ANOTHER-PATIENT-7"
    moved.PatientName = "Other^Person"
    moved.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.4242"
    moved.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.4242.1"

    accepted = node.storescu([write_part10(first, tmp_path / "first.dcm")])
    with caplog.at_level(logging.INFO):
        refused = node.storescu([write_part10(moved, tmp_path / "moved.dcm")], "-d")  # -d shows the Error Comment

    assert "Received Store Response (Success)" in accepted.stdout + accepted.stderr
    output = refused.stdout + refused.stderr
    assert "DIMSE Status                  : 0xa900" in output, output
    assert "(0000,0902) LO [UID already stored under another Patient ID" in output, output
    with node.session_factory() as session:
        series = session.scalars(select(Series)).one()
        assert (series.series_instance_uid, series.n_instances) == (first.SeriesInstanceUID, 1)
        assert session.scalar(select(func.count()).select_from(Instance)) == 1
        assert session.scalars(select(RefusedInstance.sop_instance_uid)).all() == [first.SOPInstanceUID]
    assert first.SOPInstanceUID in caplog.text and "0xA900" in caplog.text
    for phi in ("ANOTHER-PATIENT-7", "Other^Person", first.PatientID, str(first.PatientName)):
        assert phi not in caplog.text
