"""Writes sent ahead on PostgreSQL: statements whose results nobody waits for go out in
libpq's pipeline mode, and PostgreSQL works on them while this process goes on with its own
work (the next chunk of an upload: validation, normalisation, its rows).

Without it, an upload ran one thing at a time: the server's Python waited for each COPY to
finish, and PostgreSQL waited for the next one. 20 chunks of 500 contact rows and 650 key
rows, with 5 ms of Python each, took 292.9 ms by COPY and 159.9 ms sent ahead, the
database's own work 149 and 136 ms (``python -m benchmarks pipeline``).

The pipeline is opened by the first write sent ahead (``send``) and closed, waiting for
every result and raising the first error, before anything else uses the connection
(``settle``): every statement SQLAlchemy runs, each commit and rollback, the pool's reset,
and raw uses of the driver (COPY cannot run in a pipeline). So the rest of the code never
runs in pipeline mode, where a statement's row count is not known until its result is read.
A failed write sent ahead surfaces there, within its transaction, which then rolls back.
SQLite has no pipeline: its writes run at once (``bulk.insert_ahead``), as PostgreSQL's do
through a libpq older than 14."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry

# the pooled connection's info: the open pipeline's context manager
_OPEN = "befriend_pipeline"
# libpq has pipeline mode from version 14 (psycopg[binary] bundles a newer one); with an
# older one ``send`` runs each write at once
_SUPPORTED = psycopg.Pipeline.is_supported()


def send(session: Session, sql: str, params: Sequence[Any]) -> Any:
    """Run ``sql`` with ``params`` (psycopg's ``%s``/``%b``) on the session's connection in its
    pipeline, opened if it is not; returns the DBAPI cursor, whose rows (a RETURNING) can be
    fetched once the pipeline has settled (after the commit, for instance)."""
    conn = session.connection()
    fairy = conn.connection
    raw: Any = fairy.dbapi_connection
    if _OPEN not in fairy.info and _SUPPORTED:
        _install(conn.engine)
        pipeline: AbstractContextManager[Any] = raw.pipeline()
        pipeline.__enter__()
        fairy.info[_OPEN] = pipeline
    cur = raw.cursor()
    try:
        cur.execute(sql, params)
    except psycopg.Error as exc:  # run at once (no pipeline): raised as a statement's would be
        raise DBAPIError.instance(sql, None, exc, psycopg.Error) from exc  # (not the rows)
    return cur


def settle(info: dict[Any, Any], *, raising: bool = True) -> None:
    """Close the pipeline of the pooled connection whose ``info`` this is, if one is open:
    wait for every result of the statements sent ahead, and raise the first error (unless
    not ``raising``: before a rollback, which discards them anyway)."""
    pipeline = info.pop(_OPEN, None)
    if pipeline is None:
        return
    try:
        pipeline.__exit__(None, None, None)
    except psycopg.Error:
        if raising:
            raise


def driver_connection(session: Session) -> Any:
    """The session's driver connection (psycopg's, sqlite3's) for a raw use (a COPY, a
    read at the driver), its pipeline settled first."""
    fairy = session.connection().connection
    settle(fairy.info)
    return fairy.dbapi_connection


def _before_execute(conn: Connection, *_: Any) -> None:
    # (raised inside the statement's execution: SQLAlchemy wraps the driver's error, and
    # invalidates the connection when it was lost)
    settle(conn.connection.info)


def _before_commit(conn: Connection) -> None:
    try:
        settle(conn.connection.info)
    except psycopg.Error as exc:  # as SQLAlchemy raises a driver's error (IntegrityError …)
        raise DBAPIError.instance(None, None, exc, psycopg.Error) from exc


def _before_rollback(conn: Connection) -> None:
    settle(conn.connection.info, raising=False)


def _before_reset(
    dbapi_connection: Any, connection_record: ConnectionPoolEntry, reset_state: Any
) -> None:
    settle(connection_record.info, raising=False)


def _install(engine: Engine) -> None:
    """Settle the pipeline before every statement, commit and rollback of ``engine`` and
    before its pool resets a connection (once per engine)."""
    if event.contains(engine, "commit", _before_commit):
        return
    event.listen(engine, "before_cursor_execute", _before_execute)
    event.listen(engine, "commit", _before_commit)
    event.listen(engine, "rollback", _before_rollback)
    event.listen(engine.pool, "reset", _before_reset)
