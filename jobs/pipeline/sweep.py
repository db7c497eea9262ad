"""The periodic sweep: the database, not Redis, decides when a campaign is due or stuck.

A lost Redis, a dead scheduler or a restart can drop a kickoff job; the sweep finds every
scheduled campaign whose time has passed and kicks it off (kickoff is idempotent). A worker
killed mid-campaign stops its heartbeat; the sweep reaps its expired leases and starts a
fresh calculate or send job (both are safe to repeat).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import uuid

from rq import Queue

from jobs.context import delivery_settings, ensure_database
from jobs.enqueue import enqueue_calculate, enqueue_kickoff, enqueue_send
from server.core.status import Status
from server.store import ledger
from server.store.db import release_connection, tuples
from server.store.models import Campaign, utcnow

log = logging.getLogger(__name__)

# Seconds between sweeps: the RQ scheduler is the fast path, this is the safety net.
SWEEP_INTERVAL = float(os.environ.get("SWEEP_INTERVAL") or 15.0)


def due_campaign_ids(limit: int = 1000) -> list[int]:
    ensure_database()
    try:
        query = (
            Campaign.select(Campaign.id)
            .where((Campaign.status == Status.SCHEDULED) & (Campaign.scheduled_at <= utcnow()))
            .order_by(Campaign.scheduled_at)
            .limit(limit)
        )
        return [c.id for c in query]
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


def sweep(queue: Queue) -> int:
    """Kick off due campaigns and resume stalled ones; returns how many were touched."""
    ids = due_campaign_ids()
    for campaign_id in ids:
        enqueue_kickoff(queue, campaign_id, f"sweep-kickoff-{campaign_id}")
    if ids:
        log.info("sweep found due campaigns", extra={"count": len(ids)})
    stale = stale_campaigns(delivery_settings().stale_seconds)
    for campaign_id, status in stale:
        resume(queue, campaign_id, status)
    return len(ids) + len(stale)


def run_forever(queue: Queue, stop: threading.Event, interval: float = SWEEP_INTERVAL) -> None:
    while not stop.is_set():
        try:
            sweep(queue)
        except Exception:
            log.warning("sweep failed; retrying next interval", exc_info=True)
        stop.wait(interval)
