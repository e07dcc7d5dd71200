"""The migration matches the models; repository queries on SQLite."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from db import repository
from db.migrate import upgrade
from db.models import Base, SeriesRole, SeriesState, utcnow
from db.session import make_engine, make_session_factory, session_scope
from tests.unit.db.programme_migration_checks import check_existing_users_become_admins_and_downgrade


def _factory(tmp_path: Path):  # noqa: ANN202
    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'node.db'}")
    upgrade(engine)
    return engine, make_session_factory(engine)


def test_migration_matches_models_and_is_idempotent(tmp_path: Path) -> None:
    engine, _ = _factory(tmp_path)
    upgrade(engine)  # a second run on every start changes nothing
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_series_lifecycle_queries(tmp_path: Path) -> None:
    _, factory = _factory(tmp_path)
    with session_scope(factory) as session:
        study = repository.get_or_create_study(session, study_instance_uid="1.2.3", patient_name="Doe^Jane")
        series = repository.get_or_create_series(
            session,
            study_id=study.id,
            series_instance_uid="1.2.3.4",
            role=SeriesRole.OTHER,
            expected_instances=None,
        )
        again = repository.get_or_create_series(
            session,
            study_id=study.id,
            series_instance_uid="1.2.3.4",
            role=SeriesRole.RAW_IR,
            expected_instances=2,
        )
        assert again.id == series.id and (again.role, again.expected_instances) == (SeriesRole.RAW_IR, 2)
        series_id = series.id
    with session_scope(factory) as session:
        repository.record_arrival(session, series_id=series_id, added=2, reopen=True)
    with session_scope(factory) as session:
        assert repository.series_expected_reached(session) == [(series_id, 0)]
        assert repository.series_quiet_since(session, before=utcnow() - timedelta(seconds=60)) == []
        assert repository.series_quiet_since(session, before=utcnow() + timedelta(seconds=1)) == [
            (series_id, 0)
        ]
        assert repository.mark_series_complete(session, series_id=series_id, revision=0)
        assert not repository.mark_series_complete(session, series_id=series_id, revision=0)
    with session_scope(factory) as session:
        repository.record_arrival(session, series_id=series_id, added=1, reopen=True)
        repository.record_arrival(session, series_id=series_id, added=0, reopen=True)  # already re-opened
    with session_scope(factory) as session:
        series = repository.get_series(session, series_id=series_id)
        assert (series.state, series.revision, series.n_instances) == (SeriesState.RECEIVING, 1, 3)
        repository.set_series_state(session, series_id=series_id, state=SeriesState.DONE)
    with session_scope(factory) as session:
        assert [s.id for s in repository.series_in_states(session, states=[SeriesState.DONE])] == [series_id]


def test_training_programme_migration_on_sqlite(tmp_path: Path) -> None:
    check_existing_users_become_admins_and_downgrade(f"sqlite:///{tmp_path / 'node.db'}")
