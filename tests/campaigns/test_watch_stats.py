"""GetCampaignStats and WatchCampaignStats over a real channel, with the figures read from a real
delivery ledger: counts, rates, live updates, the final snapshot and the watcher limit.

The delivery engine that will write the ledger is not built yet, so these tests stand in for
it: they insert `server.store.models.Delivery` rows directly, in this process, where the
server runs.
"""

from __future__ import annotations

import datetime as dt
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from campaigns.v1 import campaign_pb2
from campaigns.v1 import campaign_service_pb2 as cpb
from server.store.db import release_connection
from server.store.models import Delivery, DeliveryStatus, utcnow
from tests.support.helpers import details, make_campaign, make_edition

MISSING_ID = 9_000_000_000_000
CANCELLED = campaign_pb2.CAMPAIGN_STATUS_CANCELLED
EVENTS = ("sent", "delivered", "opened", "clicked", "bounced", "unsubscribed")
END = object()  # what a Watch yields once the server closes the stream
_users = itertools.count(1)


def ledger(campaign_id: int, *rows: dict[str, Any]) -> None:
    """Write ledger rows as the delivery engine would (one transaction, one change)."""
    try:
        Delivery.insert_many(
            [{"campaign": campaign_id, "user_id": next(_users), **row} for row in rows]
        ).execute()
    finally:
        release_connection()


def row(status: DeliveryStatus, *events: str) -> dict[str, Any]:
    """A ledger row in `status` with the given `<event>_at` columns set."""
    now = utcnow()
    # Every row names every column: insert_many takes its column list from the first row.
    return {"status": status, **{f"{e}_at": now if e in events else None for e in EVENTS}}


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Watch:
    """A WatchCampaignStats stream read on a thread, so every wait on it can be bounded."""

    def __init__(self, campaigns: Any, campaign_id: int) -> None:
        request = cpb.WatchCampaignStatsRequest(id=campaign_id)
        self.call = campaigns.WatchCampaignStats(request, timeout=60)
        self.items: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for message in self.call:
                self.items.put(message)
            self.items.put(END)
        except grpc.RpcError as error:
            self.items.put(error)

    def next(self, timeout: float = 5.0) -> Any:
        item = self.items.get(timeout=timeout)
        if isinstance(item, grpc.RpcError):
            raise item
        return item

    def cancel(self) -> None:
        self.call.cancel()


@pytest.fixture
def watch(campaigns, app) -> Iterator[Callable[[int], Watch]]:
    opened: list[Watch] = []

    def open_watch(campaign_id: int) -> Watch:
        opened.append(Watch(campaigns, campaign_id))
        return opened[-1]

    assert wait_until(lambda: app.hub.watchers == 0, 2.0), "watchers left over by another test"
    yield open_watch
    for w in opened:
        w.cancel()
    assert wait_until(lambda: app.hub.watchers == 0, 2.0)


@pytest.fixture
def campaign(campaigns, audience, org_id) -> campaign_pb2.Campaign:
    return make_campaign(campaigns, make_edition(audience, org_id))


def stats_of(campaigns: Any, campaign_id: int) -> campaign_pb2.CampaignStats:
    return campaigns.GetCampaignStats(cpb.GetCampaignStatsRequest(id=campaign_id)).stats


def counts(stats: campaign_pb2.CampaignStats) -> dict[str, int]:
    names = (
        "sent",
        "failed",
        "pending",
        "delivered",
        "opened",
        "clicked",
        "bounced",
        "unsubscribed",
    )
    return {name: getattr(stats, name) for name in names}


def rates(stats: campaign_pb2.CampaignStats) -> tuple[float, float, float, float]:
    return stats.delivery_rate, stats.open_rate, stats.click_rate, stats.unsubscribe_rate


def test_fresh_campaign_has_zero_figures(campaigns, campaign):
    stats = stats_of(campaigns, campaign.id)
    assert stats.campaign_id == campaign.id
    assert stats.status == campaign_pb2.CAMPAIGN_STATUS_DRAFT
    assert stats.total_recipients == 0
    assert set(counts(stats).values()) == {0}
    assert rates(stats) == (0.0, 0.0, 0.0, 0.0)
    observed = stats.observed_at.ToDatetime(dt.UTC)
    assert abs((dt.datetime.now(dt.UTC) - observed).total_seconds()) < 5


def test_figures_and_rates_come_from_the_ledger(campaigns, campaign):
    S = DeliveryStatus
    ledger(
        campaign.id,
        row(S.PENDING),
        row(S.CLAIMED),
        row(S.SENDING),  # in flight: pending
        row(S.FAILED),
        row(S.FAILED),
        row(S.SKIPPED),
        row(S.AMBIGUOUS),  # counted nowhere
        # Ten sent: eight delivered (four opened, two of them clicked, one unsubscribed),
        # one bounced, one with no report yet.
        *[row(S.SENT, "sent", "delivered", "opened", "clicked") for _ in range(2)],
        *[row(S.SENT, "sent", "delivered", "opened") for _ in range(2)],
        row(S.SENT, "sent", "delivered", "unsubscribed"),
        *[row(S.SENT, "sent", "delivered") for _ in range(3)],
        row(S.SENT, "sent", "bounced"),
        row(S.SENT, "sent"),
    )
    stats = stats_of(campaigns, campaign.id)
    assert counts(stats) == {
        "sent": 10,
        "failed": 2,
        "pending": 3,
        "delivered": 8,
        "opened": 4,
        "clicked": 2,
        "bounced": 1,
        "unsubscribed": 1,
    }
    # delivery over sent; open, click and unsubscribe over delivered
    assert rates(stats) == (0.8, 0.5, 0.25, 0.125)


