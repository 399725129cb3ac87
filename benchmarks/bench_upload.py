"""Address-book upload throughput over gRPC, with a million registered members.

For each database (SQLite file under a temp dir; PostgreSQL when reachable) and each member
table size (an empty member table as the baseline, then ``BEFRIEND_BENCH_MEMBERS``, default
1,000,000), a fresh database is migrated, bulk-loaded and settled (setup, not measured: see
``benchmarks/_population.py``, ``Loader.settle``), a real server starts in this process on
127.0.0.1:0, one member (the population's first CN member) registers over gRPC and, from a
client in a separate process (so that the server's process does the server's work only, as
the target is per server process), uploads a ``BEFRIEND_BENCH_BOOK`` (default 10,000)
contact book in 500-entry chunks on one UploadContacts stream. Each chunk also matches the
keys it added (buddy matching). Reported: contacts/s for the whole upload (one server
process), time per chunk (median / max of the non-final chunks) and of the final chunk.
Baselines in the same run: normalisation alone (``normalize_many`` over the book's raw
numbers) and the same upload against the empty member table.

Each case runs ``BEFRIEND_BENCH_REPEAT`` times (default 3), each on a fresh database and
server, and the verdict takes the median. Before the timed upload, a second member uploads
a ``BEFRIEND_BENCH_WARMUP``-contact book (default 1,000; 0 for none), not timed: the timed
upload then meets a server in its steady state (statements compiled, connections pooled),
as a long-running server is; a server's very first upload paid 10-20 ms more for that.

With members loaded, the uploader's reciprocal contacts (40 % of the 35 % member contacts)
hold the uploader's number in their own books, so registration and matching see real
holders. ``BEFRIEND_BENCH_STORED`` (default 0) gives every other member that many stored
phonebook entries, as rows of the reverse index only (``Loader.entry_keys``): the upload's
key rows then go into a table of members x STORED rows, and the server's in-memory holder
index holds them all, as on a server whose members have books (30: the reverse-lookup
benchmark's 30M). ``BEFRIEND_BENCH_DB=sqlite`` (or
``postgres``) runs one database only.
Then ``BEFRIEND_BENCH_CONCURRENT`` members (default 4; 0: none) upload
``BEFRIEND_BENCH_CONCURRENT_BOOK`` contacts each (default: the book's size) at once to one
server process, from one client process, each on its own channel (the members holding an
uploader back loaded as above; repeated and summarised by the median like the rest): the
server process's aggregate throughput.
``BEFRIEND_BENCH_BREAKDOWN=1`` adds, per database, the server-side chunk work without gRPC
(the same calls as the servicer) timed by phase (parse, convert, apply, match, commit) and by
SQL statement; ``BEFRIEND_BENCH_PROFILE=1`` adds a cProfile of it too (listing
``BEFRIEND_BENCH_PROFILE_LINES`` server functions, default 25); on PostgreSQL the breakdown
also prints the bytes of write-ahead log its chunk work wrote.
``BEFRIEND_BENCH_PERF=FILE`` records each timed upload with ``perf`` (``_perf_recorded``).
The server process's CPU time during the upload is printed beside the wall time (on a
shared machine contacts per CPU-second vary less than contacts/s), and so is the CPU time
of a local PostgreSQL server's processes (the concurrent case's too): when the two add up
to the wall time, nothing overlapped. Their sum over the wall time is printed as "cores
busy" (1.00: one waited for the other throughout; the machine's core count at most).
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import glob
import io
import multiprocessing
import os
import pstats
import signal
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from sqlalchemy import bindparam, text

from befriend.clients import AsyncClient
from befriend.clients.population import BookContact, Population, PopulationConfig, to_entry
from befriend.core.normalize import normalize_many
from befriend.v1 import friendship_pb2, friendship_pb2_grpc, sync_pb2, sync_pb2_grpc
from benchmarks._population import Loader, pg_reachable, scratch_postgres
from benchmarks._server import served

if TYPE_CHECKING:
    from befriend.server.storage.db import Database

TARGET = 50_000  # contacts/s per server process
QUOTA = 20_000  # the server's default daily key quota (the breakdown charges it too)
CHUNK = 500
PHONE_BOOK = sync_pb2.ADDRESS_BOOK_KIND_DEVICE_PHONE_BOOK


@dataclass
class Run:
    label: str
    load_s: float
    register_s: float
    total_s: float
    chunks_s: list[float]
    acked: int
    cpu_s: float = 0.0
    # ListBuddies after the upload, ms: the first call (it derives the phonebook part), then
    # the medians of the first page (member matches) and of a page of phonebook buddies
    list_ms: tuple[float, float, float] = (0.0, 0.0, 0.0)
    db_cpu_s: float = 0.0  # the local PostgreSQL server's processes (0 on SQLite)

    @property
    def rate(self) -> float:
        return self.acked / self.total_s

    @property
    def busy(self) -> float:
        return _busy(self.cpu_s, self.db_cpu_s, self.total_s)


def _busy(cpu_s: float, db_cpu_s: float, wall_s: float) -> float:
    """Cores the server and database processes kept busy on average during the upload: 1.0
    when one waits for the other throughout (nothing overlaps), up to the machine's cores."""
    return (cpu_s + db_cpu_s) / wall_s


