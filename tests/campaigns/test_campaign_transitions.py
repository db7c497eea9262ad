"""ScheduleCampaign, SendCampaignNow and CancelCampaign from every status, over the real channel.

Callers reach draft, scheduled, calculating and cancelled through RPCs; sending, sent and
failed are reached as a worker reaches them, with `server.campaigns.transitions.try_apply` on
the row.
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
    details,
    future,
    make_campaign,
    make_edition,
    make_email_message,
    ts,
    violated_fields,
)

STATUSES = ["draft", "scheduled", "calculating", "sending", "sent", "failed", "cancelled"]
ALLOWED = {
    "schedule": {"draft": "scheduled", "scheduled": "scheduled"},
    "send_now": {"draft": "calculating", "scheduled": "calculating"},
    "cancel": {s: "cancelled" for s in ("draft", "scheduled", "calculating", "sending")},
}
WHEN = dt.datetime(2042, 2, 3, 4, 5, 6, tzinfo=dt.UTC)


def status_name(value: int) -> str:
    return c.CampaignStatus.Name(value).removeprefix("CAMPAIGN_STATUS_").lower()


def get(campaigns: Any, cid: int) -> c.Campaign:
    return campaigns.GetCampaign(cpb.GetCampaignRequest(id=cid)).campaign


def call(campaigns: Any, action: str, cid: int, **kw: Any) -> c.Campaign:
    if action == "schedule":
        kw.setdefault("scheduled_at", ts(WHEN))
        return campaigns.ScheduleCampaign(cpb.ScheduleCampaignRequest(id=cid, **kw)).campaign
    if action == "send_now":
        return campaigns.SendCampaignNow(cpb.SendCampaignNowRequest(id=cid, **kw)).campaign
    return campaigns.CancelCampaign(cpb.CancelCampaignRequest(id=cid, **kw)).campaign


def set_row(cid: int, **values: Any) -> None:
    try:
        Campaign.update(**values).where(Campaign.id == cid).execute()
    finally:
        release_connection()


def reach(campaigns: Any, edition: Any, status: str, **fields: Any) -> c.Campaign:
    campaign = make_campaign(campaigns, edition, **fields)
    if status == "scheduled":
        call(campaigns, "schedule", campaign.id, scheduled_at=future())
    elif status == "cancelled":
        call(campaigns, "cancel", campaign.id)
    elif status != "draft":
        call(campaigns, "send_now", campaign.id)
        moves = {
            "calculating": [],
            "sending": [Action.START_SENDING],
            "sent": [Action.START_SENDING, Action.FINISH],
            "failed": [Action.FAIL],
        }
        try:
            for action in moves[status]:
                assert transitions.try_apply(campaign.id, action)
        finally:
            release_connection()
    got = get(campaigns, campaign.id)
    assert status_name(got.status) == status
    return got


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("action", list(ALLOWED))
def test_transition_matrix(campaigns, audience, org_id, action, status):
    before = reach(campaigns, make_edition(audience, org_id), status)
    target = ALLOWED[action].get(status)
    if target is None:
        with pytest.raises(grpc.RpcError) as err:
            call(campaigns, action, before.id)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        found = details(err.value)
        assert (found["ErrorInfo"].reason, found["ErrorInfo"].domain) == (
            "INVALID_STATUS",
            "campaigns.v1",
        )
        (violation,) = found["PreconditionFailure"].violations
        assert violation.type == "STATUS"
        assert violation.subject == f"campaigns/{before.id}"
        assert f" {status}" in violation.description
        assert get(campaigns, before.id) == before
        return
    after = call(campaigns, action, before.id)
    assert status_name(after.status) == target
    assert after.etag != before.etag
    assert get(campaigns, before.id) == after
    if action == "schedule":
        assert after.scheduled_at.ToDatetime(dt.UTC) == WHEN
        assert after.scheduled_at_local == "2042-02-03T05:05:06+01:00"
    if action == "cancel":
        assert after.HasField("completed_at") and not before.HasField("completed_at")
    if action == "send_now":
        assert after.HasField("scheduled_at") == before.HasField("scheduled_at")


def test_send_now_is_calculating_at_once(campaigns, audience, org_id):
    campaign = make_campaign(campaigns, make_edition(audience, org_id))
    started = call(campaigns, "send_now", campaign.id)
    assert started.status == c.CAMPAIGN_STATUS_CALCULATING
    assert get(campaigns, campaign.id).status == c.CAMPAIGN_STATUS_CALCULATING


def test_schedule_uses_the_stored_time(campaigns, audience, org_id):
    campaign = make_campaign(campaigns, make_edition(audience, org_id), scheduled_at=ts(WHEN))
    scheduled = campaigns.ScheduleCampaign(cpb.ScheduleCampaignRequest(id=campaign.id)).campaign
    assert scheduled.status == c.CAMPAIGN_STATUS_SCHEDULED
    assert scheduled.scheduled_at.ToDatetime(dt.UTC) == WHEN
    # Scheduling again without a time keeps it; with one, moves it.
    again = campaigns.ScheduleCampaign(cpb.ScheduleCampaignRequest(id=campaign.id)).campaign
    assert again.scheduled_at == scheduled.scheduled_at
    moved = call(campaigns, "schedule", campaign.id, scheduled_at=ts(WHEN + dt.timedelta(days=1)))
    assert moved.scheduled_at.ToDatetime(dt.UTC) == WHEN + dt.timedelta(days=1)
    assert moved.status == c.CAMPAIGN_STATUS_SCHEDULED


@pytest.mark.parametrize("stored", ["none", "passed"])
def test_schedule_needs_a_future_time(campaigns, audience, org_id, stored):
    campaign = make_campaign(campaigns, make_edition(audience, org_id))
    if stored == "passed":
        set_row(campaign.id, scheduled_at=dt.datetime(2020, 1, 1))
    before = get(campaigns, campaign.id)
    for kw in (
        {},
        {"scheduled_at": future(-1)},
        {"scheduled_at": ts(dt.datetime(9500, 1, 1, tzinfo=dt.UTC))},
    ):
        with pytest.raises(grpc.RpcError) as err:
            campaigns.ScheduleCampaign(cpb.ScheduleCampaignRequest(id=campaign.id, **kw))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violated_fields(err.value) == {"scheduled_at"}
        assert get(campaigns, campaign.id) == before
    assert call(campaigns, "schedule", campaign.id).status == c.CAMPAIGN_STATUS_SCHEDULED


CONTENTLESS = [
    ({"channel": c.CHANNEL_EMAIL, "sms_body": ""}, "email_message_id"),
    ({"sms_body": ""}, "sms_body"),
    ({"sms_body": " \n "}, "sms_body"),
]


@pytest.mark.parametrize(("fields", "missing"), CONTENTLESS)
@pytest.mark.parametrize("action", ["schedule", "send_now"])
def test_content_is_required_to_start(campaigns, audience, org_id, action, fields, missing):
    campaign = make_campaign(campaigns, make_edition(audience, org_id), **fields)
    with pytest.raises(grpc.RpcError) as err:
        call(campaigns, action, campaign.id)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    found = details(err.value)
    assert found["ErrorInfo"].reason == "CONTENT_MISSING"
    (violation,) = found["PreconditionFailure"].violations
    assert violation.type == "CONTENT" and missing in violation.description
    assert get(campaigns, campaign.id) == campaign
    # A draft without content can still be cancelled.
    assert call(campaigns, "cancel", campaign.id).status == c.CAMPAIGN_STATUS_CANCELLED


def test_content_can_be_added_then_sent(campaigns, audience, messages, org_id):
    edition = make_edition(audience, org_id)
    campaign = make_campaign(campaigns, edition, channel=c.CHANNEL_EMAIL, sms_body="")
    message = make_email_message(messages, edition)
    campaigns.UpdateCampaign(
        cpb.UpdateCampaignRequest(
            id=campaign.id,
            campaign=c.Campaign(email_message_id=message.id),
            update_mask={"paths": ["email_message_id"]},
        )
    )
    assert call(campaigns, "send_now", campaign.id).status == c.CAMPAIGN_STATUS_CALCULATING


def test_cancel_while_sending_keeps_what_was_sent(campaigns, audience, org_id):
    before = reach(campaigns, make_edition(audience, org_id), "sending")
    set_row(before.id, total_recipients=10, sent_count=3, failed_count=1)
    after = call(campaigns, "cancel", before.id)
    assert after.status == c.CAMPAIGN_STATUS_CANCELLED
    assert (after.total_recipients, after.sent_count, after.failed_count) == (10, 3, 1)
    assert after.error_message == ""


@pytest.mark.parametrize("action", list(ALLOWED))
def test_unknown_campaign_is_not_found(campaigns, action):
    with pytest.raises(grpc.RpcError) as err:
        call(campaigns, action, 10**15)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert details(err.value)["ResourceInfo"].resource_name == f"campaigns/{10**15}"
