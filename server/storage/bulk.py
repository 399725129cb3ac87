"""Lean bulk inserts for the hot upload path: multi-row ``INSERT … VALUES`` statements on
SQLite; on PostgreSQL one binary ``COPY … FROM STDIN``, or, for the rows of an upload's
chunks, one ``INSERT … SELECT FROM unnest`` sent ahead in the connection's pipeline
(``insert_ahead``, ``befriend.server.storage.pipeline``). Each column's bind processing is
done by SQLAlchemy's own type processors (so values are stored exactly as the ORM would store
them).

Not ``executemany`` on SQLite: the sqlite3 module releases the GIL around each row's step and
must take it back for the next row, and while another thread of the server runs Python (the
event loop reading the next chunk, another request) each take waits for that thread to give
the GIL up, up to the switch interval (5 ms). 13,000 entry_keys rows took 127 ms alone and 60
s beside a thread running Python; as multi-row statements of 5,000 rows, 79 ms alone and 112
ms beside it. The server's statements carry up to 8,192 values each (``_sqlite_batches``)."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import numpy as np
import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.types.string import BytesBinaryDumper
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    TypeDecorator,
    insert,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Session

from befriend.server.storage.pipeline import send, settle


def _processor(table: Table, column: str, dialect: Dialect) -> Callable[[Any], Any] | None:
    """How a value of the column is bound, as the ORM would bind it, minus driver work that
    changes nothing stored: on SQLite a datetime becomes the string the sqlite3 module's
    default adapter writes (``isoformat(" ")``), and bytes stay bytes (not a memoryview);
    on PostgreSQL bytes stay bytes too (not psycopg's DB-API ``Binary`` wrapper, which binary
    COPY's compiled bytea dumper does not take) and JSON is the document as a string."""
    kind = table.c[column].type
    proc = kind.bind_processor(dialect)
    if dialect.name == "postgresql":
        if isinstance(kind, LargeBinary):
            return None
        return json.dumps if isinstance(kind, JSON) else proc
    if dialect.name != "sqlite":
        return proc
    if isinstance(kind, LargeBinary):
        return None if proc is None else (lambda v: v if type(v) is bytes else proc(v))
    if not isinstance(kind, DateTime) and not isinstance(getattr(kind, "impl", None), DateTime):
        return proc

    def sqlite_value(value: Any) -> Any:
        out = proc(value) if proc is not None else value
        return out.isoformat(" ") if isinstance(out, datetime) else out

    return sqlite_value


def db_value(session: Session, table: Table, column: str, value: Any) -> Any:
    """One value as bulk inserts bind it (for constants of a hand-written statement)."""
    return _bound(value, _processor(table, column, session.connection().dialect))


# resolves with_variant and decorated types for PostgreSQL
_PG: Dialect = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]


def _pg_copy_type(kind: Any) -> str | None:
    """The PostgreSQL type whose binary format a value of the column type is sent in by
    COPY (PostgreSQL applies no cast: the bytes go to the column's own receive function),
    or None for a type without one here. JSON is sent as text, the value being the JSON
    document as a string (json_recv reads text; psycopg's json dumper would encode a string
    again); varchar as text (the same binary format; the length limit is still checked)."""
    t = kind.dialect_impl(_PG)
    if isinstance(t, TypeDecorator):
        t = t.load_dialect_impl(_PG).dialect_impl(_PG)
    if isinstance(t, DateTime):
        return "timestamptz" if t.timezone else "timestamp"
    if isinstance(t, postgresql.JSONB):
        return None
    return next((name for base, name in _COPY_TYPES if isinstance(t, base)), None)


# (SQLAlchemy type, PostgreSQL binary COPY type), subclasses before their bases
_COPY_TYPES: tuple[tuple[type[Any], str], ...] = (
    (Boolean, "bool"),
    (SmallInteger, "int2"),
    (BigInteger, "int8"),
    (Integer, "int4"),
    (String, "text"),
    (LargeBinary, "bytea"),
    (JSON, "text"),
)


