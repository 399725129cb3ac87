"""Database handle: engine, transactions, migrations."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext, suppress
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import structlog
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

log = structlog.get_logger()

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
AUTOCHECKPOINT_PAGES = 16_384  # 64 MiB of 4 KiB pages
JOURNAL_SIZE_LIMIT = 64 << 20  # bytes the log file is truncated to after a checkpoint


# SQLite: writers take the write lock at BEGIN (BEGIN IMMEDIATE) so two writers never
# deadlock upgrading a read lock; read-only transactions use a plain deferred BEGIN.
_immediate: ContextVar[bool] = ContextVar("befriend_sqlite_immediate", default=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    # Commits checkpoint the log themselves only past this many pages (a backstop): a
    # server runs ``Database.checkpoint`` in the background instead.
    cur.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
    cur.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if _immediate.get() else "BEGIN")


# Session.info keys with this prefix describe the current transaction: cleared when it ends
TXN_INFO = "befriend.txn."
_ON_ROLLBACK = TXN_INFO + "on_rollback"  # callables to run if it rolls back


def on_rollback(session: Session, fn: Callable[[], None]) -> None:
    """Run ``fn`` once if this session's transaction rolls back (e.g. an in-memory index
    that took in rows the transaction wrote forgets them); dropped when it commits."""
    hooks = session.info.setdefault(_ON_ROLLBACK, [])
    if fn not in hooks:
        hooks.append(fn)


def _end_transaction(session: Session) -> None:
    for key in [k for k in session.info if isinstance(k, str) and k.startswith(TXN_INFO)]:
        del session.info[key]


CommitListener = Callable[[Mapping[str, Any]], None]


def _committed(listeners: list[weakref.WeakMethod[CommitListener]]) -> Callable[[Session], None]:
    def after_commit(session: Session) -> None:
        info = dict(session.info)
        _end_transaction(session)
        for ref in list(listeners):
            fn = ref()
            if fn is None:
                with suppress(ValueError):  # (another thread's commit removed it first)
                    listeners.remove(ref)
                continue
            try:
                fn(info)
            except Exception:  # committed all the same: a listener's caches only
                log.exception("commit.listener_failed", listener=repr(fn))

    return after_commit


def _rolled_back(session: Session) -> None:
    hooks = session.info.get(_ON_ROLLBACK, ())
    _end_transaction(session)
    for fn in hooks:
        fn()


class Database:
    """Owns the engine. ``transaction()`` yields a Session committed on success."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        parsed = make_url(url)
        self.url = url
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._commit_listeners: list[weakref.WeakMethod[CommitListener]] = []
        event.listen(self._sessions, "after_commit", _committed(self._commit_listeners))
        event.listen(self._sessions, "after_rollback", _rolled_back)
        self._writer = threading.Lock()

    @contextmanager
    def transaction(self, *, readonly: bool = False) -> Iterator[Session]:
        """One transaction; committed when the block succeeds, rolled back otherwise.

        SQLite has one writer at a time: this process's writing transactions queue on a
        lock here, each woken the moment the previous one ends, rather than in SQLite's
        busy handler, which polls with sleeps of up to 100 ms (8 concurrent uploads ran at
        half the throughput of one). Other processes still meet the busy timeout."""
        flag = _immediate.set(not readonly)
        gate = self._writer if self.is_sqlite and not readonly else nullcontext()
        try:
            with gate, self._sessions() as session, session.begin():
                yield session
        finally:
            _immediate.reset(flag)

    def on_commit(self, method: CommitListener) -> None:
        """Call the bound ``method`` with each committed transaction's ``Session.info`` (its
        ``TXN_INFO`` keys describe what it wrote), e.g. for an in-memory index to take in
        the rows this process wrote without reading them back. Held by a weak reference:
        it stops when its object is gone. A failure is logged, the commit stands."""
        self._commit_listeners.append(weakref.WeakMethod(method))

    def checkpoint(self) -> None:
        """SQLite: copy the write-ahead log into the database file, PASSIVE (never waits on
        readers or writers). Run in the background, so that commits on the request path do
        not pay for it (by default every 1,000 pages, ~20-30 ms, fell on some commit)."""
        if not self.is_sqlite:
            return
        raw = self.engine.raw_connection()
        try:
            raw.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").close()  # type: ignore[union-attr]
        finally:
            raw.close()

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        with self.engine.begin() as connection:
            cfg = alembic_config()
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")

    def is_migrated(self) -> bool:
        return "alembic_version" in inspect(self.engine).get_table_names()

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url)
    return cfg
