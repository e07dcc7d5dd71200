"""The documented PostgreSQL URL on a real server: ``postgresql://`` with a password holding ``%``, ``@`` and ``/``
(percent-encoded in the URL), checked by the server with SCRAM, through the node's engine and its migrations."""

from __future__ import annotations

import uuid
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import OperationalError

from config.settings import Settings
from db.migrate import upgrade
from db.models import WebUser
from db.session import make_engine, make_session_factory
from reports.web.users import add_user
from tests.integration.conftest import LOOPBACK, PostgresServer

pytestmark = pytest.mark.integration

PASSWORD = "p%40ss@w/rd%"  # a literal "%40" too: it must not be decoded twice


def _password_role(server: PostgresServer) -> tuple[str, str]:
    """A role that must give its password (SCRAM) and a database it owns: (role, database)."""
    role = f"myomap_pw_{uuid.uuid4().hex[:8]}"
    database = f"{role}_db"
    hba = server.data_dir / "data" / "pg_hba.conf"
    # First matching line wins: this role alone must authenticate, the fixture's trust lines stay for the others.
    hba.write_text(f"host all {role} {LOOPBACK}/32 scram-sha-256\n" + hba.read_text())
    admin = create_engine(server.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text("SET password_encryption = 'scram-sha-256'"))
        connection.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD :password").bindparams(password=PASSWORD))
        connection.execute(text(f"CREATE DATABASE {database} OWNER {role}"))
        connection.execute(text("SELECT pg_reload_conf()"))
    admin.dispose()
    return role, database


def test_postgresql_url_with_reserved_characters_in_the_password(postgres_server: PostgresServer) -> None:
    role, database = _password_role(postgres_server)
    url = f"postgresql://{role}:{quote(PASSWORD, safe='')}@{LOOPBACK}:{postgres_server.port}/{database}"
    settings = Settings(database={"url": url})

    engine = make_engine(settings.database_url)
    upgrade(engine)  # the migration reads the URL back through Alembic's configparser
    upgrade(engine)
    factory = make_session_factory(engine)
    with factory() as session:
        add_user(session, "tech1", "sesame")
        session.commit()
    with factory() as session:
        assert session.scalars(select(WebUser.username)).all() == ["tech1"]
        assert session.execute(text("SELECT current_user")).scalar() == role
    assert engine.dialect.driver == "psycopg2"
    engine.dispose()

    wrong = make_engine(url.replace(quote(PASSWORD, safe=""), quote(PASSWORD[:-1], safe="")))
    with pytest.raises(OperationalError, match="password authentication failed"):
        wrong.connect().close()  # the server does check the password: the right one above was really sent
    wrong.dispose()
