"""The data a delivery benchmark starts from: a fresh database (SQLite file or a throw-away
PostgreSQL database), recipients bulk-loaded straight into the users table, and, through the
API, an edition, a segment matching them all and a campaign (email with a small HTML template
rendered per user, or SMS) ready to be sent.
"""

from __future__ import annotations

import contextlib
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg2

from bench.segment_eval import ADMIN_URL
from campaigns.v1 import audience_service_pb2 as apb
from campaigns.v1 import (
    audience_service_pb2_grpc,
    campaign_pb2,
    campaign_service_pb2_grpc,
    edition_pb2,
    email_message_pb2,
    email_message_service_pb2_grpc,
    segment_pb2,
)
from campaigns.v1 import campaign_service_pb2 as cpb
from campaigns.v1 import email_message_service_pb2 as epb
from server.store.db import database, is_postgres
from server.store.models import User, utcnow

ORG = 4242


@contextlib.contextmanager
def fresh_database(kind: str, directory: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'bench.db'}"
        return
    name = f"delivery_bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        if database.obj is not None:  # None when set-up failed before opening it
            database.close_all()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


_COPY_COLUMNS = (
    "organization_id, external_id, email, phone, first_name, last_name, language, attributes,"
    " email_consent, sms_consent, email_unsubscribed, sms_unsubscribed, created, modified"
)


def _copy_users(count: int) -> None:
    """PostgreSQL: COPY, a million users in seconds instead of minutes."""
    now = utcnow().isoformat()
    for start in range(0, count, 100_000):
        buffer = io.StringIO()
        for i in range(start, min(count, start + 100_000)):
            buffer.write(
                f"{ORG}\tb{i}\tuser{i}@example.com\t+4520{i:06d}\tAnn{i}\tJensen\t\t"
                f'{{"ticket_type": "vip"}}\tt\tt\tf\tf\t{now}\t{now}\n'
            )
        buffer.seek(0)
        with database.atomic():
            database.cursor().copy_expert(f"COPY users ({_COPY_COLUMNS}) FROM STDIN", buffer)


def load_users(count: int, edition_id: int) -> None:
    """Bulk-load recipients straight into the table: set-up, not what is measured."""
    if is_postgres():
        _copy_users(count)
        database.close()
        return
    now = utcnow()
    for start in range(0, count, 10_000):
        rows = [
            {
                "organization_id": ORG,
                "external_id": f"b{i}",
                "email": f"user{i}@example.com",
                "phone": f"+4520{i:06d}",
                "first_name": f"Ann{i}",
                "last_name": "Jensen",
                "attributes": {"ticket_type": "vip"},
                "email_consent": True,
                "sms_consent": True,
                "created": now,
                "modified": now,
            }
            for i in range(start, min(count, start + 10_000))
        ]
        with database.atomic():
            User.insert_many(rows).execute()
    database.close()


def setup_campaign(channel: grpc.Channel, kind: str, users: int) -> int:
    audience = audience_service_pb2_grpc.AudienceServiceStub(channel)
    messages = email_message_service_pb2_grpc.EmailMessageServiceStub(channel)
    campaigns = campaign_service_pb2_grpc.CampaignServiceStub(channel)
    edition = audience.CreateEdition(
        apb.CreateEditionRequest(
            edition=edition_pb2.Edition(
                organization_id=ORG, name="Bench", timezone="Europe/Copenhagen"
            )
        )
    ).edition
    load_users(users, edition.id)
    segment = audience.CreateSegment(
        apb.CreateSegmentRequest(
            segment=segment_pb2.Segment(
                organization_id=ORG, name="vip", expression='user.attributes.ticket_type == "vip"'
            )
        )
    ).segment
    fields: dict[str, Any] = {
        "organization_id": ORG,
        "edition_id": edition.id,
        "segment_id": segment.id,
        "name": "bench",
    }
    if kind == "email":
        message = messages.CreateEmailMessage(
            epb.CreateEmailMessageRequest(
                email_message=email_message_pb2.EmailMessage(
                    organization_id=ORG,
                    edition_id=edition.id,
                    type=email_message_pb2.EMAIL_MESSAGE_TYPE_CAMPAIGN,
                    subject="Hi {{ user.first_name }}, the line-up is out",
                    from_name="Festival",
                    from_email="news@festival.example",
                    html_body="<html><body><h1>Hello {{ user.first_name }}</h1><p>The line-up is "
                    "out. <a href='https://festival.example/lineup'>See it</a></p>"
                    "</body></html>",
                )
            )
        ).email_message
        fields |= {"channel": campaign_pb2.CHANNEL_EMAIL, "email_message_id": message.id}
    else:
        fields |= {
            "channel": campaign_pb2.CHANNEL_SMS,
            "sms_body": "Hi {{ user.first_name }}, the line-up is out!",
        }
    return int(campaigns.CreateCampaign(cpb.CreateCampaignRequest(**fields)).campaign.id)
