"""The call layer, one interceptor around every RPC: authentication, error mapping,
deadline, structured access log and Prometheus metrics. Servicers stay thin."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc
from grpc import aio

from befriend.server.api import auth
from befriend.server.api.backend import Backend
from befriend.server.api.status import Context, abort, from_service_error, internal_error
from befriend.server.errors import ServiceError, Unauthenticated, Unavailable
from befriend.server.observability import RPC_ERRORS, RPC_LATENCY, RPC_TOTAL, log
from befriend.server.services.accounts import hash_token
from befriend.server.storage.repositories import AccountRepository

Behavior = Callable[..., Any]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class CallLayer(aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(
        self,
        backend: Backend,
        *,
        service_token: str,
        internal: frozenset[str],
        default_deadline: float,
    ) -> None:
        self.backend = backend
        self.service_token = service_token
        self.internal = internal
        self.default_deadline = default_deadline
        self.draining = False

    async def _authenticate(self, method: str, context: Context) -> auth.Principal:
        kind = auth.classify(method, self.internal)
        token = auth.bearer(tuple(context.invocation_metadata() or ()))
        if kind == "public":
            return auth.ANONYMOUS
        if kind == "internal":
            return auth.check_service_token(token, self.service_token)
        if token is None:
            raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")
        digest = hash_token(token)
        user_id = await self.backend.read(lambda s: AccountRepository(s).user_for_token(digest))
        if user_id is None:
            raise Unauthenticated("unknown or revoked token", reason="INVALID_TOKEN")
        return auth.Principal(user_id)

    def _budget(self, context: Context) -> float | None:
        remaining = cast(float | None, context.time_remaining())  # None: no deadline
        if remaining is None and self.default_deadline > 0:
            return self.default_deadline
        return None

    async def _fail(self, method: str, context: Context, exc: BaseException) -> None:
        if isinstance(exc, ServiceError):
            await abort(context, from_service_error(exc))
        if isinstance(exc, TimeoutError):
            context.set_code(grpc.StatusCode.DEADLINE_EXCEEDED)
            context.set_details(f"server deadline of {self.default_deadline}s exceeded")
            return
        log.error("rpc.crash", method=method, exc_info=exc)
        await abort(context, internal_error())

    async def intercept_service(  # type: ignore[override]  # None is allowed at runtime
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        if handler is None:  # unknown method: grpc answers UNIMPLEMENTED
            return None
        method: str = details.method

        async def prologue(context: Context) -> float:
            if self.draining and not method.startswith("/grpc.health."):
                raise Unavailable("server is shutting down; retry", reason="SHUTTING_DOWN")
            principal = await self._authenticate(method, context)
            auth.set_current(principal)
            return time.perf_counter()

        def finish(start: float, context: Context) -> None:
            code = cast(grpc.StatusCode | None, context.code()) or grpc.StatusCode.OK
            name = code.name
            elapsed = time.perf_counter() - start
            RPC_TOTAL.labels(method, name).inc()
            RPC_LATENCY.labels(method).observe(elapsed)
            if name != "OK":
                RPC_ERRORS.labels(method, name).inc()
            log.info("rpc", method=method, code=name, ms=round(elapsed * 1000, 2))

        def unary_response(inner: Behavior) -> Behavior:
            async def behavior(request_or_iterator: Any, context: Context) -> Any:
                start = time.perf_counter()
                try:
                    await prologue(context)
                    async with asyncio.timeout(self._budget(context)):
                        return await inner(request_or_iterator, context)
                except aio.AbortError:
                    raise
                except Exception as exc:
                    await self._fail(method, context, exc)
                finally:
                    finish(start, context)

            return behavior

        def stream_response(inner: Behavior) -> Behavior:
            async def behavior(request_or_iterator: Any, context: Context) -> AsyncIterator[Any]:
                start = time.perf_counter()
                try:
                    await prologue(context)
                    result = inner(request_or_iterator, context)
                    if hasattr(result, "__aiter__"):
                        async for item in result:
                            yield item
                    else:
                        await result
                except aio.AbortError:
                    raise
                except Exception as exc:
                    await self._fail(method, context, exc)
                finally:
                    finish(start, context)

            return behavior

        kw = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary), **kw)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(unary_response(handler.stream_unary), **kw)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(stream_response(handler.unary_stream), **kw)
        assert handler.stream_stream is not None
        return grpc.stream_stream_rpc_method_handler(stream_response(handler.stream_stream), **kw)
