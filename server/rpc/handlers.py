"""Wrapping a gRPC method handler, whichever of its four kinds it is.

grpc builds each kind (unary or streamed request, unary or streamed response) with its own
factory, and a handler carries its behaviour under the kind's name. An interceptor only says
how to wrap a call that answers once (`unary`) and one that streams its answer (`stream`);
`wrap` picks the behaviour and rebuilds the handler around the wrapped one. `HandlerCache`
keeps the wrapped handler per method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

Behavior = Callable[..., Any]  # (request or request iterator, context) -> response or iterator
Wrap = Callable[[Behavior], Behavior]


def wrap(
    handler: Any,
    unary: Wrap,
    stream: Wrap,
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler:
    """`handler` with its behaviour wrapped by `unary` (one answer) or `stream` (a streamed
    answer); its own request deserializer unless another is given."""
    codec = {
        "request_deserializer": request_deserializer or handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **codec)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream(handler.unary_stream), **codec)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **codec)
    return grpc.stream_stream_rpc_method_handler(stream(handler.stream_stream), **codec)


class HandlerCache:
    """An interceptor's wrapped handler per method, made once instead of on every call.

    grpc runs the interceptors for each call on its one polling thread, which every call
    waits for; wrapping anew there built closures and a handler tuple per call. The wrapped
    handler is remade when the inner one is a different object, so nothing goes stale."""

    def __init__(self) -> None:
        self._by_method: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def get(
        self,
        method: str,
        handler: grpc.RpcMethodHandler,
        wrap: Callable[[str, Any], grpc.RpcMethodHandler],
    ) -> grpc.RpcMethodHandler:
        cached = self._by_method.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = wrap(method, handler)
        self._by_method[method] = (handler, wrapped)
        return wrapped
