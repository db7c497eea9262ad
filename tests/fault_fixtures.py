"""Faulty providers for the provider-fault tests, built on the recording fakes of
`tests.delivery_fixtures`: an SMTP server answering bursts of 421/451, hanging up before or
after the message data, or stalling past the client's timeout; a Twilio-style API answering
429 with Retry-After, 5xx for a while, or stalling. Plus helpers to read the worker's JSON log
and check a finished campaign's ledger."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from jobs.sending.circuit import key_for
from server.store.models import Delivery
from tests.delivery_fixtures import (
    FakeTwilio,
    RunningWorker,
    SmtpSink,
    assert_counters_match_ledger,
)

FINAL_ROWS = {"sent", "failed", "skipped", "ambiguous"}
_TEXT = {421: "4.3.2 Service shutting down", 451: "4.3.0 Try again later"}


class FaultySmtp(SmtpSink):
    """Per-address rules (`refuse`) come first; then, for everyone: `burst` (the next RCPTs
    get a code, in order), `outage` (every RCPT answers 421 until then). Per address:
    `hang_up` at RCPT (before any data), `after_data`: "delivered" (stored, then the
    connection is closed before the reply), "lost" (closed, not stored) or "stall" (stored,
    the reply comes after `stall_seconds`)."""

    def __init__(self) -> None:
        super().__init__()
        self.bursts: list[list[Any]] = []  # [reply, remaining]
        self.outage_until = 0.0
        self.hang_ups: Counter[str] = Counter()
        self.data_faults: dict[str, str] = {}
        self.stall_seconds = 3.0
        self.faults_answered = 0

    def burst(self, code: int, count: int) -> None:
        self.bursts.append([f"{code} {_TEXT[code]}", count])

    def outage(self, seconds: float) -> None:
        self.outage_until = time.time() + seconds

    def _fault_reply(self, key: str) -> str | None:
        if self.hang_ups[key] > 0:
            self.hang_ups[key] -= 1
            return "hang up"
        if time.time() < self.outage_until:
            return f"421 {_TEXT[421]}"
        for burst in self.bursts:
            if burst[1] > 0:
                burst[1] -= 1
                return str(burst[0])
        return None

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        key = address.lower()
        with self.lock:
            reply = None if key in self.rules else self._fault_reply(key)
            if reply is not None:
                self.attempts[key] += 1
                self.faults_answered += 1
        if reply is None:
            return await super().handle_RCPT(server, session, envelope, address, rcpt_options)
        if reply == "hang up":
            server.transport.close()
        return reply

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        fault = self.data_faults.get(envelope.rcpt_tos[0].lower())
        if fault in (None, "delivered", "stall"):
            await super().handle_DATA(server, session, envelope)
        if fault == "stall":
            await asyncio.sleep(self.stall_seconds)
        elif fault is not None:
            server.transport.close()
        return "250 Message accepted for delivery"


@dataclass
class FaultyTwilio(FakeTwilio):
    """On top of `fail` (now with an optional Retry-After): `burst` (the next requests, any
    number, get a status), `outage` (every request answers `status` until then), `stall`
    (a number's requests take `seconds`; with `deliver` the message is accepted first)."""

    burst_left: int = 0
    burst_status: int = 0
    outage_until: float = 0.0
    outage_status: int = 500
    retry_after: dict[str, str] = field(default_factory=dict)
    stalls: dict[str, tuple[float, bool]] = field(default_factory=dict)
    times: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    faults_answered: int = 0

    def burst(self, status: int, count: int) -> None:
        self.burst_status, self.burst_left = status, count

    def outage(self, seconds: float, status: int = 500) -> None:
        self.outage_status, self.outage_until = status, time.time() + seconds

    def stall(self, number: str, seconds: float, deliver: bool) -> None:
        self.stalls[number] = (seconds, deliver)

    def _fault(self) -> int:
        with self.lock:
            if time.time() < self.outage_until:
                self.faults_answered += 1
                return self.outage_status
            if self.burst_left > 0:
                self.burst_left -= 1
                self.faults_answered += 1
                return self.burst_status
        return 0

    def respond(
        self, path: str, auth: str, form: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        to = form.get("To", "")
        with self.lock:
            self.times[to].append(time.time())
        if to in self.stalls:
            seconds, deliver = self.stalls[to]
            answer = self.answer(path, auth, form) if deliver else (503, {})
            time.sleep(seconds)  # the client has given up by now
            return (*answer, {})
        status = self._fault()
        if status:
            return status, {"code": 20000 + status, "message": f"outage: {status}"}, {}
        status, payload = self.answer(path, auth, form)
        wait = self.retry_after.get(to)
        return status, payload, ({"Retry-After": wait} if wait and status == 429 else {})


def reset_circuit(redis_url: str, name: str) -> None:
    """Forget a breaker's state (each test starts closed)."""
    connection = Redis.from_url(redis_url)
    try:
        connection.delete(key_for(name))
    finally:
        connection.close()


def log_events(
    worker: RunningWorker, message: str, circuit: str, since: int = 0
) -> list[dict[str, Any]]:
    """The worker's JSON log lines with this message about this circuit, from byte `since`."""
    text = worker.log.read_bytes()[since:].decode(errors="replace")
    events = []
    for line in text.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("msg") == message and entry.get("circuit") == circuit:
                events.append(entry)
    return events


def log_offset(worker: RunningWorker) -> int:
    return worker.log.stat().st_size


def assert_final_ledger(campaigns: Any, campaign_id: int, max_attempts: int) -> list[Delivery]:
    """Every row final, counters equal to the ledger, attempts within the bound."""
    rows = assert_counters_match_ledger(campaigns, campaign_id)
    assert {r.status for r in rows} <= FINAL_ROWS, Counter(r.status for r in rows)
    assert all(0 <= r.attempts <= max_attempts for r in rows), [r.attempts for r in rows]
    return rows
