"""Workers killed with SIGKILL: no goodbye, no lease released, no RQ bookkeeping.

A campaign of a few thousand recipients goes out through a real `python -m jobs` worker to an
aiosmtpd sink; mid-batch the worker is killed three times together with its job process
("work horse") and its scheduler process, as a crashed machine would lose them, and a fresh
worker is started each time. The campaign still finishes, and every ledger invariant holds
(tests/support/invariants.py). Each recovery (kill to the next row recorded sent) is printed.

Then the worker holding RQ's scheduler lock is killed before a scheduled campaign is due,
with a second worker running: the campaign still starts at its time, never before. And
however many workers sweep, a stalled campaign is resumed once per STALE_SECONDS.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue

from campaigns.v1 import campaign_pb2
from campaigns.v1 import campaign_service_pb2 as cpb
from jobs import context
from jobs.pipeline import sweep
from server.store.db import release_connection
from server.store.models import Delivery
from tests.fixtures.smtp import SmtpSink
from tests.fixtures.workers import RunningWorker
from tests.support.delivery import get, send_now, wait_final
from tests.support.helpers import ts
from tests.support.invariants import assert_ledger_invariants, email_campaign
from tests.support.processes import wait_until

SENT = campaign_pb2.CAMPAIGN_STATUS_SENT
SCHEDULED = campaign_pb2.CAMPAIGN_STATUS_SCHEDULED
RECIPIENTS = 3000
KILLS = 3
GROUP = 25  # rows taken into "sending" at once at most, and outcomes recorded together
CONNECTIONS = 8  # messages in flight per send job
# What one kill can leave "sending" (ambiguous): the messages in flight, and outcomes that
# came back but were not yet recorded (at most a batch).
STRANDED = CONNECTIONS + GROUP
# Recovery in seconds, not minutes: short leases, a fast sweep, RQ's liveness settings.
FAST = {
    "LEASE_SECONDS": "3",
    "STALE_SECONDS": "2",
    "SWEEP_INTERVAL": "1",
    "SEND_CLAIM_SIZE": "100",
    "SEND_GROUP_SIZE": str(GROUP),
    "SMTP_MAX_CONNECTIONS": str(CONNECTIONS),
    "RQ_WORKER_TTL": "20",
    "RQ_MAINTENANCE_INTERVAL": "2",
    "RQ_JOB_MONITORING_INTERVAL": "2",
}
pytestmark = [pytest.mark.fault, pytest.mark.slow]


# --- processes ---------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc), children first."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in children.read_text().split()]
        except OSError:
            continue  # the thread ended meanwhile
    return found + [grandchild for child in found for grandchild in descendants(child)]


def horses(pid: int) -> list[int]:
    """The worker's job processes: RQ's work horse leads its own process group (setpgrp),
    which the scheduler process, the worker's other child, does not."""
    out = []
    for child in descendants(pid):
        try:
            if os.getpgid(child) == child:
                out.append(child)
        except ProcessLookupError:
            continue
    return out


@dataclass
class Kill:
    at: float  # time.time() just after SIGKILL
    pids: list[int]  # the worker and everything below it
    horses: list[int]


def kill_hard(worker: RunningWorker) -> Kill:
    """SIGKILL the worker, its job process and its scheduler process, as a crash would."""
    pid = worker.proc.pid
    os.kill(pid, signal.SIGSTOP)  # it can fork nothing new while we look at its children
    family, jobs = descendants(pid), horses(pid)
    for target in [pid, *family]:
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            continue
    killed = Kill(time.time(), [pid, *family], jobs)
    worker.proc.wait(5)
    for target in family:  # reparented to init, which reaps them; wait until they are gone
        assert wait_until(
            lambda t=target: not Path(f"/proc/{t}").exists() or "State:\tZ" in _status(t), 5
        ), f"process {target} survived"
    return killed


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return ""


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def worker_env(smtp: SmtpSink) -> dict[str, str]:
    return {**smtp.env(), **FAST}


def _first_sent_after(campaign_id: int, moment: float) -> float | None:
    """When the first row recorded sent after `moment` (time.time()) was recorded."""
    since = dt.datetime.fromtimestamp(moment, dt.UTC).replace(tzinfo=None)
    try:
        first = (
            Delivery.select(Delivery.sent_at)
            .where((Delivery.campaign == campaign_id) & (Delivery.sent_at > since))
            .order_by(Delivery.sent_at)
            .first()
        )
    finally:
        release_connection()
    return first.sent_at.replace(tzinfo=dt.UTC).timestamp() if first else None


def _reached(campaign_id: int, smtp: SmtpSink) -> int:
    """Ambiguous rows of the campaign whose message the sink did receive."""
    try:
        rows = Delivery.select(Delivery.address).where(
            (Delivery.campaign == campaign_id) & (Delivery.status == "ambiguous")
        )
        addresses = {r.address.lower() for r in rows}
    finally:
        release_connection()
    return sum(1 for n in smtp.per_address(campaign_id) if n in addresses)


