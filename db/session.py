"""The database engine: SQLite in WAL mode by default, PostgreSQL by URL.

PostgreSQL is reached through psycopg2 (the ``postgres`` extra installs ``psycopg2-binary``): a plain
``postgresql://`` or ``postgres://`` URL is taken to mean ``postgresql+psycopg2://``, since SQLAlchemy 2.1 would
otherwise pick psycopg 3, which the node does not install. A password with reserved characters is written
percent-encoded (``%40`` for ``@``, ``%2F`` for ``/``, ``%25`` for ``%``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

#: The one PostgreSQL driver of the node: extras, tests and docs use it.
POSTGRES_DRIVER = "psycopg2"


def database_url(url: str | URL) -> URL:
    """``url`` parsed, with a PostgreSQL URL that names no driver given the node's (``postgresql+psycopg2``).

    Raises
    ------
    sqlalchemy.exc.ArgumentError
        If ``url`` is not a database URL.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername=f"postgresql+{POSTGRES_DRIVER}")
    return parsed


def make_engine(url: str | URL) -> Engine:
    """Create the engine; SQLite gets WAL, synchronous=NORMAL, foreign keys and a busy timeout.

    In WAL mode with synchronous=NORMAL a committed transaction survives a killed process (it is in the WAL file,
    which the operating system keeps); only an OS crash or power loss can roll back the last commits. The durable
    record of a received instance is its fsynced file, and :func:`dicomnode.store.reconcile.reconcile_storage` rebuilds
    any row such a loss took at the next start, so the commit need not wait for the disk.
    """
    url = database_url(url)
    if url.get_backend_name() == "sqlite":
        database = url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
