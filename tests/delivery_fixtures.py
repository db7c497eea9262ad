"""Real parts for the delivery tests: an SMTP server that records what it receives and refuses
chosen recipients (aiosmtpd), a local server speaking the Twilio Messages API, a `python -m jobs`
worker pointed at them, and small helpers to import users, wait and read the ledger."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller
from redis import Redis
from rq import Queue, Worker

from campaigns.v1 import audience_service_pb2 as apb
from campaigns.v1 import campaign_pb2, user_pb2
from campaigns.v1 import campaign_service_pb2 as cpb
from server.store.db import release_connection
from server.store.models import Campaign, Delivery

FINAL = {
    campaign_pb2.CAMPAIGN_STATUS_SENT,
    campaign_pb2.CAMPAIGN_STATUS_FAILED,
    campaign_pb2.CAMPAIGN_STATUS_CANCELLED,
}


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def stop_process(proc: subprocess.Popen[bytes], grace: float = 15) -> None:
    """SIGTERM (a clean drain), then SIGKILL if it is still there after `grace` seconds."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- SMTP ------------------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    at: float  # time.time() when DATA was accepted


@dataclass
class Rule:
    reply: str
    times: int | None  # refuse the first `times` attempts; None: always


class SmtpSink:
    """aiosmtpd handler: stores every accepted message; `refuse` makes RCPT answer a code.
    It offers PIPELINING as Postfix does (aiosmtpd reads pipelined commands one by one
    anyway); `pipelining = False` makes the provider drive each command separately."""

    pipelining = True

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.rules: dict[str, Rule] = {}
        self.attempts: Counter[str] = Counter()
        self.delays: dict[str, float] = {}
        self.rcpt_started: dict[str, float] = {}  # when RCPT for an address came (last time)
        self.port = 0

    def refuse(self, address: str, code: int, times: int | None = None) -> None:
        text = "4.3.0 Try again later" if code < 500 else "5.1.1 Mailbox unavailable"
        self.rules[address.lower()] = Rule(f"{code} {text}", times)

    def slow_down(self, address: str, seconds: float) -> None:
        """Take `seconds` to answer RCPT for `address` (other sessions go on meanwhile)."""
        self.delays[address.lower()] = seconds

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")  # before the last line
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        key = address.lower()
        self.rcpt_started[key] = time.time()
        if key in self.delays:
            await asyncio.sleep(self.delays[key])
        with self.lock:
            self.attempts[key] += 1
            attempt = self.attempts[key]
        rule = self.rules.get(key)
        if rule is not None and (rule.times is None or attempt <= rule.times):
            return rule.reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), message, time.time())
            )  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    def of_campaign(self, campaign_id: int) -> list[Received]:
        prefix = f"<campaign-{campaign_id}.user-"
        with self.lock:
            return [r for r in self.received if str(r.message["Message-ID"]).startswith(prefix)]

    def per_address(self, campaign_id: int) -> Counter[str]:
        return Counter(rcpt.lower() for r in self.of_campaign(campaign_id) for rcpt in r.rcpt_tos)

    @classmethod
    @contextmanager
    def running(cls) -> Iterator[SmtpSink]:
        sink = cls()
        sink.port = free_port()
        controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
        controller.start()
        try:
            yield sink
        finally:
            controller.stop()

    def env(self) -> dict[str, str]:
        return {"EMAIL_PROVIDER": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(self.port)}


# --- Twilio-compatible Messages API ----------------------------------------------------------


@dataclass
class Sms:
    to: str
    from_: str
    body: str
    sid: str
    at: float


class _QuietHTTPServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up
            super().handle_error(request, client_address)


