"""Bring a database to the newest schema with the Alembic migrations shipped in db/alembic."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")


def alembic_config(url: str) -> Config:
    """The Alembic configuration of the shipped migrations for ``url``.

    Alembic keeps options in a ``configparser``, which reads ``%`` as the start of an interpolation: an encoded
    password (``%40``) or a socket path would crash it, so each ``%`` is doubled on the way in.
    """
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(ALEMBIC_INI.parent / "alembic").replace("%", "%%"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(engine: Engine) -> None:
    """Apply every pending migration (idempotent; safe on each start)."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
