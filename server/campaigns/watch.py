"""Live stats for WatchCampaignStats: one poller thread per process serves every watcher.

Watchers of the same campaign share one database read per tick, and a watcher holds no
database connection while it waits. The number of watchers is bounded, since each holds a
server thread for the life of its stream.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable

from server.campaigns.stats import Stats
from server.core.errors import NotFound, ResourceExhausted
from server.store.db import release_connection

log = logging.getLogger(__name__)


class Subscription:
    """One watcher's mailbox: the newest reading, or the error that ended the campaign's feed."""

    def __init__(self, hub: StatsHub, campaign_id: int) -> None:
        self.hub = hub
        self.campaign_id = campaign_id
        self._cond = threading.Condition()
        self._latest: Stats | None = None
        self._error: Exception | None = None
        self._fresh = False
        self.closed = False

    def push(self, stats: Stats | None, error: Exception | None = None) -> None:
        with self._cond:
            self._latest, self._error, self._fresh = stats, error, True
            self._cond.notify_all()

    def next(self, timeout: float | None = None) -> Stats | None:
        """Wait for a reading newer than the last one returned; None once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._fresh or self.closed, timeout)
            if self.closed or not self._fresh:
                return None
            self._fresh = False
            if self._error is not None:
                raise self._error
            return self._latest

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        self.hub.unsubscribe(self)


class StatsHub:
    """Polls each watched campaign every `interval` seconds and pushes changed figures."""

    def __init__(self, fetch: Callable[[int], Stats], interval: float, limit: int) -> None:
        self.fetch = fetch
        self.interval = interval
        self.limit = limit
        self._lock = threading.Lock()
        self._subs: dict[int, set[Subscription]] = defaultdict(set)
        self._last: dict[int, Stats] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stats-hub", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            subs = [s for group in self._subs.values() for s in group]
        for sub in subs:
            sub.close()

    @property
    def watchers(self) -> int:
        with self._lock:
            return sum(len(group) for group in self._subs.values())

    def subscribe(self, campaign_id: int, first: Stats) -> Subscription:
        sub = Subscription(self, campaign_id)
        with self._lock:
            if sum(len(group) for group in self._subs.values()) >= self.limit:
                raise ResourceExhausted(
                    f"too many open watchers ({self.limit}); try again later",
                    reason="TOO_MANY_WATCHERS",
                )
            self._subs[campaign_id].add(sub)
            last = self._last.get(campaign_id)
            if last is None:
                self._last[campaign_id] = first
            elif last != first:
                # The newcomer read figures the others have not seen (or vice versa): forget
                # the shared reading so the next poll pushes to every watcher.
                del self._last[campaign_id]
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            group = self._subs.get(sub.campaign_id)
            if group is not None:
                group.discard(sub)
                if not group:
                    del self._subs[sub.campaign_id]
                    self._last.pop(sub.campaign_id, None)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            with self._lock:
                ids = list(self._subs)
            for campaign_id in ids:
                self._poll(campaign_id)
            release_connection()

    def _poll(self, campaign_id: int) -> None:
        try:
            stats: Stats | None = self.fetch(campaign_id)
            error: Exception | None = None
        except NotFound as exc:
            stats, error = None, exc
        except Exception:
            # A database hiccup: keep the watchers and try again next tick.
            log.warning("stats poll failed", exc_info=True, extra={"campaign_id": campaign_id})
            release_connection()
            return
        with self._lock:
            if error is None and self._last.get(campaign_id) == stats:
                return
            if stats is not None:
                self._last[campaign_id] = stats
            subs = list(self._subs.get(campaign_id, ()))
        for sub in subs:
            sub.push(stats, error)