@dataclass
class FakeTwilio:
    """POST /2010-04-01/Accounts/{sid}/Messages.json with basic auth; `fail` picks numbers."""

    account_sid: str = "AC" + "0" * 30 + "01"
    auth_token: str = "test-token"
    sender: str = "+4570000000"
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    received: list[Sms] = field(default_factory=list)
    rules: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    attempts: Counter[str] = field(default_factory=Counter)
    unauthorised: int = 0

    def fail(self, number: str, status: int, times: int | None = None) -> None:
        self.rules[number] = (status, times)

    def answer(self, path: str, auth: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        expected = (
            "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        )
        if auth != expected:
            with self.lock:
                self.unauthorised += 1
            return 401, {"code": 20003, "message": "Authentication Error - invalid credentials"}
        if path != f"/2010-04-01/Accounts/{self.account_sid}/Messages.json":
            return 404, {"code": 20404, "message": "The requested resource was not found"}
        to = form.get("To", "")
        with self.lock:
            self.attempts[to] += 1
            attempt = self.attempts[to]
        status, times = self.rules.get(to, (0, None))
        if status and (times is None or attempt <= times):
            return status, {"code": 20000 + status, "message": f"refused with {status}"}
        sid = "SM" + uuid.uuid4().hex
        with self.lock:
            self.received.append(
                Sms(to, form.get("From", ""), form.get("Body", ""), sid, time.time())
            )
        return 201, {"sid": sid, "status": "queued", "to": to, "body": form.get("Body", "")}

    def respond(
        self, path: str, auth: str, form: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """The answer with extra headers: a hook for the fault fixtures (tests/fault_fixtures)."""
        return (*self.answer(path, auth, form), {})

    def to(self, number: str) -> list[Sms]:
        with self.lock:
            return [m for m in self.received if m.to == number]

    @classmethod
    @contextmanager
    def running(cls) -> Iterator[FakeTwilio]:
        fake = cls()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as httpx's pool expects

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = parse_qs(self.rfile.read(length).decode())
                form = {key: values[0] for key, values in raw.items()}
                status, payload, headers = fake.respond(
                    self.path, self.headers.get("Authorization", ""), form
                )
                body = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in {
                    **headers,
                    "Content-Type": "application/json",
                    "Content-Length": str(len(body)),
                }.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = _QuietHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        fake.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield fake
        finally:
            server.shutdown()
            server.server_close()

    def env(self) -> dict[str, str]:
        return {
            "SMS_PROVIDER": "twilio",
            "TWILIO_BASE_URL": f"http://127.0.0.1:{self.port}",
            "TWILIO_ACCOUNT_SID": self.account_sid,
            "TWILIO_AUTH_TOKEN": self.auth_token,
            "TWILIO_FROM": self.sender,
        }


# --- the worker ------------------------------------------------------------------------------


class RunningWorker:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log

    def output(self) -> str:
        return "worker log (tail):\n" + self.log.read_text(errors="replace")[-8000:]


def forget_dead_scheduler(redis_url: str, queue_name: str) -> None:
    """A scheduler killed by an earlier test (the fault tests kill them) holds the queue's
    lock for a minute more: a new worker's scheduler could not take it, and scheduled jobs
    (kickoffs, retries) would wait for the lock to expire."""
    with Redis.from_url(redis_url, decode_responses=True) as connection:
        name = connection.get(f"rq:scheduler-lock:{queue_name}")
        pid = int(connection.hget(f"rq:scheduler:{name}", "pid") or 0) if name else 0
        if name and not (pid and Path(f"/proc/{pid}").exists()):
            connection.delete(f"rq:scheduler-lock:{queue_name}")


@contextmanager
def start_worker(
    *,
    database_url: str,
    redis_url: str,
    queue_name: str,
    repo_root: Path,
    log_dir: Path,
    env: dict[str, str],
) -> Iterator[RunningWorker]:
    """`python -m jobs` on the test database and Redis; ready once RQ lists it and its
    scheduler holds the queue's lock (a scheduled job would otherwise wait for the sweep)."""
    log = log_dir / "worker.log"
    forget_dead_scheduler(redis_url, queue_name)
    full_env = {
        # As production runs: stderr buffered (PYTHONUNBUFFERED changes what a fork inherits).
        **{k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CAMPAIGNS_QUEUE": queue_name,
        "SWEEP_INTERVAL": "1",
        "RETRY_BASE_SECONDS": "0.2",
        "OUTBOX_DIR": str(log_dir / "outbox"),
        **env,
    }
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobs"], cwd=repo_root, env=full_env, stdout=sink, stderr=sink
        )
    running = RunningWorker(proc, log)
    connection = Redis.from_url(redis_url)
    queue = Queue(queue_name, connection=connection)
    try:

        def ready() -> bool:
            mine = any(w.pid == proc.pid for w in Worker.all(queue=queue))
            return mine and bool(connection.exists(f"rq:scheduler-lock:{queue_name}"))

        assert wait_until(lambda: proc.poll() is not None or ready(), 20, 0.1), running.output()
        assert proc.poll() is None, running.output()
        yield running
    finally:
        stop_process(proc)
        connection.close()


# --- audience and campaigns -------------------------------------------------------------------


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
