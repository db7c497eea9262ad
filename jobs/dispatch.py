"""The server's hand-off to RQ: enqueue a kickoff at a campaign's time, or a start now.

Job ids are derived from the campaign (and time), so enqueuing the same thing twice names the
same job; the jobs themselves re-check the database, so a stale or repeated one does nothing.
"""

from __future__ import annotations

import datetime as dt

from rq import Queue

from jobs import kickoff
from jobs.calculate import CALCULATE_TIMEOUT


def kickoff_job_id(campaign_id: int, when: dt.datetime) -> str:
    return f"kickoff-{campaign_id}-{int(when.replace(tzinfo=dt.UTC).timestamp())}"


class RQDispatcher:
    """Implements `server.campaigns.Dispatcher` on an RQ queue (scheduler enabled workers)."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def kickoff_at(self, campaign_id: int, when: dt.datetime) -> None:
        # RQ wants an aware UTC datetime; ours are naive UTC. Its scheduler keeps whole
        # seconds, truncating: round up, or the job may run before `when`, find the campaign
        # not yet due, and leave it to the (much later) sweep.
        at = when.replace(tzinfo=dt.UTC)
        if at.microsecond:
            at = at.replace(microsecond=0) + dt.timedelta(seconds=1)
        self.queue.enqueue_at(
            at,
            kickoff.kickoff,
            campaign_id,
            job_id=kickoff_job_id(campaign_id, when),
            job_timeout=CALCULATE_TIMEOUT,
        )

    def start_now(self, campaign_id: int) -> None:
        self.queue.enqueue(
            kickoff.start, campaign_id, job_id=f"start-{campaign_id}", job_timeout=CALCULATE_TIMEOUT
        )
