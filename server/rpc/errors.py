"""The one place where errors become gRPC statuses: a table from exception type to handler.

Each handler returns the status code and the google.rpc details to attach; every answer
carries an ErrorInfo. Anything not in the table is a bug of ours and becomes INTERNAL.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import peewee
import redis.exceptions
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from playhouse.pool import MaxConnectionsExceeded

from server.core import errors as exc

DOMAIN = "campaigns.v1"
Details = list[Message]
Handler = Callable[[Exception], tuple[grpc.StatusCode, Details]]


def _bad_request(violations: list[exc.FieldViolation]) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in violations
        ]
    )


def _invalid_argument(e: Exception) -> tuple[grpc.StatusCode, Details]:
    assert isinstance(e, exc.InvalidArgument)
    return grpc.StatusCode.INVALID_ARGUMENT, [_bad_request(e.violations)]


def _out_of_range(e: Exception) -> tuple[grpc.StatusCode, Details]:
    assert isinstance(e, exc.OutOfRange)
    return grpc.StatusCode.OUT_OF_RANGE, [_bad_request([e.violation])]


def _not_found(e: Exception) -> tuple[grpc.StatusCode, Details]:
    assert isinstance(e, exc.NotFound)
    info = error_details_pb2.ResourceInfo(
        resource_type=e.resource, resource_name=f"{e.resource}s/{e.resource_id}"
    )
    return grpc.StatusCode.NOT_FOUND, [info]


def _failed_precondition(e: Exception) -> tuple[grpc.StatusCode, Details]:
    assert isinstance(e, exc.FailedPrecondition)
    violation = error_details_pb2.PreconditionFailure.Violation(
        type=e.type, subject=e.subject, description=e.message
    )
    return grpc.StatusCode.FAILED_PRECONDITION, [
        error_details_pb2.PreconditionFailure(violations=[violation])
    ]


def _code(code: grpc.StatusCode) -> Handler:
    return lambda e: (code, [])


def _unavailable(e: Exception) -> tuple[grpc.StatusCode, Details]:
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromMilliseconds(1000)
    return grpc.StatusCode.UNAVAILABLE, [retry]


# Looked up along the exception's MRO, so the most specific entry wins.
HANDLERS: dict[type[Exception], Handler] = {
    exc.InvalidArgument: _invalid_argument,
    exc.OutOfRange: _out_of_range,
    exc.NotFound: _not_found,
    exc.FailedPrecondition: _failed_precondition,
    exc.Aborted: _code(grpc.StatusCode.ABORTED),
    exc.ResourceExhausted: _code(grpc.StatusCode.RESOURCE_EXHAUSTED),
    exc.Unavailable: _unavailable,
    exc.Unauthenticated: _code(grpc.StatusCode.UNAUTHENTICATED),
    exc.PermissionDenied: _code(grpc.StatusCode.PERMISSION_DENIED),
    peewee.OperationalError: _unavailable,
    peewee.InterfaceError: _unavailable,
    MaxConnectionsExceeded: _unavailable,
    redis.exceptions.ConnectionError: _unavailable,
    redis.exceptions.TimeoutError: _unavailable,
}


def _handler_for(error: Exception) -> Handler | None:
    for cls in type(error).__mro__:
        if cls in HANDLERS:
            return HANDLERS[cls]
    return None


def _pack(messages: Details) -> list[any_pb2.Any]:
    packed = []
    for message in messages:
        item = any_pb2.Any()
        item.Pack(message)
        packed.append(item)
    return packed


def to_status(error: Exception) -> tuple[grpc.Status, bool]:
    """The gRPC status for `error`, and whether it was expected (False: a bug, INTERNAL)."""
    handler = _handler_for(error)
    details: Details
    if handler is None:
        code, details, message = grpc.StatusCode.INTERNAL, [], "internal error"
        reason = "INTERNAL"
    else:
        code, details = handler(error)
        message = (
            error.message
            if isinstance(error, exc.CampaignServiceError)
            else ("a dependency is unavailable; retry shortly")
        )
        reason = error.reason if isinstance(error, exc.CampaignServiceError) else "UNAVAILABLE"
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN)
    status = status_pb2.Status(
        code=getattr(code_pb2, code.name), message=message, details=_pack([info, *details])
    )
    return rpc_status.to_status(status), handler is not None
