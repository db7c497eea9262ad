"""The hand-off from the server to the job system, through a real `python -m jobs` worker (RQ
worker, RQ scheduler and the due-campaign sweep) on the test Redis and database: send now,
a schedule a few seconds ahead, a repeated kickoff, and the sweep recovering a lost job.

The start job runs the whole pipeline: it calculates the audience (here one SMS recipient)
and hands over to send jobs, which write to the outbox provider (files under the worker's
OUTBOX_DIR). The delivery itself is tested in tests/delivery/."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry

from campaigns.v1 import audience_service_pb2 as apb
from campaigns.v1 import campaign_pb2, user_pb2
from campaigns.v1 import campaign_service_pb2 as cpb
from jobs.enqueue import kickoff_job_id
from jobs.pipeline import kickoff
from server.store.db import release_connection, write_transaction
from server.store.models import Campaign, utcnow
from tests.fixtures.workers import RunningWorker
from tests.support.delivery import get
from tests.support.helpers import future, make_campaign, make_edition, ts
from tests.support.processes import wait_until

SCHEDULED = campaign_pb2.CAMPAIGN_STATUS_SCHEDULED
CALCULATING = campaign_pb2.CAMPAIGN_STATUS_CALCULATING
SENDING = campaign_pb2.CAMPAIGN_STATUS_SENDING
SENT = campaign_pb2.CAMPAIGN_STATUS_SENT
KICKED_OFF = (CALCULATING, SENDING, SENT)


@pytest.fixture(scope="module")
def rq_redis(redis_url: str) -> Iterator[Redis]:
    connection = Redis.from_url(redis_url)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def worker_env(worker_env: dict[str, str]) -> dict[str, str]:
    # The sweep at its production interval: start_worker's 1 s could kick off a scheduled
    # campaign before RQ's scheduler does, and the schedule test checks that the scheduled
    # job itself did it.
    return {**worker_env, "SWEEP_INTERVAL": "15"}


@pytest.fixture
def campaign(campaigns, audience, org_id) -> campaign_pb2.Campaign:
    """An SMS campaign to everyone in an edition of one user."""
    edition = make_edition(audience, org_id)
    member = user_pb2.User(
        external_id="only", phone="+4520123456", first_name="Ann", sms_consent=True
    )
    imported = audience.ImportUsers(
        iter(
            [apb.ImportUsersRequest(organization_id=org_id, edition_id=edition.id, users=[member])]
        )
    )
    assert imported.created == 1
    return make_campaign(campaigns, edition)


def finished_job(job_id: str, connection: Redis, worker: RunningWorker, timeout: float) -> Job:
    job = Job.fetch(job_id, connection=connection)
    done = (JobStatus.FINISHED, JobStatus.FAILED)
    assert wait_until(lambda: job.get_status(refresh=True) in done, timeout), (
        f"job {job_id} is {job.get_status()}\n{worker.output()}"
    )
    assert job.get_status() == JobStatus.FINISHED, f"{job.exc_info}\n{worker.output()}"
    return job


def move_scheduled_at(campaign_id: int, when: dt.datetime) -> None:
    try:
        Campaign.update(scheduled_at=when).where(Campaign.id == campaign_id).execute()
    finally:
        release_connection()


@pytest.mark.slow
def test_send_now_runs_the_start_job(worker, campaigns, campaign, rq_redis):
    started = campaigns.SendCampaignNow(cpb.SendCampaignNowRequest(id=campaign.id)).campaign
    assert started.status == CALCULATING
    job = finished_job(f"start-{campaign.id}", rq_redis, worker, 15)
    # It calculated the audience and handed over to the send jobs...
    assert job.return_value() == "sending"
    # ...which delivered the one message.
    assert wait_until(lambda: get(campaigns, campaign.id).status == SENT, 15), worker.output()
    sent = get(campaigns, campaign.id)
    assert (sent.total_recipients, sent.sent_count) == (1, 1)
    (text,) = worker.texts(campaign.id)
    assert (text["to"], text["body"]) == ("+4520123456", "Tickets are out!")


@pytest.mark.slow
def test_a_schedule_a_few_seconds_ahead_kicks_off_on_time(worker, campaigns, campaign, rq_redis):
    # Between 2.1 and 3 s ahead, with a fraction of a second as real callers send: the RQ
    # scheduler only knows whole seconds, and must still never start the campaign early.
    now = dt.datetime.now(dt.UTC)
    when = (now + dt.timedelta(seconds=3)).replace(microsecond=900_000)
    if when - now > dt.timedelta(seconds=3):
        when -= dt.timedelta(seconds=1)
    request = cpb.ScheduleCampaignRequest(id=campaign.id, scheduled_at=ts(when))
    assert campaigns.ScheduleCampaign(request).campaign.status == SCHEDULED

    early_polls = 0
    status = SCHEDULED
    deadline = time.monotonic() + 15
    while status == SCHEDULED and time.monotonic() < deadline:
        status = get(campaigns, campaign.id).status
        if dt.datetime.now(dt.UTC) < when:  # the answer came before scheduled_at
            assert status == SCHEDULED, "kicked off before scheduled_at"
            early_polls += 1
        time.sleep(0.05)
    assert status in KICKED_OFF, worker.output()
    assert early_polls > 10
    kicked_off = get(campaigns, campaign.id)
    # `modified` is stamped by the worker's status changes: never before scheduled_at.
    assert kicked_off.modified.ToDatetime(dt.UTC) >= when

    # The scheduled job itself did it (not the sweep rescuing a job that fired too early).
    job = finished_job(kickoff_job_id(campaign.id, when), rq_redis, worker, 5)
    assert job.return_value() == "sending"
    assert wait_until(lambda: get(campaigns, campaign.id).status == SENT, 15), worker.output()
    sent = get(campaigns, campaign.id)
    # Calculated (started_at) on time, and the message left after scheduled_at.
    assert when <= sent.started_at.ToDatetime(dt.UTC) < when + dt.timedelta(seconds=3)
    (text,) = worker.texts(campaign.id)
    assert dt.datetime.fromisoformat(text["at"]) >= when


def test_a_repeated_kickoff_does_nothing_the_second_time(jobs_env, campaigns, campaign):
    campaigns.ScheduleCampaign(cpb.ScheduleCampaignRequest(id=campaign.id, scheduled_at=future()))
    try:
        # One transaction from "due" to kicked off, so the worker's sweep (if it runs) cannot
        # see the campaign due in between and take the first kickoff from us.
        with write_transaction():
            Campaign.update(scheduled_at=utcnow() - dt.timedelta(minutes=1)).where(
                Campaign.id == campaign.id
            ).execute()
            first = kickoff.kickoff(campaign.id)
        second = kickoff.kickoff(campaign.id)
    finally:
        release_connection()
    # The first calculated the audience and queued its send jobs (a worker, if any, may be
    # sending them by now); the second found it no longer scheduled.
    assert first == "sending"
    assert second in ("not scheduled (sending)", "not scheduled (sent)")
    assert get(campaigns, campaign.id).status in (SENDING, SENT)


@pytest.mark.slow
def test_the_sweep_kicks_off_a_due_campaign_whose_job_was_lost(
    worker, campaigns, campaign, rq_redis, settings
):
    scheduled = campaigns.ScheduleCampaign(
        cpb.ScheduleCampaignRequest(id=campaign.id, scheduled_at=future())
    ).campaign
    registry = ScheduledJobRegistry(queue=Queue(settings.queue_name, connection=rq_redis))
    job_id = kickoff_job_id(campaign.id, scheduled.scheduled_at.ToDatetime())
    assert job_id in registry.get_job_ids()
    for lost in registry.get_job_ids():  # Redis lost the schedule
        registry.remove(lost, delete_job=True)
    assert registry.count == 0

    move_scheduled_at(campaign.id, utcnow() - dt.timedelta(seconds=1))
    assert get(campaigns, campaign.id).status == SCHEDULED
    # The sweep runs at worker start and every 15 s.
    assert wait_until(lambda: get(campaigns, campaign.id).status != SCHEDULED, 40, 0.25), (
        worker.output()
    )
    job = finished_job(f"sweep-kickoff-{campaign.id}", rq_redis, worker, 5)
    assert job.return_value() == "sending"
    assert wait_until(lambda: get(campaigns, campaign.id).status == SENT, 15), worker.output()
    assert len(worker.texts(campaign.id)) == 1
