"""Scale-out, end to end: two `python -m server` processes and three `python -m jobs` workers
on one database and one Redis. A campaign of a few hundred users is created through server A,
started through server B and watched on server A; every eligible user gets exactly one email
(counted per address in an aiosmtpd sink) and the campaign's counters equal the ledger's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from campaigns.v1 import (
    audience_service_pb2_grpc,
    campaign_pb2,
    campaign_service_pb2_grpc,
    email_message_service_pb2_grpc,
)
from campaigns.v1 import campaign_service_pb2 as cpb
from tests.fixtures.smtp import SmtpSink
from tests.fixtures.workers import RunningWorker, Workers
from tests.support.delivery import assert_counters_match_ledger, get, import_users, send_now, user
from tests.support.helpers import make_campaign, make_edition, make_email_message, make_segment
from tests.support.processes import free_port, wait_until

EMAIL = campaign_pb2.CHANNEL_EMAIL
SENT = campaign_pb2.CAMPAIGN_STATUS_SENT
ELIGIBLE = 300
WORKERS = 3
pytestmark = pytest.mark.slow


@dataclass
class ServerProcess:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    channel: grpc.Channel
    address: str

    def output(self) -> str:
        return f"server {self.name} log (tail):\n" + self.log.read_text(errors="replace")[-4000:]

    @property
    def campaigns(self) -> campaign_service_pb2_grpc.CampaignServiceStub:
        return campaign_service_pb2_grpc.CampaignServiceStub(self.channel)

    @property
    def audience(self) -> audience_service_pb2_grpc.AudienceServiceStub:
        return audience_service_pb2_grpc.AudienceServiceStub(self.channel)

    @property
    def messages(self) -> email_message_service_pb2_grpc.EmailMessageServiceStub:
        return email_message_service_pb2_grpc.EmailMessageServiceStub(self.channel)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _serving(server: ServerProcess) -> bool:
    try:
        reply = health_pb2_grpc.HealthStub(server.channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=1
        )
    except grpc.RpcError:
        return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def servers(
    app, database_url, redis_url, settings, repo_root, tmp_path_factory
) -> Iterator[list[ServerProcess]]:
    """Servers A and B as separate processes (`app` first: the schema is migrated and this
    process's database handle, used to read the ledger, is open)."""
    log_dir = tmp_path_factory.mktemp("servers")
    started: list[ServerProcess] = []
    try:
        for name in ("a", "b"):
            port = free_port()
            env = {
                **os.environ,
                "GRPC_HOST": "127.0.0.1",
                "DEV_MODE": "1",
                "GRPC_PORT": str(port),
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "CAMPAIGNS_QUEUE": settings.queue_name,
                "WATCH_INTERVAL": "0.1",
            }
            log = log_dir / f"server-{name}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "server"], cwd=repo_root, env=env, stdout=out, stderr=out
                )
            address = f"127.0.0.1:{port}"
            started.append(ServerProcess(name, proc, log, grpc.insecure_channel(address), address))
        for server in started:
            ok = wait_until(lambda s=server: s.proc.poll() is not None or _serving(s), 20, 0.1)
            assert ok and server.proc.poll() is None, server.output()
        yield started
    finally:
        for server in started:
            server.channel.close()
            _stop(server.proc)


@pytest.fixture(scope="module")
def worker_env(smtp: SmtpSink) -> dict[str, str]:
    # Small claims and groups, so the three workers really compete for the same rows.
    return {**smtp.env(), "SEND_GROUP_SIZE": "10"}


@pytest.fixture
def three_workers(servers: list[ServerProcess], workers: Workers) -> list[RunningWorker]:
    return [workers.start() for _ in range(WORKERS)]


def _sent_by(worker: RunningWorker, campaign_id: int) -> int:
    """What this worker's "send job done" log lines say it sent for the campaign."""
    total = 0
    for line in worker.log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("msg") == "send job done" and entry.get("campaign_id") == campaign_id:
            total += int(entry.get("sent", 0))
    return total


def _logs(servers: list[ServerProcess], workers: list[RunningWorker]) -> str:
    return "\n".join([*(s.output() for s in servers), *(w.output() for w in workers)])


