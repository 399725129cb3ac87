"""Handlers for services whose issue has not landed: every RPC answers UNIMPLEMENTED with
an ErrorInfo, built from the service descriptor so reflection and clients see the real API."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message_factory import GetMessageClass

from befriend.server.api.status import Context, abort, to_status


def _handler(service: str, method: MethodDescriptor) -> grpc.RpcMethodHandler[Any, Any]:
    request_cls = GetMessageClass(method.input_type)
    response_cls = GetMessageClass(method.output_type)
    status = to_status(
        grpc.StatusCode.UNIMPLEMENTED,
        f"{service}/{method.name} is not implemented yet",
        "NOT_IMPLEMENTED",
    )

    async def unimplemented(_request: Any, context: Context) -> Any:
        await abort(context, status)

    kw: dict[str, Any] = {
        "request_deserializer": request_cls.FromString,
        "response_serializer": response_cls.SerializeToString,
    }
    if method.client_streaming and method.server_streaming:
        return grpc.stream_stream_rpc_method_handler(unimplemented, **kw)
    if method.client_streaming:
        return grpc.stream_unary_rpc_method_handler(unimplemented, **kw)
    if method.server_streaming:
        return grpc.unary_stream_rpc_method_handler(unimplemented, **kw)
    return grpc.unary_unary_rpc_method_handler(unimplemented, **kw)


def generic_handler(service: str) -> grpc.GenericRpcHandler[Any, Any]:
    desc = descriptor_pool.Default().FindServiceByName(service)
    return grpc.method_handlers_generic_handler(
        service, {m.name: _handler(service, m) for m in desc.methods}
    )
