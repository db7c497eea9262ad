"""The send job: carry a sending campaign's due rows to the provider for a while, then hand
over to a fresh job, or finish the campaign.

A job works for at most `job_budget_seconds` (`sender.Sender` does the sending), then hands
over to a fresh job, so one campaign never pins a worker and several campaigns share the
workers fairly. The last job to find nothing left finishes the campaign.

Each provider endpoint has a circuit breaker shared by all workers (`jobs/sending/circuit.py`),
asked before each take. While it is open a job sends nothing more: messages already handed
to the I/O threads come back "deferred" (pending again, no attempt spent), and the job
reschedules itself for when the breaker may let a probe through.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid

from jobs.context import delivery_settings, ensure_database, queue
from jobs.enqueue import enqueue_send, send_started
from jobs.pipeline.send.sender import Sender, campaign_status
from server.campaigns import transitions
from server.config import DeliverySettings
from server.core.status import Action, Status
from server.store import ledger
from server.store.models import Campaign, DeliveryStatus, SkipReason, utcnow

__all__ = ["after_send", "finish", "pause", "send"]

log = logging.getLogger(__name__)


def send(campaign_id: int) -> str:
    send_started(queue().connection, campaign_id)
    ensure_database()
    settings = delivery_settings()
    campaign = transitions.get(campaign_id) if campaign_status(campaign_id) else None
    if campaign is None or campaign.status != Status.SENDING:
        return "not sending"
    ledger.reap(campaign_id)
    sender = Sender(campaign, settings)
    started = time.monotonic()
    try:
        sender.run(started + settings.job_budget_seconds)
    finally:
        sender.close()
    if campaign_status(campaign_id) == Status.CANCELLED:
        # Rows a retry or a deferral put back while the cancel landed: none will be sent.
        ledger.skip_pending(campaign_id, SkipReason.CANCELLED)
    elapsed = max(time.monotonic() - started, 1e-6)
    log.info(
        "send job done",
        extra={
            "campaign_id": campaign_id,
            "sent": sender.tally.sent,
            "failed": sender.tally.failed,
            "retried": sender.tally.retried,
            "deferred": sender.tally.deferred,
            "ambiguous": sender.tally.ambiguous,
            "paused_for": sender.paused_for,
            "msgs_per_s": round(sender.tally.sent / elapsed),
        },
    )
    return after_send(campaign_id, settings, sender.paused_for)


def after_send(
    campaign_id: int, settings: DeliverySettings, paused_for: float | None = None
) -> str:
    """Finish the campaign, or make sure a job will pick up what is left. Each job leaves at
    most one successor, so the number of send jobs per campaign never grows."""
    status = campaign_status(campaign_id)
    if status != Status.SENDING:
        if status == Status.CANCELLED:
            ledger.skip_pending(campaign_id, SkipReason.CANCELLED)
        return "stopped"
    if ledger.count(campaign_id, ledger.IN_FLIGHT) == 0:
        return finish(campaign_id)
    if paused_for is not None:
        return pause(campaign_id, paused_for)
    if ledger.claimable(campaign_id):
        enqueue_send(queue(), campaign_id, f"send-{campaign_id}-{uuid.uuid4().hex[:8]}")
        return "continued"
    if ledger.count(campaign_id, [DeliveryStatus.CLAIMED, DeliveryStatus.SENDING]):
        return "others still sending"  # their jobs finish up; the sweep covers their death
    retry_at = ledger.next_retry_at(campaign_id) or utcnow()
    enqueue_send(
        queue(), campaign_id, f"send-{campaign_id}-retry-{int(retry_at.timestamp())}", at=retry_at
    )
    return "waiting for retries"


def pause(campaign_id: int, seconds: float) -> str:
    """The provider's circuit is open: come back when it may let a probe through. The
    heartbeat is refreshed, or the sweep would take the wait for a dead worker."""
    Campaign.update(heartbeat_at=utcnow()).where(Campaign.id == campaign_id).execute()
    at = utcnow() + dt.timedelta(seconds=max(seconds, 0.5))
    job_id = f"send-{campaign_id}-circuit-{uuid.uuid4().hex[:8]}"
    enqueue_send(queue(), campaign_id, job_id, at=at)
    return "circuit open"


def finish(campaign_id: int) -> str:
    """sent, with counters recomputed from the ledger; failed when nothing got through."""
    totals = ledger.totals(campaign_id)
    sent, failed = totals.get(DeliveryStatus.SENT, 0), totals.get(DeliveryStatus.FAILED, 0)
    figures = {"sent_count": sent, "failed_count": failed, "completed_at": utcnow()}
    if sent == 0 and failed > 0:
        error = (
            f"all {failed} messages failed; most common error: "
            f"{ledger.most_common_error(campaign_id)}"
        )
        transitions.try_apply(campaign_id, Action.FAIL, error_message=error[:2000], **figures)
        return "failed"
    transitions.try_apply(campaign_id, Action.FINISH, **figures)
    return "sent"