def _report(line: str, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\n[faults] {line}", flush=True)


# --- tests -------------------------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("parallel", ["1", "4"], ids=["resumed-by-sweep", "queued-jobs"])
def test_a_campaign_survives_its_worker_killed_three_times_mid_batch(
    workers, smtp, campaigns, audience, messages, org_id, capsys, parallel
):
    """One send job at a time ("1"): each kill loses the only job, and only the sweep (a
    stale heartbeat) and the leases bring the campaign back. Four ("4"): jobs still queued
    in Redis carry on at once in the fresh worker; the killed job's rows come back when
    their lease expires."""
    worker = workers.start(PARALLEL_SEND_JOBS=parallel)
    campaign = email_campaign(campaigns, audience, messages, org_id, RECIPIENTS)
    baseline = len(smtp.received)  # counting the sink's list is cheap; filtering it is not
    started = time.monotonic()
    send_now(campaigns, campaign.id)

    recoveries: list[float] = []
    for n in range(1, KILLS + 1):
        # Mid-batch: messages are flowing and a job process is at work right now.
        target = RECIPIENTS * n // (KILLS + 1)
        assert wait_until(
            lambda t=target, pid=worker.proc.pid: (
                len(smtp.received) - baseline >= t and horses(pid)
            ),
            40,
            0.01,
        ), worker.output()
        kill = kill_hard(worker)
        assert kill.horses, "no job process was running at the kill"
        worker = workers.start(PARALLEL_SEND_JOBS=parallel)
        restarted = time.time() - kill.at
        assert wait_until(lambda k=kill: _first_sent_after(campaign.id, k.at), 20, 0.05), (
            worker.output()
        )
        recovered = (_first_sent_after(campaign.id, kill.at) or 0) - kill.at
        recoveries.append(recovered)
        _report(
            f"parallel={parallel} kill {n}: worker back in {restarted:.2f} s, "
            f"next row sent {recovered:.2f} s after the kill",
            capsys,
        )

    done = wait_final(campaigns, campaign.id, worker, timeout=40)
    assert done.status == SENT, (done, worker.output())
    status = assert_ledger_invariants(
        campaigns, campaign.id, smtp.received, suppressed=campaign.suppressed
    )
    # A kill strands at most the messages in flight and the outcomes not yet recorded.
    ambiguous = status["ambiguous"]
    assert ambiguous <= KILLS * STRANDED, status
    assert status == Counter(
        sent=RECIPIENTS - ambiguous, ambiguous=ambiguous, skipped=len(campaign.suppressed)
    ), status
    assert max(recoveries) < 10, recoveries
    _report(
        f"parallel={parallel}: {RECIPIENTS} recipients, {KILLS} kills, "
        f"{ambiguous} ambiguous ({_reached(campaign.id, smtp)} of them reached the relay), "
        f"recoveries {[round(r, 2) for r in recoveries]} s, "
        f"whole campaign {time.monotonic() - started:.1f} s",
        capsys,
    )


def _scheduler_pid(redis_url: str, queue_name: str) -> int:
    """The process of the RQ scheduler that holds the queue's lock."""
    with Redis.from_url(redis_url, decode_responses=True) as connection:
        name = connection.get(f"rq:scheduler-lock:{queue_name}")
        assert name, "nobody holds the scheduler lock"
        return int(connection.hget(f"rq:scheduler:{name}", "pid") or 0)


@pytest.mark.timeout(60)
def test_a_scheduled_campaign_starts_on_time_after_the_scheduler_holder_is_killed(
    workers, smtp, campaigns, audience, messages, org_id, redis_url, settings, capsys
):
    first, second = workers.start(), workers.start()
    scheduler = _scheduler_pid(redis_url, settings.queue_name)
    holder, survivor = (
        (first, second) if scheduler in descendants(first.proc.pid) else (second, first)
    )
    assert scheduler in descendants(holder.proc.pid), "neither worker runs the scheduler"
    campaign = email_campaign(campaigns, audience, messages, org_id, 20)
    when = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=4)).replace(microsecond=0)
    scheduled = campaigns.ScheduleCampaign(
        cpb.ScheduleCampaignRequest(id=campaign.id, scheduled_at=ts(when))
    ).campaign
    assert scheduled.status == SCHEDULED

    kill = kill_hard(holder)  # its scheduler's lock outlives it by a minute (RQ: 60 s + 1)
    assert kill.at < when.timestamp() - 1, "the kill came too late to matter"
    while time.time() < when.timestamp() - 0.05:
        assert get(campaigns, campaign.id).status == SCHEDULED, "started before its time"
        time.sleep(0.1)
    done = wait_final(campaigns, campaign.id, survivor, timeout=20)
    assert done.status == SENT, (done, survivor.output())
    assert_ledger_invariants(
        campaigns, campaign.id, smtp.received, suppressed=campaign.suppressed, scheduled_at=when
    )
    first_message = min(r.at for r in smtp.of_campaign(campaign.id))
    late = first_message - when.timestamp()
    # The sweep (every SWEEP_INTERVAL = 1 s) starts what the dead scheduler cannot.
    assert 0 <= late < 5, late
    _report(
        f"scheduler holder killed: first message {late:.2f} s after scheduled_at; "
        f"started {done.started_at.ToDatetime(dt.UTC) - when} late",
        capsys,
    )


def test_a_stalled_campaign_is_resumed_once_however_many_workers_sweep(
    app, campaigns, audience, messages, org_id, redis_url, monkeypatch
):
    """Five workers sweeping at once resume a stalled campaign once; after STALE_SECONDS
    (here 1) it may be resumed again, if it is still stalled."""
    monkeypatch.setenv("STALE_SECONDS", "1")
    context.delivery_settings.cache_clear()
    campaign = email_campaign(campaigns, audience, messages, org_id, 1)
    queue = Queue(f"resume-{uuid.uuid4().hex[:8]}", connection=Redis.from_url(redis_url))
    try:
        for _ in range(5):
            sweep.resume(queue, campaign.id, "sending")
        assert queue.count == 1, queue.job_ids
        guard = f"campaigns:resume:{campaign.id}"
        assert wait_until(lambda: not queue.connection.exists(guard), 5)
        sweep.resume(queue, campaign.id, "sending")
        assert queue.count == 2, queue.job_ids
    finally:
        queue.empty()
        queue.connection.close()
        context.delivery_settings.cache_clear()
