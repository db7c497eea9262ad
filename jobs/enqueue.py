"""Every job the service puts on the queue: its dotted path, id and timeout, in one place.

`RQDispatcher` implements the server's enqueue port (`server.campaigns.ports.Dispatcher`); the
composition root (`server/app.py`) wires it in. Jobs are named by dotted path, so enqueuing
loads none of the pipeline (the server never imports the send path). Job ids are derived from
the campaign (and time), so enqueuing the same thing twice names the same job; the jobs
themselves re-check the database, so a stale or repeated one does nothing.
"""

from __future__ import annotations

import datetime as dt

from redis import Redis
from rq import Queue

KICKOFF = "jobs.pipeline.kickoff.kickoff"
START = "jobs.pipeline.kickoff.start"
CALCULATE = "jobs.pipeline.calculate.calculate"
SEND = "jobs.pipeline.send.send"

CALCULATE_TIMEOUT = 3600  # seconds RQ lets one calculation (or a kickoff that runs one) run
SEND_TIMEOUT = 900  # seconds RQ lets one send job run (its own budget is far shorter)


def scheduler_time(when: dt.datetime) -> dt.datetime:
    """`when` (naive UTC) as RQ's scheduler wants it: aware, and in whole seconds rounded up.
    RQ keeps whole seconds and truncates, so a job could otherwise run before `when`, find its
    campaign not yet due, and leave it to the (much later) sweep."""
    at = when.replace(tzinfo=dt.UTC)
    if at.microsecond:
        at = at.replace(microsecond=0) + dt.timedelta(seconds=1)
    return at


def kickoff_job_id(campaign_id: int, when: dt.datetime) -> str:
    return f"kickoff-{campaign_id}-{int(when.replace(tzinfo=dt.UTC).timestamp())}"


def enqueue_kickoff(q: Queue, campaign_id: int, job_id: str, at: dt.datetime | None = None) -> None:
    _enqueue(q, KICKOFF, campaign_id, job_id, CALCULATE_TIMEOUT, at)


def enqueue_calculate(q: Queue, campaign_id: int, job_id: str) -> None:
    _enqueue(q, CALCULATE, campaign_id, job_id, CALCULATE_TIMEOUT, None)


def enqueue_send(q: Queue, campaign_id: int, job_id: str, at: dt.datetime | None = None) -> None:
    _enqueue(q, SEND, campaign_id, job_id, SEND_TIMEOUT, at)
    # Counted until a send job starts: a campaign whose send job waits in a long queue has
    # no heartbeat, and is not stalled (the sweep would otherwise enqueue more of the same).
    with q.connection.pipeline() as pipe:
        pipe.incr(_waiting_key(campaign_id))
        pipe.expire(_waiting_key(campaign_id), WAITING_TTL)
        pipe.execute()


WAITING_TTL = 900  # seconds a count of waiting send jobs outlives its last enqueue


def _waiting_key(campaign_id: int) -> str:
    return f"campaigns:sends-waiting:{campaign_id}"


def send_started(connection: Redis, campaign_id: int) -> None:
    """A send job of the campaign has started: one fewer waiting (never below none)."""
    if connection.decr(_waiting_key(campaign_id)) < 0:
        connection.set(_waiting_key(campaign_id), 0, ex=WAITING_TTL)


def sends_waiting(connection: Redis, campaign_ids: list[int]) -> set[int]:
    """The campaigns with a send job enqueued or scheduled that has not started yet."""
    if not campaign_ids:
        return set()
    counts = connection.mget([_waiting_key(i) for i in campaign_ids])
    return {i for i, n in zip(campaign_ids, counts, strict=True) if n and int(n) > 0}


def start_job_id(campaign_id: int) -> str:
    return f"start-{campaign_id}"


def pending(connection: Redis, job_ids: dict[int, str]) -> set[int]:
    """The campaigns (keys) whose job (values) is on its way: queued or running. A job Redis
    lost, or one that has finished, is not; nor is one still waiting in RQ's scheduled
    registry past its time, which only a live scheduler would move (when the one holding the
    lock has died, it moves nothing for a minute)."""
    if not job_ids:
        return set()
    with connection.pipeline() as pipe:
        for job_id in job_ids.values():
            pipe.hget(f"rq:job:{job_id}", "status")
        statuses = pipe.execute()
    live = {b"queued", b"started", b"deferred"}
    return {c for c, s in zip(job_ids, statuses, strict=True) if s in live}


def _enqueue(
    q: Queue, func: str, campaign_id: int, job_id: str, timeout: int, at: dt.datetime | None
) -> None:
    if at is None:
        q.enqueue(func, campaign_id, job_id=job_id, job_timeout=timeout)
    else:
        q.enqueue_at(scheduler_time(at), func, campaign_id, job_id=job_id, job_timeout=timeout)


class RQDispatcher:
    """Implements `server.campaigns.ports.Dispatcher` on an RQ queue (scheduler-enabled workers)."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def kickoff_at(self, campaign_id: int, when: dt.datetime) -> None:
        enqueue_kickoff(self.queue, campaign_id, kickoff_job_id(campaign_id, when), at=when)

    def start_now(self, campaign_id: int) -> None:
        _enqueue(self.queue, START, campaign_id, start_job_id(campaign_id), CALCULATE_TIMEOUT, None)