def requests(
    entries: Sequence[sync_pb2.AddressBookEntry], upload_id: str
) -> list[sync_pb2.UploadContactsRequest]:
    out = []
    for n, start in enumerate(range(0, len(entries), CHUNK), start=1):
        out.append(
            sync_pb2.UploadContactsRequest(
                address_book_id="phone",
                address_book_kind=PHONE_BOOK,
                device_id="bench-device",
                upload_id=upload_id,
                sequence_number=n,
                entries=entries[start : start + CHUNK],
                final=start + CHUNK >= len(entries),
            )
        )
    return out


async def _send(
    target: str, token: str, wire: list[bytes], ready: asyncio.Event
) -> tuple[list[float], int]:
    """Stream the serialised chunks on one UploadContacts call once ``ready`` is set (the
    channel open, the requests parsed); returns (the time of each ack, ``perf_counter``, and
    the entries acknowledged). The upload must commit with no entry rejected."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = sync_pb2_grpc.SyncServiceStub(channel)
        md = (("authorization", f"Bearer {token}"),)
        reqs = [sync_pb2.UploadContactsRequest.FromString(w) for w in wire]

        async def feed() -> AsyncIterator[sync_pb2.UploadContactsRequest]:
            for r in reqs:
                yield r

        await ready.wait()
        marks: list[float] = []
        acked, committed = 0, False
        async for ack in stub.UploadContacts(feed(), metadata=md):
            marks.append(time.perf_counter())
            acked, committed = ack.acknowledged_entry_count, ack.committed
            if ack.rejections:
                raise SystemExit(f"upload rejected entries: {list(ack.rejections)[:3]}")
        if not committed:
            raise SystemExit("upload did not commit")
        return marks, acked


Sent = tuple[float, list[list[float]], int]  # start, each upload's ack times, entries acked


def _stream_uploads(target: str, uploads: list[tuple[str, list[bytes]]]) -> Sent:
    """The client side of uploads, run in its own process (so that the server process does
    only the server's work): every (token, serialised chunks) on its own channel and stream,
    all at once; returns (the start, each upload's ack times, the entries acknowledged)."""

    async def go() -> Sent:
        ready = asyncio.Event()
        tasks = [asyncio.create_task(_send(target, token, wire, ready)) for token, wire in uploads]
        await asyncio.sleep(0.2)  # channels open, requests parsed
        t0 = time.perf_counter()
        ready.set()
        done = await asyncio.gather(*tasks)
        return t0, [marks for marks, _ in done], sum(acked for _, acked in done)

    return asyncio.run(go())


def _stream_upload(target: str, token: str, wire: list[bytes]) -> tuple[float, list[float], int]:
    """One upload by ``_stream_uploads``: (seconds from the first send to the last ack, each
    chunk's time, entries acknowledged)."""
    t0, (marks,), acked = _stream_uploads(target, [(token, wire)])
    chunks = [b - a for a, b in zip([t0, *marks], marks, strict=False)]
    return marks[-1] - t0, chunks, acked


def _ready() -> None:
    """Nothing: warms the client process (imports) before anything is timed."""


async def _register(port: int, pop: Population, member: int) -> str:
    """Register ``member`` over gRPC; returns its token."""
    me = pop.member(member)
    client = AsyncClient(f"127.0.0.1:{port}", retries=0)
    try:
        await client.account.register(
            display_name=me.display_name, phone_numbers=[me.e164], region_code=me.region
        )
        assert client.token is not None
        return client.token
    finally:
        await client.close()


async def _upload(url: str, pop: Population, reqs: list[sync_pb2.UploadContactsRequest]) -> Run:
    wire = [r.SerializeToString() for r in reqs]
    loop = asyncio.get_running_loop()
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        await loop.run_in_executor(pool, _ready)
        async with served(url) as (_, port):
            if WARMUP_BOOK:
                # Another member's smaller book first, not timed: the timed upload then meets
                # a server in its steady state (statements compiled, pooled connections
                # opened), as a long-running server is.
                target = f"127.0.0.1:{port}"
                token = await _register(port, pop, UPLOADER[1])
                await loop.run_in_executor(pool, _stream_upload, target, token, WARMUP_WIRE)
            t = time.perf_counter()
            token = await _register(port, pop, UPLOADER[0])
            register_s = time.perf_counter() - t
            async with _perf_recorded():
                cpu, db_cpu = time.process_time(), _database_cpu()
                total, chunks, acked = await loop.run_in_executor(
                    pool, _stream_upload, f"127.0.0.1:{port}", token, wire
                )
                cpu = time.process_time() - cpu  # the server process's CPU time only
                db_cpu = _database_cpu() - db_cpu
            lists = await loop.run_in_executor(pool, _list_latency, f"127.0.0.1:{port}", token)
            return Run("", 0.0, register_s, total, chunks, acked, cpu, lists, db_cpu)


@asynccontextmanager
async def _perf_recorded() -> AsyncIterator[None]:
    """With ``BEFRIEND_BENCH_PERF=FILE``: ``perf record -g`` of this (the server's) process
    during the block, into FILE (each timed upload overwrites it: the last case's stays),
    or of every process on the machine with ``BEFRIEND_BENCH_PERF_ALL=1`` (PostgreSQL's
    backends too). Read it with ``perf report -i FILE``; Python frames show as the
    interpreter's C functions."""
    out = os.environ.get("BEFRIEND_BENCH_PERF")
    if not out:
        yield
        return
    scope = ["-a"] if os.environ.get("BEFRIEND_BENCH_PERF_ALL") else ["-p", str(os.getpid())]
    proc = await asyncio.create_subprocess_exec(
        *("perf", "record", "-g", "-F", "3999", *scope, "-o", out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(1.0)  # perf attached
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        await proc.wait()


def _database_cpu() -> float:
    """Seconds of CPU the local PostgreSQL server's processes have used (their scheduler
    statistics; 0 where /proc does not tell, and on SQLite, whose work is the server's)."""
    total = 0
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                if "(postgres)" not in f.read(64):
                    continue
            with open(stat.replace("/stat", "/schedstat")) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the process ended meanwhile
    return total / 1e9


def _list_latency(target: str, token: str) -> tuple[float, float, float]:
    """ListBuddies (100 per page) after the upload, in ms: the first call (it derives the
    phonebook part from the 10,000-contact book), then the median of 5 calls for the
    first page and for the page at offset 5,000 (phonebook buddies; the derived list is
    kept while the books and membership stay as they are). In the client's process, like
    the upload (a client channel in the server's process kept costing it CPU in the next
    run)."""
    return asyncio.run(_list_calls(target, token))


async def _list_calls(target: str, token: str) -> tuple[float, float, float]:
    md = (("authorization", f"Bearer {token}"),)
    out = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = friendship_pb2_grpc.FriendshipServiceStub(channel)

        async def page(page_token: str = "") -> float:
            t = time.perf_counter()
            await stub.ListBuddies(
                friendship_pb2.ListBuddiesRequest(page_size=100, page_token=page_token),
                metadata=md,
            )
            return (time.perf_counter() - t) * 1e3

        out.append(await page())
        for offset in (0, 5_000):
            walk = friendship_pb2.ListBuddiesRequest(page_size=1000)
            for _ in range(offset // 1000):  # the token is opaque: follow next tokens
                walk.page_token = (await stub.ListBuddies(walk, metadata=md)).next_page_token
            out.append(statistics.median([await page(walk.page_token) for _ in range(5)]))
    return out[0], out[1], out[2]


def _one(
    backend: str, members: int, pop: Population, reqs: list[sync_pb2.UploadContactsRequest]
) -> Run:
    from befriend.server.storage.db import Database

    def go(url: str) -> Run:
        db = Database(url)
        db.migrate()
        t = time.perf_counter()
        if members > 1:
            loader = Loader(db)
            _load_others(loader, pop, members)  # the uploader registers over gRPC
            n_rec, _, _ = pop.book_shape(len(BOOK_CACHE))
            holders = [c.index for c in BOOK_CACHE if c.reciprocal]
            assert len(holders) == n_rec
            loader.holders_of(pop, {h: [pop.key(UPLOADER[0])] for h in holders})
            _load_stored(loader, pop, members, UPLOADER)
            if not db.is_sqlite:
                loader.settle()
        load_s = time.perf_counter() - t
        db.dispose()
        os.sync()  # the setup's writes reach the disk now, not during the timed upload
        # The population and the loader's objects live in this process beside the server:
        # frozen out of the collector's reach, as they are not the server's (unfrozen, the
        # garbage of one run's ListBuddies made the next run's full collections walk them:
        # 30 % of its upload's CPU).
        gc.collect()
        gc.freeze()
        try:
            run = asyncio.run(_upload(url, pop, reqs))
        finally:
            gc.unfreeze()
        run.load_s = load_s
        run.label = f"{backend}, {members - 1 if members > 1 else 0:,} other members"
        if STORED and members > 1:
            run.label += f" x {STORED} stored entries"
        return run

    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as d:
            return go(f"sqlite:///{d}/befriend.db")
    with scratch_postgres() as url:
        return go(url)


BOOK_CACHE: list[BookContact] = []
# Population indices of the timed uploader (the first CN member) and of the warm-up
# uploader (the next CN member who is not a contact of the timed book); both register
# over gRPC.
UPLOADER = [0, 0]
# The warm-up upload's size (BEFRIEND_BENCH_WARMUP; 0: none) and its serialised chunks.
WARMUP_BOOK = int(os.environ.get("BEFRIEND_BENCH_WARMUP", "1000"))
WARMUP_WIRE: list[bytes] = []


# Phonebook entries stored per other member before the upload (BEFRIEND_BENCH_STORED; 0:
# none): rows of the reverse index only, so the upload's key rows go into key indexes of
# ``members x STORED`` entries, as they would on a server whose members have books.
STORED = int(os.environ.get("BEFRIEND_BENCH_STORED", "0"))


def _load_others(
    loader: Loader, pop: Population, members: int, skip: Sequence[int] = UPLOADER
) -> None:
    """Every member but those of ``skip`` (the uploaders, who register over gRPC)."""
    start = 0
    for u in sorted(set(skip)):
        if u > start:
            loader.members(pop, start, u)
        start = u + 1
    if start < members:
        loader.members(pop, start, members)


def _load_stored(loader: Loader, pop: Population, members: int, skip: Sequence[int]) -> None:
    """STORED phonebook entries of each member but those of ``skip`` (after the holders'
    books: these entries take the ids after theirs)."""
    if STORED:
        loader.entry_keys(pop, members, STORED, progress=False)
        with loader.db.engine.begin() as conn:
            skipped = [pop.user_id(u) for u in set(skip)]
            conn.execute(
                text("DELETE FROM entry_keys WHERE user_id IN :u").bindparams(
                    bindparam("u", expanding=True)
                ),
                {"u": skipped},
            )
        loader.entries_after_keys()


async def _concurrent_uploads(
    url: str, pop: Population, books: dict[int, list[BookContact]], warm_up: int
) -> tuple[float, float, float, int]:
    """Each uploader of ``books`` registers (and, first, ``warm_up`` uploads its untimed
    warm-up book), then all upload their books at once from a client process, each on its
    own channel; returns (wall seconds of the uploads, the server process's CPU
    seconds, the database's CPU seconds, contacts acknowledged)."""
    loop = asyncio.get_running_loop()
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        await loop.run_in_executor(pool, _ready)
        async with served(url) as (_, port):
            target = f"127.0.0.1:{port}"
            if WARMUP_BOOK:
                token = await _register(port, pop, warm_up)
                await loop.run_in_executor(pool, _stream_upload, target, token, WARMUP_WIRE)
            uploads = []
            for u, book in books.items():
                token = await _register(port, pop, u)
                entries = [to_entry(f"c{j:06d}", bc) for j, bc in enumerate(book)]
                wire = [r.SerializeToString() for r in requests(entries, f"bench-concurrent-{u}")]
                uploads.append((token, wire))
            cpu, db_cpu = time.process_time(), _database_cpu()
            t0, marks, acked = await loop.run_in_executor(pool, _stream_uploads, target, uploads)
            wall = max(m[-1] for m in marks) - t0
            return wall, time.process_time() - cpu, _database_cpu() - db_cpu, acked


def _concurrent(backend: str, members: int, pop: Population, n: int, size: int) -> float:
    """``n`` members upload ``size``-contact books at the same time to one server process
    (the rest of the ``members`` bulk-loaded; the members holding an uploader back hold
    its number in a book of theirs); returns the aggregate contacts/s."""
    from befriend.server.storage.db import Database

    books: dict[int, list[BookContact]] = {}  # uploader -> its book
    booked: set[int] = set()
    for i in range(members):  # CN members none of whose books names another uploader
        if pop.country_of(i).region != "CN" or i in booked:
            continue
        book = pop.book(i, size)
        names = {bc.index for bc in book}
        if names.isdisjoint(books):
            if len(books) == n:  # one more: it uploads the warm-up book
                warm_up = i
                break
            books[i] = book
            booked |= names
    else:
        raise SystemExit(f"fewer than {n + 1} members with disjoint books")

    def go(url: str) -> float:
        db = Database(url)
        db.migrate()
        loader = Loader(db)
        _load_others(loader, pop, members, [*books, warm_up])
        holding: dict[int, list[int]] = {}
        for u, book in books.items():
            for bc in book:
                if bc.reciprocal:
                    holding.setdefault(bc.index, []).append(pop.key(u))
        loader.holders_of(pop, holding)
        _load_stored(loader, pop, members, [*books, warm_up])
        if not db.is_sqlite:
            loader.settle()
        db.dispose()
        os.sync()
        gc.collect()
        gc.freeze()
        try:
            wall, cpu, db_cpu, acked = asyncio.run(_concurrent_uploads(url, pop, books, warm_up))
        finally:
            gc.unfreeze()
        print(
            f"{backend}, {n} concurrent uploads of {size:,} contacts, {members - n - 1:,} other "
            f"members: {acked:,} contacts in {wall:.3f} s = {acked / wall:,.0f} contacts/s "
            f"(server CPU {cpu:.3f} s = {acked / cpu:,.0f}/CPU-s, database CPU {db_cpu:.3f} s, "
            f"cores busy {_busy(cpu, db_cpu, wall):.2f})",
            flush=True,
        )
        return acked / wall

    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as d:
            return go(f"sqlite:///{d}/befriend.db")
    with scratch_postgres() as url:
        return go(url)


def _print(run: Run) -> None:
    body = sorted(run.chunks_s[:-1]) or [0.0]
    print(
        f"{run.label:<36} {run.acked:>7,} contacts in {run.total_s:7.3f} s "
        f"{run.rate:>9,.0f} contacts/s  chunk p50 {statistics.median(body) * 1e3:6.1f} ms "
        f"max {body[-1] * 1e3:6.1f} ms  final {run.chunks_s[-1] * 1e3:7.1f} ms  "
        f"CPU {run.cpu_s:.3f} s = {run.acked / run.cpu_s:,.0f}/CPU-s, database CPU "
        f"{run.db_cpu_s:.3f} s, cores busy {run.busy:.2f}  "
        f"(register {run.register_s * 1e3:.0f} ms; setup {run.load_s:.0f} s, not measured); "
        f"ListBuddies first call {run.list_ms[0]:.1f} ms, then p50 first page "
        f"{run.list_ms[1]:.1f} ms, phonebook page {run.list_ms[2]:.1f} ms",
        flush=True,
    )


@dataclass
class _Outer:
    """Statement time counted once: a driver-level call and the SQLAlchemy statements it
    runs (an executemany inside ``insert_tuples``) are both listed, but only the outermost
    adds to ``total``."""

    depth: int = 0
    total: float = 0.0

    def add(self, took: float) -> None:
        if self.depth == 0:
            self.total += took


def _time_driver_calls(statements: dict[str, list[float]], outer: _Outer) -> None:
    """Add the statements the server runs at the driver (COPY, raw cursors), which SQLAlchemy's
    cursor events do not see, to ``statements``: each call is timed under its function's
    name, and for ``MatchRepository._rows`` under the start of its SQL. A write sent ahead
    (``insert_ahead`` on PostgreSQL) returns at once: the wait for it falls on the statement
    or commit that settles the pipeline next."""
    from befriend.server.storage import addressbooks, bulk, matching

    def timed(module: object, name: str, label: Callable[..., str]) -> None:
        fn = getattr(module, name)

        def wrapper(*args: object, **kwargs: object) -> object:
            t = time.perf_counter()
            outer.depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                took = time.perf_counter() - t
                outer.depth -= 1
                outer.add(took)
                statements.setdefault(label(*args), []).append(took)

        setattr(module, name, wrapper)

    for module in (addressbooks, matching, bulk):
        for name in (
            "insert_tuples",
            "insert_values",
            "insert_ahead",
            "bulk_insert",
            "bulk_update",
        ):
            if hasattr(module, name):
                timed(module, name, lambda _s, table, *_, n=name: f"{n}({table.name})")
    timed(matching.MatchRepository, "_rows", lambda _self, sql, *_: " ".join(sql.split())[:60])


def _wal_lsn(db: Database) -> str:
    """PostgreSQL: the current write-ahead log position."""
    with db.engine.connect() as conn:
        return str(conn.execute(text("SELECT pg_current_wal_lsn()")).scalar_one())


def _breakdown(
    url_backend: str,
    members: int,
    pop: Population,
    entries: list[sync_pb2.AddressBookEntry],
    profile: bool,
) -> None:
    """Time each phase of each transaction's server-side work (the same calls as
    SyncServicer, without gRPC, for a client streaming ahead: parse the wire bytes, convert,
    apply the batch's chunks in one transaction, match their keys, commit) and every SQL
    statement; with ``profile`` also a cProfile of it all."""
    from sqlalchemy import event

    from befriend.server.api import contactdoc
    from befriend.server.api.backend import utcnow
    from befriend.server.api.sync import chunk_from
    from befriend.server.records import IdentityKind, IdentityRecord
    from befriend.server.services import addressbooks, matching
    from befriend.server.services.addressbooks import StreamState
    from befriend.server.services.registry import Registry
    from befriend.server.storage.addressbooks import AddressBookRepository
    from befriend.server.storage.db import Database
    from befriend.server.storage.matching import MatchRepository
    from befriend.server.storage.pending import PendingMatchRepository
    from befriend.server.storage.repositories import AccountRepository

    def go(url: str) -> None:
        db = Database(url)
        db.migrate()
        loader = Loader(db)
        if members > 1:
            _load_others(loader, pop, members)
            holders = [c.index for c in BOOK_CACHE if c.reciprocal]
            loader.holders_of(pop, {h: [pop.key(UPLOADER[0])] for h in holders})
            _load_stored(loader, pop, members, UPLOADER)
            if not db.is_sqlite:
                loader.settle()
        me = pop.member(UPLOADER[0])
        registry = Registry()
        db.on_commit(registry.holders.took)  # as the server's Backend does
        with db.transaction() as s:
            now = utcnow()
            AccountRepository(s).add_user(
                me.user_id,
                display_name=me.display_name,
                region_code=me.region,
                time_zone="UTC",
                profile={},
                identities=[IdentityRecord(IdentityKind.PHONE, me.e164, me.key, me.e164)],
                now=now,
            )
            # As Register does: match on registration (loads the registry; the holders of
            # the uploader's number get their one-way rows).
            matching.match_user(
                MatchRepository(s), registry, me.user_id, now, matching.ORIGIN_REGISTRATION
            )
        with db.transaction(readonly=True) as s:
            registry.warm(MatchRepository(s))  # as a running server's (loaded at start-up)
        statements: dict[str, list[float]] = {}
        started: list[float] = [0.0]
        outer = _Outer()

        @event.listens_for(db.engine, "before_cursor_execute")
        def _before(*_: object) -> None:
            started[0] = time.perf_counter()

        @event.listens_for(db.engine, "after_cursor_execute")
        def _after(_c: object, _cur: object, statement: str, *_: object) -> None:
            key = " ".join(statement.split())[:60]
            took = time.perf_counter() - started[0]
            outer.add(took)
            statements.setdefault(key, []).append(took)

        _time_driver_calls(statements, outer)
        wire = [r.SerializeToString() for r in requests(entries, "profiled")]
        # As the servicer with a client that streams ahead: up to MAX_BATCH_CHUNKS chunks
        # per transaction, one match over their keys.
        per = addressbooks.MAX_BATCH_CHUNKS
        batches = [wire[i : i + per] for i in range(0, len(wire), per)]
        stream = StreamState()
        phases: dict[str, list[float]] = {
            k: [] for k in ("parse", "convert", "apply", "match", "commit", "total")
        }
        prof = cProfile.Profile()
        wal = None if db.is_sqlite else _wal_lsn(db)
        cpu = time.process_time()
        for batch in batches:
            if profile:
                prof.enable()
            t0 = time.perf_counter()
            reqs = [sync_pb2.UploadContactsRequest.FromString(data) for data in batch]
            t1 = time.perf_counter()
            chunks = [chunk_from(req, QUOTA, stream) for req in reqs]
            t2 = time.perf_counter()
            with db.transaction() as s:
                now = utcnow()
                result = addressbooks.apply_chunks(
                    AddressBookRepository(s),
                    AccountRepository(s),
                    me.user_id,
                    chunks,
                    now,
                    contactdoc.remerge,
                )
                t3 = time.perf_counter()
                # as the servicer: the final chunk matches every batch's keys at once
                matching.match_upload(
                    MatchRepository(s),
                    PendingMatchRepository(s),
                    registry,
                    me.user_id,
                    result.keys,
                    now,
                    final=any(c.final for c in chunks),
                    changed=result.rekeyed,
                )
                t4 = time.perf_counter()
            t5 = time.perf_counter()
            if profile:
                prof.disable()
            for name, took in zip(
                phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0), strict=True
            ):
                phases[name].append(took)
        cpu = time.process_time() - cpu
        if wal is not None:
            with db.engine.connect() as conn:
                end, written = conn.execute(
                    text("SELECT pg_current_wal_lsn(), pg_current_wal_lsn() - CAST(:a AS pg_lsn)"),
                    {"a": wal},
                ).one()
            # (pg_waldump --stats=record -s START -e END, as the server's OS user, breaks
            # the range down by record type while the log segments are still there)
            print(f"  write-ahead log: {int(written):,} bytes, from {wal} to {end}")
        took = sum(phases["total"])
        print(
            f"breakdown ({url_backend}): server-side chunk work without gRPC, {len(entries):,} "
            f"contacts in {took:.3f} s = {len(entries) / took:,.0f} contacts/s; process CPU "
            f"{cpu:.3f} s = {len(entries) / cpu:,.0f} contacts per CPU-second; {len(wire)} "
            f"chunks in {len(batches)} transactions of up to {per}"
            + (" (under cProfile, which slows it)" if profile else "")
        )
        for name, times in phases.items():
            body = times[:-1] or [0.0]
            print(
                f"  {name:<8} non-final transaction p50 {statistics.median(body) * 1e3:7.2f} ms "
                f"mean {statistics.mean(body) * 1e3:7.2f} ms; final {times[-1] * 1e3:7.2f} ms"
            )
        print("  SQL statements (DBAPI time, all 20 chunks; driver-level calls by function):")
        for key, times in sorted(statements.items(), key=lambda kv: -sum(kv[1]))[:12]:
            print(f"    {sum(times) * 1e3:8.1f} ms {len(times):4}x  {key}")
        db_s = outer.total + sum(phases["commit"])
        print(
            f"  the database's share: every statement (each counted once) and commit "
            f"{db_s * 1e3:.1f} ms, a ceiling of {len(entries) / db_s:,.0f} contacts/s for "
            f"this work with no time taken by anything else; the rest "
            f"{(took - db_s) * 1e3:.1f} ms"
        )
        if profile:
            out = io.StringIO()
            st = pstats.Stats(prof, stream=out)
            st.sort_stats("tottime").print_stats(15)
            st.sort_stats("cumulative").print_stats(
                r"/(server|core)/", int(os.environ.get("BEFRIEND_BENCH_PROFILE_LINES", "25"))
            )
            print(out.getvalue())
        db.dispose()

    if url_backend == "sqlite":
        with tempfile.TemporaryDirectory() as d:
            go(f"sqlite:///{d}/befriend.db")
    else:
        with scratch_postgres() as url:
            go(url)


def main() -> None:
    members = int(os.environ.get("BEFRIEND_BENCH_MEMBERS", "1000000"))
    size = int(os.environ.get("BEFRIEND_BENCH_BOOK", "10000"))
    pop = Population(PopulationConfig(members=members))
    cn = (i for i in range(members) if pop.country_of(i).region == "CN")
    UPLOADER[:] = [next(cn)] * 2
    me = pop.member(UPLOADER[0])
    t = time.perf_counter()
    BOOK_CACHE[:] = pop.book(UPLOADER[0], size)
    entries = [to_entry(f"c{j:06d}", bc) for j, bc in enumerate(BOOK_CACHE)]
    booked = {bc.index for bc in BOOK_CACHE}
    UPLOADER[1] = next(i for i in cn if i not in booked)  # not a contact of the timed book
    if WARMUP_BOOK:  # the warm-up book leaves the timed uploader out
        warm = [bc for bc in pop.book(UPLOADER[1], WARMUP_BOOK) if bc.index != UPLOADER[0]]
        WARMUP_WIRE[:] = [
            r.SerializeToString()
            for r in requests(
                [to_entry(f"w{j:06d}", bc) for j, bc in enumerate(warm)], "bench-warm-up"
            )
        ]
    n_rec, n_one, n_non = pop.book_shape(size)
    print(
        f"book: {size:,} contacts of member {UPLOADER[0]} ({me.region}) generated in "
        f"{time.perf_counter() - t:.2f} s: {n_rec:,} reciprocal members, {n_one:,} one-way "
        f"members, {n_non:,} non-members; {CHUNK}-entry chunks; target {TARGET:,} contacts/s"
    )
    raws = [bc.raw for bc in BOOK_CACHE]
    normalize_many(raws[:100], me.region)  # warm the module
    t = time.perf_counter()
    normalize_many(raws, me.region)
    norm = time.perf_counter() - t
    print(
        f"{'baseline: normalize_many alone':<36} {size:>7,} contacts in {norm:7.3f} s "
        f"{size / norm:>9,.0f} contacts/s"
    )
    wanted = os.environ.get("BEFRIEND_BENCH_DB", "sqlite,postgres").split(",")
    backends = [b for b in ("sqlite", "postgres") if b in wanted]
    if "postgres" in backends and not pg_reachable():
        backends.remove("postgres")
        print("PostgreSQL not reachable: SQLite only")
    repeat = int(os.environ.get("BEFRIEND_BENCH_REPEAT", "3"))
    warm_up = f"after a warm-up upload of {WARMUP_BOOK:,}" if WARMUP_BOOK else "no warm-up"
    print(f"each case {repeat}x, a fresh database and server each time, {warm_up}")
    for backend in backends:
        medians = []
        for m in (1, members):
            rates = []
            for r in range(repeat):
                reqs = requests(entries, f"bench-{backend}-{m}-{r}")
                run = _one(backend, m, pop, reqs)
                _print(run)
                rates.append(run.rate)
            medians.append(statistics.median(rates))
            if repeat > 1:
                print(
                    f"{run.label:<36} median {medians[-1]:,.0f} contacts/s "
                    f"(min {min(rates):,.0f}, max {max(rates):,.0f})",
                    flush=True,
                )
        empty, full = medians
        verdict = "meets" if full >= TARGET else "MISSES"
        print(
            f"{backend}: median {full:,.0f} contacts/s with {members - 1:,} members {verdict} "
            f"the {TARGET:,}/s target; ratio to the empty member table {full / empty:.2f}x; "
            f"normalisation alone {norm * 1e3:.1f} ms of the {size / full * 1e3:.0f} ms upload"
        )
    concurrent = int(os.environ.get("BEFRIEND_BENCH_CONCURRENT", "4"))
    if concurrent:
        size = int(os.environ.get("BEFRIEND_BENCH_CONCURRENT_BOOK", str(size)))
        for backend in backends:
            rates = [_concurrent(backend, members, pop, concurrent, size) for _ in range(repeat)]
            rate = statistics.median(rates)
            print(
                f"{backend}: median {rate:,.0f} contacts/s for {concurrent} concurrent uploads "
                f"of {size:,} with {members - concurrent - 1:,} other members "
                f"({'meets' if rate >= TARGET else 'MISSES'} the {TARGET:,}/s target as one "
                "server process's throughput)",
                flush=True,
            )
    profile = bool(os.environ.get("BEFRIEND_BENCH_PROFILE"))
    if profile or os.environ.get("BEFRIEND_BENCH_BREAKDOWN"):
        for backend in backends:
            _breakdown(backend, members, pop, entries, profile)


if __name__ == "__main__":
    main()
