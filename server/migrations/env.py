"""Alembic environment: runs on a connection handed over by Database.migrate(), or on
``sqlalchemy.url`` for ``alembic`` command-line use (e.g. autogenerate)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from befriend.server.storage.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite://")
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()
