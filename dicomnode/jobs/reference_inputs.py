"""What the reference rule (:mod:`dicomnode.analysis.reference`) reads from the database for a study: the training
case's configured policy and automatic consensus, and each reader's role and team (from the reader table and its
aliases, else the naming convention)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from config import Settings
from db.models import ReaderRole, ReferencePolicy, TrainingCase, TrainingSet
from db.readers import ReaderNames
from dicomnode.analysis.reference import CasePolicy, ReaderInfo, role_by_convention
from dicomnode.analysis.study import ReferenceRule


@dataclass(frozen=True)
class StudyReferenceInputs:
    """The study's reference inputs, read once: its training case (None: none), the automatic consensus, and the
    readers' roles and teams."""

    case: CasePolicy | None
    auto_consensus: bool
    reader_info: Callable[[str], ReaderInfo]

    def rule(self, gold_standard: str | None) -> ReferenceRule:
        """The analysis' rule with the site's gold standard."""
        return ReferenceRule(gold_standard=gold_standard, case=self.case, auto_consensus=self.auto_consensus,
                             reader_info=self.reader_info)


#: A study outside every training set, with no reader rows: the naming convention and the automatic consensus.
CONVENTION = StudyReferenceInputs(None, True, role_by_convention)


def reference_inputs(session: Session, study_instance_uid: str) -> StudyReferenceInputs:
    """The reference inputs of study ``study_instance_uid`` (of the first training case that holds it)."""
    row = session.execute(
        select(TrainingCase.reference_policy, TrainingCase.gold_standard_reader, TrainingSet.auto_consensus)
        .join(TrainingSet, TrainingCase.training_set_id == TrainingSet.id)
        .where(TrainingCase.study_instance_uid == study_instance_uid)
        .order_by(TrainingCase.id).limit(1)
    ).first()
    case = None
    auto_consensus = True
    if row is not None:
        policy = ReferencePolicy(row.reference_policy) if row.reference_policy else None
        case = CasePolicy(policy, row.gold_standard_reader or None)
        auto_consensus = bool(row.auto_consensus)
    return StudyReferenceInputs(case, auto_consensus, _reader_info(session))


def site_rule(inputs: StudyReferenceInputs, settings: Settings) -> ReferenceRule:
    """The rule for the study with the site's ``[scoring] gold_standard``."""
    return inputs.rule(settings.scoring.gold_standard.strip() or None)


def _reader_info(session: Session) -> Callable[[str], ReaderInfo]:
    names = ReaderNames.load(session)
    known = {}
    for reader in names.readers_by_id.values():
        try:
            known[reader.id] = ReaderInfo(ReaderRole(reader.role), reader.team or "")
        except ValueError:
            continue  # an unknown role: the convention decides

    def info(name: str) -> ReaderInfo:
        reader = names.reader(name)
        return known.get(reader.id, role_by_convention(name)) if reader is not None else role_by_convention(name)

    return info
