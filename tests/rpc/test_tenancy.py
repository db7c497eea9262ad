"""Tenants kept apart: a `python -m server` that requires bearer tokens (from a tokens file),
and every RPC of every service tried with another organization's token against one
organization's resources. Another tenant's things are NOT_FOUND (creating in an organization
the token does not hold is PERMISSION_DENIED), lists and streams only show the caller's own,
and nothing is changed by a refused call."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from campaigns.v1 import audience_service_pb2 as apb
from campaigns.v1 import audience_service_pb2_grpc as agrpc
from campaigns.v1 import campaign_pb2, edition_pb2, email_message_pb2, segment_pb2
from campaigns.v1 import campaign_service_pb2 as cpb
from campaigns.v1 import campaign_service_pb2_grpc as cgrpc
from campaigns.v1 import delivery_service_pb2 as dpb
from campaigns.v1 import delivery_service_pb2_grpc as dgrpc
from campaigns.v1 import email_message_service_pb2 as epb
from campaigns.v1 import email_message_service_pb2_grpc as egrpc
from server.security.bearer_tokens import digest
from server.store.db import release_connection
from server.store.models import Delivery, DeliveryEvent
from tests.support.delivery import import_users, user
from tests.support.helpers import (
    DEFAULT_SEGMENTS,
    future,
    make_campaign,
    make_edition,
    make_email_message,
    make_segment,
)
from tests.support.processes import free_port
from tests.support.server_process import running_server, server_env

SERVICES = (cpb, apb, epb, dpb)
TOKENS = {
    "alpha": "alpha-token-" + uuid.uuid4().hex,
    "beta": "beta-token-" + uuid.uuid4().hex,
    "ops": "ops-token-" + uuid.uuid4().hex,
}


@dataclass
class World:
    """Organization A's resources, made unscoped through the dev-mode test server."""

    org_a: int
    org_b: int
    edition: edition_pb2.Edition
    edition_b: edition_pb2.Edition
    segment: segment_pb2.Segment
    message: email_message_pb2.EmailMessage
    campaign: campaign_pb2.Campaign
    user_id: int
    delivery_message_id: str


@pytest.fixture(scope="module")
def world(audience: Any, messages: Any, campaigns: Any) -> World:
    org_a, org_b = (uuid.uuid4().int % 10**12 + 1 for _ in range(2))
    edition = make_edition(audience, org_a)
    edition_b = make_edition(audience, org_b)
    ids = import_users(audience, org_a, edition.id, [user("u1", email="u1@example.com")])
    campaign = make_campaign(campaigns, edition, name="A's launch")
    make_campaign(campaigns, edition_b, name="B's launch")  # so B's lists are not empty
    make_email_message(messages, edition_b)
    message_id = f"<{uuid.uuid4().hex}@test>"
    Delivery.create(
        campaign=campaign.id,
        user_id=ids["u1"],
        address="u1@example.com",
        status="sent",
        provider_message_id=message_id,
    )
    release_connection()
    return World(
        org_a,
        org_b,
        edition,
        edition_b,
        make_segment(audience, edition, name="A"),
        make_email_message(messages, edition),
        campaign,
        ids["u1"],
        message_id,
    )


@pytest.fixture(scope="module")
def strict(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory, world: World
) -> Iterator[grpc.Channel]:
    """A server with tokens: alpha acts for A, beta for B, ops for every organization."""
    directory = tmp_path_factory.mktemp("tenancy")
    grants = {"alpha": [world.org_a], "beta": [world.org_b], "ops": "*"}
    tokens = directory / "tokens.json"
    tokens.write_text(
        json.dumps(
            {
                "tokens": [
                    {"name": name, "sha256": digest(TOKENS[name]), "organizations": orgs}
                    for name, orgs in grants.items()
                ]
            }
        )
    )
    port = free_port()
    env = server_env(database_url, redis_url, port, AUTH_TOKENS_FILE=str(tokens))
    with (
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
        running_server(env, channel, Path(directory / "server.log")),
    ):
        yield channel


