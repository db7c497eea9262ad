"""The send job: take a group of ledger rows into "sending" under a lease, render, send,
record, and repeat.

A job works for at most `job_budget_seconds`, then hands over to a fresh job, so one
campaign never pins a worker and several campaigns share the workers fairly. Rows become
"sending" (durably) a group at a time just before the network calls: a crash leaves at most
two groups ambiguous (the one in flight and the one being rendered), never silently resent.
The last job to find nothing left finishes the campaign.

Each provider endpoint has a circuit breaker shared by all workers (`jobs/sending/circuit.py`),
asked before each group. While it is open a job sends nothing more: messages already handed
to the I/O threads come back "deferred" (pending again, no attempt spent), and the job
reschedules itself for when the breaker may let a probe through.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from jobs.context import delivery_settings, ensure_database, queue, shared_redis
from jobs.enqueue import enqueue_send
from jobs.sending import outcomes
from jobs.sending.circuit import Circuit
from jobs.sending.compose import Composer
from jobs.sending.providers import SendResult, deferred, permanent
from jobs.sending.providers.factory import make_provider
from jobs.sending.ratelimit import RateLimiter
from server.campaigns import transitions
from server.config import DeliverySettings
from server.content.templates import RenderError
from server.core.channels import Channel
from server.core.status import Action, Status
from server.store import leases, ledger
from server.store import outcomes as recorded
from server.store.models import Campaign, DeliveryStatus, EmailMessage, SkipReason, utcnow

log = logging.getLogger(__name__)

CANCEL_CHECK_SECONDS = 0.5


InFlight = list[tuple[leases.LeasedRow, Future[SendResult]]]


def _status(campaign_id: int) -> str | None:
    return Campaign.select(Campaign.status).where(Campaign.id == campaign_id).scalar()


class Sender:
    """One send job's state: the campaign's composer, a provider connection, a limiter."""

    def __init__(self, campaign: Campaign, settings: DeliverySettings) -> None:
        self.campaign = campaign
        self.settings = settings
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        message = (
            EmailMessage.get_or_none(EmailMessage.id == campaign.email_message_id)
            if campaign.channel == Channel.EMAIL
            else None
        )
        self.composer = Composer(campaign, campaign.edition, message, settings)
        self.provider = make_provider(campaign.channel, settings)
        rate = settings.email_rate if campaign.channel == Channel.EMAIL else settings.sms_rate
        self.limiter = RateLimiter(shared_redis(), self.provider.name, rate)
        endpoint = f"{self.provider.name}:{self.provider.endpoint}"
        self.circuit = Circuit(shared_redis(), endpoint, settings, self.owner)
        self.paused_for: float | None = None  # set when the circuit stopped this job
        # One SMTP connection is not shared between threads; HTTP providers may allow more.
        self.io = ThreadPoolExecutor(
            max_workers=getattr(self.provider, "concurrency", 1), thread_name_prefix="send"
        )
        self.checked = self.renewed = time.monotonic()
        self.stopped = False
        self.tally = recorded.Tally()

    def cancelled(self, force: bool = False) -> bool:
        """Is the campaign no longer sending? Asks the database at most every
        CANCEL_CHECK_SECONDS unless forced; between asks, the last answer holds."""
        if self.stopped or (not force and time.monotonic() - self.checked < CANCEL_CHECK_SECONDS):
            return self.stopped
        self.checked = time.monotonic()
        self.stopped = _status(self.campaign.id) != Status.SENDING
        return self.stopped

    def run(self, deadline: float) -> None:
        """Group after group until the deadline, the end of the due rows, a cancel or an open
        circuit. Two groups overlap: while the I/O threads send one, this thread records the
        one before and renders the one after, so a connection never waits on the database."""
        in_flight: InFlight | None = None
        try:
            while time.monotonic() < deadline and not self.cancelled():
                gate = self.circuit.check()
                if not gate.allowed:
                    self.paused_for = gate.wait
                    return
                # A probe is one message: the provider's answer decides for everyone.
                group = self.next_group(1 if gate.probing else self.settings.group_size)
                if not group:
                    if gate.probing:
                        self.circuit.release_probe()
                    return
                started = self.start_group(group)
                self.finish_group(in_flight)
                in_flight = started
                if gate.probing:  # its answer must be in before the next check
                    self.finish_group(in_flight)
                    in_flight = None
                self.keep_lease()
        finally:
            self.finish_group(in_flight)

    def next_group(self, limit: int) -> list[tuple[leases.LeasedRow, leases.Recipient]]:
        """Rows taken into "sending", once the rate limit lets `limit` messages go; none
        when the campaign stopped meanwhile (the limit may hold a group for seconds)."""
        waited = self.limiter.acquire(limit, stop=lambda: self.cancelled(force=True))
        if self.cancelled(force=waited > 0):
            if _status(self.campaign.id) == Status.CANCELLED:
                ledger.skip_pending(self.campaign.id, SkipReason.CANCELLED)
            return []
        group = leases.take(self.campaign.id, self.owner, limit, self.settings.lease_seconds)
        self.limiter.give_back(limit - len(group))
        return group

    def start_group(self, group: list[tuple[leases.LeasedRow, leases.Recipient]]) -> InFlight:
        """Render the group and queue its sends."""
        return [(row, self.dispatch(row, user)) for row, user in group]

    def finish_group(self, in_flight: InFlight | None) -> None:
        """Wait for a group's sends and record their outcomes. Here, not on another thread:
        a crash then leaves at most two groups "sending" (ambiguous), this and the next."""
        if not in_flight:
            return
        finished = [(row, future.result()) for row, future in in_flight]
        groups = outcomes.classify(finished, self.settings)
        self.tally.add(recorded.record(self.campaign.id, self.owner, groups))

    def keep_lease(self) -> None:
        """Renew the lease on the rows still held, a third of the way into it (not per group:
        each renewal is a round trip)."""
        now = time.monotonic()
        if now - self.renewed > self.settings.lease_seconds / 3:
            leases.extend_lease(self.campaign.id, self.owner, self.settings.lease_seconds)
            self.renewed = now

    def dispatch(self, row: leases.LeasedRow, user: leases.Recipient) -> Future[SendResult]:
        """Render here and send on the I/O thread: the next message renders while this one
        waits on the network (socket waits release the GIL)."""
        if user is None or user.erased_at is not None:
            return _done(permanent("user was erased before the message went out"))
        try:
            if self.campaign.channel == Channel.EMAIL:
                message: Any = self.composer.email(user, row.address)
                return self.io.submit(self.guarded, self.provider.send_email, message)
            message = self.composer.sms(user, row.address)
            return self.io.submit(self.guarded, self.provider.send_sms, message)
        except RenderError as exc:
            return _done(permanent(f"template failed for this user: {exc}"))

    def guarded(self, send: Callable[[Any], SendResult], message: Any) -> SendResult:
        """On the I/O thread: once the circuit is open, nothing more goes out (the row goes
        back to pending with its attempt unspent); every answer feeds the breaker."""
        if self.circuit.tripped.is_set():
            return deferred(self.circuit.wait())
        return self.circuit.observe(send(message))

    def close(self) -> None:
        self.io.shutdown(wait=True)
        self.provider.close()


def _done(result: SendResult) -> Future[SendResult]:
    future: Future[SendResult] = Future()
    future.set_result(result)
    return future


def send(campaign_id: int) -> str:
    ensure_database()
    settings = delivery_settings()
    campaign = transitions.load(campaign_id) if _status(campaign_id) else None
    if campaign is None or campaign.status != Status.SENDING:
        return "not sending"
    ledger.reap(campaign_id)
    sender = Sender(campaign, settings)
    started = time.monotonic()
    try:
        sender.run(started + settings.job_budget_seconds)
    finally:
        sender.close()
    elapsed = max(time.monotonic() - started, 1e-6)
    log.info(
        "send job done",
        extra={
            "campaign_id": campaign_id,
            "sent": sender.tally.sent,
            "failed": sender.tally.failed,
            "retried": sender.tally.retried,
            "deferred": sender.tally.deferred,
            "ambiguous": sender.tally.ambiguous,
            "paused_for": sender.paused_for,
            "msgs_per_s": round(sender.tally.sent / elapsed),
        },
    )
    return after_send(campaign_id, settings, sender.paused_for)


def after_send(
    campaign_id: int, settings: DeliverySettings, paused_for: float | None = None
) -> str:
    """Finish the campaign, or make sure a job will pick up what is left. Each job leaves at
    most one successor, so the number of send jobs per campaign never grows."""
    if _status(campaign_id) != Status.SENDING:
        return "stopped"
    if ledger.count(campaign_id, ledger.IN_FLIGHT) == 0:
        return finish(campaign_id)
    if paused_for is not None:
        return pause(campaign_id, paused_for)
    if ledger.claimable(campaign_id):
        enqueue_send(queue(), campaign_id, f"send-{campaign_id}-{uuid.uuid4().hex[:8]}")
        return "continued"
    if ledger.count(campaign_id, [DeliveryStatus.CLAIMED, DeliveryStatus.SENDING]):
        return "others still sending"  # their jobs finish up; the sweep covers their death
    retry_at = ledger.next_retry_at(campaign_id) or utcnow()
    enqueue_send(
        queue(), campaign_id, f"send-{campaign_id}-retry-{int(retry_at.timestamp())}", at=retry_at
    )
    return "waiting for retries"


def pause(campaign_id: int, seconds: float) -> str:
    """The provider's circuit is open: come back when it may let a probe through. The
    heartbeat is refreshed, or the sweep would take the wait for a dead worker."""
    Campaign.update(heartbeat_at=utcnow()).where(Campaign.id == campaign_id).execute()
    at = utcnow() + dt.timedelta(seconds=max(seconds, 0.5))
    job_id = f"send-{campaign_id}-circuit-{uuid.uuid4().hex[:8]}"
    enqueue_send(queue(), campaign_id, job_id, at=at)
    return "circuit open"


def finish(campaign_id: int) -> str:
    """sent, with counters recomputed from the ledger; failed when nothing got through."""
    totals = ledger.totals(campaign_id)
    sent, failed = totals.get(DeliveryStatus.SENT, 0), totals.get(DeliveryStatus.FAILED, 0)
    figures = {"sent_count": sent, "failed_count": failed, "completed_at": utcnow()}
    if sent == 0 and failed > 0:
        error = (
            f"all {failed} messages failed; most common error: "
            f"{ledger.most_common_error(campaign_id)}"
        )
        transitions.try_apply(campaign_id, Action.FAIL, error_message=error[:2000], **figures)
        return "failed"
    transitions.try_apply(campaign_id, Action.FINISH, **figures)
    return "sent"
