"""Server interceptors: request ids and access logs, the error map, and pooled connections.

Every handler kind is wrapped the same way: the call runs with a request id in the logging
context, domain errors become statuses through `server.rpc.errors`, and the thread's database
connection goes back to the pool when the call ends (and, in streams, before each message).
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from server import logs
from server.core.validation import invalid
from server.rpc import handlers
from server.rpc.errors import to_status
from server.store.db import release_connection

log = logging.getLogger("server.access")

# Successful reads faster than this are logged at DEBUG only: at thousands of calls a second,
# one JSON line per call was a sizeable share of the server's CPU (BENCHMARKS.md, "Where the
# time went" 8). Every change, failure and slow call is logged, with the request id the caller
# got back in its metadata.
SLOW_CALL_MS = 250.0
_READS = ("Get", "List", "Preview", "Validate", "Watch")


def _request_id(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return uuid.uuid4().hex[:16]


class _Call:
    """Bookkeeping of one call: id, timing, and how it ended."""

    def __init__(self, method: str, context: grpc.ServicerContext) -> None:
        self.method = method
        self.context = context
        self.started = time.perf_counter()
        self.done = False
        self.token = logs.request_id.set(_request_id(context))
        context.send_initial_metadata((("x-request-id", logs.request_id.get()),))

    def fail(self, error: Exception) -> None:
        status, expected = to_status(error)
        if not expected:
            log.error("unhandled error", exc_info=error, extra={"method": self.method})
        self.finish(status.code.name)
        self.context.abort_with_status(status)

    def finish(self, code: str = "OK") -> None:
        release_connection()
        if self.done:
            return
        self.done = True
        elapsed = round((time.perf_counter() - self.started) * 1000, 2)
        quiet = (
            code in ("OK", "CANCELLED")
            and elapsed < SLOW_CALL_MS
            and self.method.rpartition("/")[2].startswith(_READS)
        )
        level = logging.DEBUG if quiet else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "rpc", extra={"method": self.method, "code": code, "ms": elapsed})
        logs.request_id.reset(self.token)


class Undecodable:
    """Request bytes that do not parse as the request message. grpc would answer INTERNAL
    before any handler ran; kept as a value, the call refuses it through the error table."""

    def __init__(self, error: DecodeError) -> None:
        self.error = error


def _lenient(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as error:
            return Undecodable(error)

    return parse


def _decoded(request: Any) -> Any:
    """The request itself; InvalidArgument when its bytes did not parse. A client stream
    is checked message by message as the servicer reads it."""
    if isinstance(request, Undecodable):
        raise invalid("request", f"is not a valid protobuf message: {request.error}")
    if isinstance(request, Iterator):
        return (_decoded(item) for item in request)
    return request


def _wrap_unary(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        call = _Call(method, context)
        try:
            response = behavior(_decoded(request), context)
        except Exception as error:
            call.fail(error)
        call.finish()
        return response

    return wrapped


def _wrap_stream(method: str, behavior: Callable[..., Iterator[Any]]) -> Callable[..., Any]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        call = _Call(method, context)
        try:
            for item in behavior(_decoded(request), context):
                release_connection()  # hold no pooled connection while the stream waits
                yield item
        except Exception as error:
            call.fail(error)
        finally:
            # Also runs when the caller hangs up (GeneratorExit at the yield).
            call.finish("OK" if context.is_active() else "CANCELLED")

    return wrapped


class ServiceInterceptor(grpc.ServerInterceptor):
    """Applies request ids, access logs, the error map and connection hygiene to every RPC."""

    def __init__(self) -> None:
        self._wrapped = handlers.HandlerCache()

    def intercept_service(
        self, continuation: Callable[..., Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(("/grpc.health", "/grpc.reflection")):
            return handler
        return self._wrapped.get(method, handler, _wrap_handler)


def _wrap_handler(method: str, handler: Any) -> grpc.RpcMethodHandler:
    return handlers.wrap(
        handler,
        unary=functools.partial(_wrap_unary, method),
        stream=functools.partial(_wrap_stream, method),
        request_deserializer=_lenient(handler.request_deserializer),
    )
