"""What the training programme's reports show, read from the database into :mod:`reports.programme.model`:
a trainee's progress, a team's summary, and which readers a web user may see."""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from statistics import fmean, pstdev

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from db.models import Reader, ReaderRole, TrainingSet, WebRole, WebUser
from db.readers import ReaderNames
from reports.programme.accreditation import evaluate_attempts
from reports.programme.attempts import RecordedAttempt, case_labels, recorded_attempts, to_attempts
from reports.programme.model import Attempt, CaseSpread, TeamSummary, TraineeProgress
from reports.programme.people import PeopleError, teams_of


def _progress(session: Session, reader: Reader, attempts: list[Attempt],
              training_sets: list[TrainingSet]) -> TraineeProgress:
    studies = {attempt.study_instance_uid for attempt in attempts}
    statuses = [
        evaluate_attempts(session, reader.id, reader.name, training_set, attempts)
        for training_set in training_sets
        if any(case.study_instance_uid in studies for case in training_set.cases)
    ]
    return TraineeProgress(reader=reader.name, team=reader.team, attempts=attempts, accreditation=statuses)


def _training_sets(session: Session) -> list[TrainingSet]:
    return list(session.scalars(select(TrainingSet).order_by(TrainingSet.name)
                                .options(selectinload(TrainingSet.cases))))


def trainee_progress(session: Session, reader_name: str) -> TraineeProgress:
    """Every attempt of the reader (oldest first) and their standing on each training set they worked on.

    Raises
    ------
    PeopleError
        If no reader (or alias) is called ``reader_name``.
    """
    names = ReaderNames.load(session)
    reader = names.named(reader_name)
    if reader is None:
        raise PeopleError(f"no reader named {reader_name!r} (see: myomap reader list)")
    recorded = [item for item in recorded_attempts(session, names) if item.person == reader.name]
    return _progress(session, reader, to_attempts(recorded, case_labels(session)), _training_sets(session))


def _latest_by_case(recorded: list[RecordedAttempt]) -> dict[str, dict[str, RecordedAttempt]]:
    """Study -> person -> the person's latest recorded attempt on it."""
    latest: dict[str, dict[str, RecordedAttempt]] = defaultdict(dict)
    for item in recorded:  # oldest first
        latest[item.study_instance_uid][item.person] = item
    return latest


def _scored(item: RecordedAttempt) -> list[dict]:
    return [figures for figures in item.summary.get("slices", []) if figures.get("status") == "scored"]


def _mean_of(item: RecordedAttempt, key: str) -> float | None:
    values = [float(figures[key]) for figures in _scored(item) if isinstance(figures.get(key), int | float)]
    return fmean(values) if values else None


def _inter_observer_dice(attempts: dict[str, RecordedAttempt], names: ReaderNames) -> float | None:
    """Mean over pairs of readers of the Dice between their contours, as the later of the two recorded it."""
    by_pair: dict[frozenset[str], list[float]] = defaultdict(list)
    for person, item in attempts.items():
        for figures in _scored(item):
            for other_name, value in (figures.get("peer_dice") or {}).items():
                other = names.person(other_name)
                if other != person and other in attempts:
                    by_pair[frozenset((person, other))].append(float(value))
    pairs = [frozenset(pair) for pair in combinations(sorted(attempts), 2)]
    values = [fmean(by_pair[pair]) for pair in pairs if by_pair.get(pair)]
    return fmean(values) if values else None


def case_spread(label: str, attempts: dict[str, RecordedAttempt], names: ReaderNames) -> CaseSpread:
    """The readers' spread on one case, each by their latest attempt."""
    dice = {person: d for person, item in attempts.items() if (d := _mean_of(item, "dice_myocardium")) is not None}
    t1 = [value for item in attempts.values() if (value := _mean_of(item, "map_mean_ms")) is not None]
    cv = 100.0 * pstdev(t1) / fmean(t1) if len(t1) >= 2 and fmean(t1) > 0 else None
    bias = [value for item in attempts.values() if (value := _mean_of(item, "map_difference_ms")) is not None]
    return CaseSpread(
        case_label=label,
        readers=sorted(attempts),
        dice_mean=fmean(dice.values()) if dice else None,
        dice_sd=pstdev(dice.values()) if len(dice) >= 2 else None,
        t1_cv_percent=cv,
        inter_observer_dice=_inter_observer_dice(attempts, names),
        t1_mean_ms=fmean(t1) if t1 else None,
        t1_difference_mean_ms=fmean(bias) if bias else None,
    )


def team_summary(session: Session, team: str) -> TeamSummary:
    """Every trainee of the team side by side, the team's spread per case, and who is ready for accreditation
    (meets the criteria of every training set they worked on).

    Raises
    ------
    PeopleError
        If no reader belongs to ``team``.
    """
    names = ReaderNames.load(session)
    members = [reader for reader in names.readers_by_id.values() if team in teams_of(reader)]
    if not members:
        raise PeopleError(f"no reader belongs to team {team!r}")
    trainees = sorted((r for r in members if r.role == ReaderRole.TRAINEE.value), key=lambda r: r.name)
    recorded = recorded_attempts(session, names)
    labels = case_labels(session)
    training_sets = _training_sets(session)
    wanted = {reader.name for reader in trainees}
    mine = [item for item in recorded if item.person in wanted]
    progress = [
        _progress(session, reader, to_attempts([i for i in mine if i.person == reader.name], labels), training_sets)
        for reader in trainees
    ]
    cases = [
        case_spread(labels.get(study) or next(iter(by_person.values())).study_description or study, by_person, names)
        for study, by_person in _latest_by_case(mine).items()
    ]
    ready = [p.reader for p in progress if p.accreditation and all(status.met for status in p.accreditation)]
    return TeamSummary(team=team, trainees=progress, cases=sorted(cases, key=lambda c: c.case_label), ready=ready)


def visible_readers(session: Session, web_user: WebUser) -> list[str]:
    """The readers whose results ``web_user`` may see: a trainee their own, a supervisor those of their teams (the
    teams of the reader they are linked to), an admin everyone's."""
    readers = session.scalars(select(Reader).order_by(Reader.name)).all()
    if web_user.role == WebRole.ADMIN.value:
        return [reader.name for reader in readers]
    own = session.get(Reader, web_user.reader_id) if web_user.reader_id is not None else None
    if own is None:
        return []
    if web_user.role == WebRole.SUPERVISOR.value:
        teams = set(teams_of(own))
        return [reader.name for reader in readers if reader.id == own.id or teams & set(teams_of(reader))]
    return [own.name]