def auth(name: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {TOKENS[name]}")]


def code_of(call: Callable[[], Any]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def cross_tenant_calls(ch: grpc.Channel, w: World) -> dict[str, Callable[[list[Any]], Any]]:
    """Every RPC, aimed at organization A's resources; each takes the call's metadata."""
    c, a = cgrpc.CampaignServiceStub(ch), agrpc.AudienceServiceStub(ch)
    e, d = egrpc.EmailMessageServiceStub(ch), dgrpc.DeliveryServiceStub(ch)
    cid = w.campaign.id
    return {
        "GetCampaign": lambda md: c.GetCampaign(cpb.GetCampaignRequest(id=cid), metadata=md),
        "CreateCampaign": lambda md: c.CreateCampaign(
            cpb.CreateCampaignRequest(
                organization_id=w.org_a,
                edition_id=w.edition.id,
                segment_id=w.segment.id,
                name="x",
                channel=campaign_pb2.CHANNEL_SMS,
                sms_body="hi",
            ),
            metadata=md,
        ),
        "UpdateCampaign": lambda md: c.UpdateCampaign(
            cpb.UpdateCampaignRequest(
                id=cid, campaign=campaign_pb2.Campaign(name="taken"), update_mask=mask("name")
            ),
            metadata=md,
        ),
        "DeleteCampaign": lambda md: c.DeleteCampaign(
            cpb.DeleteCampaignRequest(id=cid), metadata=md
        ),
        "CancelCampaign": lambda md: c.CancelCampaign(
            cpb.CancelCampaignRequest(id=cid), metadata=md
        ),
        "ScheduleCampaign": lambda md: c.ScheduleCampaign(
            cpb.ScheduleCampaignRequest(id=cid, scheduled_at=future()), metadata=md
        ),
        "SendCampaignNow": lambda md: c.SendCampaignNow(
            cpb.SendCampaignNowRequest(id=cid), metadata=md
        ),
        "GetCampaignStats": lambda md: c.GetCampaignStats(
            cpb.GetCampaignStatsRequest(id=cid), metadata=md
        ),
        "WatchCampaignStats": lambda md: next(
            iter(
                c.WatchCampaignStats(cpb.WatchCampaignStatsRequest(id=cid), metadata=md, timeout=5)
            )
        ),
        "CreateEdition": lambda md: a.CreateEdition(
            apb.CreateEditionRequest(
                edition=edition_pb2.Edition(organization_id=w.org_a, name="x", timezone="UTC")
            ),
            metadata=md,
        ),
        "GetEdition": lambda md: a.GetEdition(apb.GetEditionRequest(id=w.edition.id), metadata=md),
        "UpdateEdition": lambda md: a.UpdateEdition(
            apb.UpdateEditionRequest(
                id=w.edition.id, edition=edition_pb2.Edition(name="taken"), update_mask=mask("name")
            ),
            metadata=md,
        ),
        "ImportUsers": lambda md: a.ImportUsers(
            iter(
                [
                    apb.ImportUsersRequest(
                        organization_id=w.org_a, users=[user("intruder", email="i@example.com")]
                    )
                ]
            ),
            metadata=md,
        ),
        "GetUser": lambda md: a.GetUser(apb.GetUserRequest(id=w.user_id), metadata=md),
        "DeleteUser": lambda md: a.DeleteUser(apb.DeleteUserRequest(id=w.user_id), metadata=md),
        "CreateSegment": lambda md: a.CreateSegment(
            apb.CreateSegmentRequest(
                segment=segment_pb2.Segment(organization_id=w.org_a, name="x", expression="true")
            ),
            metadata=md,
        ),
        "GetSegment": lambda md: a.GetSegment(apb.GetSegmentRequest(id=w.segment.id), metadata=md),
        "UpdateSegment": lambda md: a.UpdateSegment(
            apb.UpdateSegmentRequest(
                id=w.segment.id, segment=segment_pb2.Segment(name="taken"), update_mask=mask("name")
            ),
            metadata=md,
        ),
        "DeleteSegment": lambda md: a.DeleteSegment(
            apb.DeleteSegmentRequest(id=w.segment.id), metadata=md
        ),
        "PreviewSegment": lambda md: a.PreviewSegment(
            apb.PreviewSegmentRequest(segment_id=w.segment.id, sample_size=5), metadata=md
        ),
        "CreateEmailMessage": lambda md: e.CreateEmailMessage(
            epb.CreateEmailMessageRequest(
                email_message=email_message_pb2.EmailMessage(
                    organization_id=w.org_a,
                    edition_id=w.edition.id,
                    subject="x",
                    from_email="a@example.com",
                    text_body="x",
                )
            ),
            metadata=md,
        ),
        "GetEmailMessage": lambda md: e.GetEmailMessage(
            epb.GetEmailMessageRequest(id=w.message.id), metadata=md
        ),
        "UpdateEmailMessage": lambda md: e.UpdateEmailMessage(
            epb.UpdateEmailMessageRequest(
                id=w.message.id,
                email_message=email_message_pb2.EmailMessage(subject="taken"),
                update_mask=mask("subject"),
            ),
            metadata=md,
        ),
        "DeleteEmailMessage": lambda md: e.DeleteEmailMessage(
            epb.DeleteEmailMessageRequest(id=w.message.id), metadata=md
        ),
        "PreviewEmailMessage": lambda md: e.PreviewEmailMessage(
            epb.PreviewEmailMessageRequest(id=w.message.id, user_id=w.user_id), metadata=md
        ),
        "PreviewSmsMessage": lambda md: e.PreviewSmsMessage(
            epb.PreviewSmsMessageRequest(body="Hi {{ user.first_name }}", user_id=w.user_id),
            metadata=md,
        ),
        "ListCampaignRecipients": lambda md: d.ListCampaignRecipients(
            dpb.ListCampaignRecipientsRequest(campaign_id=cid), metadata=md
        ),
    }


# Calls that create in organization A: refused as not allowed, not as missing.
CREATES = {"CreateCampaign", "CreateEdition", "ImportUsers", "CreateSegment", "CreateEmailMessage"}
# Covered by their own tests below (they name no single resource of A's).
ELSEWHERE = {
    "ListCampaigns",
    "ListEditions",
    "ListUsers",
    "ListSegments",
    "ListEmailMessages",
    "RecordDeliveryEvents",
    "ValidateSegmentExpression",
}


def all_rpcs() -> set[str]:
    return {
        m.name
        for mod in SERVICES
        for s in mod.DESCRIPTOR.services_by_name.values()
        for m in s.methods
    }


def snapshot(campaigns: Any, audience: Any, messages: Any, w: World) -> tuple[Any, ...]:
    """A's resources as the unscoped dev server sees them."""
    return (
        campaigns.GetCampaign(cpb.GetCampaignRequest(id=w.campaign.id)).campaign,
        audience.GetEdition(apb.GetEditionRequest(id=w.edition.id)).edition,
        audience.GetSegment(apb.GetSegmentRequest(id=w.segment.id)).segment,
        messages.GetEmailMessage(epb.GetEmailMessageRequest(id=w.message.id)).email_message,
        audience.GetUser(apb.GetUserRequest(id=w.user_id)).user,
        audience.ListUsers(apb.ListUsersRequest(organization_id=w.org_a)).count,
    )


def test_every_rpc_is_tried_across_tenants(strict: grpc.Channel, world: World) -> None:
    assert set(cross_tenant_calls(strict, world)) | ELSEWHERE == all_rpcs()


def test_another_tenant_gets_not_found_and_changes_nothing(
    strict: grpc.Channel, world: World, campaigns: Any, audience: Any, messages: Any
) -> None:
    before = snapshot(campaigns, audience, messages, world)
    for name, call in cross_tenant_calls(strict, world).items():
        expected = (
            grpc.StatusCode.PERMISSION_DENIED if name in CREATES else grpc.StatusCode.NOT_FOUND
        )
        assert code_of(lambda: call(auth("beta"))) == expected, name  # noqa: B023
    assert snapshot(campaigns, audience, messages, world) == before


def test_the_owner_and_an_all_organizations_token_get_through(
    strict: grpc.Channel, world: World
) -> None:
    calls = cross_tenant_calls(strict, world)
    reads = [
        "GetCampaign",
        "GetEdition",
        "GetSegment",
        "GetEmailMessage",
        "GetUser",
        "GetCampaignStats",
        "WatchCampaignStats",
        "PreviewSegment",
        "PreviewEmailMessage",
        "PreviewSmsMessage",
        "ListCampaignRecipients",
    ]
    for token in ("alpha", "ops"):
        for name in reads:
            answer = code_of(lambda: calls[name](auth(token)))  # noqa: B023
            assert answer == grpc.StatusCode.OK, (token, name)
    assert code_of(lambda: calls["CreateSegment"](auth("alpha"))) == grpc.StatusCode.OK


def test_lists_show_only_the_callers_organizations(strict: grpc.Channel, world: World) -> None:
    c, a = cgrpc.CampaignServiceStub(strict), agrpc.AudienceServiceStub(strict)
    e = egrpc.EmailMessageServiceStub(strict)
    lists: list[Callable[[list[Any]], Any]] = [
        lambda md: c.ListCampaigns(cpb.ListCampaignsRequest(page_size=1000), metadata=md),
        lambda md: a.ListEditions(apb.ListEditionsRequest(page_size=1000), metadata=md),
        lambda md: a.ListSegments(apb.ListSegmentsRequest(page_size=1000), metadata=md),
        lambda md: e.ListEmailMessages(epb.ListEmailMessagesRequest(page_size=1000), metadata=md),
    ]
    for listing in lists:
        orgs_beta = {r.organization_id for r in listing(auth("beta")).results}
        orgs_alpha = {r.organization_id for r in listing(auth("alpha")).results}
        orgs_ops = {r.organization_id for r in listing(auth("ops")).results}
        assert orgs_beta == {world.org_b} and orgs_alpha == {world.org_a}
        assert {world.org_a, world.org_b} <= orgs_ops
    # Naming the other organization explicitly gives an empty page, not its rows.
    named = c.ListCampaigns(
        cpb.ListCampaignsRequest(organization_id=world.org_a), metadata=auth("beta")
    )
    assert (named.count, list(named.results)) == (0, [])
    users = a.ListUsers(apb.ListUsersRequest(organization_id=world.org_a), metadata=auth("beta"))
    assert users.count == 0
    assert (
        a.ListUsers(apb.ListUsersRequest(organization_id=world.org_a), metadata=auth("alpha")).count
        >= 1
    )


def test_delivery_events_of_another_tenant_are_refused(strict: grpc.Channel, world: World) -> None:
    d = dgrpc.DeliveryServiceStub(strict)
    event = dpb.DeliveryEvent(
        type=dpb.DELIVERY_EVENT_TYPE_OPENED, provider_message_id=world.delivery_message_id
    )
    answer = d.RecordDeliveryEvents(
        dpb.RecordDeliveryEventsRequest(events=[event]), metadata=auth("beta")
    )
    assert (answer.recorded, answer.rejected) == (0, 1)
    assert not DeliveryEvent.select().where(DeliveryEvent.campaign_id == world.campaign.id).exists()
    answer = d.RecordDeliveryEvents(
        dpb.RecordDeliveryEventsRequest(events=[event]), metadata=auth("alpha")
    )
    assert (answer.recorded, answer.rejected) == (1, 0)
    release_connection()


def test_request_ids_are_per_token(strict: grpc.Channel, world: World) -> None:
    """One request_id used by two tenants: each gets its own campaign, not the other's."""
    c = cgrpc.CampaignServiceStub(strict)
    key = uuid.uuid4().hex

    def create(token: str, edition: edition_pb2.Edition, org: int) -> campaign_pb2.Campaign:
        return c.CreateCampaign(
            cpb.CreateCampaignRequest(
                organization_id=org,
                edition_id=edition.id,
                segment_id=DEFAULT_SEGMENTS[edition.id],
                name="same key",
                channel=campaign_pb2.CHANNEL_SMS,
                sms_body="hi",
                request_id=key,
            ),
            metadata=auth(token),
        ).campaign

    mine = create("alpha", world.edition, world.org_a)
    theirs = create("beta", world.edition_b, world.org_b)
    assert mine.id != theirs.id and theirs.organization_id == world.org_b
    assert create("alpha", world.edition, world.org_a).id == mine.id  # a real retry replays


@pytest.mark.parametrize(
    "metadata",
    [
        [],
        [("authorization", "Bearer not-a-token")],
        [("authorization", "Basic abc")],
        [("authorization", "Bearer ")],
    ],
)
def test_calls_without_a_valid_token_are_unauthenticated(
    strict: grpc.Channel, world: World, metadata: list[Any]
) -> None:
    c = cgrpc.CampaignServiceStub(strict)
    assert (
        code_of(
            lambda: c.GetCampaign(cpb.GetCampaignRequest(id=world.campaign.id), metadata=metadata)
        )
        == grpc.StatusCode.UNAUTHENTICATED
    )
    stream = c.WatchCampaignStats(
        cpb.WatchCampaignStatsRequest(id=world.campaign.id), metadata=metadata, timeout=5
    )
    assert code_of(lambda: next(iter(stream))) == grpc.StatusCode.UNAUTHENTICATED
