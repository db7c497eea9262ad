"""The authentication interceptor: bearer token in, organization scope set for the call.

It sits inside `ServiceInterceptor`, so a refusal is a domain error (Unauthenticated) that the
one error table turns into a status, and is logged like any other call. Health and reflection
stay open: load balancers and grpcurl need them before they hold a token.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import Any

import grpc

from server.core.errors import Unauthenticated
from server.rpc import handlers
from server.security import tenancy
from server.security.bearer_tokens import Grant, TokenRegistry

_OPEN = ("/grpc.health", "/grpc.reflection")


class AuthInterceptor(grpc.ServerInterceptor):
    """Requires a known bearer token, unless `dev_mode` lets token-less calls act for all."""

    def __init__(self, registry: TokenRegistry, dev_mode: bool) -> None:
        self.registry = registry
        self.dev_mode = dev_mode
        self._wrapped = handlers.HandlerCache()

    def grant(self, context: grpc.ServicerContext) -> Grant:
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                scheme, _, token = value.partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    raise Unauthenticated("authorization must be 'Bearer <token>'")
                return self.registry.grant_for(token.strip())
        if self.dev_mode:
            return Grant(name="", organizations=None)  # dev mode, no token: unscoped
        raise Unauthenticated("this call needs an 'authorization: Bearer <token>' header")

    def intercept_service(
        self, continuation: Callable[..., Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(_OPEN):
            return handler
        return self._wrapped.get(handler_call_details.method, handler, self._wrap)

    def _wrap(self, method: str, handler: Any) -> grpc.RpcMethodHandler:
        return handlers.wrap(handler, unary=self._unary, stream=self._stream)

    def _unary(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            grant = self.grant(context)
            with tenancy.acting_as(grant.name, grant.organizations):
                return behavior(request, context)

        return wrapped

    def _stream(
        self, behavior: Callable[..., Generator[Any, None, None]]
    ) -> Callable[..., Iterator[Any]]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            grant = self.grant(context)
            # Set around each step, not the whole generator: between steps the thread may
            # serve other calls, and a context variable left set would leak into them.
            items = behavior(request, context)
            try:
                while True:
                    with tenancy.acting_as(grant.name, grant.organizations):
                        try:
                            item = next(items)
                        except StopIteration:
                            return
                    yield item
            finally:
                items.close()  # a hang-up ends the inner stream now, not at garbage collection

        return wrapped
