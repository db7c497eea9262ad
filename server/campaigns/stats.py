"""Delivery figures of a campaign, read from the campaign row and its ledger."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import peewee as pw

from server.campaigns import transitions
from server.store.db import first_dict, tuples
from server.store.models import (
    IN_FLIGHT,
    Delivery,
    DeliveryEvent,
    DeliveryStatus,
    EventType,
    utcnow,
)


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


@dataclass(frozen=True)
class Stats:
    """One reading. Equality ignores `observed_at`, so "changed" means the figures changed."""

    campaign_id: int
    status: str
    total_recipients: int = 0
    sent: int = 0
    failed: int = 0
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    bounced: int = 0
    unsubscribed: int = 0
    pending: int = 0
    opens_total: int = 0
    clicks_total: int = 0
    skipped: int = 0
    ambiguous: int = 0
    observed_at: dt.datetime = field(default_factory=utcnow, compare=False)

    @property
    def delivery_rate(self) -> float:
        return _ratio(self.delivered, self.sent)

    @property
    def open_rate(self) -> float:
        return _ratio(self.opened, self.delivered)

    @property
    def click_rate(self) -> float:
        return _ratio(self.clicked, self.delivered)

    @property
    def unsubscribe_rate(self) -> float:
        return _ratio(self.unsubscribed, self.delivered)


def _count_if(condition: pw.Expression) -> pw.Function:
    return pw.fn.COALESCE(pw.fn.SUM(pw.Case(None, [(condition, 1)], 0)), 0)


def read_stats(campaign_id: int) -> Stats:
    """Figures as the ledger holds them now (one aggregate query over the campaign's rows)."""
    campaign = transitions.get(campaign_id)
    D = Delivery
    row = first_dict(
        D.select(
            _count_if(D.status == DeliveryStatus.SENT).alias("sent"),
            _count_if(D.status == DeliveryStatus.FAILED).alias("failed"),
            _count_if(D.status.in_(IN_FLIGHT)).alias("pending"),
            _count_if(D.status == DeliveryStatus.SKIPPED).alias("skipped"),
            _count_if(D.status == DeliveryStatus.AMBIGUOUS).alias("ambiguous"),
            pw.fn.COUNT(D.delivered_at).alias("delivered"),
            pw.fn.COUNT(D.opened_at).alias("opened"),
            pw.fn.COUNT(D.clicked_at).alias("clicked"),
            pw.fn.COUNT(D.bounced_at).alias("bounced"),
            pw.fn.COUNT(D.unsubscribed_at).alias("unsubscribed"),
        ).where(D.campaign == campaign_id)
    )
    E = DeliveryEvent
    totals: dict[str, int] = dict(
        tuples(
            E.select(E.type, pw.fn.COUNT(E.id))
            .where(
                (E.campaign_id == campaign_id) & E.type.in_([EventType.OPENED, EventType.CLICKED])
            )
            .group_by(E.type)
        )
    )
    counts = {key: int(value or 0) for key, value in row.items()}
    return Stats(
        campaign_id=campaign_id,
        status=campaign.status,
        total_recipients=campaign.total_recipients,
        opens_total=int(totals.get(EventType.OPENED, 0)),
        clicks_total=int(totals.get(EventType.CLICKED, 0)),
        **counts,  # type: ignore[arg-type]  # the aggregate's aliases are Stats' field names
    )
