"""For the tracking and delivery-event tests: the links of a received email, Twilio webhook
signing, and readers of events, suppressions and stats."""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

import httpx

from campaigns.v1 import audience_service_pb2 as apb
from campaigns.v1 import campaign_pb2
from campaigns.v1 import campaign_service_pb2 as cpb
from campaigns.v1 import delivery_service_pb2 as dpb
from server.delivery import webhooks
from server.store.db import release_connection
from server.store.models import DeliveryEvent, Suppression
from tests.fixtures.smtp import Received
from tests.fixtures.tracking import TrackingServer
from tests.fixtures.twilio import TWILIO_TOKEN

# --- reading what was received ---------------------------------------------------------------


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and values.get("href"):
            self.hrefs.append(values["href"] or "")
        if tag == "img" and values.get("src"):
            self.images.append(values["src"] or "")


@dataclass
class EmailLinks:
    hrefs: list[str]  # every <a href>, in order, HTML entities decoded
    pixel: str
    unsubscribe: str  # the List-Unsubscribe header's URL


def email_links(received: Received) -> EmailLinks:
    html_part = received.message.get_body(("html",))
    assert html_part is not None
    parser = _Links()
    parser.feed(html_part.get_content())
    (pixel,) = [src for src in parser.images if "/o/" in src]
    header = str(received.message["List-Unsubscribe"])
    assert header.startswith("<") and header.endswith(">"), header
    return EmailLinks(parser.hrefs, pixel, header[1:-1])


def by_recipient(received: list[Received]) -> dict[str, Received]:
    return {r.rcpt_tos[0].lower(): r for r in received}


# --- Twilio ----------------------------------------------------------------------------------


def twilio_post(
    client: httpx.Client,
    server: TrackingServer,
    path: str,
    params: dict[str, str],
    token: str | None = TWILIO_TOKEN,
) -> httpx.Response:
    """POST a webhook as Twilio does; `token=None` sends no signature at all."""
    headers = {}
    if token is not None:
        headers["X-Twilio-Signature"] = webhooks.signature(token, server.url(path), params)
    return client.post(server.url(path), data=params, headers=headers)


# --- database and RPC readers ----------------------------------------------------------------


def event_count(**where: Any) -> int:
    """DeliveryEvent rows, all or those matching `where` (field=value)."""
    try:
        query = DeliveryEvent.select()
        for name, value in where.items():
            query = query.where(getattr(DeliveryEvent, name) == value)
        return int(query.count())
    finally:
        release_connection()


def suppressions(organization_id: int) -> dict[tuple[str, str], str]:
    """(channel, address) -> reason for an organization."""
    try:
        rows = Suppression.select().where(Suppression.organization_id == organization_id)
        return {(r.channel, r.address): r.reason for r in rows}
    finally:
        release_connection()


def stats(campaigns: Any, campaign_id: int) -> campaign_pb2.CampaignStats:
    return campaigns.GetCampaignStats(cpb.GetCampaignStatsRequest(id=campaign_id)).stats


def get_user(audience: Any, user_id: int) -> Any:
    return audience.GetUser(apb.GetUserRequest(id=user_id)).user


def record(delivery: Any, *events: dpb.DeliveryEvent) -> dpb.RecordDeliveryEventsResponse:
    return delivery.RecordDeliveryEvents(dpb.RecordDeliveryEventsRequest(events=list(events)))


def event(kind: str, **fields: Any) -> dpb.DeliveryEvent:
    """A DeliveryEvent of type `kind` ("delivered", "bounced_hard"...)."""
    return dpb.DeliveryEvent(
        type=dpb.DeliveryEventType.Value(f"DELIVERY_EVENT_TYPE_{kind.upper()}"), **fields
    )
