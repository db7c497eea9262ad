"""Freezing a segment into the delivery ledger.

Two ways, one result. When the segment is exact (its SQL pre-filter decides membership alone,
see `segments.pushdown.exact`), each window of user ids becomes one INSERT ... SELECT inside the
database: no user row crosses into Python. Otherwise matching users are read page by page, CEL
decides, and `ledger.freeze` writes the rows. Either way windows are small enough to check for
a cancel, beat the campaign's heartbeat and log progress between them, and a re-run after a
crash only adds what is missing (ON CONFLICT DO NOTHING).

`recipient_sql` and `entry` state the same skip rules; the tests freeze one
audience both ways and compare the ledgers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import peewee as pw

from server.audience.segments import engine
from server.audience.segments.budget import BatchEvaluator
from server.audience.segments.engine import UserRow
from server.core.channels import Channel
from server.core.status import Status
from server.store import ledger
from server.store.db import write_transaction
from server.store.models import Campaign, Delivery, DeliveryStatus, SkipReason, User, utcnow

log = logging.getLogger(__name__)

SQL_WINDOW = 50_000  # user ids per INSERT ... SELECT: about a second of work on PostgreSQL


def entry(campaign: Campaign, user: UserRow) -> tuple[int, int, str, str, str]:
    """(campaign_id, user_id, address, status, skip_reason) of one matched user."""
    email = campaign.channel == Channel.EMAIL
    address = user.email if email else user.phone
    consent = user.email_consent if email else user.sms_consent
    unsubscribed = user.email_unsubscribed if email else user.sms_unsubscribed
    reason = ""
    if not address:
        reason = SkipReason.NO_ADDRESS
    elif not consent:
        reason = SkipReason.NO_CONSENT
    elif unsubscribed:
        reason = SkipReason.UNSUBSCRIBED
    elif ("@" not in address) if email else not address.startswith("+"):
        reason = SkipReason.INVALID_ADDRESS
    status = DeliveryStatus.SKIPPED if reason else DeliveryStatus.PENDING
    return (campaign.id, user.id, address or "", str(status), str(reason))


def recipient_sql(channel: str) -> tuple[pw.Node, pw.Node, pw.Node]:
    """(address, status, skip_reason) of a user as SQL expressions, as `entry` decides them."""
    email = channel == Channel.EMAIL
    address = pw.fn.COALESCE(User.email if email else User.phone, "")
    consent = User.email_consent if email else User.sms_consent
    unsubscribed = User.email_unsubscribed if email else User.sms_unsubscribed
    invalid = ~address.contains("@") if email else ~address.startswith("+")
    reasons = [
        (address == "", SkipReason.NO_ADDRESS),
        (consent == False, SkipReason.NO_CONSENT),  # noqa: E712  # SQL, not Python
        (unsubscribed == True, SkipReason.UNSUBSCRIBED),  # noqa: E712
        (invalid, SkipReason.INVALID_ADDRESS),
    ]
    reason = pw.Case(None, [(cond, str(value)) for cond, value in reasons], "")
    status = pw.Case(
        None, [(reason != "", str(DeliveryStatus.SKIPPED))], str(DeliveryStatus.PENDING)
    )
    return address, status, reason


def _insert_window(campaign: Campaign, query: pw.Select, window: pw.Expression) -> int:
    """One INSERT ... SELECT of the window's matching users; the rows it added."""
    address, status, reason = recipient_sql(campaign.channel)
    now = utcnow()
    rows = (
        query.where(window)
        .select(
            pw.Value(campaign.id),
            User.id,
            address,
            status,
            reason,
            pw.Value(0),
            pw.Value(""),
            pw.Value(now),
            pw.Value(now),
        )
        .order_by()
    )
    fields = [
        Delivery.campaign,
        Delivery.user_id,
        Delivery.address,
        Delivery.status,
        Delivery.skip_reason,
        Delivery.attempts,
        Delivery.last_error,
        Delivery.created,
        Delivery.modified,
    ]
    with write_transaction():
        insert = Delivery.insert_from(rows, fields).on_conflict_ignore().as_rowcount()
        return int(insert.execute() or 0)


def _still_calculating(campaign_id: int) -> bool:
    status = Campaign.select(Campaign.status).where(Campaign.id == campaign_id).scalar()
    return bool(status == Status.CALCULATING)


def _windows(
    campaign: Campaign, batches: Iterable[int], progress: Callable[[int], None]
) -> int | None:
    """Drive `batches` (each the number of users it matched), beating the heartbeat, logging
    progress and checking for a cancel after each; the users matched, or None if cancelled."""
    matched = 0
    for count in batches:
        matched += count
        Campaign.update(heartbeat_at=utcnow()).where(Campaign.id == campaign.id).execute()
        progress(matched)
        if not _still_calculating(campaign.id):
            return None
    return matched


def freeze_in_sql(
    campaign: Campaign, compiled: engine.CompiledSegment, edition_id: int | None
) -> int | None:
    """The exact-segment path; the users matched, or None when cancelled meanwhile."""
    if not _still_calculating(campaign.id):
        return None
    query = engine.candidates(compiled, campaign.organization_id, edition_id)
    windows = engine.id_windows(campaign.organization_id, SQL_WINDOW)
    before = _ledger_size(campaign.id)
    result = _windows(
        campaign,
        (_insert_window(campaign, query, w) for w in windows),
        _progress_logger(campaign.id),
    )
    # A re-run adds nothing for users already frozen: count them from the ledger instead.
    return None if result is None else _ledger_size(campaign.id) if before else result


def freeze_in_python(
    campaign: Campaign, compiled: engine.CompiledSegment, edition_id: int | None
) -> int | None:
    """The general path: CEL decides page by page; the users matched, or None if cancelled."""
    if not _still_calculating(campaign.id):
        return None
    # Caller-written CEL, evaluated under a time and memory budget in a child process.
    evaluate = BatchEvaluator()
    pages = engine.iter_matches(compiled, campaign.organization_id, edition_id, evaluate=evaluate)
    return _windows(
        campaign, (_freeze_page(campaign, page) for page in pages), _progress_logger(campaign.id)
    )


def _freeze_page(campaign: Campaign, users: list[UserRow]) -> int:
    ledger.freeze([entry(campaign, user) for user in users])
    return len(users)


def _ledger_size(campaign_id: int) -> int:
    return int(Delivery.select().where(Delivery.campaign == campaign_id).count())


def _progress_logger(campaign_id: int) -> Callable[[int], None]:
    started = time.monotonic()

    def report(matched: int) -> None:
        rate = matched / max(time.monotonic() - started, 1e-6)
        log.info(
            "calculating",
            extra={"campaign_id": campaign_id, "matched": matched, "users_per_s": round(rate)},
        )

    return report
