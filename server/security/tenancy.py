"""Which organizations the current call may act for, and the checks every domain module uses.

The auth interceptor sets the scope from the caller's bearer token for the length of one call;
jobs and dev-mode calls without a token run unscoped (`None`: every organization). A resource
of an organization outside the scope is answered exactly as a missing one (NotFound), so a
tenant cannot even learn which ids exist elsewhere.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import peewee as pw

from server.core.errors import NotFound, PermissionDenied

Q = TypeVar("Q", bound=pw.SelectQuery)

_scope: contextvars.ContextVar[frozenset[int] | None] = contextvars.ContextVar(
    "organizations", default=None
)
_principal: contextvars.ContextVar[str] = contextvars.ContextVar("principal", default="")


@contextmanager
def acting_as(principal: str, organizations: frozenset[int] | None) -> Iterator[None]:
    """Run the block as `principal`, limited to `organizations` (None: unlimited)."""
    scope_token = _scope.set(organizations)
    principal_token = _principal.set(principal)
    try:
        yield
    finally:
        _scope.reset(scope_token)
        _principal.reset(principal_token)


def principal() -> str:
    """The name of the token the current call came with ("" without one)."""
    return _principal.get()


def restricted() -> bool:
    """True when the call may act for some organizations only."""
    return _scope.get() is not None


def allows(organization_id: int) -> bool:
    scope = _scope.get()
    return scope is None or organization_id in scope


def check_owner(organization_id: int, resource: str, resource_id: Any) -> None:
    """NotFound unless the caller may see the organization's resource."""
    if not allows(organization_id):
        raise NotFound(resource, resource_id)


def check_may_act(organization_id: int) -> None:
    """PermissionDenied unless the caller may create or change things in the organization.

    Zero (no organization given) passes: the caller's validation reports it as missing."""
    if organization_id and not allows(organization_id):
        raise PermissionDenied(
            f"this token may not act for organization {organization_id}",
            reason="ORGANIZATION_NOT_ALLOWED",
        )


def scoped(query: Q, field: pw.Field) -> Q:
    """`query` limited to rows whose `field` (an organization id) the caller may see."""
    scope = _scope.get()
    if scope is None:
        return query
    return query.where(field.in_(sorted(scope)))  # type: ignore[no-any-return]
