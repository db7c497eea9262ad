"""The load test's organization, made through the API with the load's own bearer token:
editions, recipients imported over the ImportUsers stream, segments, an email message, a
warm-up campaign sent through the worker (its deliveries take RecordDeliveryEvents) and the
main campaign, left in draft for `bench.load` to send when the load starts."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import grpc

from bench.load_calls import HTML, World, import_stream, users
from campaigns.v1 import audience_service_pb2 as apb
from campaigns.v1 import audience_service_pb2_grpc as agrpc
from campaigns.v1 import campaign_pb2 as cp
from campaigns.v1 import campaign_service_pb2 as cpb
from campaigns.v1 import campaign_service_pb2_grpc as cgrpc
from campaigns.v1 import edition_pb2, email_message_pb2, segment_pb2
from campaigns.v1 import email_message_service_pb2 as epb
from campaigns.v1 import email_message_service_pb2_grpc as egrpc

FINAL = (cp.CAMPAIGN_STATUS_SENT, cp.CAMPAIGN_STATUS_FAILED, cp.CAMPAIGN_STATUS_CANCELLED)
WARM_USERS = 100
BATCH = 1000


class Api:
    """The three stubs seeding needs, each call carrying the token."""

    def __init__(self, world: World, channel: grpc.Channel) -> None:
        self.world = world
        self.audience = agrpc.AudienceServiceStub(channel)
        self.campaigns = cgrpc.CampaignServiceStub(channel)
        self.messages = egrpc.EmailMessageServiceStub(channel)

    def __call__(self, stub: Any, name: str, request: Any) -> Any:
        return getattr(stub, name)(request, metadata=self.world.metadata, timeout=120)

    def edition(self, name: str) -> int:
        edition = edition_pb2.Edition(
            organization_id=self.world.org, name=name, timezone="Europe/Copenhagen"
        )
        reply = self(self.audience, "CreateEdition", apb.CreateEditionRequest(edition=edition))
        return int(reply.edition.id)

    def import_users(self, edition_id: int, prefix: str, count: int, tier: str) -> None:
        everyone = users(prefix, count, tier=tier)
        batches = [everyone[i : i + BATCH] for i in range(0, count, BATCH)]
        reply = self(
            self.audience, "ImportUsers", import_stream(self.world.org, edition_id, batches)
        )
        assert reply.created == count and not reply.rejected, reply

    def segment(self, edition_id: int, expression: str) -> int:
        segment = segment_pb2.Segment(
            organization_id=self.world.org,
            edition_id=edition_id,
            name=expression[:40],
            expression=expression,
        )
        reply = self(self.audience, "CreateSegment", apb.CreateSegmentRequest(segment=segment))
        return int(reply.segment.id)

    def message(self, edition_id: int) -> int:
        message = email_message_pb2.EmailMessage(
            organization_id=self.world.org,
            edition_id=edition_id,
            type=email_message_pb2.EMAIL_MESSAGE_TYPE_CAMPAIGN,
            subject="Hi {{ user.first_name }}, the line-up is out",
            from_name="Festival",
            from_email="news@festival.example",
            html_body=HTML,
        )
        reply = self(
            self.messages,
            "CreateEmailMessage",
            epb.CreateEmailMessageRequest(email_message=message),
        )
        return int(reply.email_message.id)

    def campaign(self, name: str, edition_id: int, segment_id: int, message_id: int) -> int:
        reply = self(
            self.campaigns,
            "CreateCampaign",
            cpb.CreateCampaignRequest(
                organization_id=self.world.org,
                edition_id=edition_id,
                segment_id=segment_id,
                name=name,
                channel=cp.CHANNEL_EMAIL,
                email_message_id=message_id,
            ),
        )
        return int(reply.campaign.id)


def seed(world: World, recipients: int) -> World:
    """Seed the organization; the World the callers need."""
    with grpc.insecure_channel(world.target) as channel:
        api = Api(world, channel)
        edition, warm_edition = api.edition("Main"), api.edition("Warm-up")
        started = time.perf_counter()
        api.import_users(edition, "main", recipients, tier="gold")
        print(f"ImportUsers: {recipients:,} recipients in {time.perf_counter() - started:.1f} s")
        api.import_users(warm_edition, "warm", WARM_USERS, tier="warm")
        message = api.message(edition)
        warm = api.campaign("warm-up", warm_edition, api.segment(warm_edition, "true"), message)
        api(api.campaigns, "SendCampaignNow", cpb.SendCampaignNowRequest(id=warm))
        listed = api(
            api.audience,
            "ListUsers",
            apb.ListUsersRequest(
                organization_id=world.org, edition_id=warm_edition, page_size=WARM_USERS
            ),
        )
        world = replace(
            world,
            edition_id=edition,
            message_id=message,
            warm_campaign_id=warm,
            segment_id=api.segment(edition, 'user.attributes.tier == "gold"'),
            empty_segment_id=api.segment(edition, 'user.attributes.tier == "nobody"'),
            warm_user_ids=tuple(u.id for u in listed.results),
        )
        main = api.campaign("main", edition, world.segment_id, message)
    assert wait_final(world, warm, 120).status == cp.CAMPAIGN_STATUS_SENT, "warm-up not sent"
    return replace(world, campaign_id=main)


def wait_final(world: World, campaign_id: int, timeout: float) -> cp.Campaign:
    """The campaign once it is sent, failed or cancelled (or as it is after `timeout`)."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(world.target) as channel:
        stub = cgrpc.CampaignServiceStub(channel)
        while True:
            campaign = stub.GetCampaign(
                cpb.GetCampaignRequest(id=campaign_id), metadata=world.metadata, timeout=30
            ).campaign
            if campaign.status in FINAL or time.monotonic() > deadline:
                return campaign
            time.sleep(0.5)
