"""Database URLs: one PostgreSQL driver for every spelling, and a ``%`` anywhere in the URL survives the migration."""

from __future__ import annotations

from pathlib import Path

import pytest

from db.migrate import alembic_config, upgrade
from db.session import POSTGRES_DRIVER, database_url, make_engine

ENCODED = "postgresql://myomap:p%25a%40b%2Fc@db.example:5432/myomap"


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", f"postgresql+{POSTGRES_DRIVER}"])
def test_postgresql_urls_use_the_installed_driver(scheme: str) -> None:
    url = database_url(f"{scheme}://myomap:p%25a%40b%2Fc@db.example/myomap")
    assert url.drivername == "postgresql+psycopg2"
    assert (url.username, url.password, url.host, url.database) == ("myomap", "p%a@b/c", "db.example", "myomap")
    engine = make_engine(f"{scheme}://myomap@db.example/myomap")  # no connection is made until one is asked for
    assert engine.dialect.driver == "psycopg2"
    engine.dispose()


def test_other_urls_are_kept() -> None:
    assert database_url("sqlite:///a/b.db").drivername == "sqlite"
    assert database_url("postgresql+psycopg://x@h/d").drivername == "postgresql+psycopg"  # a site's explicit choice


def test_a_percent_in_the_url_reaches_alembic_unchanged() -> None:
    assert alembic_config(ENCODED).get_main_option("sqlalchemy.url") == ENCODED


def test_migration_of_a_database_whose_path_holds_a_percent(tmp_path: Path) -> None:
    folder = tmp_path / "100%25 full"  # what a URL-encoded mount point looks like on disk
    engine = make_engine(f"sqlite:///{folder / 'node.db'}")
    upgrade(engine)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM web_session").scalar() == 0
    engine.dispose()
