"""Deadlines and retries for unary calls: only UNAVAILABLE is retried, and only for calls that
are safe to repeat (reads, and mutating calls that carry a request_id the server dedupes on).

One deadline covers every attempt of a call: a retry never outlives the caller's timeout.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from campaign_client.errors import CampaignClientError, UnavailableError, from_rpc_error

Request = TypeVar("Request")
Response = TypeVar("Response")
Metadata = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits initial_backoff * multiplier**(n-1),
    at most max_backoff, randomised by +/- jitter (a fraction)."""

    max_attempts: int = 4
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def backoff(self, attempt: int, hint: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (from 1). A server hint
        (RetryInfo) is honoured up to max_backoff."""
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        if hint is not None:
            base = max(base, min(hint, self.max_backoff))
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))


NO_RETRY = RetryPolicy(max_attempts=1)


def _retryable(error: CampaignClientError, safe: bool, attempt: int, policy: RetryPolicy) -> bool:
    return safe and isinstance(error, UnavailableError) and attempt < policy.max_attempts


def _delay(error: CampaignClientError, attempt: int, policy: RetryPolicy) -> float:
    hint = error.retry_delay if isinstance(error, UnavailableError) else None
    return policy.backoff(attempt, hint)


def call_unary(
    method: Callable[..., Response],
    request: Any,
    *,
    timeout: float | None,
    metadata: Metadata,
    safe: bool,
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
) -> Response:
    """Call `method` (a stub's unary method) with one deadline over every attempt; raise a
    CampaignClientError (with `.attempts`) when it fails for good."""
    deadline = None if timeout is None else time.monotonic() + timeout
    attempt = 1
    while True:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return method(request, timeout=remaining, metadata=metadata)
        except grpc.RpcError as rpc_error:
            error = from_rpc_error(rpc_error)
            error.attempts = attempt
            delay = _delay(error, attempt, policy)
            out_of_time = deadline is not None and time.monotonic() + delay >= deadline
            if not _retryable(error, safe, attempt, policy) or out_of_time:
                raise error from rpc_error
        sleep(delay)
        attempt += 1
