"""Domain errors: what went wrong, in the service's own words, free of gRPC.

The hierarchy::

    CampaignServiceError
    ├── InvalidArgument        the caller sent bad input (carries field violations)
    ├── NotFound               a named resource does not exist
    ├── OutOfRange             a page past the end of a listing
    ├── FailedPrecondition     the resource is not in a state that allows the call
    │   └── InvalidTransition  the campaign's status forbids the action
    ├── Aborted                a concurrent change won (etag mismatch, lost compare-and-set)
    ├── ResourceExhausted      a server limit was reached (too many watchers)
    ├── Unavailable            a dependency (database, Redis) cannot be reached
    ├── Unauthenticated        no bearer token, or one the server does not know
    └── PermissionDenied       the token may not act for the organization named

`server.rpc.errors` maps each to a gRPC status in one table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path in the request and what is wrong with it."""

    field: str
    description: str


class CampaignServiceError(Exception):
    """Base of every domain error. `reason` is a stable UPPER_SNAKE_CASE code for machines."""

    reason = "ERROR"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason


class InvalidArgument(CampaignServiceError):
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation], *, reason: str | None = None) -> None:
        self.violations = violations
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(f"invalid request: {summary}", reason=reason)


class NotFound(CampaignServiceError):
    reason = "NOT_FOUND"

    def __init__(self, resource: str, resource_id: object) -> None:
        self.resource = resource
        self.resource_id = resource_id
        super().__init__(
            f"{resource} {resource_id} not found", reason=f"{resource.upper()}_NOT_FOUND"
        )


class OutOfRange(CampaignServiceError):
    reason = "OUT_OF_RANGE"

    def __init__(self, field: str, description: str) -> None:
        self.violation = FieldViolation(field, description)
        super().__init__(description)


class FailedPrecondition(CampaignServiceError):
    reason = "FAILED_PRECONDITION"

    def __init__(
        self, message: str, *, subject: str = "", type_: str = "STATUS", **kw: str
    ) -> None:
        self.subject = subject
        self.type = type_
        super().__init__(message, **kw)


class InvalidTransition(FailedPrecondition):
    reason = "INVALID_STATUS"

    def __init__(self, campaign_id: int, current: str, action: str) -> None:
        self.current = current
        self.action = action
        super().__init__(
            f"campaign {campaign_id} is {current}: cannot {action.replace('_', ' ')}",
            subject=f"campaigns/{campaign_id}",
        )


class Aborted(CampaignServiceError):
    reason = "ABORTED"


class ResourceExhausted(CampaignServiceError):
    reason = "RESOURCE_EXHAUSTED"


class Unavailable(CampaignServiceError):
    reason = "UNAVAILABLE"


class Unauthenticated(CampaignServiceError):
    reason = "UNAUTHENTICATED"


class PermissionDenied(CampaignServiceError):
    reason = "PERMISSION_DENIED"
