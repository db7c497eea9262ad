"""UpdateCampaign over the real gRPC channel: FieldMask semantics, editable statuses, etags
and the channel/content rules. Field violations name paths in the request ("campaign.name").
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
from server.store.models import Campaign
from tests.support.helpers import (
    NEW_EMAIL_MESSAGE,
    NEW_SEGMENT,
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

EMAIL = {"channel": c.CHANNEL_EMAIL, "sms_body": "", "email_message_id": NEW_EMAIL_MESSAGE}
LATER = dt.datetime(2041, 5, 4, 3, 2, 1, tzinfo=dt.UTC)


def update(campaigns: Any, cid: int, paths: list[str], etag: str = "", **values: Any) -> c.Campaign:
    return campaigns.UpdateCampaign(
        cpb.UpdateCampaignRequest(
            id=cid,
            campaign=c.Campaign(**values),
            update_mask={"paths": paths},
            etag=etag,
        )
    ).campaign


def get(campaigns: Any, cid: int) -> c.Campaign:
    return campaigns.GetCampaign(cpb.GetCampaignRequest(id=cid)).campaign


def refused(
    campaigns: Any, cid: int, paths: list[str], code: grpc.StatusCode, **kw: Any
) -> grpc.RpcError:
    """Assert the update fails with `code` and leaves the campaign exactly as it was."""
    before = get(campaigns, cid)
    with pytest.raises(grpc.RpcError) as err:
        update(campaigns, cid, paths, **kw)
    assert err.value.code() == code
    assert get(campaigns, cid) == before
    return err.value


# Every field gets a new value in the request; only the one in the mask may change (nor is
# any other looked up: the decoy segment and email message do not exist).
DECOYS = {
    "name": "decoy",
    "segment_id": 10**15,
    "channel": c.CHANNEL_EMAIL,
    "email_message_id": 10**15,
    "sms_body": "decoy {{ body",
    "scheduled_at": ts(LATER),
}
EDITS = [
    ("name", {}, "Renamed"),
    ("segment_id", {}, NEW_SEGMENT),
    ("channel", {"sms_body": ""}, c.CHANNEL_EMAIL),
    ("email_message_id", EMAIL, NEW_EMAIL_MESSAGE),
    ("sms_body", {}, "New text"),
    ("scheduled_at", {}, ts(LATER)),
]


@pytest.mark.parametrize(("path", "start", "value"), EDITS, ids=[e[0] for e in EDITS])
def test_only_named_field_changes(campaigns, audience, messages, org_id, path, start, value):
    edition = make_edition(audience, org_id)
    before = make_campaign(
        campaigns, edition, **with_references(audience, messages, edition, start)
    )
    value = with_references(audience, messages, edition, {path: value})[path]
    after = update(campaigns, before.id, [path], **{**DECOYS, path: value})
    assert getattr(after, path) == value
    expected = c.Campaign()
    expected.CopyFrom(before)
    if path == "scheduled_at":
        expected.scheduled_at.CopyFrom(value)
        expected.scheduled_at_local = "2041-05-04T05:02:01+02:00"
    else:
        setattr(expected, path, value)
    for volatile in ("modified", "etag"):
        expected.ClearField(volatile)
    got = c.Campaign()
    got.CopyFrom(after)
    got.ClearField("modified")
    got.ClearField("etag")
    assert got == expected
    assert after.modified.ToDatetime() >= before.modified.ToDatetime()
    assert after.etag != before.etag
    assert get(campaigns, before.id) == after


def test_update_several_fields_and_trim_name(campaigns, audience, org_id):
    edition = make_edition(audience, org_id)
    campaign = make_campaign(campaigns, edition)
    segment = make_segment(audience, edition, name="Another")
    after = update(
        campaigns,
        campaign.id,
        ["name", "sms_body", "segment_id"],
        name="  Padded  ",
        sms_body="Body",
        segment_id=segment.id,
    )
    assert (after.name, after.sms_body, after.segment_id) == ("Padded", "Body", segment.id)


def test_scheduled_campaign_can_be_edited_and_rescheduled(campaigns, audience, org_id):
    edition = make_edition(audience, org_id)
    campaign = make_campaign(campaigns, edition)
    campaigns.ScheduleCampaign(cpb.ScheduleCampaignRequest(id=campaign.id, scheduled_at=future()))
    after = update(
        campaigns, campaign.id, ["scheduled_at", "name"], scheduled_at=ts(LATER), name="Moved"
    )
    assert after.status == c.CAMPAIGN_STATUS_SCHEDULED
    assert (after.scheduled_at.ToDatetime(dt.UTC), after.name) == (LATER, "Moved")


def test_draft_can_clear_its_time(campaigns, audience, org_id):
    edition = make_edition(audience, org_id)
    campaign = make_campaign(campaigns, edition, scheduled_at=future())
    after = update(campaigns, campaign.id, ["scheduled_at"])
    assert not after.HasField("scheduled_at") and after.scheduled_at_local == ""


def test_draft_whose_stored_time_passed_stays_editable(campaigns, audience, org_id):
    edition = make_edition(audience, org_id)
    campaign = make_campaign(campaigns, edition, scheduled_at=future())
    try:  # time passes: the unused time of the draft is now in the past
        Campaign.update(scheduled_at=dt.datetime(2020, 1, 1)).where(
            Campaign.id == campaign.id
        ).execute()
    finally:
        release_connection()
    assert update(campaigns, campaign.id, ["name"], name="Still editable").name == (
        "Still editable"
    )
    err = refused(
        campaigns,
        campaign.id,
        ["scheduled_at"],
        grpc.StatusCode.INVALID_ARGUMENT,
        scheduled_at=future(-1),
    )
    assert violated_fields(err) == {"campaign.scheduled_at"}


@pytest.mark.parametrize(
    "paths",
    [[], ["status"], ["id"], ["etag"], ["bogus"], ["name", "total_recipients"], ["campaign.name"]],
)
def test_bad_update_mask(campaigns, audience, org_id, paths):
    campaign = make_campaign(campaigns, make_edition(audience, org_id))
    err = refused(
        campaigns,
        campaign.id,
        paths,
        grpc.StatusCode.INVALID_ARGUMENT,
        name="x",
        status=c.CAMPAIGN_STATUS_SENT,
    )
    assert violated_fields(err) == {"update_mask"}


BAD_VALUES = [
    (["name"], {"name": "  "}, "campaign.name"),
    (["name"], {"name": "n" * 256}, "campaign.name"),
    (["segment_id"], {"segment_id": 0}, "campaign.segment_id"),
    (["segment_id"], {"segment_id": -2}, "campaign.segment_id"),
    (["channel"], {"channel": c.CHANNEL_UNSPECIFIED}, "campaign.channel"),
    (["channel"], {"channel": 9}, "campaign.channel"),
    (["sms_body"], {"sms_body": "s" * 1601}, "campaign.sms_body"),
    (["email_message_id"], {"email_message_id": NEW_EMAIL_MESSAGE}, "campaign.email_message_id"),
    (["scheduled_at"], {"scheduled_at": future(-30)}, "campaign.scheduled_at"),
    # Switching channel keeps the other channel's content unless it is cleared too.
    (["channel"], {"channel": c.CHANNEL_EMAIL}, "campaign.sms_body"),
    (
        ["channel", "email_message_id"],
        {"channel": c.CHANNEL_EMAIL, "email_message_id": NEW_EMAIL_MESSAGE},
        "campaign.sms_body",
    ),
]


@pytest.mark.parametrize(("paths", "values", "field"), BAD_VALUES)
def test_bad_values(campaigns, audience, messages, org_id, paths, values, field):
    edition = make_edition(audience, org_id)
    campaign = make_campaign(campaigns, edition)
    values = with_references(audience, messages, edition, values)
    err = refused(campaigns, campaign.id, paths, grpc.StatusCode.INVALID_ARGUMENT, **values)
    assert violated_fields(err) == {field}


def test_sms_to_email_when_sms_body_is_cleared_in_the_same_mask(
    campaigns, audience, messages, org_id
):
    edition = make_edition(audience, org_id)
    campaign = make_campaign(campaigns, edition)
    message = make_email_message(messages, edition)
    after = update(
        campaigns,
        campaign.id,
        ["channel", "sms_body", "email_message_id"],
        channel=c.CHANNEL_EMAIL,
        email_message_id=message.id,
    )
    assert (after.channel, after.sms_body, after.email_message_id) == (
        c.CHANNEL_EMAIL,
        "",
        message.id,
    )


def test_email_to_sms_needs_the_email_message_cleared(campaigns, audience, messages, org_id):
    edition = make_edition(audience, org_id)
    campaign = make_campaign(
        campaigns, edition, **with_references(audience, messages, edition, EMAIL)
    )
    err = refused(
        campaigns, campaign.id, ["channel"], grpc.StatusCode.INVALID_ARGUMENT, channel=c.CHANNEL_SMS
    )
    assert violated_fields(err) == {"campaign.email_message_id"}
    after = update(
        campaigns,
        campaign.id,
        ["channel", "email_message_id", "sms_body"],
        channel=c.CHANNEL_SMS,
        sms_body="Hi",
    )
    assert (after.channel, after.email_message_id, after.sms_body) == (c.CHANNEL_SMS, 0, "Hi")


def test_scheduled_campaign_cannot_lose_its_time(campaigns, audience, org_id):
    campaign = make_campaign(campaigns, make_edition(audience, org_id))
    campaigns.ScheduleCampaign(cpb.ScheduleCampaignRequest(id=campaign.id, scheduled_at=future()))
    err = refused(campaigns, campaign.id, ["scheduled_at"], grpc.StatusCode.INVALID_ARGUMENT)
    assert violated_fields(err) == {"campaign.scheduled_at"}


def _to_status(campaigns: Any, cid: int, status: str) -> None:
    if status == "cancelled":
        campaigns.CancelCampaign(cpb.CancelCampaignRequest(id=cid))
        return
    campaigns.SendCampaignNow(cpb.SendCampaignNowRequest(id=cid))
    moves = {
        "calculating": [],
        "sending": [Action.START_SENDING],
        "sent": [Action.FINISH],
        "failed": [Action.FAIL],
    }[status]
    try:
        for action in moves:
            assert transitions.try_apply(cid, action)
    finally:
        release_connection()


@pytest.mark.parametrize("status", ["calculating", "sending", "sent", "failed", "cancelled"])
def test_not_editable_once_started_or_final(campaigns, audience, org_id, status):
    campaign = make_campaign(campaigns, make_edition(audience, org_id))
    _to_status(campaigns, campaign.id, status)
    err = refused(
        campaigns, campaign.id, ["name"], grpc.StatusCode.FAILED_PRECONDITION, name="Too late"
    )
    found = details(err)
    assert found["ErrorInfo"].reason == "INVALID_STATUS"
    assert status in found["PreconditionFailure"].violations[0].description


def test_etag_guards_the_update(campaigns, audience, org_id):
    campaign = make_campaign(campaigns, make_edition(audience, org_id))
    assert get(campaigns, campaign.id).etag == campaign.etag
    first = update(campaigns, campaign.id, ["name"], etag=campaign.etag, name="First")
    assert first.etag != campaign.etag
    err = refused(
        campaigns,
        campaign.id,
        ["name"],
        grpc.StatusCode.ABORTED,
        etag=campaign.etag,
        name="Lost update",
    )
    assert details(err)["ErrorInfo"].reason == "ETAG_MISMATCH"
    assert update(campaigns, campaign.id, ["name"], etag=first.etag, name="Second").name == (
        "Second"
    )


def test_transitions_change_the_etag(campaigns, audience, org_id):
    campaign = make_campaign(campaigns, make_edition(audience, org_id))
    scheduled = campaigns.ScheduleCampaign(
        cpb.ScheduleCampaignRequest(id=campaign.id, scheduled_at=future())
    ).campaign
    assert scheduled.etag != campaign.etag
    refused(
        campaigns, campaign.id, ["name"], grpc.StatusCode.ABORTED, etag=campaign.etag, name="Stale"
    )


def test_update_unknown_campaign_is_not_found(campaigns):
    with pytest.raises(grpc.RpcError) as err:
        update(campaigns, 10**15, ["name"], name="Ghost")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
