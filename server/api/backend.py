"""Running domain work off the event loop: database transactions in a thread pool, and
idempotent mutations (a retry with the same request_id gets the first answer)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from google.protobuf.message import Message
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from befriend.server.api import auth
from befriend.server.errors import Aborted, InvalidArgument
from befriend.server.observability import log
from befriend.server.services.registry import Registry
from befriend.server.storage.db import Database
from befriend.server.storage.repositories import IdempotencyRepository

T = TypeVar("T")
M = TypeVar("M", bound=Message)

MAX_REQUEST_ID = 128


def utcnow() -> datetime:
    return datetime.now(UTC)


def request_fingerprint(request: Message) -> str:
    """Hash of the request without its request_id, to spot a reused request_id."""
    copy = type(request)()
    copy.CopyFrom(request)
    if "request_id" in copy.DESCRIPTOR.fields_by_name:
        copy.ClearField("request_id")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def _log_failure(future: Future[object]) -> None:
    exc = None if future.cancelled() else future.exception()
    if exc is not None:
        log.error("background.failed", exc_info=exc)


class Backend:
    def __init__(
        self,
        db: Database,
        *,
        threads: int = 8,
        idempotency_ttl_hours: float = 24,
        weak_key_matching: bool = False,
        index_dir: str = "",
    ):
        self.db = db
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="befriend-db")
        self.idempotency_ttl = timedelta(hours=idempotency_ttl_hours)
        # members' identity keys and the books' reverse index, caches of the database
        self.registry = Registry(weak=weak_key_matching, index_dir=index_dir)
        # the book keys this process commits go into its holder index without a read-back
        db.on_commit(self.registry.holders.took)

    async def run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    def spawn(self, fn: Callable[[], object]) -> None:
        """Run background work (e.g. a refresh job) on the database threads; a failure is
        logged, since nobody awaits the result."""
        self.executor.submit(fn).add_done_callback(_log_failure)

    async def read(self, fn: Callable[[Session], T]) -> T:
        def work() -> T:
            with self.db.transaction(readonly=True) as session:
                return fn(session)

        return await self.run(work)

    async def write(self, fn: Callable[[Session], T]) -> T:
        def work() -> T:
            with self.db.transaction() as session:
                return fn(session)

        return await self.run(work)

    async def idempotent(
        self,
        *,
        scope: str,
        method: str,
        request: Message,
        request_id: str,
        response_type: type[M],
        fn: Callable[[Session], tuple[M, str | None]],
    ) -> M:
        """Run ``fn`` in one transaction with the idempotency record of ``request_id``.

        ``fn`` returns the response and the id of the user it concerns (so the stored answer
        is erased with that user's data). Failures are not remembered: a retry re-runs them.
        """
        if len(request_id) > MAX_REQUEST_ID:
            raise InvalidArgument.field("request_id", f"longer than {MAX_REQUEST_ID} characters")
        fingerprint = request_fingerprint(request)

        def attempt() -> M:
            with self.db.transaction() as session:
                repo = IdempotencyRepository(session)
                if request_id:
                    hit = repo.get(scope, method, request_id)
                    if hit is not None:
                        if hit[0] != fingerprint:
                            raise InvalidArgument.field(
                                "request_id",
                                "already used for a different request",
                                reason="REQUEST_ID_REUSED",
                            )
                        return response_type.FromString(hit[1])
                response, user_id = fn(session)
                if request_id:
                    repo.put(
                        scope,
                        method,
                        request_id,
                        fingerprint,
                        response.SerializeToString(deterministic=True),
                        user_id,
                        utcnow(),
                    )
                return response

        def work() -> M:
            # A unique-constraint race (the same request_id, or the same phone number, in
            # two concurrent calls) is settled by running once more: the second run sees the
            # winner's rows and answers from them.
            try:
                return attempt()
            except IntegrityError:
                try:
                    return attempt()
                except IntegrityError:
                    raise Aborted(
                        "concurrent modification; retry", reason="CONCURRENT_MODIFICATION"
                    ) from None

        return await self.run(work)

    async def mutate(
        self,
        method: str,
        request: Any,
        response_type: type[M],
        fn: Callable[[Session], tuple[M, str | None]],
    ) -> M:
        """An idempotent mutation by the current caller (``request.request_id``)."""
        return await self.idempotent(
            scope=auth.current().scope,
            method=method,
            request=request,
            request_id=request.request_id,
            response_type=response_type,
            fn=fn,
        )

    async def purge_idempotency(self) -> int:
        cutoff = utcnow() - self.idempotency_ttl
        return await self.write(lambda s: IdempotencyRepository(s).purge_before(cutoff))

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=False)
        self.db.dispose()
