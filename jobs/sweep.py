"""The periodic sweep: the database, not Redis, decides when a campaign is due.

A lost Redis, a dead scheduler or a restart can drop a kickoff job; the sweep finds every
scheduled campaign whose time has passed and kicks it off (kickoff is idempotent).
"""

from __future__ import annotations

import logging
import threading

from rq import Queue

from jobs import kickoff
from jobs.context import ensure_database
from server.db import release_connection
from server.models import Campaign, utcnow
from server.status import Status

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 15.0  # seconds; the RQ scheduler is the fast path, this is the safety net


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


def sweep(queue: Queue) -> int:
    """Enqueue a kickoff for every due scheduled campaign; returns how many."""
    ids = due_campaign_ids()
    for campaign_id in ids:
        queue.enqueue(kickoff.kickoff, campaign_id, job_id=f"sweep-kickoff-{campaign_id}")
    if ids:
        log.info("sweep found due campaigns", extra={"count": len(ids)})
    return len(ids)


def run_forever(queue: Queue, stop: threading.Event, interval: float = SWEEP_INTERVAL) -> None:
    while not stop.is_set():
        try:
            sweep(queue)
        except Exception:
            log.warning("sweep failed; retrying next interval", exc_info=True)
        stop.wait(interval)
