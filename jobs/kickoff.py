"""Kickoff jobs: move a due scheduled campaign to calculating, and start its pipeline.

Both are safe to run twice or late: the database, not the job, decides whether anything
happens (compare-and-set on the status, `scheduled_at` re-read at run time).
"""

from __future__ import annotations

import logging

from jobs.context import ensure_database
from server import transitions
from server.models import Campaign, utcnow
from server.status import Action, Status

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
        # Rescheduled later (or fired a little early): the job for the new time will run.
        log.info("kickoff early", extra={"campaign_id": campaign_id})
        return "early"
    if not transitions.try_apply(campaign_id, Action.KICK_OFF):
        return "lost race"
    log.info("campaign kicked off", extra={"campaign_id": campaign_id})
    return start(campaign_id)


def start(campaign_id: int) -> str:
    """Entry of the delivery pipeline for a calculating campaign.

    Segment calculation and sending belong to the delivery engine (issue 4), which is not
    built yet: for now this confirms the hand-off and leaves the campaign calculating.
    """
    ensure_database()
    campaign = Campaign.get_or_none(Campaign.id == campaign_id)
    if campaign is None or campaign.status != Status.CALCULATING:
        return "not calculating"
    log.info("campaign handed to the delivery pipeline", extra={"campaign_id": campaign_id})
    return "calculating"
