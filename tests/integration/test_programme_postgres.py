"""The training programme's queries and accreditation on both databases (SQLite and a real PostgreSQL server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reports.programme.accreditation import evaluate
from reports.programme.queries import team_summary, trainee_progress
from tests.unit.programme.builders import ProgrammeDatabase
from tests.unit.programme.test_programme import _day, _programme

pytestmark = pytest.mark.integration


def test_progress_team_and_accreditation(database_url: str, tmp_path: Path) -> None:
    db = ProgrammeDatabase(tmp_path, database_url)
    try:
        _programme(db)
        with db.factory.begin() as session:
            ann = evaluate(session, "Ann Improving", "basic T1")
            bob = evaluate(session, "Bob Fat", "basic T1")
            progress = trainee_progress(session, "Ann Improving")
            team = team_summary(session, "north")
        assert ann.met and ann.met_at == _day(5).date()
        assert not bob.met and "epicardial_fat" in bob.outcomes[2].why
        assert [a.received_at for a in progress.attempts] == sorted(a.received_at for a in progress.attempts)
        assert progress.attempts[0].received_at == _day(1)
        assert team.ready == ["Ann Improving"]
    finally:
        db.engine.dispose()
