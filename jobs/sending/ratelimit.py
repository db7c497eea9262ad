"""A per-provider rate limit shared by every worker through Redis (fixed one-second windows).

Workers take permits for a whole group of messages at once, so the limiter costs one round
trip per group, not per message.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from redis import Redis


class RateLimiter:
    def __init__(self, redis: Redis | None, name: str, per_second: float) -> None:
        self.redis = redis
        self.name = name
        # Rates under one per second get a longer window holding one permit.
        self.window = 1 if per_second >= 1 else math.ceil(1 / per_second) if per_second else 1
        self.capacity = max(1, int(per_second * self.window)) if per_second > 0 else 0
        self._last: tuple[str, int] = ("", 0)  # the key permits were last taken from, and how many

    def acquire(self, permits: int, stop: Callable[[], bool] | None = None) -> float:
        """Block until `permits` messages may go; returns the seconds spent waiting. `stop` is
        asked before each wait for the next window: True gives up (permits taken are lost)."""
        if self.capacity == 0 or self.redis is None or permits <= 0:
            return 0.0
        waited, remaining = 0.0, permits
        while remaining:
            remaining -= self._take(remaining)
            if remaining:
                if stop is not None and stop():
                    return waited
                pause = self.window - (time.time() % self.window)
                time.sleep(pause)
                waited += pause
        return waited

    def give_back(self, permits: int) -> None:
        """Return permits taken but not used (a group came up short), while their window
        lasts: a later window never had them."""
        key, taken = self._last
        permits = min(permits, taken)
        if permits > 0 and key == self._key():
            self.redis.decrby(key, permits)  # type: ignore[union-attr]
            self._last = (key, taken - permits)

    def _key(self) -> str:
        return f"campaigns:ratelimit:{self.name}:{int(time.time() // self.window)}"

    def _take(self, wanted: int) -> int:
        key = self._key()
        pipe = self.redis.pipeline()  # type: ignore[union-attr]
        pipe.incrby(key, wanted)
        pipe.expire(key, self.window * 2)
        used = int(pipe.execute()[0])
        granted = max(0, min(wanted, self.capacity - (used - wanted)))
        if granted < wanted:
            self.redis.decrby(key, wanted - granted)  # type: ignore[union-attr]
        self._last = (key, granted)
        return granted
