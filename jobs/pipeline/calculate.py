"""The calculate job: evaluate the segment and freeze it into the delivery ledger.

Set-based and restartable: rows go in per batch with INSERT ... ON CONFLICT DO NOTHING, then
suppressed and duplicate addresses are skipped with one UPDATE each. A re-run after a crash
adds what is missing and changes nothing else. It ends by moving the campaign to sending (or
straight to sent when nobody is left to send to) and starting the send jobs.
"""

from __future__ import annotations

import logging
from typing import Any

from jobs.context import delivery_settings, ensure_database, queue
from jobs.enqueue import enqueue_send
from jobs.pipeline import freeze
from server.audience.segments import engine
from server.audience.segments.sandbox import ExpressionTooCostly
from server.campaigns import transitions
from server.core.errors import InvalidArgument
from server.core.status import Action, Status, next_status
from server.store import ledger
from server.store.models import Campaign, DeliveryStatus, Segment, utcnow

log = logging.getLogger(__name__)


def _move(campaign_id: int, action: Action, **changes: Any) -> bool:
    """Apply `action` only to a campaign still calculating. A racing calculation (a repeated
    start, a sweep's resume) may have moved it to sending meanwhile, and FINISH or FAIL from
    sending would end that send while its messages are still going out."""
    target = next_status(Status.CALCULATING, action)
    return target is not None and transitions.compare_and_set(
        campaign_id, Status.CALCULATING, target, **changes
    )


def _fail(campaign_id: int, message: str) -> str:
    if not _move(campaign_id, Action.FAIL, error_message=message, completed_at=utcnow()):
        return "lost race"
    log.warning("campaign failed", extra={"campaign_id": campaign_id, "error": message})
    return "failed"


def calculate(campaign_id: int) -> str:
    ensure_database()
    campaign = Campaign.get_or_none(Campaign.id == campaign_id)
    if campaign is None or campaign.status != Status.CALCULATING:
        return "not calculating"
    segment = Segment.get_or_none(Segment.id == campaign.segment_id)
    if segment is None:
        return _fail(campaign_id, f"segment {campaign.segment_id} no longer exists")
    try:
        compiled = engine.compile_segment(segment.expression)
    except InvalidArgument as exc:
        return _fail(campaign_id, f"segment {segment.id} cannot be evaluated: {exc.message}")
    # An exact segment never leaves the database; any other is decided by CEL in Python.
    frozen = freeze.freeze_in_sql if compiled.exact else freeze.freeze_in_python
    try:
        matched = frozen(campaign, compiled, segment.edition_id)
    except ExpressionTooCostly as exc:
        # Nothing was sent: the recipients frozen so far are dropped with the campaign.
        ledger.discard(campaign_id)
        return _fail(campaign_id, f"segment {segment.id} is too costly to evaluate: {exc.message}")
    if matched is None:
        return "cancelled"
    ledger.skip_suppressed(campaign_id, campaign.organization_id, campaign.channel)
    ledger.skip_duplicates(campaign_id)
    total = ledger.count(campaign_id, [DeliveryStatus.PENDING])
    figures = {
        "user_count": matched,
        "total_recipients": total,
        "started_at": utcnow(),
        "heartbeat_at": utcnow(),
    }
    if total == 0:
        if not _move(campaign_id, Action.FINISH, completed_at=utcnow(), **figures):
            return "lost race"
        return "sent (no recipients)"
    if not _move(campaign_id, Action.START_SENDING, **figures):
        return "lost race"
    start_senders(campaign_id, total)
    log.info("calculated", extra={"campaign_id": campaign_id, "matched": matched, "total": total})
    return "sending"


def start_senders(campaign_id: int, pending: int) -> None:
    settings = delivery_settings()
    jobs = min(settings.parallel_send_jobs, -(-pending // settings.group_size))
    for n in range(max(1, jobs)):
        enqueue_send(queue(), campaign_id, f"send-{campaign_id}-{n}")
