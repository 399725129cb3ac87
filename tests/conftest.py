"""Shared fixtures: databases (SQLite and PostgreSQL) and a real server on 127.0.0.1:0.

PostgreSQL comes from BEFRIEND_TEST_POSTGRES_URL (default: the CI service,
postgresql+psycopg://postgres@127.0.0.1:5432/test). A private database is created for the
test session and dropped afterwards. Without CI=true an unreachable PostgreSQL skips its
half; with CI=true it fails the run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url

from befriend.server import config
from befriend.server.storage.db import Database
from befriend.server.storage.models import Base

PG_URL = os.environ.get(
    "BEFRIEND_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _postgres_database() -> Iterator[str]:
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"befriend_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        message = f"PostgreSQL at {PG_URL} is not reachable: {exc.__class__.__name__}: {exc}"
        if IN_CI:
            pytest.fail(f"{message} (CI=true requires it)", pytrace=False)
        pytest.skip(message)
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database per backend for the whole session."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'befriend.db'}"
        Database(url).migrate()
        yield url
        return
    gen = _postgres_database()
    url = next(gen)
    Database(url).migrate()
    yield url
    next(gen, None)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """The session database, emptied before each test."""
    database = Database(database_url)
    with database.transaction() as session:
        for table in reversed(Base.metadata.sorted_tables):
            session.execute(table.delete())
    yield database
    database.dispose()


@dataclass
class RunningServer:
    target: str
    port: int
    server: object  # BefriendServer
    service_token: str


SERVICE_TOKEN = "test-service-token"


@asynccontextmanager
async def serve(db: Database, **overrides: object) -> AsyncIterator[RunningServer]:
    """A real server on 127.0.0.1:0 over ``db``; ``overrides`` change its settings."""
    from befriend.server.app import BefriendServer

    settings = config.from_env(
        {},
        **{
            "host": "127.0.0.1",
            "port": 0,
            "database_url": db.url,
            "metrics_port": -1,
            "service_token": SERVICE_TOKEN,
            "grace_seconds": 2.0,
            "db_threads": 4,
            **overrides,
        },
    )
    server = BefriendServer(settings, Database(db.url))
    port = await server.start()
    try:
        yield RunningServer(f"127.0.0.1:{port}", port, server, SERVICE_TOKEN)
    finally:
        await server.stop(grace=1.0)


@pytest.fixture
async def running_server(db: Database) -> AsyncIterator[RunningServer]:
    async with serve(db) as server:
        yield server


@contextmanager
def statements_run(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements ``engine`` runs inside the block (BEGIN left out)."""
    seen: list[str] = []

    def record(_c: object, _cur: object, statement: str, *_: object) -> None:
        if statement != "BEGIN":
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
def other_db(tmp_path: Path) -> Iterator[Database]:
    """A second, separate database (SQLite, migrated, empty) beside ``db``."""
    database = Database(f"sqlite:///{tmp_path / 'other.db'}")
    database.migrate()
    yield database
    database.dispose()