def test_one_campaign_through_two_servers_and_three_workers_is_sent_exactly_once(
    servers, three_workers, smtp, org_id
):
    a, b = servers
    tag = uuid.uuid4().hex[:8]

    # Everything is made through server A.
    edition = make_edition(a.audience, org_id)
    segment = make_segment(
        a.audience, edition, "user.attributes.tickets > 0", name="Ticket holders"
    )
    message = make_email_message(
        a.messages,
        edition,
        subject="Hi {{ user.first_name }}",
        text_body="Hello {{ user.first_name }}!\n",
    )
    campaign = make_campaign(
        a.campaigns,
        edition,
        channel=EMAIL,
        sms_body="",
        email_message_id=message.id,
        segment_id=segment.id,
    )

    def address(i: int) -> str:
        return f"u{i:04d}.{tag}@mail.example.com"

    people = [
        user(
            f"u{i:04d}",
            email=address(i),
            first_name=f"User{i}",
            email_consent=True,
            attributes={"tickets": 1 + i % 3},
        )
        for i in range(ELIGIBLE)
    ]
    people += [
        user(f"noconsent{i}", email=f"nc{i}.{tag}@mail.example.com", attributes={"tickets": 1})
        for i in range(10)
    ]
    people += [
        user(
            f"nomatch{i}",
            email=f"nm{i}.{tag}@mail.example.com",
            email_consent=True,
            attributes={"tickets": 0},
        )
        for i in range(10)
    ]
    # Half the users through each server: both write to the one database.
    half = len(people) // 2
    import_users(a.audience, org_id, edition.id, people[:half])
    ids = import_users(b.audience, org_id, edition.id, people[half:])
    assert len(ids) == len(people)
    assert get(b.campaigns, campaign.id).id == campaign.id  # B sees what A created

    # Started through server B ...
    started = send_now(b.campaigns, campaign.id)
    assert started.status != campaign_pb2.CAMPAIGN_STATUS_DRAFT, started

    # ... and watched on server A until the stream says it is over.
    updates = []
    stream = a.campaigns.WatchCampaignStats(
        cpb.WatchCampaignStatsRequest(id=campaign.id), timeout=90
    )
    try:
        for update in stream:
            updates.append(update)
            if update.final:
                break
    except grpc.RpcError as exc:
        pytest.fail(
            f"watch ended with {exc.code()}: {exc.details()}\n{_logs(servers, three_workers)}"
        )
    assert updates and updates[-1].final, (updates[-1:], _logs(servers, three_workers))
    sents = [u.stats.sent for u in updates]
    assert sents == sorted(sents), sents  # counters never go backwards
    assert updates[-1].stats.sent == ELIGIBLE, (updates[-1], _logs(servers, three_workers))
    assert updates[-1].stats.failed == 0, updates[-1]

    # Both servers agree on the final campaign.
    done_a, done_b = get(a.campaigns, campaign.id), get(b.campaigns, campaign.id)
    assert done_a == done_b
    assert done_a.status == SENT, (done_a, _logs(servers, three_workers))
    assert (done_a.user_count, done_a.total_recipients, done_a.sent_count, done_a.failed_count) == (
        ELIGIBLE + 10,
        ELIGIBLE,
        ELIGIBLE,
        0,
    ), done_a

    # Exactly one message per eligible address, none to anyone else.
    # The SMTP sink may lag the final status by nothing: a row is `sent` only after DATA.
    per_address = smtp.per_address(campaign.id)
    assert per_address == {address(i): 1 for i in range(ELIGIBLE)}, (
        {k: v for k, v in per_address.items() if v != 1},
        set(address(i) for i in range(ELIGIBLE)) - set(per_address),
    )
    message_ids = Counter(str(r.message["Message-ID"]) for r in smtp.of_campaign(campaign.id))
    assert len(message_ids) == ELIGIBLE and set(message_ids.values()) == {1}

    rows = assert_counters_match_ledger(a.campaigns, campaign.id)
    assert_counters_match_ledger(b.campaigns, campaign.id)
    by_status = Counter((r.status, r.skip_reason) for r in rows)
    assert by_status == {("sent", ""): ELIGIBLE, ("skipped", "no_consent"): 10}, by_status
    assert all(r.attempts == 1 for r in rows if r.status == "sent"), [
        (r.user_id, r.attempts) for r in rows if r.attempts != 1
    ]

    # Every process is still alive: nothing crashed along the way.
    for server in servers:
        assert server.proc.poll() is None, server.output()
    for worker in three_workers:
        assert worker.proc.poll() is None, worker.output()
    # The workers' own reports add up to the same 300, and the work really was shared.
    per_worker = [_sent_by(w, campaign.id) for w in three_workers]
    assert sum(per_worker) == ELIGIBLE, (per_worker, _logs(servers, three_workers))
    assert sum(n > 0 for n in per_worker) >= 2, per_worker
