"""request_id on CreateCampaign, ScheduleCampaign, SendCampaignNow and CancelCampaign.

A retry with the same key returns the first answer byte for byte, even after the campaign
moved on, and changes nothing; a key reused for another request is refused; concurrent
retries race to exactly one effect.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
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
    future,
    make_campaign,
    make_edition,
    ts,
    violated_fields,
)

METHODS = ["create", "schedule", "send_now", "cancel"]


def rid() -> str:
    return uuid.uuid4().hex


def count(campaigns: Any, org_id: int) -> int:
    return campaigns.ListCampaigns(cpb.ListCampaignsRequest(organization_id=org_id)).count


def get(campaigns: Any, cid: int) -> c.Campaign:
    return campaigns.GetCampaign(cpb.GetCampaignRequest(id=cid)).campaign


def create_request(edition: Any, key: str, **fields: Any) -> cpb.CreateCampaignRequest:
    values = {
        "organization_id": edition.organization_id,
        "edition_id": edition.id,
        "segment_id": DEFAULT_SEGMENTS[edition.id],
        "name": "Retry me",
        "channel": c.CHANNEL_SMS,
        "sms_body": "Hi",
        "request_id": key,
    }
    return cpb.CreateCampaignRequest(**{**values, **fields})


def move_request(method: str, cid: int, key: str, when: Any = None) -> tuple[str, Any]:
    """The RPC name and request of a status move of campaign `cid` with request_id `key`."""
    if method == "schedule":
        return "ScheduleCampaign", cpb.ScheduleCampaignRequest(
            id=cid, request_id=key, scheduled_at=when or future(7200)
        )
    if method == "send_now":
        return "SendCampaignNow", cpb.SendCampaignNowRequest(id=cid, request_id=key)
    return "CancelCampaign", cpb.CancelCampaignRequest(id=cid, request_id=key)


def invoke(campaigns: Any, rpc: str, request: Any) -> c.Campaign:
    return getattr(campaigns, rpc)(request).campaign


def test_create_retry_returns_the_first_campaign(campaigns, audience, org_id):
    edition = make_edition(audience, org_id)
    request = create_request(edition, rid())
    first = campaigns.CreateCampaign(request).campaign
    assert campaigns.CreateCampaign(request).campaign == first
    assert count(campaigns, org_id) == 1
    changed = campaigns.UpdateCampaign(
        cpb.UpdateCampaignRequest(
            id=first.id,
            campaign=c.Campaign(name="Changed"),
            update_mask={"paths": ["name"]},
        )
    ).campaign
    again = campaigns.CreateCampaign(request).campaign
    assert again == first and again.etag != changed.etag and again.name == "Retry me"
    assert count(campaigns, org_id) == 1
    assert get(campaigns, first.id) == changed


def test_without_request_id_or_with_new_ones_each_call_creates(campaigns, audience, org_id):
    edition = make_edition(audience, org_id)
    for key in ("", "", rid(), rid()):
        campaigns.CreateCampaign(create_request(edition, key))
    assert count(campaigns, org_id) == 4


def test_schedule_retry_does_not_undo_a_later_reschedule(campaigns, audience, org_id):
    campaign = make_campaign(campaigns, make_edition(audience, org_id))
    rpc, request = move_request("schedule", campaign.id, rid())
    first = invoke(campaigns, rpc, request)
    moved = invoke(campaigns, *move_request("schedule", campaign.id, "", future(99999)))
    assert moved.scheduled_at != first.scheduled_at
    assert invoke(campaigns, rpc, request) == first
    assert get(campaigns, campaign.id) == moved


def test_send_now_retry_answers_as_first_even_after_workers_moved_on(campaigns, audience, org_id):
    campaign = make_campaign(campaigns, make_edition(audience, org_id))
    rpc, request = move_request("send_now", campaign.id, rid())
    first = invoke(campaigns, rpc, request)
    assert first.status == c.CAMPAIGN_STATUS_CALCULATING
    assert invoke(campaigns, rpc, request) == first
    try:
        assert transitions.try_apply(campaign.id, Action.START_SENDING)
    finally:
        release_connection()
    assert invoke(campaigns, rpc, request) == first
    assert get(campaigns, campaign.id).status == c.CAMPAIGN_STATUS_SENDING


def test_cancel_retry_returns_the_first_cancellation(campaigns, audience, org_id):
    campaign = make_campaign(campaigns, make_edition(audience, org_id))
    rpc, request = move_request("cancel", campaign.id, rid())
    first = invoke(campaigns, rpc, request)
    assert first.status == c.CAMPAIGN_STATUS_CANCELLED
    for _ in range(2):
        assert invoke(campaigns, rpc, request) == first
    assert get(campaigns, campaign.id) == first
    with pytest.raises(grpc.RpcError) as err:  # without the key, a second cancel is refused
        invoke(campaigns, *move_request("cancel", campaign.id, ""))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_failed_call_does_not_use_up_its_key(campaigns, audience, org_id):
    campaign = make_campaign(campaigns, make_edition(audience, org_id), sms_body="")
    rpc, request = move_request("send_now", campaign.id, rid())
    with pytest.raises(grpc.RpcError) as err:
        invoke(campaigns, rpc, request)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    campaigns.UpdateCampaign(
        cpb.UpdateCampaignRequest(
            id=campaign.id, campaign=c.Campaign(sms_body="Now"), update_mask={"paths": ["sms_body"]}
        )
    )
    assert invoke(campaigns, rpc, request).status == c.CAMPAIGN_STATUS_CALCULATING


@pytest.mark.parametrize("method", METHODS)
def test_key_reused_for_another_request_is_refused(campaigns, audience, org_id, method):
    edition = make_edition(audience, org_id)
    key = rid()
    if method == "create":
        campaigns.CreateCampaign(create_request(edition, key))
        rpc, other = "CreateCampaign", create_request(edition, key, name="Another")
        watched = None
    else:
        first, second = make_campaign(campaigns, edition), make_campaign(campaigns, edition)
        invoke(campaigns, *move_request(method, first.id, key))
        target = first.id if method == "schedule" else second.id
        rpc, other = move_request(method, target, key, future(5000))
        watched = get(campaigns, target)
    before = count(campaigns, org_id)
    with pytest.raises(grpc.RpcError) as err:
        invoke(campaigns, rpc, other)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(err.value) == {"request_id"}
    assert count(campaigns, org_id) == before
    if watched is not None:
        assert get(campaigns, watched.id) == watched


@pytest.mark.parametrize("method", METHODS)
def test_request_id_length(campaigns, audience, org_id, method):
    edition = make_edition(audience, org_id)
    draft = make_campaign(campaigns, edition)

    def run(key: str) -> c.Campaign:
        if method == "create":
            return campaigns.CreateCampaign(create_request(edition, key)).campaign
        return invoke(campaigns, *move_request(method, draft.id, key))

    with pytest.raises(grpc.RpcError) as err:
        run("k" * 129)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(err.value) == {"request_id"}
    assert count(campaigns, org_id) == 1
    assert get(campaigns, draft.id) == draft
    run("k" * 120 + rid()[:8])  # 128 characters is fine
    assert (count(campaigns, org_id), get(campaigns, draft.id) == draft) == (
        (2, True) if method == "create" else (1, False)
    )


def race(call: Any, n: int = 8) -> list[Any]:
    """Run `call` on n threads released at the same moment; results or status codes."""
    gate = threading.Barrier(n)

    def one(_: int) -> Any:
        gate.wait()
        try:
            return call()
        except grpc.RpcError as err:
            return err.code()

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_concurrent_create_retries_create_one(campaigns, audience, org_id):
    request = create_request(make_edition(audience, org_id), rid())
    answers = race(lambda: campaigns.CreateCampaign(request).campaign)
    assert all(isinstance(a, c.Campaign) for a in answers), answers
    assert all(a == answers[0] for a in answers)
    assert count(campaigns, org_id) == 1
    assert get(campaigns, answers[0].id) == answers[0]


@pytest.mark.parametrize("method", ["schedule", "send_now", "cancel"])
def test_concurrent_move_retries_all_get_the_one_answer(campaigns, audience, org_id, method):
    campaign = make_campaign(campaigns, make_edition(audience, org_id))
    rpc, request = move_request(method, campaign.id, rid())
    answers = race(lambda: invoke(campaigns, rpc, request))
    assert all(isinstance(a, c.Campaign) for a in answers), answers
    assert all(a == answers[0] for a in answers)
    assert answers[0].etag != campaign.etag
    assert get(campaigns, campaign.id) == answers[0]


def test_retry_after_the_requested_time_passed_still_replays(campaigns, audience, org_id):
    """A retry is answered from the first result, not re-validated against the clock."""
    edition = make_edition(audience, org_id)
    draft = make_campaign(campaigns, edition)
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.5)
    create = create_request(edition, rid(), scheduled_at=ts(soon))
    created = campaigns.CreateCampaign(create).campaign
    schedule = move_request("schedule", draft.id, rid(), ts(soon))
    scheduled = invoke(campaigns, *schedule)
    time.sleep(max(0.0, (soon - dt.datetime.now(dt.UTC)).total_seconds()) + 0.05)
    assert campaigns.CreateCampaign(create).campaign == created
    assert invoke(campaigns, *schedule) == scheduled
    assert count(campaigns, org_id) == 2