@lru_cache(maxsize=128)
def _copy_types(table: Table, columns: tuple[str, ...]) -> tuple[str, ...] | None:
    """The COPY types of ``columns`` of ``table``; None when one has no binary type here."""
    types = [_pg_copy_type(table.c[c].type) for c in columns]
    return None if None in types else tuple(t for t in types if t is not None)


def _copy_in(
    conn: Connection, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """PostgreSQL: ``rows`` into ``table`` by one ``COPY … FROM STDIN``, in the binary format
    when every column has a binary type here (no text escaping of each value by psycopg, no
    text parsing of each field by PostgreSQL: 49 -> 28 ms for 4,800 entry_keys rows)."""
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in columns)
    types = _copy_types(table, tuple(columns))
    settle(conn.connection.info)  # (no COPY in a pipeline)
    raw: Any = conn.connection.dbapi_connection  # a psycopg Connection
    binary = " (FORMAT BINARY)" if types is not None else ""
    with raw.cursor() as cur:
        if types is not None and "bytea" in types:
            # By type, psycopg dumps bytea through its DB-API Binary wrapper's dumper, in
            # Python (~0.4 µs a value); the values are bytes: its compiled dumper of bytes.
            cur.adapters.register_dumper(None, BytesBinaryDumper)
        with cur.copy(f"COPY {table.name} ({names}) FROM STDIN{binary}") as copy:
            if types is not None:
                copy.set_types(types)
            for row in rows:
                copy.write_row(row)


