"""Checks of migration 0005 (training programme) run on SQLite by the unit tests and on PostgreSQL by the
integration tests."""

from __future__ import annotations

from alembic import command
from sqlalchemy import create_engine, text

from db.migrate import alembic_config


def check_existing_users_become_admins_and_downgrade(url: str) -> None:
    config = alembic_config(url)
    command.upgrade(config, "0004")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO web_user (username, password_hash, created_at) VALUES ('ops', 'x', :now)"),
            {"now": "2026-12-01 10:00:00+00:00"},
        )
        connection.execute(
            text("INSERT INTO reader (name, role, team, created_at) VALUES ('trainee1', 'trainee', 'A', :now)"),
            {"now": "2026-12-01 10:00:00+00:00"},
        )
    command.upgrade(config, "0005")
    with engine.begin() as connection:
        role, reader_id = connection.execute(text("SELECT role, reader_id FROM web_user")).one()
        assert (role, reader_id) == ("admin", None)
        reader = connection.execute(text("SELECT id FROM reader WHERE name = 'trainee1'")).scalar_one()
        connection.execute(
            text(
                "INSERT INTO web_user (username, password_hash, created_at, role, reader_id) "
                "VALUES ('t1', 'x', :now, 'trainee', :reader)"
            ),
            {"now": "2026-12-02 10:00:00+00:00", "reader": reader},
        )
        connection.execute(
            text(
                "INSERT INTO training_set (name, description, auto_consensus, criteria, created_at) "
                "VALUES ('basic', '', true, '{\"min_mean_dice\": 0.85}', :now)"
            ),
            {"now": "2026-12-02 10:00:00+00:00"},
        )
        set_id = connection.execute(text("SELECT id FROM training_set")).scalar_one()
        connection.execute(
            text(
                "INSERT INTO training_case (training_set_id, study_instance_uid, reference_policy, label) "
                "VALUES (:set_id, '1.2.3', 'expert_staple', 'case 1')"
            ),
            {"set_id": set_id},
        )
        connection.execute(
            text("INSERT INTO reader_alias (pattern, reader_id, created_at) VALUES ('DOE^T*', :reader, :now)"),
            {"reader": reader, "now": "2026-12-02 10:00:00+00:00"},
        )
    # Down and up again: the web users survive, their role comes back as admin.
    command.downgrade(config, "0004")
    with engine.begin() as connection:
        assert connection.execute(text("SELECT count(*) FROM web_user")).scalar_one() == 2
    command.upgrade(config, "0005")
    with engine.begin() as connection:
        assert set(connection.execute(text("SELECT role FROM web_user")).scalars()) == {"admin"}
        assert connection.execute(text("SELECT count(*) FROM training_set")).scalar_one() == 0
    engine.dispose()
