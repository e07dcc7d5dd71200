"""Synthetic patients and deterministic DICOM UIDs derived from the phantom's seed.

Nothing here resembles a real person: names are ``PHANTOM^<word>``, IDs ``MYO<digits>``, and dates fall in a
fixed synthetic window chosen by the seed.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass

import numpy as np

from phantom.model import FieldStrength
from phantom.vendors import VendorFlavour

LOGGER = logging.getLogger(__name__)

# Given names of the synthetic patients: plain words, never personal names.
_NAME_WORDS = (
    "ALDER", "ASPEN", "BIRCH", "CEDAR", "CYPRESS", "ELM", "FIR", "HAZEL", "HOLLY", "JUNIPER", "LARCH", "LINDEN",
    "MAPLE", "OAK", "OLIVE", "PINE", "POPLAR", "ROWAN", "SPRUCE", "SYCAMORE", "WALNUT", "WILLOW", "YEW", "BEECH",
)  # fmt: skip
_FIRST_STUDY_DATE = dt.date(2020, 1, 6)
_STUDY_DATE_SPAN_DAYS = 5 * 365


@dataclass(frozen=True)
class SyntheticPatient:
    """Patient and study identification of one phantom study (all synthetic)."""

    patient_name: str
    patient_id: str
    birth_date: str  # DICOM DA, YYYYMMDD
    sex: str  # "M" or "F"
    age: str  # DICOM AS, e.g. "054Y"
    weight_kg: float
    height_m: float
    study_date: str  # DICOM DA
    study_time: str  # DICOM TM, HHMMSS
    accession_number: str
    study_id: str


# Namespace of the phantom's name-based UUIDs (itself derived from a fixed name, so it never changes).
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:myomap:phantom")


class UidFactory:
    """Deterministic UIDs: the same (seed, study index, labels) always gives the same ``2.25.`` UID.

    The UID is the ``2.25`` form (PS3.5 B.2) of a name-based (SHA-1, version 5) UUID of the labels, so distinct
    labels give distinct UIDs with the collision odds of random UUIDs.

    Parameters
    ----------
    seed
        The run's seed.
    study_index
        Index of the study within the run.
    """

    def __init__(self, seed: int, study_index: int) -> None:
        self._root = f"myomap-phantom/{seed}/{study_index}"

    def uid(self, *labels: object) -> str:
        """Return the UID for ``labels`` (e.g. ``("series", "mid", "molli", "magnitude")``)."""
        key = "/".join([self._root, *(str(label) for label in labels)])
        return f"2.25.{uuid.uuid5(_UID_NAMESPACE, key).int}"


def make_patient(rng: np.random.Generator, study_index: int) -> SyntheticPatient:
    """Draw a synthetic patient and study date from ``rng``.

    Parameters
    ----------
    rng
        Generator of the study.
    study_index
        Index of the study within the run; goes into the accession number so numbers are unique in a run.
    """
    word = _NAME_WORDS[int(rng.integers(len(_NAME_WORDS)))]
    patient_id = f"MYO{int(rng.integers(10**7, 10**8)):08d}"
    sex = "M" if rng.random() < 0.55 else "F"
    age_years = int(rng.integers(18, 86))
    study_day = _FIRST_STUDY_DATE + dt.timedelta(days=int(rng.integers(_STUDY_DATE_SPAN_DAYS)))
    birth_day = study_day - dt.timedelta(days=age_years * 365 + int(rng.integers(365)))
    study_seconds = int(rng.integers(7 * 3600, 19 * 3600))
    height_m = float(np.round(rng.normal(1.77 if sex == "M" else 1.64, 0.07), 2))
    weight_kg = float(np.round(np.clip(rng.normal(24.5, 3.5), 17.0, 40.0) * height_m**2, 1))
    return SyntheticPatient(
        patient_name=f"PHANTOM^{word}",
        patient_id=patient_id,
        birth_date=birth_day.strftime("%Y%m%d"),
        sex=sex,
        age=f"{age_years:03d}Y",
        weight_kg=weight_kg,
        height_m=height_m,
        study_date=study_day.strftime("%Y%m%d"),
        study_time=f"{study_seconds // 3600:02d}{study_seconds // 60 % 60:02d}{study_seconds % 60:02d}",
        accession_number=f"PH{study_index:06d}{int(rng.integers(10**5)):05d}",
        study_id=f"{study_index + 1}",
    )


def dicom_time(study_time: str, offset_s: float) -> str:
    """DICOM TM ``HHMMSS.ffffff`` that lies ``offset_s`` seconds after ``study_time`` (same day, wraps at midnight)."""
    seconds = int(study_time[0:2]) * 3600 + int(study_time[2:4]) * 60 + int(study_time[4:6]) + offset_s
    seconds %= 24 * 3600
    whole = int(seconds)
    micro = int(round((seconds - whole) * 1e6))
    if micro == 1_000_000:
        whole, micro = whole + 1, 0
    return f"{whole // 3600:02d}{whole // 60 % 60:02d}{whole % 60:02d}.{micro:06d}"


@dataclass(frozen=True)
class StudyContext:
    """Everything every DICOM object of one study shares: patient, study, scanner and the UID source."""

    patient: SyntheticPatient
    study_instance_uid: str
    frame_of_reference_uid: str
    flavour: VendorFlavour
    field: FieldStrength
    device_serial_number: str
    uids: UidFactory
    writes_field_strength: bool = True  # False: no MagneticFieldStrength (nor ImagingFrequency) in raw headers
    body_part: str = "HEART"  # BodyPartExamined; empty leaves it out
    study_description: str = "Cardiac^Mapping"
