"""Python exceptions for failed calls, built from the google.rpc.Status the server attaches.

One flat hierarchy under CampaignClientError, one class per status code a caller may want to
handle differently. Each carries the status code, the server's message, the ErrorInfo reason
and domain, and what the rich details say: the bad fields of an InvalidArgumentError, the
violated preconditions of a FailedPreconditionError, the missing resource of a NotFoundError,
the suggested delay of an UnavailableError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

_Detail = TypeVar("_Detail", bound=Message)


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request, e.g. ("sms_body", "must not be empty")."""

    field: str
    description: str


@dataclass(frozen=True)
class PreconditionViolation:
    """One precondition that did not hold, e.g. a campaign status that forbids a change."""

    type: str
    subject: str
    description: str


class CampaignClientError(Exception):
    """A call failed. `code` is the gRPC status code; `reason` the server's ErrorInfo reason."""

    def __init__(
        self, code: grpc.StatusCode, message: str, details: list[any_pb2.Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: list[any_pb2.Any] = list(details or [])
        info = _unpack(self.details, error_details_pb2.ErrorInfo)
        self.reason = info.reason if info else ""
        self.domain = info.domain if info else ""
        self.metadata: dict[str, str] = dict(info.metadata) if info else {}
        self.attempts = 1  # how many times the call was tried before giving up

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgumentError(CampaignClientError):
    """The request was wrong (INVALID_ARGUMENT or OUT_OF_RANGE); see `field_violations`."""

    def __init__(
        self, code: grpc.StatusCode, message: str, details: list[any_pb2.Any] | None = None
    ) -> None:
        super().__init__(code, message, details)
        bad = _unpack(self.details, error_details_pb2.BadRequest)
        self.field_violations = [
            FieldViolation(v.field, v.description) for v in (bad.field_violations if bad else [])
        ]

    def __str__(self) -> str:
        fields = "; ".join(f"{v.field}: {v.description}" for v in self.field_violations)
        return f"{super().__str__()}" + (f" ({fields})" if fields else "")


class NotFoundError(CampaignClientError):
    """The named resource does not exist; `resource_type` and `resource_name` say which."""

    def __init__(
        self, code: grpc.StatusCode, message: str, details: list[any_pb2.Any] | None = None
    ) -> None:
        super().__init__(code, message, details)
        info = _unpack(self.details, error_details_pb2.ResourceInfo)
        self.resource_type = info.resource_type if info else ""
        self.resource_name = info.resource_name if info else ""


class FailedPreconditionError(CampaignClientError):
    """The resource is not in a state that allows the call; see `violations`."""

    def __init__(
        self, code: grpc.StatusCode, message: str, details: list[any_pb2.Any] | None = None
    ) -> None:
        super().__init__(code, message, details)
        failure = _unpack(self.details, error_details_pb2.PreconditionFailure)
        self.violations = [
            PreconditionViolation(v.type, v.subject, v.description)
            for v in (failure.violations if failure else [])
        ]


class AbortedError(CampaignClientError):
    """A concurrent change won (e.g. a stale etag): read again and retry if still wanted."""


class AlreadyExistsError(CampaignClientError):
    """The resource to create exists already."""


class ResourceExhaustedError(CampaignClientError):
    """A server limit was reached (e.g. too many open watch streams)."""


class UnauthenticatedError(CampaignClientError):
    """No valid credentials were sent."""


class PermissionDeniedError(CampaignClientError):
    """The credentials do not allow the call."""


class UnavailableError(CampaignClientError):
    """The server or one of its dependencies could not be reached; safe calls were retried.
    `retry_delay` is the server's suggestion in seconds (None when it gave none)."""

    def __init__(
        self, code: grpc.StatusCode, message: str, details: list[any_pb2.Any] | None = None
    ) -> None:
        super().__init__(code, message, details)
        info = _unpack(self.details, error_details_pb2.RetryInfo)
        self.retry_delay = info.retry_delay.ToTimedelta().total_seconds() if info else None


class DeadlineExceededError(CampaignClientError):
    """The call did not finish before its deadline; it may or may not have taken effect."""


class InternalError(CampaignClientError):
    """The server failed (INTERNAL, UNKNOWN, DATA_LOSS, UNIMPLEMENTED)."""


_BY_CODE: dict[grpc.StatusCode, type[CampaignClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.UNKNOWN: InternalError,
    grpc.StatusCode.DATA_LOSS: InternalError,
    grpc.StatusCode.UNIMPLEMENTED: InternalError,
}


def _unpack(details: list[any_pb2.Any], cls: type[_Detail]) -> _Detail | None:
    for item in details:
        if item.TypeName() == cls.DESCRIPTOR.full_name:
            message = cls()
            item.Unpack(message)
            return message
    return None


def _status_of(error: grpc.RpcError) -> status_pb2.Status | None:
    try:
        return rpc_status.from_call(error)  # type: ignore[arg-type]
    except (ValueError, AttributeError):  # trailers disagree with the status, or no trailers
        return None


def from_rpc_error(error: grpc.RpcError) -> CampaignClientError:
    """The exception that says what went wrong in `error` (a failed call)."""
    code_of = getattr(error, "code", None)
    code = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
    details_of = getattr(error, "details", None)
    message = (details_of() if callable(details_of) else None) or str(error)
    status = _status_of(error)
    details = list(status.details) if status is not None else []
    return _BY_CODE.get(code, CampaignClientError)(code, message, details)
