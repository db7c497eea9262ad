"""Delivery events and their effects: delivered, bounced, complained, opened, clicked,
unsubscribed. Used by RecordDeliveryEvents, the tracking HTTP app and provider webhooks.

Recording is idempotent (a unique dedupe key per event). The ledger keeps the first time of
each kind per recipient, which is what the rates count (unique recipients); the events table
keeps every occurrence (totals). Hard bounces and complaints suppress the address for the
organization; an unsubscribe clears the user's consent for that channel.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import peewee as pw

from server.core.channels import Channel
from server.core.validation import NUL_MESSAGE, has_nul, invalid
from server.security import tenancy
from server.store.db import write_transaction
from server.store.models import (
    Campaign,
    Delivery,
    DeliveryEvent,
    DeliveryStatus,
    EventType,
    Suppression,
    User,
    utcnow,
)

MAX_EVENTS = 1000
# event type -> ledger columns set the first time it happens. A click proves an open, and
# an open, a click or an unsubscribe through the message proves its delivery: the rates
# (opened / delivered...) stay within 0..1 even where no provider reports deliveries.
_FIRST_TIMES: dict[str, tuple[str, ...]] = {
    EventType.DELIVERED: ("delivered_at",),
    EventType.BOUNCED_HARD: ("bounced_at",),
    EventType.OPENED: ("opened_at", "delivered_at"),
    EventType.CLICKED: ("clicked_at", "opened_at", "delivered_at"),
    EventType.UNSUBSCRIBED: ("unsubscribed_at", "delivered_at"),
}
_SUPPRESSING: dict[str, str] = {
    EventType.BOUNCED_HARD: "hard_bounce",
    EventType.COMPLAINED: "complaint",
}


@dataclass(frozen=True)
class EventInput:
    type: str
    event_id: str = ""
    provider_message_id: str = ""
    campaign_id: int = 0
    user_id: int = 0
    occurred_at: dt.datetime | None = None
    url: str = ""
    detail: str = ""
    problem: str = ""  # set by the caller when the event could not even be read


class Kind(StrEnum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"  # an event recorded before (the same dedupe key)
    REFUSED = "refused"


@dataclass(frozen=True)
class Outcome:
    """What became of one event; `reason` says why it was refused."""

    kind: Kind
    reason: str = ""


RECORDED = Outcome(Kind.RECORDED)
DUPLICATE = Outcome(Kind.DUPLICATE)


def _refused(reason: str) -> Outcome:
    return Outcome(Kind.REFUSED, reason)


@dataclass
class EventResult:
    recorded: int = 0
    duplicates: int = 0
    rejections: list[tuple[int, str]] = field(default_factory=list)


def _dedupe_key(event: EventInput, delivery: Delivery) -> str:
    if event.event_id:
        raw = f"id:{event.event_id}"
    else:
        when = event.occurred_at.isoformat() if event.occurred_at else ""
        raw = f"{event.type}:{delivery.campaign_id}:{delivery.user_id}:{when}:{event.url}"
    return hashlib.sha256(raw.encode()).hexdigest()


def _delivery(event: EventInput) -> Delivery | None:
    """The ledger row the event is about, if the caller may see its campaign."""
    delivery = _find_delivery(event)
    if delivery is None or not tenancy.restricted():
        return delivery
    owner = (
        Campaign.select(Campaign.organization_id)
        .where(Campaign.id == delivery.campaign_id)
        .scalar()
    )
    return delivery if tenancy.allows(owner) else None


def _find_delivery(event: EventInput) -> Delivery | None:
    if event.provider_message_id:
        # A Message-ID may come with or without its angle brackets.
        bare = event.provider_message_id.strip().strip("<>")
        candidates = [event.provider_message_id, bare, f"<{bare}>"]
        return Delivery.get_or_none(Delivery.provider_message_id.in_(candidates))
    return Delivery.get_or_none(
        (Delivery.campaign == event.campaign_id) & (Delivery.user_id == event.user_id)
    )


def _effects(event: EventInput, delivery: Delivery, when: dt.datetime) -> None:
    for column in _FIRST_TIMES.get(event.type, ()):
        ledger_field = getattr(Delivery, column)
        Delivery.update({ledger_field: when}).where(
            (Delivery.id == delivery.id) & ledger_field.is_null()
        ).execute()
    campaign = Campaign.get_by_id(delivery.campaign_id)
    if event.type in _SUPPRESSING and delivery.address:
        Suppression.insert(
            organization_id=campaign.organization_id,
            channel=campaign.channel,
            address=delivery.address,
            reason=_SUPPRESSING[event.type],
        ).on_conflict_ignore().execute()
    if event.type == EventType.UNSUBSCRIBED:
        flag = (
            User.email_unsubscribed if campaign.channel == Channel.EMAIL else User.sms_unsubscribed
        )
        User.update({flag: True, User.modified: utcnow()}).where(
            User.id == delivery.user_id
        ).execute()


def _problem(event: EventInput) -> str:
    if event.problem:
        return event.problem
    if event.type not in set(EventType):
        return "type is required"
    if not event.provider_message_id and not (event.campaign_id > 0 and event.user_id > 0):
        return "name the message: provider_message_id, or campaign_id and user_id"
    if len(event.event_id) > 128:
        return "event_id must be at most 128 characters"
    for name in ("event_id", "provider_message_id", "url", "detail"):
        if has_nul(getattr(event, name)):
            return f"{name} {NUL_MESSAGE}"
    return ""


def record_one(event: EventInput) -> Outcome:
    """Record one event and its effects: recorded, a duplicate, or refused and why."""
    problem = _problem(event)
    if problem:
        return _refused(problem)
    delivery = _delivery(event)
    if delivery is None:
        return _refused("no delivery matches this provider_message_id / campaign_id and user_id")
    if delivery.status == DeliveryStatus.SKIPPED:
        return _refused(f"this recipient was skipped ({delivery.skip_reason}): no message was sent")
    when = event.occurred_at or utcnow()
    try:
        with write_transaction():
            DeliveryEvent.create(
                campaign_id=delivery.campaign_id,
                user_id=delivery.user_id,
                type=event.type,
                dedupe_key=_dedupe_key(event, delivery),
                occurred_at=when,
                url=event.url[:2000],
                detail=event.detail[:2000],
            )
            _effects(event, delivery, when)
    except pw.IntegrityError:
        return DUPLICATE
    return RECORDED


def record_events(events: Sequence[EventInput]) -> EventResult:
    if not 1 <= len(events) <= MAX_EVENTS:
        raise invalid("events", f"send 1 to {MAX_EVENTS} events, got {len(events)}")
    result = EventResult()
    for index, event in enumerate(events):
        outcome = record_one(event)
        if outcome.kind is Kind.RECORDED:
            result.recorded += 1
        elif outcome.kind is Kind.DUPLICATE:
            result.duplicates += 1
        else:
            result.rejections.append((index, outcome.reason))
    return result
