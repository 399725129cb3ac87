"""Lean bulk inserts for the hot upload path: one DBAPI ``executemany`` on SQLite and one
``COPY … FROM STDIN`` on PostgreSQL, with each column's bind processing done by SQLAlchemy's
own type processors (so values are stored exactly as the ORM would store them)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import JSON, Table, bindparam, insert, update
from sqlalchemy.orm import Session


def bulk_insert(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) into ``table`` within the session's
    transaction."""
    if not rows:
        return
    conn = session.connection()
    dialect = conn.dialect
    columns = list(rows[0])
    procs: list[Any] = [table.c[c].type.bind_processor(dialect) for c in columns]
    if dialect.name == "postgresql":  # COPY takes JSON as text; psycopg adapts it otherwise
        procs = [
            json.dumps if isinstance(table.c[c].type, JSON) else proc
            for c, proc in zip(columns, procs, strict=True)
        ]

    # Columns are often one value for every row (the transaction's timestamp): process a
    # value again only when it is not the very object processed last.
    last_in: list[Any] = [object()] * len(columns)
    last_out: list[Any] = [None] * len(columns)

    def values(row: Mapping[str, Any]) -> tuple[Any, ...]:
        out = []
        for i, c in enumerate(columns):
            value, proc = row[c], procs[i]
            if proc is None or value is None:
                out.append(value)
            elif value is last_in[i]:
                out.append(last_out[i])
            else:
                last_in[i], last_out[i] = value, proc(value)
                out.append(last_out[i])
        return tuple(out)

    if dialect.name == "postgresql":
        raw: Any = conn.connection.dbapi_connection  # a psycopg Connection
        names = ", ".join(dialect.identifier_preparer.quote(c) for c in columns)
        with raw.cursor() as cur, cur.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(values(row))
        return
    compiled = insert(table).compile(dialect=dialect, column_keys=columns)
    if compiled.positional:
        order = [columns.index(name) for name in compiled.positiontup or ()]
        params: list[Any] = [tuple(v[i] for i in order) for v in map(values, rows)]
    else:
        params = [dict(zip(columns, v, strict=True)) for v in map(values, rows)]
    conn.exec_driver_sql(str(compiled), params)


def bulk_update(
    session: Session, table: Table, rows: Sequence[Mapping[str, Any]], *, bump: str = ""
) -> None:
    """Update rows by primary key ``id`` in one executemany: each row is ``{"id": pk,
    column: value, ...}`` with the same columns; ``bump`` names an integer column to
    increment (an etag version)."""
    if not rows:
        return
    columns = [c for c in rows[0] if c != "id"]
    statement = (
        update(table)
        .where(table.c.id == bindparam("_id"))
        .values({c: bindparam(f"_{c}") for c in columns})
    )
    if bump:
        statement = statement.values({bump: table.c[bump] + 1})
    session.connection().execute(statement, [{f"_{k}": v for k, v in row.items()} for row in rows])
