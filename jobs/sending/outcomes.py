"""What each send's outcome makes of its ledger row: sent, failed, ambiguous, or back to pending.

Every outcome spends one attempt except a deferred one (the circuit was open, nothing went
out). Transient failures come back after an exponential backoff with jitter, never sooner than
the provider's Retry-After; an ambiguous send (it may have been delivered) is final and never
retried. Writing them (`server.store.outcomes`) is the send job's.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from jobs.sending.providers import Outcome, SendResult
from server.config import DeliverySettings
from server.core.clock import utcnow

if TYPE_CHECKING:  # types only: this package runs no SQL
    from server.store.leases import LeasedRow
    from server.store.outcomes import Row

__all__ = ["KINDS", "backoff", "classify", "retry_delay"]

# The kinds of outcome; `server.store.outcomes.STATUS` says what each makes of the row.
KINDS = ("sent", "failed", "retried", "deferred", "ambiguous")


def backoff(attempt: int, settings: DeliverySettings) -> dt.timedelta:
    """Exponential with "equal" jitter (between half the ceiling and the ceiling): retries of
    many recipients don't land together, and none comes back much sooner than planned."""
    ceiling = min(settings.retry_max_seconds, settings.retry_base_seconds * 2**attempt)
    return dt.timedelta(seconds=random.uniform(ceiling / 2, ceiling))


def retry_delay(attempt: int, result: SendResult, settings: DeliverySettings) -> dt.timedelta:
    """The backoff, but never sooner than the provider asked (Retry-After, capped)."""
    floor = min(result.retry_after, settings.retry_max_seconds)
    return max(backoff(attempt, settings), dt.timedelta(seconds=floor))


def _place(
    row: LeasedRow, result: SendResult, settings: DeliverySettings, now: dt.datetime
) -> tuple[str, Row]:
    """The kind of outcome and the row's new values."""
    if result.outcome == Outcome.SENT:
        return "sent", (row.id, result.provider_message_id, "", None, now, 1)
    if result.outcome == Outcome.DEFERRED:  # never attempted: the attempt is not spent
        resume = now + dt.timedelta(seconds=result.retry_after)
        return "deferred", (row.id, None, result.error, resume, None, 0)
    if result.outcome == Outcome.AMBIGUOUS:
        return "ambiguous", (row.id, None, result.error, None, None, 1)
    if result.outcome == Outcome.TRANSIENT and row.attempts + 1 < settings.max_attempts:
        retry_at = now + retry_delay(row.attempts, result, settings)
        return "retried", (row.id, None, result.error, retry_at, None, 1)
    error = (
        result.error
        if result.outcome == Outcome.PERMANENT
        else f"gave up after {row.attempts + 1} attempts: {result.error}"
    )
    return "failed", (row.id, None, error, None, None, 1)


def classify(
    items: Sequence[tuple[LeasedRow, SendResult]], settings: DeliverySettings
) -> dict[str, list[Row]]:
    now = utcnow()
    groups: dict[str, list[Row]] = {kind: [] for kind in KINDS}
    for row, result in items:
        kind, values = _place(row, result, settings, now)
        groups[kind].append(values)
    return groups
