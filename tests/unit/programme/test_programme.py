"""The training programme on a node database filled with reader results as the reader job records them: people
matched through aliases, training sets, a trainee's progress, a team's spread, accreditation and visibility."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import repository
from db.models import Accreditation, Reader, ReaderRole, WebUser
from db.readers import ReaderNames, find_reader, register_reader
from reports.programme import people, training_sets
from reports.programme.accreditation import evaluate
from reports.programme.queries import team_summary, trainee_progress, visible_readers
from reports.programme.training_sets import Criteria, TrainingSetError
from tests.unit.programme.builders import START, ProgrammeDatabase, SliceFigures

CASES = [f"1.2.3.{n}" for n in range(1, 7)]


def _day(n: int, hour: int = 0):  # noqa: ANN202
    return START + timedelta(days=n - 1, hours=hour)


@pytest.fixture
def db(tmp_path: Path) -> ProgrammeDatabase:
    return ProgrammeDatabase(tmp_path)


def _people(session: Session) -> None:
    people.add_reader(session, "Ann Improving", team="north")
    people.add_reader(session, "Bob Fat", team="north")
    people.add_reader(session, "Cat Good", team="north")
    people.add_reader(session, "Dan South", team="south")
    people.add_reader(session, "expert1", role="expert")
    people.add_reader(session, "Sue Supervisor", role="supervisor", team="north, east")
    people.add_alias(session, "IMPROVE^ANN", "Ann Improving")
    people.add_alias(session, "bob*", "Bob Fat")


def _programme(db: ProgrammeDatabase) -> None:
    """Ann improves over six attempts; Bob keeps drawing into the epicardial fat; Cat has done two cases."""
    with db.factory.begin() as session:
        _people(session)
        training_sets.create_training_set(
            session, "basic T1", CASES, criteria=Criteria(min_mean_dice=0.85, max_abs_t1_difference_ms=30,
                                                          last_cases=3, min_cases=3))
    ann = [(1, 0, 0.70, 60.0, "blood_pool"), (2, 1, 0.78, 45.0, "blood_pool"), (3, 2, 0.84, 25.0, "good"),
           (4, 3, 0.88, 20.0, "good"), (5, 4, 0.90, 15.0, "good"), (6, 0, 0.89, 12.0, "good")]
    for day, case, dice, dt1, mode in ann:
        db.score("IMPROVE^ANN", CASES[case], _day(day), [
            SliceFigures(dice, dt1, mode, segments_ms={1: dt1 + 5, 2: dt1 - 5}, map_mean_ms=1000 + dt1,
                         peer_dice={"BOB^FAT": 0.80, "Cat Good": 0.82, "expert1": 0.9}),
            None,
        ], rescored=day == 3)
    for day, case in ((1, 0), (2, 1), (3, 2), (4, 3), (5, 4)):
        db.score("BOB^FAT", CASES[case], _day(day, 2), [
            SliceFigures(0.87, -35.0, "epicardial_fat", map_mean_ms=950.0,
                         peer_dice={"IMPROVE^ANN": 0.78, "expert1": 0.85}),
        ])
    for day, case in ((4, 3), (5, 4)):
        db.score("Cat Good", CASES[case], _day(day, 3), [
            SliceFigures(0.90, 5.0, map_mean_ms=1050.0, peer_dice={"BOB^FAT": 0.76, "IMPROVE^ANN": 0.84}),
        ])
    db.score("Dan South", CASES[4], _day(5, 4), [SliceFigures(0.8, 10.0)])


def test_names_match_through_aliases_before_readers(db: ProgrammeDatabase) -> None:
    with db.factory.begin() as session:
        _people(session)
        people.add_alias(session, "bob^fat^*", "Cat Good")  # more literal characters than "bob*"
        names = ReaderNames.load(session)
        assert names.person("improve^ann") == "Ann Improving"  # case and ^ ignored
        assert names.person("Improve  Ann") == "Ann Improving"
        assert names.person("BOB^FAT^DR") == "Cat Good"  # the pattern with more literal characters wins
        assert names.person("BOBBY") == "Bob Fat"
        assert names.person("Dan South") == "Dan South"  # a reader's own name
        assert names.person("Unknown^Reader") == "Unknown^Reader"
        # A contour's reader: through an alias when one matches, else the reader row made for the DICOM name.
        assert register_reader(session, "IMPROVE^ANN").name == "Ann Improving"
        made = register_reader(session, "Newcomer^Nick")
        assert made is not None and (made.name, made.role) == ("Newcomer^Nick", "trainee")
        assert register_reader(session, "NEWCOMER^NICK") is made
        assert find_reader(session, "nobody") is None
        assert register_reader(session, "A" * 65) is None  # too long for the table: left to an alias
        people.add_alias(session, "A" * 60 + "*", "Dan South")
        assert register_reader(session, "A" * 65).name == "Dan South"
        assert repository.reader_role(session, "expert1") is ReaderRole.EXPERT
        assert repository.reader_role(session, "IMPROVE^ANN") is ReaderRole.TRAINEE
        assert repository.reader_role(session, "expert7") is None  # no row: the caller's prefix rule decides


def test_an_alias_takes_in_the_reader_made_for_that_name(db: ProgrammeDatabase) -> None:
    db.score("DOE^J", CASES[0], _day(1), [SliceFigures(0.8, 10.0)])
    with db.factory.begin() as session:
        register_reader(session, "DOE^J")  # as the reader job does when the contours arrive
        people.add_reader(session, "Jane Doe", team="north")
        people.add_reader(session, "Doe Junior", team="south")
        with pytest.raises(people.PeopleError, match=r"would take the contours of reader\(s\) Doe Junior too"):
            people.add_alias(session, "doe j*", "Jane Doe")
        people.add_alias(session, "DOE^J", "Jane Doe")
        assert sorted(session.scalars(select(Reader.name))) == ["Doe Junior", "Jane Doe"]
        (attempt,) = trainee_progress(session, "Jane Doe").attempts
        assert attempt.reader == "Jane Doe"


def test_people_errors(db: ProgrammeDatabase) -> None:
    with db.factory.begin() as session:
        _people(session)
        with pytest.raises(people.PeopleError, match="exists already"):
            people.add_reader(session, "ann improving")
        with pytest.raises(people.PeopleError, match="unknown reader role 'boss'"):
            people.set_role(session, "Bob Fat", "boss")
        with pytest.raises(people.PeopleError, match="maps to 'Ann Improving' already"):
            people.add_alias(session, "improve ann", "Bob Fat")
        with pytest.raises(people.PeopleError, match="no reader named 'Zed'"):
            people.add_alias(session, "ZED*", "Zed")
        with pytest.raises(people.PeopleError, match="empty"):
            people.add_reader(session, "   ")


def test_training_sets(db: ProgrammeDatabase) -> None:
    with db.factory.begin() as session:
        training_sets.create_training_set(session, "gold", CASES[:2], reference_policy="gold_standard",
                                          gold_standard_reader="expert1", auto_consensus=False)
        case = training_sets.add_case(session, "gold", CASES[2], label="hard case", reference_policy="team_average")
        assert case.label == "hard case"
        shown = training_sets.show_training_set(session, "gold")
        assert [(c.label, c.reference_policy, c.gold_standard_reader) for c in shown.cases] == [
            ("case 1", "gold_standard", "expert1"), ("case 2", "gold_standard", "expert1"),
            ("hard case", "team_average", None)]
        assert shown.auto_consensus is False and shown.criteria == Criteria()
        training_sets.set_criteria(session, "gold", Criteria(min_mean_dice=0.8, last_cases=4))
        assert training_sets.show_training_set(session, "gold").criteria.min_mean_dice == 0.8
        assert [s.name for s in training_sets.list_training_sets(session)] == ["gold"]
        assert [c.training_set.name for c in training_sets.cases_of_study(session, CASES[2])] == ["gold"]
        for call, message in [
            (lambda: training_sets.create_training_set(session, "gold", CASES), "exists already"),
            (lambda: training_sets.create_training_set(session, "x", ["1.2.x"]), "not a Study Instance UID"),
            (lambda: training_sets.create_training_set(session, "x", CASES, reference_policy="best"),
             "unknown reference policy 'best'"),
            (lambda: training_sets.create_training_set(session, "x", CASES, reference_policy="gold_standard"),
             "needs the gold-standard reader"),
            (lambda: training_sets.add_case(session, "gold", CASES[0]), "a case of 'gold' already"),
            (lambda: training_sets.add_case(session, "silver", CASES[0]), "no training set named 'silver'"),
            (lambda: Criteria(min_mean_dice=1.5), "must lie in"),
            (lambda: Criteria(critical_error_modes=("sloppy",)), "unknown error modes"),
        ]:
            with pytest.raises(TrainingSetError, match=message):
                call()


def test_trainee_progress(db: ProgrammeDatabase) -> None:
    _programme(db)
    with db.factory.begin() as session:
        progress = trainee_progress(session, "Ann Improving")
    assert progress.team == "north"
    scored = [a for a in progress.attempts if a.dice is not None]
    assert [a.dice for a in scored] == [0.70, 0.78, 0.84, 0.88, 0.90, 0.89]  # the re-score's figures, not 0.1
    assert [a.attempt_number for a in scored] == [1, 1, 1, 1, 1, 2]
    assert [a.received_at for a in progress.attempts] == sorted(a.received_at for a in progress.attempts)
    first = scored[0]
    assert (first.case_label, first.study_instance_uid, first.slice_level) == ("case 1", CASES[0], "mid")
    assert first.reference_policy == "expert_staple"
    assert first.segment_t1_differences_ms == {1: 65.0, 2: 55.0}
    assert first.error_mode == "blood_pool" and "blood-myocardium edge" in first.advice
    assert first.overlay_png == "outputs/x/2.25.0/overlay.png"
    unscored = [a for a in progress.attempts if a.dice is None]
    assert len(unscored) == 6 and unscored[0].advice == "no myocardium contour on the slice"
    (status,) = progress.accreditation
    assert status.training_set == "basic T1" and status.met and status.met_at == _day(5).date()
    with pytest.raises(people.PeopleError, match="no reader named 'Nobody'"):
        trainee_progress(session, "Nobody")


def test_accreditation_improving_trainee_meets_at_a_dated_attempt(db: ProgrammeDatabase) -> None:
    _programme(db)
    with db.factory.begin() as session:
        status = evaluate(session, "Ann Improving", "basic T1")
    assert status.met and status.met_at == _day(5).date()
    assert [o.name for o in status.outcomes] == ["mean Dice", "mean |dT1|", "critical error modes", "cases scored"]
    dice = status.outcomes[0]
    assert dice.value == pytest.approx((0.89 + 0.88 + 0.90) / 3)  # cases 1 (second attempt), 4, 5
    assert dice.why == "mean Dice 0.89 over the last 3 cases, needs >= 0.85"
    # A later poor attempt: no longer met now, the date first met is kept.
    db.score("IMPROVE^ANN", CASES[5], _day(9), [SliceFigures(0.60, 80.0, "part_missed")])
    with db.factory.begin() as session:
        later = evaluate(session, "IMPROVE^ANN", "basic T1")
        assert session.scalars(select(Accreditation)).one().met_at.date() == _day(5).date()
    assert not later.met and later.met_at == _day(5).date()
    assert "a sector of the wall left out (part_missed) in 1 of the last 3 cases" in later.outcomes[2].why


def test_accreditation_persistent_error_mode_does_not_pass(db: ProgrammeDatabase) -> None:
    _programme(db)
    with db.factory.begin() as session:
        bob = evaluate(session, "Bob Fat", "basic T1")
        cat = evaluate(session, "Cat Good", "basic T1")
        assert session.scalars(select(Accreditation)).all() == []
    assert not bob.met and bob.met_at is None
    by_name = {o.name: o for o in bob.outcomes}
    assert by_name["mean Dice"].met  # a good overlap does not hide the error mode
    assert not by_name["critical error modes"].met
    assert by_name["critical error modes"].why == (
        "critical error mode: epicardial border drawn outside the fat (epicardial_fat) in 3 of the last 3 cases")
    assert by_name["mean |dT1|"].why == "mean |dT1| 35.0 ms over the last 3 cases, needs <= 30 ms"
    assert not cat.met and {o.name: o for o in cat.outcomes}["cases scored"].why == "2 cases scored, needs >= 3"
    with db.factory.begin() as session:
        training_sets.set_criteria(session, "basic T1", Criteria(no_critical_error=False))
        (unset,) = evaluate(session, "Cat Good", "basic T1").outcomes
    assert not unset.met and unset.why == "no accreditation criteria are set for this training set"


def test_team_summary(db: ProgrammeDatabase) -> None:
    _programme(db)
    with db.factory.begin() as session:
        summary = team_summary(session, "north")
        with pytest.raises(people.PeopleError, match="no reader belongs to team 'west'"):
            team_summary(session, "west")
    assert [p.reader for p in summary.trainees] == ["Ann Improving", "Bob Fat", "Cat Good"]
    assert summary.ready == ["Ann Improving"]
    case5 = next(c for c in summary.cases if c.case_label == "case 5")
    assert case5.readers == ["Ann Improving", "Bob Fat", "Cat Good"]  # Dan is in another team
    assert case5.dice_mean == pytest.approx((0.90 + 0.87 + 0.90) / 3)
    assert case5.dice_sd == pytest.approx(0.01414, abs=1e-4)
    t1 = [1015.0, 950.0, 1050.0]
    mean = sum(t1) / 3
    sd = (sum((v - mean) ** 2 for v in t1) / 3) ** 0.5
    assert case5.t1_cv_percent == pytest.approx(100 * sd / mean)
    assert case5.t1_mean_ms == pytest.approx(mean)
    assert case5.t1_difference_mean_ms == pytest.approx((15.0 - 35.0 + 5.0) / 3)
    # Pairs: Ann-Bob (0.80 and 0.78), Ann-Cat (0.82 and 0.84), Bob-Cat (0.76); the expert is left out.
    assert case5.inter_observer_dice == pytest.approx(((0.80 + 0.78) / 2 + (0.82 + 0.84) / 2 + 0.76) / 3)
    case6 = next(c for c in summary.cases if c.case_label == "case 1")
    assert case6.readers == ["Ann Improving", "Bob Fat"]


def test_visible_readers_per_role(db: ProgrammeDatabase) -> None:
    _programme(db)
    with db.factory.begin() as session:
        for username in ("admin", "sue", "ann", "orphan"):
            session.add(WebUser(username=username, password_hash="x"))
        session.flush()
        people.link_user(session, "sue", "Sue Supervisor", role="supervisor")
        people.link_user(session, "ann", "Ann Improving", role="trainee")
        with pytest.raises(people.PeopleError, match="is a trainee: link them"):
            people.link_user(session, "orphan", None, role="trainee")
        with pytest.raises(people.PeopleError, match="unknown web role"):
            people.link_user(session, "orphan", None, role="owner")
        users = {u.username: u for u in session.scalars(select(WebUser))}
        assert users["admin"].role == "admin"
        every = sorted(session.scalars(select(Reader.name)))
        assert visible_readers(session, users["admin"]) == every
        assert visible_readers(session, users["sue"]) == ["Ann Improving", "Bob Fat", "Cat Good", "Sue Supervisor"]
        assert visible_readers(session, users["ann"]) == ["Ann Improving"]
        users["orphan"].role = "trainee"
        assert visible_readers(session, users["orphan"]) == []
