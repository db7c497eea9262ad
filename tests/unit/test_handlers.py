"""`server.rpc.handlers.wrap`: each of the four handler kinds keeps its kind, gets the unary or
the stream wrapper as its answer is one message or a stream, and keeps its codec."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from server.rpc import handlers

KINDS: list[tuple[Callable[..., grpc.RpcMethodHandler], str, str]] = [
    (grpc.unary_unary_rpc_method_handler, "unary_unary", "unary"),
    (grpc.unary_stream_rpc_method_handler, "unary_stream", "stream"),
    (grpc.stream_unary_rpc_method_handler, "stream_unary", "unary"),
    (grpc.stream_stream_rpc_method_handler, "stream_stream", "stream"),
]


def _tagging(tag: str) -> handlers.Wrap:
    def wrap(behavior: handlers.Behavior) -> handlers.Behavior:
        return lambda request, context: (tag, behavior(request, context))

    return wrap


@pytest.mark.parametrize(("factory", "kind", "wrapper"), KINDS)
def test_each_kind_is_wrapped_by_its_answer_shape(factory: Any, kind: str, wrapper: str) -> None:
    def deserialize(data: bytes) -> bytes:
        return data

    def serialize(data: bytes) -> bytes:
        return data

    handler = factory(
        lambda request, context: "answer",
        request_deserializer=deserialize,
        response_serializer=serialize,
    )
    wrapped = handlers.wrap(handler, unary=_tagging("unary"), stream=_tagging("stream"))
    behaviors = {k: getattr(wrapped, k) for _, k, _ in KINDS}
    assert [k for k, b in behaviors.items() if b is not None] == [kind]
    assert behaviors[kind](b"", None) == (wrapper, "answer")
    assert wrapped.request_deserializer is deserialize
    assert wrapped.response_serializer is serialize
    assert wrapped.request_streaming == handler.request_streaming
    assert wrapped.response_streaming == handler.response_streaming


def test_a_given_request_deserializer_replaces_the_handlers() -> None:
    handler = grpc.unary_unary_rpc_method_handler(lambda r, c: r, request_deserializer=bytes)
    lenient = str
    wrapped = handlers.wrap(
        handler, unary=lambda b: b, stream=lambda b: b, request_deserializer=lenient
    )
    assert wrapped.request_deserializer is lenient
