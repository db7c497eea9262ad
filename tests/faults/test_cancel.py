"""CancelCampaign mid-send leaves no row behind: every row of a cancelled campaign reaches a
final state (sent, failed, ambiguous or skipped), through a real worker and SMTP server.

Two ways rows used to stay behind for good: rows waiting for a retry (the relay tempfailing)
stayed "pending", and rows leased by a worker killed just before the cancel stayed "sending",
since leases were only reaped while the campaign was still sending.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import pytest

from campaigns.v1 import campaign_service_pb2 as cpb
from server.store.db import release_connection
from server.store.models import Delivery
from tests.fixtures.smtp import SmtpSink
from tests.fixtures.workers import RunningWorker
from tests.support.delivery import send_now
from tests.support.invariants import email_campaign
from tests.support.processes import wait_until

pytestmark = [pytest.mark.fault, pytest.mark.slow]
RECIPIENTS = 400
FINAL = {"sent", "failed", "ambiguous", "skipped"}


@pytest.fixture(scope="module")
def worker_env(smtp: SmtpSink) -> dict[str, str]:
    return {
        **smtp.env(),
        "LEASE_SECONDS": "2",
        "STALE_SECONDS": "2",
        "SWEEP_INTERVAL": "0.5",
        "SMTP_MAX_CONNECTIONS": "8",
        "SEND_GROUP_SIZE": "10",
        "RETRY_BASE_SECONDS": "1",
    }


def _statuses(campaign_id: int) -> Counter[str]:
    try:
        rows = Delivery.select(Delivery.status).where(Delivery.campaign == campaign_id)
        return Counter(r.status for r in rows)
    finally:
        release_connection()


def _all_final(campaign_id: int) -> bool:
    return set(_statuses(campaign_id)) <= FINAL


def _slow_campaign(campaigns, audience, messages, org_id, smtp: SmtpSink, refused: int):
    """A campaign whose every RCPT takes a while, `refused` of its addresses tempfailed."""
    campaign = email_campaign(campaigns, audience, messages, org_id, RECIPIENTS, suppressed=0)
    for i, address in enumerate(campaign.addresses):
        smtp.slow_down(address, 0.1)
        if i % 5 == 0 and refused:
            smtp.refuse(address, 451)
    return campaign


def _cancel(campaigns, campaign_id: int) -> None:
    campaigns.CancelCampaign(cpb.CancelCampaignRequest(id=campaign_id))


def test_rows_waiting_for_a_retry_are_skipped_when_the_campaign_is_cancelled(
    worker, smtp, campaigns, audience, messages, org_id
):
    campaign = _slow_campaign(campaigns, audience, messages, org_id, smtp, refused=1)
    send_now(campaigns, campaign.id)
    assert wait_until(lambda: len(smtp.of_campaign(campaign.id)) >= 40, 60), worker.output()
    _cancel(campaigns, campaign.id)
    assert wait_until(lambda: _all_final(campaign.id), 60), (
        _statuses(campaign.id),
        worker.output(),
    )
    statuses = _statuses(campaign.id)
    assert statuses["skipped"] > 0 and sum(statuses.values()) == RECIPIENTS, statuses
    # Whatever was recorded sent did reach the relay, once.
    per_address = smtp.per_address(campaign.id)
    assert all(n == 1 for n in per_address.values()), per_address.most_common(3)
    assert statuses["sent"] <= len(per_address)


def _kill_family(worker: RunningWorker) -> None:
    """SIGKILL the worker and every process below it (job, scheduler, sweep)."""
    pid = worker.proc.pid
    os.kill(pid, signal.SIGSTOP)
    family = [
        int(child)
        for children in Path(f"/proc/{pid}/task").glob("*/children")
        for child in children.read_text().split()
    ]
    for target in [pid, *family]:
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            continue
    worker.proc.wait(10)


def test_rows_leased_by_a_dead_worker_reach_a_final_state_after_a_cancel(
    workers, smtp, campaigns, audience, messages, org_id
):
    campaign = _slow_campaign(campaigns, audience, messages, org_id, smtp, refused=0)
    first = workers.start()
    send_now(campaigns, campaign.id)
    assert wait_until(lambda: _statuses(campaign.id)["sending"] > 0, 60), first.output()
    _kill_family(first)
    _cancel(campaigns, campaign.id)
    second = workers.start()  # its sweep finds the cancelled campaign's expired leases
    assert wait_until(lambda: _all_final(campaign.id), 60), (
        _statuses(campaign.id),
        second.output(),
    )
    statuses = _statuses(campaign.id)
    # Rows the dead worker held come out ambiguous (or sent, if it recorded them in time);
    # the cancel skipped the rest. None is left pending or sending.
    assert statuses["skipped"] > 0 and sum(statuses.values()) == RECIPIENTS, statuses
