"""A hand-written Python client for the campaigns.v1 gRPC API (`CampaignClient`) and the
`campaignctl` command-line tool built on it (`campaign_client.cli`)."""

from campaign_client.client import CampaignClient, make_channel, new_request_id, timestamp
from campaign_client.errors import (
    AbortedError,
    AlreadyExistsError,
    CampaignClientError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionViolation,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    from_rpc_error,
)
from campaign_client.retry import NO_RETRY, RetryPolicy

__all__ = [
    "NO_RETRY",
    "AbortedError",
    "AlreadyExistsError",
    "CampaignClient",
    "CampaignClientError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "PreconditionViolation",
    "ResourceExhaustedError",
    "RetryPolicy",
    "UnauthenticatedError",
    "UnavailableError",
    "from_rpc_error",
    "make_channel",
    "new_request_id",
    "timestamp",
]
