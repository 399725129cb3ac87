"""RPC handlers built from the service descriptors: the servicer's coroutine where it
implements a method, otherwise an UNIMPLEMENTED answer with an ErrorInfo. Services whose
issue has not landed are served entirely by the latter, so reflection and clients always see
the real API."""

from __future__ import annotations

import inspect
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message_factory import GetMessageClass

from befriend.server.api.status import Context, abort, to_status


def _unimplemented(service: str, method: MethodDescriptor) -> Any:
    status = to_status(
        grpc.StatusCode.UNIMPLEMENTED,
        f"{service}/{method.name} is not implemented yet",
        "NOT_IMPLEMENTED",
    )

    async def unimplemented(_request: Any, context: Context) -> Any:
        await abort(context, status)

    return unimplemented


def _handler(service: str, method: MethodDescriptor, servicer: object | None) -> Any:
    behavior = getattr(servicer, method.name, None)
    if not (inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)):
        # Missing, or the generated base class's synchronous "not implemented" stub.
        behavior = _unimplemented(service, method)
    kw: dict[str, Any] = {
        "request_deserializer": GetMessageClass(method.input_type).FromString,
        "response_serializer": GetMessageClass(method.output_type).SerializeToString,
    }
    if method.client_streaming and method.server_streaming:
        return grpc.stream_stream_rpc_method_handler(behavior, **kw)
    if method.client_streaming:
        return grpc.stream_unary_rpc_method_handler(behavior, **kw)
    if method.server_streaming:
        return grpc.unary_stream_rpc_method_handler(behavior, **kw)
    return grpc.unary_unary_rpc_method_handler(behavior, **kw)


def service_handler(
    service: str, servicer: object | None = None
) -> grpc.GenericRpcHandler[Any, Any]:
    """Handlers for every method of ``service``. The servicer implements a method by
    defining a coroutine (or async generator) with the method's name; generated base
    classes are deliberately not used, their stubs being synchronous."""
    desc = descriptor_pool.Default().FindServiceByName(service)
    return grpc.method_handlers_generic_handler(
        service, {m.name: _handler(service, m, servicer) for m in desc.methods}
    )
