"""The periodic sweep: the database, not Redis, decides when a campaign is due or stuck.

A lost Redis, a dead scheduler or a restart can drop a kickoff job; the sweep finds every
scheduled campaign whose time has passed and kicks it off (kickoff is idempotent). A worker
killed mid-campaign stops its heartbeat; the sweep reaps its expired leases and starts a
fresh calculate or send job (both are safe to repeat). A campaign cancelled while a worker
died with its rows leased gets those rows to a final state too.

It runs in a process of its own (`python -m jobs sweep`, which `python -m jobs` starts next
to its RQ worker), never on a thread of the worker: RQ forks a process per job, and a fork
while a thread holds a lock (logging's, redis-py's pool's, the database driver's) hands the
job a lock that nobody will release. However many workers sweep, one pass runs per interval
(a Redis lock), and each due campaign gets one kickoff job per KICKOFF_GUARD_SECONDS.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable

from rq import Queue

from jobs.context import delivery_settings, ensure_database
from jobs.enqueue import (
    enqueue_calculate,
    enqueue_kickoff,
    enqueue_send,
    kickoff_job_id,
    pending,
    sends_waiting,
    start_job_id,
)
from server.core.status import Status
from server.store import ledger
from server.store.db import release_connection, tuples
from server.store.models import Campaign, SkipReason, utcnow

log = logging.getLogger(__name__)

# Seconds between sweeps: the RQ scheduler is the fast path, this is the safety net.
SWEEP_INTERVAL = float(os.environ.get("SWEEP_INTERVAL") or 15.0)
# A kickoff enqueued by the sweep has this long to move its campaign out of "scheduled"
# before another is enqueued (a busy queue may hold it for a while; a repeat is harmless).
KICKOFF_GUARD_SECONDS = 60
# How long past its time a scheduled campaign is left to RQ's scheduler before the sweep
# kicks it off too (never longer than a sweep interval).
KICKOFF_GRACE_SECONDS = min(SWEEP_INTERVAL, 10.0)
PASS_LOCK = "campaigns:sweep:pass"


def due_campaigns(limit: int = 1000, grace: float | None = None) -> list[tuple[int, dt.datetime]]:
    """Scheduled campaigns past their time by more than `grace` seconds: the RQ scheduler's
    own kickoff gets that long first (a second kickoff for each of a burst of campaigns due
    together would double the jobs the workers must get through)."""
    ensure_database()
    grace = KICKOFF_GRACE_SECONDS if grace is None else grace
    try:
        due = utcnow() - dt.timedelta(seconds=grace)
        query = (
            Campaign.select(Campaign.id, Campaign.scheduled_at)
            .where((Campaign.status == Status.SCHEDULED) & (Campaign.scheduled_at <= due))
            .order_by(Campaign.scheduled_at)
            .limit(limit)
        )
        return [(int(c.id), c.scheduled_at) for c in query if c.scheduled_at is not None]
    finally:
        release_connection()


def stale_campaigns(stale_seconds: int) -> list[tuple[int, str]]:
    """Calculating or sending campaigns whose workers have stopped beating."""
    ensure_database()
    cutoff = utcnow() - dt.timedelta(seconds=stale_seconds)
    try:
        query = Campaign.select(Campaign.id, Campaign.status).where(
            Campaign.status.in_([Status.CALCULATING, Status.SENDING])
            & (Campaign.heartbeat_at.is_null() | (Campaign.heartbeat_at < cutoff))
        )
        return [(int(i), str(s)) for i, s in tuples(query)]
    finally:
        release_connection()


def _first_resume(queue: Queue, campaign_id: int, seconds: int) -> bool:
    """True for one caller per campaign per `seconds` (STALE_SECONDS), whatever the number of
    sweeping workers: a resumed campaign gets that long to beat again. Without it every sweep
    of every worker re-enqueued the stalled campaign, and since each send job leaves a
    successor, every extra resume stayed on as one more send job for the campaign."""
    key = f"campaigns:resume:{campaign_id}"
    return bool(queue.connection.set(key, os.getpid(), nx=True, ex=max(1, seconds)))


def resume(queue: Queue, campaign_id: int, status: str) -> None:
    if not _first_resume(queue, campaign_id, delivery_settings().stale_seconds):
        return
    suffix = uuid.uuid4().hex[:8]
    if status == Status.CALCULATING:
        enqueue_calculate(queue, campaign_id, f"resume-calc-{campaign_id}-{suffix}")
    else:
        ledger.reap(campaign_id)
        release_connection()
        enqueue_send(queue, campaign_id, f"resume-send-{campaign_id}-{suffix}")
    log.warning("resuming a stalled campaign", extra={"campaign_id": campaign_id, "status": status})


def cancelled_with_rows_left() -> list[int]:
    """Cancelled campaigns whose ledger still has rows pending, or leased by a dead worker."""
    ensure_database()
    try:
        return ledger.cancelled_with_rows_left(utcnow())
    finally:
        release_connection()


def settle_cancelled(campaign_id: int) -> None:
    """Rows of a cancelled campaign: expired leases reaped (sending rows become ambiguous,
    they may have gone out), pending rows skipped."""
    try:
        ledger.reap(campaign_id)
        skipped = ledger.skip_pending(campaign_id, SkipReason.CANCELLED)
    finally:
        release_connection()
    log.info("settled a cancelled campaign", extra={"campaign_id": campaign_id, "skipped": skipped})


def _first_kickoff(queue: Queue, campaign_id: int) -> bool:
    key = f"campaigns:kickoff:{campaign_id}"
    return bool(queue.connection.set(key, os.getpid(), nx=True, ex=KICKOFF_GUARD_SECONDS))


def sweep(queue: Queue) -> int:
    """Kick off due campaigns, resume stalled ones and settle cancelled ones; returns how
    many campaigns were touched."""
    due = due_campaigns()
    # The server's own scheduled kickoff, still queued behind other jobs, is not lost.
    on_its_way = pending(queue.connection, {c: kickoff_job_id(c, at) for c, at in due})
    ids = [c for c, _ in due if c not in on_its_way and _first_kickoff(queue, c)]
    for campaign_id in ids:
        enqueue_kickoff(queue, campaign_id, f"sweep-kickoff-{campaign_id}")
    if ids:
        log.info("sweep found due campaigns", extra={"count": len(ids)})
    stale = stale_campaigns(delivery_settings().stale_seconds)
    waiting = _waiting(queue, stale)
    for campaign_id, status in stale:
        if campaign_id not in waiting:
            resume(queue, campaign_id, status)
    cancelled = cancelled_with_rows_left()
    for campaign_id in cancelled:
        settle_cancelled(campaign_id)
    return len(ids) + len(stale) + len(cancelled)


def _waiting(queue: Queue, stale: list[tuple[int, str]]) -> set[int]:
    """Stale-looking campaigns that are only waiting their turn in the queue: a send job
    enqueued and not started, or the start job of a campaign sent now (no heartbeat yet)."""
    sending = [c for c, s in stale if s == Status.SENDING]
    calculating = {c: start_job_id(c) for c, s in stale if s == Status.CALCULATING}
    return sends_waiting(queue.connection, sending) | pending(queue.connection, calculating)


def _our_pass(queue: Queue, interval: float) -> bool:
    """One sweeper per interval across every worker: the first to take the lock."""
    ms = max(1, int(interval * 1000 * 0.9))
    return bool(queue.connection.set(PASS_LOCK, os.getpid(), nx=True, px=ms))


def run_forever(
    queue: Queue,
    keep_going: Callable[[], bool],
    pause: threading.Event,
    interval: float = SWEEP_INTERVAL,
) -> None:
    """Sweep every `interval` seconds while `keep_going()`; `pause` is waited on between
    passes (setting it, as a signal does, ends the wait at once)."""
    next_pass = 0.0
    while keep_going():
        if time.monotonic() >= next_pass:
            next_pass = time.monotonic() + interval
            try:
                if _our_pass(queue, interval):
                    sweep(queue)
            except Exception:
                log.warning("sweep failed; retrying next interval", exc_info=True)
        # Short waits: `keep_going` (the worker still alive) is asked at least every second.
        pause.wait(max(0.0, min(1.0, next_pass - time.monotonic())))
