"""What a send's outcome makes of its ledger row (`jobs.sending.outcomes`), with no database:
the backoff and its jitter, Retry-After as a floor, and `classify` grouping a send job's
results into sent / failed / retried / deferred / ambiguous rows."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from jobs.sending import outcomes
from jobs.sending.outcomes import KINDS, backoff, classify, retry_delay
from jobs.sending.providers import ambiguous, deferred, permanent, sent, transient
from server.config import DeliverySettings
from server.store.leases import LeasedRow

SETTINGS = DeliverySettings(retry_base_seconds=2.0, retry_max_seconds=300.0, max_attempts=3)
NOW = dt.datetime(2030, 5, 1, 12, 0, 0)


def seconds(delta: dt.timedelta) -> float:
    return delta.total_seconds()


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(0, 2.0), (1, 4.0), (2, 8.0), (5, 64.0), (7, 256.0), (8, 300.0), (30, 300.0)],
)
def test_backoff_doubles_up_to_the_cap_with_equal_jitter(attempt, ceiling, monkeypatch):
    asked: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        asked.append((low, high))
        return high

    monkeypatch.setattr(random, "uniform", uniform)
    assert seconds(backoff(attempt, SETTINGS)) == ceiling
    assert asked == [(ceiling / 2, ceiling)]  # between half the ceiling and the ceiling


def test_backoff_spreads_retries_within_its_bounds():
    samples = [seconds(backoff(3, SETTINGS)) for _ in range(500)]
    assert all(8.0 <= s <= 16.0 for s in samples), (min(samples), max(samples))
    assert len(set(samples)) > 400  # jittered, not one value


def test_retry_after_is_a_floor_and_capped(monkeypatch):
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    # No Retry-After: the backoff itself (attempt 1: 4 s).
    assert seconds(retry_delay(1, transient("451"), SETTINGS)) == 4.0
    # A Retry-After longer than the backoff wins...
    assert seconds(retry_delay(1, transient("429", retry_after=30), SETTINGS)) == 30.0
    # ...a shorter one does not shorten it...
    assert seconds(retry_delay(1, transient("429", retry_after=1), SETTINGS)) == 4.0
    # ...and a huge one is capped at retry_max_seconds.
    assert seconds(retry_delay(1, transient("429", retry_after=86400), SETTINGS)) == 300.0


def _row(row_id: int, attempts: int = 0) -> LeasedRow:
    return LeasedRow(
        id=row_id, user_id=row_id * 10, address=f"u{row_id}@x.example", attempts=attempts
    )


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outcomes, "utcnow", lambda: NOW)
    monkeypatch.setattr(random, "uniform", lambda low, high: high)


def test_classify_places_each_outcome(frozen):
    groups = classify(
        [
            (_row(1), sent("<m1@x>")),
            (_row(2), permanent("550 5.1.1 no such user")),
            (_row(3, attempts=0), transient("451 try later")),
            (_row(4, attempts=2), transient("451 try later")),  # the third of three attempts
            (_row(5, attempts=1), deferred(7.5)),
            (_row(6), ambiguous("timed out after DATA")),
        ],
        SETTINGS,
    )
    assert list(groups) == list(KINDS)
    # (id, provider_message_id, last_error, next_attempt_at, sent_at, attempts spent)
    assert groups["sent"] == [(1, "<m1@x>", "", None, NOW, 1)]
    assert groups["failed"] == [
        (2, None, "550 5.1.1 no such user", None, None, 1),
        (4, None, "gave up after 3 attempts: 451 try later", None, None, 1),
    ]
    assert groups["retried"] == [(3, None, "451 try later", NOW + dt.timedelta(seconds=2), None, 1)]
    # Deferred: never attempted, so no attempt is spent; back when the circuit may be closed.
    assert groups["deferred"] == [
        (5, None, "circuit open: not attempted", NOW + dt.timedelta(seconds=7.5), None, 0)
    ]
    assert groups["ambiguous"] == [
        (6, None, "may have been delivered: timed out after DATA", None, None, 1)
    ]


def test_a_retry_honours_retry_after_and_backs_off_with_the_attempts(frozen):
    groups = classify(
        [
            (_row(1, attempts=1), transient("429", retry_after=60)),
            (_row(2, attempts=1), transient("421")),
        ],
        SETTINGS,
    )
    retry_at = {row[0]: row[3] for row in groups["retried"]}
    assert retry_at == {1: NOW + dt.timedelta(seconds=60), 2: NOW + dt.timedelta(seconds=4)}


def test_max_attempts_one_fails_a_transient_at_once(frozen):
    groups = classify([(_row(1), transient("451"))], DeliverySettings(max_attempts=1))
    assert groups["retried"] == []
    assert groups["failed"] == [(1, None, "gave up after 1 attempts: 451", None, None, 1)]


def test_nothing_to_classify_gives_every_kind_empty():
    assert classify([], SETTINGS) == {kind: [] for kind in KINDS}
