"""CreateCampaign, GetCampaign and DeleteCampaign over the real gRPC channel.

Every bad CreateCampaign field is refused as INVALID_ARGUMENT with a BadRequest naming it, and
a refused create writes nothing. Statuses only workers reach (sending, sent, failed) are set
the way a worker sets them: through `server.campaigns.transitions.try_apply`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
import pytest

from campaigns.v1 import campaign_pb2 as c
from campaigns.v1 import campaign_service_pb2 as cpb
from server.campaigns import transitions
from server.core.status import Action
from server.store.db import release_connection
from tests.support.helpers import (
    DEFAULT_SEGMENTS,
    NEW_EMAIL_MESSAGE,
    details,
    future,
    make_campaign,
    make_edition,
    make_email_message,
    make_segment,
    ts,
    violated_fields,
    with_references,
)

FAR = dt.datetime(2040, 1, 15, 17, 30, tzinfo=dt.UTC)


def count(campaigns: Any, org_id: int) -> int:
    return campaigns.ListCampaigns(cpb.ListCampaignsRequest(organization_id=org_id)).count


def worker_move(campaign_id: int, *actions: Action) -> None:
    """Move a campaign as a worker does: compare-and-set on the row, in this process."""
    try:
        for action in actions:
            assert transitions.try_apply(campaign_id, action), action
    finally:
        release_connection()


def reach(campaigns: Any, edition: Any, status: str) -> c.Campaign:
    """A campaign in `status`, reached through RPCs and, past calculating, worker moves."""
    campaign = make_campaign(campaigns, edition)
    cid = campaign.id
    if status == "scheduled":
        campaigns.ScheduleCampaign(cpb.ScheduleCampaignRequest(id=cid, scheduled_at=future()))
    elif status == "cancelled":
        campaigns.CancelCampaign(cpb.CancelCampaignRequest(id=cid))
    elif status != "draft":
        campaigns.SendCampaignNow(cpb.SendCampaignNowRequest(id=cid))
        moves = {
            "calculating": (),
            "sending": (Action.START_SENDING,),
            "sent": (Action.START_SENDING, Action.FINISH),
            "failed": (Action.FAIL,),
        }
        worker_move(cid, *moves[status])
    got = campaigns.GetCampaign(cpb.GetCampaignRequest(id=cid)).campaign
    assert c.CampaignStatus.Name(got.status) == f"CAMPAIGN_STATUS_{status.upper()}"
    return got


def test_create_round_trips_every_field(campaigns, audience, messages, org_id):
    edition = make_edition(audience, org_id, tz="America/New_York")
    segment = make_segment(audience, edition, expression='user.language == "da"', name="Danes")
    message = make_email_message(messages, edition)
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    created = campaigns.CreateCampaign(
        cpb.CreateCampaignRequest(
            organization_id=org_id,
            edition_id=edition.id,
            segment_id=segment.id,
            name="  Autumn news  ",
            channel=c.CHANNEL_EMAIL,
            email_message_id=message.id,
            scheduled_at=ts(FAR),
        )
    ).campaign
    assert created.id > 0
    assert segment.id != DEFAULT_SEGMENTS[edition.id]
    assert (created.organization_id, created.edition_id, created.segment_id) == (
        org_id,
        edition.id,
        segment.id,
    )
    assert created.name == "Autumn news"  # surrounding blanks are trimmed
    assert (created.channel, created.email_message_id, created.sms_body) == (
        c.CHANNEL_EMAIL,
        message.id,
        "",
    )
    assert created.status == c.CAMPAIGN_STATUS_DRAFT
    assert created.scheduled_at.ToDatetime(dt.UTC) == FAR
    assert created.timezone == "America/New_York"
    assert created.scheduled_at_local == "2040-01-15T12:30:00-05:00"
    assert (
        created.total_recipients,
        created.sent_count,
        created.failed_count,
        created.user_count,
        created.error_message,
    ) == (0, 0, 0, 0, "")
    assert not created.HasField("started_at") and not created.HasField("completed_at")
    after = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    assert before <= created.created.ToDatetime(dt.UTC) <= after
    assert before <= created.modified.ToDatetime(dt.UTC) <= after
    assert created.etag
    got = campaigns.GetCampaign(cpb.GetCampaignRequest(id=created.id)).campaign
    assert got == created
    assert count(campaigns, org_id) == 1


def test_create_sms_campaign_without_time(campaigns, audience, org_id):
    edition = make_edition(audience, org_id)
    created = make_campaign(campaigns, edition, sms_body="Doors open at 18:00 ✓")
    assert (created.channel, created.sms_body, created.email_message_id) == (
        c.CHANNEL_SMS,
        "Doors open at 18:00 ✓",
        0,
    )
    assert not created.HasField("scheduled_at")
    assert created.scheduled_at_local == ""
    assert created.timezone == "Europe/Copenhagen"


@pytest.mark.parametrize(
    ("tz", "utc", "local"),
    [
        ("Europe/Copenhagen", dt.datetime(2040, 7, 1, 10, 0), "2040-07-01T12:00:00+02:00"),
        ("Europe/Copenhagen", dt.datetime(2040, 12, 1, 10, 0), "2040-12-01T11:00:00+01:00"),
        ("America/New_York", dt.datetime(2040, 7, 1, 2, 15), "2040-06-30T22:15:00-04:00"),
        ("Asia/Kolkata", dt.datetime(2040, 3, 9, 20, 0), "2040-03-10T01:30:00+05:30"),
        ("UTC", dt.datetime(2040, 3, 9, 20, 0), "2040-03-09T20:00:00+00:00"),
    ],
)
def test_scheduled_at_is_rendered_in_the_editions_timezone(
    campaigns, audience, org_id, tz, utc, local
):
    edition = make_edition(audience, org_id, tz=tz)
    created = make_campaign(campaigns, edition, scheduled_at=ts(utc.replace(tzinfo=dt.UTC)))
    got = campaigns.GetCampaign(cpb.GetCampaignRequest(id=created.id)).campaign
    for campaign in (created, got):
        assert campaign.timezone == tz
        assert campaign.scheduled_at_local == local
        assert campaign.scheduled_at.ToDatetime() == utc


def test_limits_are_inclusive(campaigns, audience, org_id):
    edition = make_edition(audience, org_id)
    created = make_campaign(campaigns, edition, name="n" * 255, sms_body="s" * 1600)
    assert (len(created.name), len(created.sms_body)) == (255, 1600)


OTHER_ORG = "other organization's edition"
MISSING = "nonexistent edition"
BAD_INPUT = [
    ("empty name", {"name": ""}, "name"),
    ("blank name", {"name": " \t "}, "name"),
    ("long name", {"name": "n" * 256}, "name"),
    ("no organization", {"organization_id": 0}, "organization_id"),
    ("negative organization", {"organization_id": -4}, "organization_id"),
    ("no edition", {"edition_id": 0}, "edition_id"),
    ("negative edition", {"edition_id": -1}, "edition_id"),
    ("no segment", {"segment_id": 0}, "segment_id"),
    ("negative segment", {"segment_id": -7}, "segment_id"),
    ("channel unspecified", {"channel": c.CHANNEL_UNSPECIFIED}, "channel"),
    ("unknown channel", {"channel": 9}, "channel"),
    (
        "sms_body on email",
        {"channel": c.CHANNEL_EMAIL, "email_message_id": NEW_EMAIL_MESSAGE},
        "sms_body",
    ),
    ("email message on sms", {"email_message_id": NEW_EMAIL_MESSAGE}, "email_message_id"),
    (
        "negative email message",
        {"channel": c.CHANNEL_EMAIL, "sms_body": "", "email_message_id": -3},
        "email_message_id",
    ),
    ("long sms_body", {"sms_body": "s" * 1601}, "sms_body"),
    ("past scheduled_at", {"scheduled_at": future(-60)}, "scheduled_at"),
    (
        "absurd scheduled_at",
        {"scheduled_at": ts(dt.datetime(9500, 1, 1, tzinfo=dt.UTC))},
        "scheduled_at",
    ),
    (OTHER_ORG, {}, "edition_id"),
    (MISSING, {"edition_id": 10**15}, "edition_id"),
]


@pytest.mark.parametrize(("case", "overrides", "field"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_is_refused_and_writes_nothing(
    campaigns, audience, messages, org_id, case, overrides, field
):
    edition = make_edition(audience, org_id)
    overrides = with_references(audience, messages, edition, overrides)
    if case == OTHER_ORG:
        overrides = {"edition_id": make_edition(audience, org_id + 1).id}
    with pytest.raises(grpc.RpcError) as err:
        make_campaign(campaigns, edition, **overrides)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(err.value) == {field}
    info = details(err.value)["ErrorInfo"]
    assert (info.reason, info.domain) == ("INVALID_ARGUMENT", "campaigns.v1")
    assert count(campaigns, org_id) == 0
    assert count(campaigns, org_id + 1) == 0


def test_every_bad_field_is_reported_at_once(campaigns, org_id):
    with pytest.raises(grpc.RpcError) as err:
        campaigns.CreateCampaign(cpb.CreateCampaignRequest(sms_body="s" * 1601))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(err.value) == {
        "organization_id",
        "edition_id",
        "segment_id",
        "name",
        "channel",
        "sms_body",
    }


@pytest.mark.parametrize("campaign_id", [10**15, 0, -1])
def test_get_unknown_campaign_is_not_found(campaigns, campaign_id):
    with pytest.raises(grpc.RpcError) as err:
        campaigns.GetCampaign(cpb.GetCampaignRequest(id=campaign_id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    found = details(err.value)
    assert found["ResourceInfo"].resource_type == "campaign"
    assert found["ResourceInfo"].resource_name == f"campaigns/{campaign_id}"
    assert (found["ErrorInfo"].reason, found["ErrorInfo"].domain) == (
        "CAMPAIGN_NOT_FOUND",
        "campaigns.v1",
    )


@pytest.mark.parametrize("status", ["draft", "scheduled", "cancelled", "sent", "failed"])
def test_delete_removes_the_campaign(campaigns, audience, org_id, status):
    edition = make_edition(audience, org_id)
    keep = make_campaign(campaigns, edition, name="keep me")
    doomed = reach(campaigns, edition, status)
    assert count(campaigns, org_id) == 2
    assert campaigns.DeleteCampaign(cpb.DeleteCampaignRequest(id=doomed.id)) == (
        cpb.DeleteCampaignResponse()
    )
    for call in (
        lambda: campaigns.GetCampaign(cpb.GetCampaignRequest(id=doomed.id)),
        lambda: campaigns.DeleteCampaign(cpb.DeleteCampaignRequest(id=doomed.id)),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    listed = campaigns.ListCampaigns(cpb.ListCampaignsRequest(organization_id=org_id))
    assert [x.id for x in listed.results] == [keep.id]


@pytest.mark.parametrize("status", ["calculating", "sending"])
def test_delete_is_forbidden_while_active(campaigns, audience, org_id, status):
    edition = make_edition(audience, org_id)
    active = reach(campaigns, edition, status)
    with pytest.raises(grpc.RpcError) as err:
        campaigns.DeleteCampaign(cpb.DeleteCampaignRequest(id=active.id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    found = details(err.value)
    (violation,) = found["PreconditionFailure"].violations
    assert status in violation.description
    assert violation.subject == f"campaigns/{active.id}"
    assert found["ErrorInfo"].reason == "INVALID_STATUS"
    assert campaigns.GetCampaign(cpb.GetCampaignRequest(id=active.id)).campaign == active