def test_rates_are_zero_while_nothing_is_delivered(campaigns, campaign):
    ledger(
        campaign.id,
        row(DeliveryStatus.SENT, "sent"),
        row(DeliveryStatus.SENT, "sent"),
        row(DeliveryStatus.FAILED),
    )
    stats = stats_of(campaigns, campaign.id)
    assert (stats.sent, stats.failed, stats.delivered) == (2, 1, 0)
    assert rates(stats) == (0.0, 0.0, 0.0, 0.0)


def test_stats_of_missing_campaign_is_not_found(campaigns):
    with pytest.raises(grpc.RpcError) as info:
        stats_of(campaigns, MISSING_ID)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert details(info.value)["ErrorInfo"].reason == "CAMPAIGN_NOT_FOUND"


def test_watch_sends_a_snapshot_at_once_and_each_change_within_a_second(watch, campaign):
    started = time.monotonic()
    w = watch(campaign.id)
    first = w.next()
    assert time.monotonic() - started < 1.0
    assert not first.final
    assert first.stats.campaign_id == campaign.id and first.stats.sent == 0

    changed = time.monotonic()
    ledger(campaign.id, row(DeliveryStatus.SENT, "sent", "delivered"), row(DeliveryStatus.PENDING))
    update = w.next(timeout=1.0)
    assert time.monotonic() - changed < 1.0
    assert (update.stats.sent, update.stats.delivered, update.stats.pending) == (1, 1, 1)
    assert update.stats.delivery_rate == 1.0
    assert not update.final

    ledger(campaign.id, row(DeliveryStatus.FAILED))
    assert w.next(timeout=1.0).stats.failed == 1


def test_cancelling_the_campaign_ends_the_stream_with_a_final_snapshot(
    watch, campaigns, campaign, app
):
    w = watch(campaign.id)
    assert not w.next().final
    campaigns.CancelCampaign(cpb.CancelCampaignRequest(id=campaign.id))
    last = w.next(timeout=1.0)
    assert last.final
    assert last.stats.status == CANCELLED
    assert w.next(timeout=1.0) is END
    assert wait_until(lambda: app.hub.watchers == 0, 1.0)


def test_watching_a_final_campaign_yields_exactly_one_message(watch, campaigns, campaign, app):
    campaigns.CancelCampaign(cpb.CancelCampaignRequest(id=campaign.id))
    w = watch(campaign.id)
    only = w.next()
    assert only.final and only.stats.status == CANCELLED
    assert w.next(timeout=2.0) is END
    assert wait_until(lambda: app.hub.watchers == 0, 1.0)


def test_deleting_the_campaign_ends_the_stream_with_not_found(watch, campaigns, campaign):
    w = watch(campaign.id)
    assert not w.next().final
    campaigns.DeleteCampaign(cpb.DeleteCampaignRequest(id=campaign.id))
    with pytest.raises(grpc.RpcError) as info:
        w.next(timeout=2.0)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_watching_a_missing_campaign_is_not_found(watch, app):
    with pytest.raises(grpc.RpcError) as info:
        watch(MISSING_ID).next()
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert app.hub.watchers == 0


def test_the_watcher_after_the_limit_is_refused(watch, campaigns, audience, org_id, app, settings):
    assert settings.max_watchers == 8
    edition = make_edition(audience, org_id)
    ids = [make_campaign(campaigns, edition).id for _ in range(2)]
    open_ = [watch(ids[i % 2]) for i in range(settings.max_watchers)]
    for w in open_:
        assert not w.next().final  # the first snapshot comes once the watcher is counted
    assert app.hub.watchers == settings.max_watchers

    with pytest.raises(grpc.RpcError) as info:
        watch(ids[0]).next()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details(info.value)["ErrorInfo"].reason == "TOO_MANY_WATCHERS"
    assert app.hub.watchers == settings.max_watchers

    # A freed slot can be taken again, and the remaining watchers still get updates.
    open_[0].cancel()
    assert wait_until(lambda: app.hub.watchers == settings.max_watchers - 1, 1.0)
    assert not watch(ids[1]).next().final
    ledger(ids[0], row(DeliveryStatus.SENT, "sent"))
    assert open_[2].next(timeout=1.0).stats.sent == 1


def test_a_caller_that_hangs_up_frees_its_slot_promptly(watch, campaign, app):
    w = watch(campaign.id)
    w.next()
    assert app.hub.watchers == 1
    hung_up = time.monotonic()
    w.cancel()
    assert wait_until(lambda: app.hub.watchers == 0, 1.0)
    assert time.monotonic() - hung_up < 1.0
