"""Many small organizations for the sending engine's benchmarks: users bulk-loaded with COPY
(PostgreSQL), and through the API an edition and an email message per organization, then a
segment and a campaign per group of users (`user.attributes.group == "gN"`, decided by SQL
alone). Every address is unique, so the sink's records say which campaign a message was for.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp

from bench.fleet import Fleet
from campaigns.v1 import audience_service_pb2 as apb
from campaigns.v1 import campaign_pb2, edition_pb2, email_message_pb2, segment_pb2
from campaigns.v1 import campaign_service_pb2 as cpb
from campaigns.v1 import email_message_service_pb2 as epb
from server.store.db import database, release_connection
from server.store.models import utcnow

COLUMNS = (
    "organization_id, external_id, email, phone, first_name, last_name, language, attributes,"
    " email_consent, sms_consent, email_unsubscribed, sms_unsubscribed, created, modified"
)
HTML = (
    "<html><body><h1>Hello {{ user.first_name }}</h1><p>The line-up is out. "
    "<a href='https://festival.example/lineup'>See it</a></p></body></html>"
)


@dataclass
class Tenant:
    """One campaign's organization, its users' addresses and (once created) its ids."""

    org: int
    group: str
    addresses: list[str]
    campaign_id: int = 0
    extra: dict[str, int] = field(default_factory=dict)


def address(org: int, group: str, n: int) -> str:
    return f"o{org}.{group}.u{n}@example.com"


def copy_users(tenants: Iterable[Tenant]) -> None:
    """One user per address, with the tenant's group as an attribute (set-up, not measured)."""
    now = utcnow().isoformat()
    buffer = io.StringIO()
    for tenant in tenants:
        attributes = json.dumps({"group": tenant.group})
        for n, email in enumerate(tenant.addresses):
            buffer.write(
                f"{tenant.org}\t{tenant.group}-{n}\t{email}\t\tAnn{n}\tJensen\t\t"
                f"{attributes}\tt\tf\tf\tf\t{now}\t{now}\n"
            )
    buffer.seek(0)
    try:
        with database.atomic():
            database.cursor().copy_expert(f"COPY users ({COLUMNS}) FROM STDIN", buffer)
    finally:
        release_connection()


def edition_and_message(fleet: Fleet, org: int) -> tuple[int, int]:
    edition = fleet.audience.CreateEdition(
        apb.CreateEditionRequest(
            edition=edition_pb2.Edition(organization_id=org, name="Bench", timezone="UTC")
        )
    ).edition
    message = fleet.messages.CreateEmailMessage(
        epb.CreateEmailMessageRequest(
            email_message=email_message_pb2.EmailMessage(
                organization_id=org,
                edition_id=edition.id,
                type=email_message_pb2.EMAIL_MESSAGE_TYPE_CAMPAIGN,
                subject="Hi {{ user.first_name }}, the line-up is out",
                from_name="Festival",
                from_email="news@festival.example",
                html_body=HTML,
            )
        )
    ).email_message
    return edition.id, message.id


def create_campaign(
    fleet: Fleet, tenant: Tenant, edition: int, message: int, expression: str
) -> int:
    segment = fleet.audience.CreateSegment(
        apb.CreateSegmentRequest(
            segment=segment_pb2.Segment(
                organization_id=tenant.org, name=tenant.group, expression=expression
            )
        )
    ).segment
    request = cpb.CreateCampaignRequest(
        organization_id=tenant.org,
        edition_id=edition,
        segment_id=segment.id,
        name=f"bench {tenant.group}",
        channel=campaign_pb2.CHANNEL_EMAIL,
        email_message_id=message,
    )
    tenant.campaign_id = int(fleet.campaigns.CreateCampaign(request).campaign.id)
    return tenant.campaign_id


def group_expression(tenant: Tenant) -> str:
    return f'user.attributes.group == "{tenant.group}"'


def many(orgs: int, campaigns: int, per_campaign: int, first_org: int = 7000) -> list[Tenant]:
    """`campaigns` tenants spread over `orgs` organizations, `per_campaign` users each."""
    tenants = []
    for n in range(campaigns):
        org, group = first_org + n % orgs, f"g{n}"
        tenants.append(Tenant(org, group, [address(org, group, i) for i in range(per_campaign)]))
    return tenants


def create_all(fleet: Fleet, tenants: list[Tenant], threads: int = 8) -> None:
    """Users, then an edition and message per organization, a segment and campaign each."""
    copy_users(tenants)
    orgs = sorted({t.org for t in tenants})
    with ThreadPoolExecutor(threads) as pool:
        made = pool.map(lambda org: edition_and_message(fleet, org), orgs)
        ids = dict(zip(orgs, made, strict=True))
        list(
            pool.map(lambda t: create_campaign(fleet, t, *ids[t.org], group_expression(t)), tenants)
        )


def timestamp(when: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def schedule(fleet: Fleet, campaign_id: int, when: dt.datetime) -> None:
    fleet.campaigns.ScheduleCampaign(
        cpb.ScheduleCampaignRequest(id=campaign_id, scheduled_at=timestamp(when))
    )


def send_now(fleet: Fleet, campaign_id: int) -> None:
    fleet.campaigns.SendCampaignNow(cpb.SendCampaignNowRequest(id=campaign_id))
