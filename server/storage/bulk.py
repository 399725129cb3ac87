"""Lean bulk inserts for the hot upload path: one DBAPI ``executemany`` on SQLite and one
``COPY … FROM STDIN`` on PostgreSQL, with each column's bind processing done by SQLAlchemy's
own type processors (so values are stored exactly as the ORM would store them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session


def bulk_insert(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) into ``table`` within the session's
    transaction."""
    if not rows:
        return
    conn = session.connection()
    dialect = conn.dialect
    columns = list(rows[0])
    procs = [table.c[c].type.bind_processor(dialect) for c in columns]

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
