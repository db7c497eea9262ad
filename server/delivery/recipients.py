"""A campaign's recipients one by one, from its ledger: "who failed, and why?"."""

from __future__ import annotations

from server.campaigns import transitions
from server.core.validation import Violations
from server.store.models import Delivery, DeliveryStatus
from server.store.pagination import Page, PageRequest, paginate


def list_recipients(campaign_id: int, status: str | None, page: PageRequest) -> Page[Delivery]:
    v = Violations()
    v.positive_id(campaign_id, "campaign_id")
    number, size = page.resolved(v)
    v.raise_if_any()
    transitions.get(campaign_id)  # NotFound for an unknown campaign
    query = Delivery.select().where(Delivery.campaign == campaign_id)
    if status:
        query = query.where(Delivery.status == DeliveryStatus(status))
    return paginate(query.order_by(Delivery.user_id), number, size)
