"""Alembic environment: the connection or URL comes from the caller (db.migrate), never from a file."""

from alembic import context
from sqlalchemy import create_engine

from db.models import Base
from db.session import database_url

config = context.config
connection = config.attributes.get("connection")

if connection is None:
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("no sqlalchemy.url: run the migrations through db.migrate")
    engine = create_engine(database_url(url))
    with engine.begin() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