def insert_tuples(
    session: Session, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert rows given as tuples of values that need no bind processing (ints, strings,
    bytes, None; datetimes and JSON as ``db_value`` gives them): multi-row VALUES on SQLite
    (``insert_values``), binary COPY on PostgreSQL."""
    if not rows:
        return
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        _copy_in(conn, table, columns, rows)
        return
    insert_values(session, table, {}, columns, rows)


def insert_ahead(
    session: Session,
    table: Table,
    constants: Mapping[str, Any],
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
) -> None:
    """Insert ``rows`` (tuples over ``columns``, values as for ``insert_tuples``) with the
    ``constants`` (processed once, as the ORM binds them), without waiting for the database
    on PostgreSQL: one INSERT … SELECT FROM unnest of an array per column, sent ahead in the
    connection's pipeline (``pipeline.send``), the constants bound once. Its errors surface
    when the pipeline settles, within the transaction. SQLite: ``insert_values``."""
    if not rows:
        return
    if session.connection().dialect.name != "postgresql":
        insert_values(session, table, constants, columns, rows)
        return
    names = [*constants, *columns]
    types = _pg_types(table, tuple(names))
    # Binary parameters (%b): psycopg's text format of an array escapes each element in
    # Python (its client CPU doubled, and PostgreSQL's rose by 40 %, against COPY's).
    heads = [f"%b::{t}" for t in types[: len(constants)]]
    arrays = [f"%b::{t}[]" for t in types[len(constants) :]]
    sql = (
        f"INSERT INTO {table.name} ({', '.join(names)}) "
        f"SELECT {', '.join([*heads, 'u.*'])} FROM unnest({', '.join(arrays)}) AS u"
    )
    params = [db_value(session, table, c, v) for c, v in constants.items()]
    for t, values in zip(types[len(constants) :], zip(*rows, strict=True), strict=True):
        params.append(_int8_array(values) if t in _INTEGER_TYPES else list(values))
    send(session, sql, params)


_INTEGER_TYPES = frozenset({"BIGINT", "INTEGER", "SMALLINT"})


class _Int8Array:
    """Integers already in PostgreSQL's binary ``int8[]`` format (``_int8_array``)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class _Int8ArrayDumper(Dumper):
    format = Format.BINARY
    oid = 1016  # int8[]

    def dump(self, obj: Any) -> bytes:
        return bytes(obj.data)


# (registered once for the driver: only this module makes _Int8Array values)
psycopg.adapters.register_dumper(_Int8Array, _Int8ArrayDumper)
_INT8_ELEMENT = np.dtype([("size", ">i4"), ("value", ">i8")])


def _int8_array(values: Sequence[Any]) -> Any:
    """``values`` as one binary ``int8[]`` parameter, packed by numpy: psycopg's dumper of a
    list takes ~0.25 µs an element in Python (13,000 key rows of 5 integer columns: ~16 ms
    a 10,000-contact upload). A list holding None (or a value past int8, which PostgreSQL
    then refuses) stays a list, for psycopg's dumper."""
    try:
        ints = np.fromiter(values, np.int64, len(values))
    except (TypeError, OverflowError):
        return list(values)
    packed = np.empty(len(ints), _INT8_ELEMENT)
    packed["size"] = 8
    packed["value"] = ints
    # header: one dimension, no NULLs, int8 elements, its length, lower bound 1
    return _Int8Array(struct.pack(">iiIii", 1, 0, 20, len(ints), 1) + packed.tobytes())


@lru_cache(maxsize=128)
def _pg_types(table: Table, columns: tuple[str, ...]) -> tuple[str, ...]:
    """The PostgreSQL type of each of ``columns``, as SQL (a cast's target)."""
    return tuple(str(table.c[c].type.compile(dialect=_PG)) for c in columns)


# Values bound per multi-row statement on SQLite at most (its limit is 32,766).
_SQLITE_BATCH_VALUES = 8_192


def _sqlite_batches(count: int, width: int) -> Iterator[tuple[int, int]]:
    """(start, rows) of the statements that insert ``count`` rows of ``width`` values:
    full batches of the largest power of two rows within _SQLITE_BATCH_VALUES, then the
    rest by powers of two, largest first. So every statement has one of a dozen row counts
    per table, and the sqlite3 module's cache of prepared statements holds them all: a
    statement of its own length for each write would be prepared each time (2 ms for 1,000
    rows of 9 values)."""
    full = 1 << max(0, (_SQLITE_BATCH_VALUES // width).bit_length() - 1)
    start = 0
    while count - start >= full:
        yield start, full
        start += full
    rest = count - start
    while rest:
        rows = 1 << (rest.bit_length() - 1)
        yield start, rows
        start += rows
        rest -= rows


@lru_cache(maxsize=256)
def _sqlite_values_sql(head: str, width: int, rows: int, tail: str) -> str:
    """``head VALUES (?, …), … tail``: plain placeholders. Numbered ones (``?N``) make
    SQLite's prepare quadratic in their count: 3,333 rows of 9 took 995 ms against 8 ms."""
    group = f"({', '.join('?' * width)})"
    return f"{head} VALUES {', '.join([group] * rows)} {tail}"


def insert_values(
    session: Session,
    table: Table,
    constants: Mapping[str, Any],
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    conflict: Sequence[str] = (),
    returning: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """Insert ``rows`` (tuples over ``columns``, values needing no bind processing) with the
    ``constants`` (processed once, as the ORM binds them) in one statement per batch; with
    ``conflict``, rows whose ``conflict`` columns clash with a stored row are skipped.
    Returns the ``returning`` columns of the inserted rows (none without). SQLite only: one
    multi-row VALUES statement per batch of rows (see the module's note on executemany).
    PostgreSQL writes such rows by a binary COPY instead (``insert_tuples``,
    ``AddressBookRepository._insert_new``)."""
    if not rows:
        return []
    conn = session.connection()
    dialect = conn.dialect
    if dialect.name != "sqlite":
        raise NotImplementedError("insert_values is SQLite's path")
    quote = dialect.identifier_preparer.quote
    consts = [db_value(session, table, c, v) for c, v in constants.items()]
    names = ", ".join(quote(c) for c in [*constants, *columns])
    tail = ""
    if conflict:
        tail = f"ON CONFLICT ({', '.join(quote(c) for c in conflict)}) DO NOTHING"
    if returning:
        tail += f" RETURNING {', '.join(quote(c) for c in returning)}"
    head = f"INSERT INTO {table.name} ({names})"
    width = len(consts) + len(columns)
    out: list[tuple[Any, ...]] = []
    # At the DBAPI cursor: SQLAlchemy's result fetches the returned rows one by one.
    cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        for start, count in _sqlite_batches(len(rows), width):
            params: list[Any] = []
            for row in rows[start : start + count]:
                params.extend(consts)
                params.extend(row)
            out.extend(cur.execute(_sqlite_values_sql(head, width, count, tail), params).fetchall())
    finally:
        cur.close()
    return out


def bulk_insert(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) into ``table`` within the session's
    transaction."""
    if not rows:
        return
    conn = session.connection()
    dialect = conn.dialect
    columns = list(rows[0])
    # (COPY takes JSON as text on PostgreSQL; psycopg adapts it otherwise.)
    procs: list[Any] = [_processor(table, c, dialect) for c in columns]

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
        _copy_in(conn, table, columns, map(values, rows))
        return
    # SQLite: the columns given and any with a Python-side default, which the rows must
    # then carry (``columns.index`` fails otherwise).
    compiled = insert(table).compile(dialect=dialect, column_keys=columns)
    names = list(compiled.positiontup or ())
    order = [columns.index(name) for name in names]
    insert_values(
        session, table, {}, names, [tuple(v[i] for i in order) for v in map(values, rows)]
    )


def bulk_update(
    session: Session, table: Table, rows: Sequence[Mapping[str, Any]], *, bump: str = ""
) -> None:
    """Update rows by primary key ``id``: each row is ``{"id": pk, column: value, ...}``
    with the same columns; ``bump`` names an integer column to increment (an etag version).
    Each value is bound as ``bulk_insert`` binds it. PostgreSQL: one UPDATE … FROM
    ``unnest`` of one array per column; SQLite: ``_sqlite_update_from_values``."""
    if not rows:
        return
    conn = session.connection()
    dialect = conn.dialect
    columns = [c for c in rows[0] if c != "id"]
    quote = dialect.identifier_preparer.quote
    procs = list(zip(columns, (_processor(table, c, dialect) for c in columns), strict=True))
    # the rows as u(u_id, u0, u1, …), one alias per column
    names = ["u_id", *(f"u{i}" for i in range(len(columns)))]
    sets = [f"{quote(c)} = u.u{i}" for i, c in enumerate(columns)]
    if bump:
        sets.append(f"{quote(bump)} = {table.name}.{quote(bump)} + 1")
    update, where = f"UPDATE {table.name} SET {', '.join(sets)}", f"WHERE {table.name}.id = u.u_id"
    if dialect.name == "sqlite":
        values = [(row["id"], *(_bound(row[c], proc) for c, proc in procs)) for row in rows]
        _sqlite_update_from_values(session, names, f"{update} FROM u {where}", values)
        return
    arrays = ", ".join(f"%s::{t}[]" for t in _pg_types(table, ("id", *columns)))
    sql = f"{update} FROM unnest({arrays}) AS u({', '.join(names)}) {where}"
    params = [[row["id"] for row in rows]]
    params += [[_bound(row[c], proc) for row in rows] for c, proc in procs]
    conn.exec_driver_sql(sql, tuple(params))


def _bound(value: Any, proc: Callable[[Any], Any] | None) -> Any:
    return value if proc is None or value is None else proc(value)


def _sqlite_update_from_values(
    session: Session, names: Sequence[str], update_from: str, rows: Sequence[Sequence[Any]]
) -> None:
    """SQLite: ``update_from`` (an UPDATE … FROM u) with ``u(names)`` the ``rows`` (values
    bound already), as one VALUES list per batch of rows, not executemany (see the module's
    note): 2,000 contact_entries rows took 20 ms by executemany and 11 ms so; beside a
    thread running Python, 4.8 s against 48 ms. (Not for every table: 1,400 of 1M buddies
    rows by rowid, setting small values only, took 22 ms so against 13 ms by executemany.)"""
    width = len(names)
    head = f"WITH u({', '.join(names)}) AS ("
    tail = f") {update_from}"
    cur = session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        for start, count in _sqlite_batches(len(rows), width):
            params = [v for row in rows[start : start + count] for v in row]
            cur.execute(_sqlite_values_sql(head, width, count, tail), params)
    finally:
        cur.close()
