"""One send job's flow: keep every connection busy, mark each row "sending" just before its
message is handed to a connection, and record outcomes as they come back.

The job holds up to `capacity` messages in flight (the provider's connections or requests in
flight). Whenever enough connections are free it takes that many due rows into "sending"
(durably: `server.store.leases.take`), renders them and hands each to the I/O threads at
once, so a row is "sending" only while its message is about to go or going: a crash leaves
ambiguous no more rows than were in flight. Outcomes are recorded in batches as they arrive.

When the database is unreachable the job stops taking rows, lets the messages in flight
finish, keeps their outcomes and records them once the database answers again (within the
lease): a cut never turns a known "sent" into "ambiguous".

A cancel is seen within CANCEL_CHECK_SECONDS: nothing new is taken, messages handed over but
not yet begun come back unsent, and the ones on the wire finish and are recorded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from redis.exceptions import RedisError

from jobs.context import shared_redis
from jobs.sending import outcomes
from jobs.sending.circuit import Circuit
from jobs.sending.compose import Composer
from jobs.sending.providers import SendResult, ambiguous, deferred, permanent
from jobs.sending.providers.factory import make_provider
from jobs.sending.ratelimit import RateLimiter
from server.config import DeliverySettings
from server.content.templates import RenderError
from server.core.channels import Channel
from server.core.status import Status
from server.store import leases
from server.store import outcomes as recorded
from server.store.db import OUTAGE_ERRORS, release_connection
from server.store.models import Campaign, EmailMessage, utcnow

log = logging.getLogger(__name__)

CANCEL_CHECK_SECONDS = 0.5
RECORD_EVERY_SECONDS = 0.2  # outcomes wait at most this long for their batch to fill
OUTAGE_PAUSE_SECONDS = (0.2, 2.0)  # first and longest pause between tries while the DB is down

Done = tuple[leases.LeasedRow, SendResult]


def campaign_status(campaign_id: int) -> str | None:
    return Campaign.select(Campaign.status).where(Campaign.id == campaign_id).scalar()


class Sender:
    """One send job's state: the campaign's composer, the provider's connections, a limiter,
    the circuit breaker, and the messages in flight."""

    def __init__(self, campaign: Campaign, settings: DeliverySettings) -> None:
        self.campaign = campaign
        self.settings = settings
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        email = campaign.channel == Channel.EMAIL
        message = (
            EmailMessage.get_or_none(EmailMessage.id == campaign.email_message_id)
            if email
            else None
        )
        self.composer = Composer(campaign, campaign.edition, message, settings)
        self.provider = make_provider(campaign.channel, settings)
        rate = settings.email_rate if email else settings.sms_rate
        self.limiter = RateLimiter(shared_redis(), self.provider.name, rate)
        endpoint = f"{self.provider.name}:{self.provider.endpoint}"
        self.circuit = Circuit(shared_redis(), endpoint, settings, self.owner)
        self.paused_for: float | None = None  # set when the circuit stopped this job
        self.io = ThreadPoolExecutor(max_workers=self.capacity, thread_name_prefix="send")
        self.done: queue.SimpleQueue[Done] = queue.SimpleQueue()
        self.in_flight = 0
        self.finished: list[Done] = []
        self.tally = recorded.Tally()
        now = time.monotonic()
        self.checked = self.renewed = self.flushed = now
        self.exhausted = False  # a take came up short: finish what is in flight, then stop
        self.stopped = False

    @property
    def capacity(self) -> int:
        """Messages in flight at most: what the provider can carry now (a relay may lower it)."""
        return max(1, int(getattr(self.provider, "concurrency", 1)))

    def cancelled(self, force: bool = False) -> bool:
        """Is the campaign no longer sending? Asks the database at most every
        CANCEL_CHECK_SECONDS unless forced; between asks, the last answer holds."""
        if self.stopped or (not force and time.monotonic() - self.checked < CANCEL_CHECK_SECONDS):
            return self.stopped
        self.checked = time.monotonic()
        self.stopped = campaign_status(self.campaign.id) != Status.SENDING
        return self.stopped

    def run(self, deadline: float) -> None:
        """Send until the deadline, the end of the due rows, a cancel or an open circuit; then
        wait for what is in flight and record it all."""
        try:
            self._flow(deadline)
        finally:
            self.stopped = self.stopped or self.paused_for is not None
            self._drain()

    def _flow(self, deadline: float) -> None:
        outage = 0
        while time.monotonic() < deadline:
            try:
                if not self._step():
                    return
                outage = 0
            except OUTAGE_ERRORS as exc:
                outage += 1
                self._ride_out(exc, outage)

    def _step(self) -> bool:
        """One turn of the loop; False when the job is done."""
        if self.cancelled():
            return False
        if self.circuit.tripped.is_set():  # this job saw it open: stay away until it may probe
            self.paused_for = self.circuit.wait()
            return False
        free = self.capacity - self.in_flight
        if not self.exhausted and free > 0 and self._worth_taking(free):
            # The shared breaker is asked before each take (one round trip), not each turn.
            gate = self.circuit.check()
            if not gate.allowed:
                self.paused_for = gate.wait
                return False
            if gate.probing:
                return self._probe()
            wanted = min(free, self.settings.group_size)
            # Fewer rows than asked: none are due beyond these (after_send decides what
            # comes next: a successor, a wait for retries, or the end).
            self.exhausted = self._hand_off(wanted) < wanted
        if self.exhausted and self.in_flight == 0:
            return False
        self._collect(block=self.in_flight > 0)
        self._flush()
        self._keep_lease()
        return True

    def _worth_taking(self, free: int) -> bool:
        """Take rows once a fair share of the connections is free (or all are idle): a take
        is a durable commit, too dear to pay per message."""
        return self.in_flight == 0 or free >= max(
            1, min(self.capacity, self.settings.group_size) // 4
        )

    def _probe(self) -> bool:
        """The circuit lets one message through: its answer decides for everyone."""
        self._settle()
        if self._hand_off(1) == 0:
            self.circuit.release_probe()
            return False
        self._settle()
        return True

    def _hand_off(self, limit: int) -> int:
        """Take up to `limit` due rows (once the rate limit lets them go), render each and
        hand it to a connection; how many were taken."""
        waited = self.limiter.acquire(limit, stop=lambda: self.cancelled(force=True))
        if self.cancelled(force=waited > 0):
            return 0
        group = leases.take(self.campaign.id, self.owner, limit, self.settings.lease_seconds)
        for index, (row, user) in enumerate(group):
            try:
                self._start(row, user)
            except BaseException:
                # Never handed over (the database went away mid-render, say): back to pending
                # unspent, not left "sending" for the reaper to call ambiguous.
                for rest, _ in group[index:]:
                    self._answer(rest, deferred(0.0))
                raise
        with contextlib.suppress(RedisError):  # unused permits only: the window refills
            self.limiter.give_back(limit - len(group))
        return len(group)

    def _start(self, row: leases.LeasedRow, user: leases.Recipient) -> None:
        """Render here and send on an I/O thread (socket waits release the GIL)."""
        if user is None or user.erased_at is not None:
            self._answer(row, permanent("user was erased before the message went out"))
            return
        try:
            if self.campaign.channel == Channel.EMAIL:
                message: Any = self.composer.email(user, row.address)
                send: Callable[[Any], SendResult] = self.provider.send_email
            else:
                message = self.composer.sms(user, row.address)
                send = self.provider.send_sms
        except RenderError as exc:
            self._answer(row, permanent(f"template failed for this user: {exc}"))
            return
        except OUTAGE_ERRORS:
            raise
        except Exception as exc:  # a bug: this row fails with the reason, the job goes on
            log.exception("could not compose a message", extra={"campaign_id": self.campaign.id})
            self._answer(row, permanent(f"could not compose the message: {exc!r}"[:500]))
            return
        future = self.io.submit(self._guarded, send, message)
        self.in_flight += 1  # counted once it is on its way: every one comes back below
        future.add_done_callback(lambda f: self.done.put((row, _result(f))))

    def _answer(self, row: leases.LeasedRow, result: SendResult) -> None:
        """An outcome known without the network."""
        self.in_flight += 1
        self.done.put((row, result))

    def _guarded(self, send: Callable[[Any], SendResult], message: Any) -> SendResult:
        """On the I/O thread: once the job has stopped (a cancel, an open circuit) nothing
        more goes out: the row goes back to pending with its attempt unspent. Every answer
        feeds the breaker."""
        if self.circuit.tripped.is_set():
            return deferred(self.circuit.wait())
        if self.stopped:
            return deferred(0.0)
        result = send(message)
        try:
            return self.circuit.observe(result)
        except Exception:  # the breaker's Redis is away: the answer itself still stands
            log.warning("circuit breaker not updated", exc_info=True)
            return result

    def _collect(self, block: bool) -> None:
        """Outcomes that came back; waits a little for the first when `block`."""
        try:
            first = self.done.get(timeout=RECORD_EVERY_SECONDS) if block else self.done.get_nowait()
        except queue.Empty:
            return
        self._arrived(first)
        while True:
            try:
                self._arrived(self.done.get_nowait())
            except queue.Empty:
                return

    def _arrived(self, done: Done) -> None:
        self.in_flight -= 1
        self.finished.append(done)

    def _flush(self, force: bool = False) -> None:
        """Record the outcomes gathered, in batches (or all of them when `force`)."""
        due = time.monotonic() - self.flushed >= RECORD_EVERY_SECONDS
        if not self.finished or not (
            force or due or len(self.finished) >= self.settings.group_size
        ):
            return
        groups = outcomes.classify(self.finished, self.settings)
        self.tally.add(recorded.record(self.campaign.id, self.owner, groups))
        self.finished = []
        self.flushed = time.monotonic()

    def _settle(self) -> None:
        """Wait for every message in flight and record all outcomes."""
        while self.in_flight:
            self._collect(block=True)
            self._keep_lease()  # slow sends (timeouts) must not let the lease run out
        self._flush(force=True)

    def _keep_lease(self) -> None:
        """Renew the lease on the rows still held, a third of the way into it (not per take:
        each renewal is a round trip)."""
        now = time.monotonic()
        every = min(self.settings.lease_seconds, self.settings.stale_seconds) / 3
        if now - self.renewed > every:
            leases.extend_lease(self.campaign.id, self.owner, self.settings.lease_seconds)
            # The heartbeat too: slow sends record nothing for a while, and the sweep would
            # take the silence for a dead job.
            Campaign.update(heartbeat_at=utcnow()).where(Campaign.id == self.campaign.id).execute()
            self.renewed = now

    def _ride_out(self, exc: Exception, tries: int) -> None:
        """The database is unreachable: take nothing, let what is in flight come back, and
        pause before the next try (the outcomes are kept for when it answers)."""
        if tries == 1:
            log.warning(
                "database unreachable while sending; holding outcomes until it answers",
                extra={
                    "campaign_id": self.campaign.id,
                    "error": str(exc)[:200],
                    "in_flight": self.in_flight,
                    "unrecorded": len(self.finished),
                },
            )
        release_connection()
        first, longest = OUTAGE_PAUSE_SECONDS
        pause = min(longest, first * 2 ** (tries - 1))
        self._collect(block=False)
        time.sleep(pause)

    def _drain(self) -> None:
        """At the end: every message in flight comes back and is recorded. While the database
        is down, keep trying for as long as the rows' lease lasts; after that the reaper will
        call them ambiguous (they may have gone out), which is still true."""
        give_up = time.monotonic() + self.settings.lease_seconds
        tries = 0
        while True:
            try:
                self._settle()
                return
            except OUTAGE_ERRORS as exc:
                tries += 1
                if time.monotonic() > give_up:
                    log.error(
                        "database still unreachable: outcomes left to the lease reaper",
                        extra={"campaign_id": self.campaign.id, "unrecorded": len(self.finished)},
                    )
                    return
                self._ride_out(exc, tries)

    def close(self) -> None:
        self.io.shutdown(wait=True)
        self.provider.close()


def _result(future: Future[SendResult]) -> SendResult:
    """A send that raised is a bug, but its message may have left: never resend it."""
    try:
        return future.result()
    except BaseException as exc:
        log.exception("a send raised instead of answering")
        return ambiguous(f"internal error while sending: {type(exc).__name__}: {exc}")
