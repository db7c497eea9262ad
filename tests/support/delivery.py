"""Importing users, starting campaigns, waiting for them to end and reading the ledger: the
steps every delivery test takes."""

from __future__ import annotations

from collections import Counter
from typing import Any

from campaigns.v1 import audience_service_pb2 as apb
from campaigns.v1 import campaign_pb2, user_pb2
from campaigns.v1 import campaign_service_pb2 as cpb
from server.store.db import release_connection
from server.store.models import Campaign, Delivery
from tests.fixtures.workers import RunningWorker
from tests.support.processes import wait_until

FINAL = {
    campaign_pb2.CAMPAIGN_STATUS_SENT,
    campaign_pb2.CAMPAIGN_STATUS_FAILED,
    campaign_pb2.CAMPAIGN_STATUS_CANCELLED,
}


def user(external_id: str, **fields: Any) -> user_pb2.User:
    attributes = fields.pop("attributes", None)
    out = user_pb2.User(external_id=external_id, **fields)
    if attributes:
        out.attributes.update(attributes)
    return out


def import_users(
    audience: Any, org_id: int, edition_id: int, users: list[user_pb2.User]
) -> dict[str, int]:
    """ImportUsers as a client stream (batches of 10); external_id -> user id."""
    requests = [
        apb.ImportUsersRequest(
            organization_id=org_id if i == 0 else 0, edition_id=edition_id, users=users[i : i + 10]
        )
        for i in range(0, max(len(users), 1), 10)
    ]
    result = audience.ImportUsers(iter(requests))
    assert (result.created, result.rejected) == (len(users), 0), result
    ids: dict[str, int] = {}
    page = 1
    while page:
        listed = audience.ListUsers(
            apb.ListUsersRequest(organization_id=org_id, page=page, page_size=1000)
        )
        ids.update({u.external_id: u.id for u in listed.results})
        page = listed.next_page
    return ids


def get(campaigns: Any, campaign_id: int) -> campaign_pb2.Campaign:
    return campaigns.GetCampaign(cpb.GetCampaignRequest(id=campaign_id)).campaign


def wait_final(
    campaigns: Any, campaign_id: int, worker: RunningWorker, timeout: float = 20
) -> campaign_pb2.Campaign:
    assert wait_until(lambda: get(campaigns, campaign_id).status in FINAL, timeout, 0.1), (
        f"campaign {campaign_id} is {get(campaigns, campaign_id)}\n{worker.output()}"
    )
    return get(campaigns, campaign_id)


def send_now(campaigns: Any, campaign_id: int) -> campaign_pb2.Campaign:
    return campaigns.SendCampaignNow(cpb.SendCampaignNowRequest(id=campaign_id)).campaign


def ledger(campaign_id: int) -> list[Delivery]:
    """The campaign's Delivery rows, read through the model."""
    try:
        return list(Delivery.select().where(Delivery.campaign == campaign_id).order_by(Delivery.id))
    finally:
        release_connection()


def campaign_row(campaign_id: int) -> Campaign:
    try:
        return Campaign.get_by_id(campaign_id)
    finally:
        release_connection()


def assert_counters_match_ledger(campaigns: Any, campaign_id: int) -> list[Delivery]:
    """sent_count / failed_count / total_recipients and the stats equal the ledger's figures,
    and started_at <= every sent_at <= completed_at."""
    rows = ledger(campaign_id)
    campaign = get(campaigns, campaign_id)
    by_status = Counter(r.status for r in rows)
    assert campaign.sent_count == by_status["sent"], (campaign, by_status)
    assert campaign.failed_count == by_status["failed"], (campaign, by_status)
    stats = campaigns.GetCampaignStats(cpb.GetCampaignStatsRequest(id=campaign_id)).stats
    assert (stats.sent, stats.failed) == (by_status["sent"], by_status["failed"])
    in_flight = by_status["pending"] + by_status["claimed"] + by_status["sending"]
    assert stats.pending == in_flight
    # Rows skipped because the campaign was cancelled were recipients all the same.
    never_recipients = sum(r.status == "skipped" and r.skip_reason != "cancelled" for r in rows)
    assert campaign.total_recipients == len(rows) - never_recipients
    if campaign.status in FINAL:
        assert campaign.HasField("completed_at"), campaign
    if by_status["sent"] and campaign.status != campaign_pb2.CAMPAIGN_STATUS_CANCELLED:
        started = campaign.started_at.ToDatetime()
        completed = campaign.completed_at.ToDatetime()
        assert started <= completed
        for row in rows:
            if row.status == "sent":
                assert started <= row.sent_at <= completed, (row.sent_at, started, completed)
    return rows
