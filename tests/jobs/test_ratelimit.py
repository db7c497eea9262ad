"""The shared rate limit on a real Redis: permits per window, and permits a short group gives
back."""

from __future__ import annotations

import time
import uuid

from redis import Redis

from jobs.sending.ratelimit import RateLimiter


def _early_in_a_window() -> None:
    """Start just after a one-second window opens, so one test stays inside it."""
    time.sleep(1 - time.time() % 1 + 0.01)


def test_a_window_grants_its_capacity_and_no_more(redis: Redis) -> None:
    limiter = RateLimiter(redis, f"test-{uuid.uuid4().hex}", per_second=10)
    _early_in_a_window()
    assert limiter._take(8) == 8
    assert limiter._take(8) == 2  # the rest waits for the next window
    assert int(redis.get(limiter._key()) or 0) == 10


def test_permits_a_short_group_did_not_use_go_back_to_the_window(redis: Redis) -> None:
    limiter = RateLimiter(redis, f"test-{uuid.uuid4().hex}", per_second=10)
    _early_in_a_window()
    assert limiter.acquire(10) == 0.0
    limiter.give_back(7)  # the group came up with 3 rows
    assert int(redis.get(limiter._key()) or 0) == 3
    assert limiter._take(7) == 7  # another job may send them in this window
    limiter.give_back(50)  # never more than were taken last
    assert int(redis.get(limiter._key()) or 0) == 3
