"""Kickoff jobs: move a due scheduled campaign to calculating, then calculate it.

Both are safe to run twice or late: the database, not the job, decides whether anything
happens (compare-and-set on the status, `scheduled_at` re-read at run time).
"""

from __future__ import annotations

import logging

from jobs.context import ensure_database
from jobs.pipeline.calculate import calculate
from server.campaigns import transitions
from server.core.status import Action, Status
from server.store.models import Campaign, utcnow

log = logging.getLogger(__name__)


def kickoff(campaign_id: int) -> str:
    """Start a scheduled campaign whose time has come; anything else is a quiet no-op."""
    ensure_database()
    campaign = Campaign.get_or_none(Campaign.id == campaign_id)
    if campaign is None or campaign.status != Status.SCHEDULED:
        outcome = "gone" if campaign is None else f"not scheduled ({campaign.status})"
        log.info("kickoff skipped", extra={"campaign_id": campaign_id, "outcome": outcome})
        return outcome
    if campaign.scheduled_at is None or campaign.scheduled_at > utcnow():
        # Rescheduled later: the job for the new time (or the sweep) starts it. Never early.
        log.info("kickoff early", extra={"campaign_id": campaign_id})
        return "early"
    if not transitions.try_apply(campaign_id, Action.KICK_OFF, heartbeat_at=utcnow()):
        return "lost race"
    log.info("campaign kicked off", extra={"campaign_id": campaign_id})
    return start(campaign_id)


def start(campaign_id: int) -> str:
    """Entry of the delivery pipeline for a calculating campaign: calculate, then send."""
    ensure_database()
    return calculate(campaign_id)
