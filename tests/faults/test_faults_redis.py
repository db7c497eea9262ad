"""Redis lost: killed mid-campaign and restarted empty, shut down before a scheduled campaign
is due, or cut off from the worker by a proxy that resets its connections.

Each test runs against a private redis-server (its own port, no persistence), a `python -m
server` and a `python -m jobs` worker pointed at it, and an aiosmtpd sink. Whatever Redis held
(queued send jobs, the scheduled kickoff, RQ's registries) is lost; the database is the source
of truth and the worker's sweep re-enqueues what is due or stalled. The worker must ride out
the outage in the same process, and every ledger invariant hold (tests/support/invariants.py).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from campaigns.v1 import (
    audience_service_pb2_grpc,
    campaign_pb2,
    campaign_service_pb2_grpc,
    email_message_service_pb2_grpc,
)
from campaigns.v1 import campaign_service_pb2 as cpb
from scripts import localredis
from tests.fixtures.smtp import SmtpSink
from tests.fixtures.workers import RunningWorker
from tests.support.delivery import get, send_now, wait_final
from tests.support.helpers import ts
from tests.support.invariants import assert_ledger_invariants, email_campaign
from tests.support.processes import free_port, wait_until
from tests.support.tcpproxy import TcpProxy

SENT = campaign_pb2.CAMPAIGN_STATUS_SENT
SCHEDULED = campaign_pb2.CAMPAIGN_STATUS_SCHEDULED
RECIPIENTS = 2000
OUTAGE = 3.0  # seconds Redis stays down: longer than a lease, a stale heartbeat, a sweep
FAST = {
    "LEASE_SECONDS": "3",
    "STALE_SECONDS": "2",
    "SWEEP_INTERVAL": "1",
    "SEND_CLAIM_SIZE": "100",
    "SEND_GROUP_SIZE": "25",
    "RQ_MAINTENANCE_INTERVAL": "2",
    "RQ_JOB_MONITORING_INTERVAL": "2",
    # Jobs hand over every second, through Redis: an outage stalls the campaign at once.
    "SEND_JOB_BUDGET_SECONDS": "1",
}
pytestmark = [pytest.mark.fault, pytest.mark.slow]


class PrivateRedis:
    """A redis-server of this module's own, to kill and start again on the same port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.proc, self.url = localredis.start(directory, self.port)

    def kill(self) -> None:
        """SIGKILL: the data (nothing is persisted) goes with it."""
        self.proc.kill()
        self.proc.wait(5)

    def shutdown_nosave(self) -> None:
        with redis.Redis(port=self.port, socket_timeout=5) as connection:
            connection.shutdown(nosave=True)  # redis-py expects the connection to drop
        self.proc.wait(5)

    def start(self) -> None:
        self.proc, _ = localredis.start(self.directory, self.port)

    def stop(self) -> None:
        localredis.stop(self.proc)


@dataclass
class ServerProcess:
    """`python -m server` on the private Redis (the session's in-process server uses another
    Redis, so its hand-offs would never reach this module's worker)."""

    proc: subprocess.Popen[bytes]
    log: Path
    channel: grpc.Channel

    def output(self) -> str:
        return "server log (tail):\n" + self.log.read_text(errors="replace")[-4000:]

    def serving(self) -> bool:
        try:
            reply = health_pb2_grpc.HealthStub(self.channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1
            )
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path_factory.mktemp("private-redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def queue_name() -> str:
    return f"faults-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def server(
    app, database_url, private_redis, queue_name, repo_root, tmp_path_factory
) -> Iterator[ServerProcess]:
    """(`app` first: the schema is migrated and this process reads the ledger through it.)"""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {
        **os.environ,
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(port),
        "DEV_MODE": "1",
        "DATABASE_URL": database_url,
        "REDIS_URL": private_redis.url,
        "CAMPAIGNS_QUEUE": queue_name,
        "HEALTH_INTERVAL": "0.5",
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server"], cwd=repo_root, env=env, stdout=out, stderr=out
        )
    running = ServerProcess(proc, log, grpc.insecure_channel(f"127.0.0.1:{port}"))
    try:
        assert wait_until(lambda: proc.poll() is not None or running.serving(), 20, 0.1), (
            running.output()
        )
        assert proc.poll() is None, running.output()
        yield running
    finally:
        running.channel.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def campaigns(server) -> campaign_service_pb2_grpc.CampaignServiceStub:
    return campaign_service_pb2_grpc.CampaignServiceStub(server.channel)


@pytest.fixture(scope="module")
def audience(server) -> audience_service_pb2_grpc.AudienceServiceStub:
    return audience_service_pb2_grpc.AudienceServiceStub(server.channel)


@pytest.fixture(scope="module")
def messages(server) -> email_message_service_pb2_grpc.EmailMessageServiceStub:
    return email_message_service_pb2_grpc.EmailMessageServiceStub(server.channel)


@pytest.fixture(scope="module")
def worker_env(smtp: SmtpSink) -> dict[str, str]:
    """Short leases and a fast sweep."""
    return {**smtp.env(), **FAST}


@pytest.fixture
def worker(server, private_redis, queue_name, workers) -> RunningWorker:
    """A worker of its own per test, on the private Redis and queue (`workers` last: it is
    stopped first)."""
    return workers.start(redis_url=private_redis.url, queue_name=queue_name)


def _report(line: str, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\n[faults] {line}", flush=True)


def _log_lines(worker: RunningWorker, text: str) -> int:
    return worker.log.read_text(errors="replace").count(text)


# --- tests -------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_a_campaign_finishes_after_redis_is_killed_and_restarted_empty(
    worker, server, private_redis, smtp, campaigns, audience, messages, org_id, capsys
):
    campaign = email_campaign(campaigns, audience, messages, org_id, RECIPIENTS)
    baseline = len(smtp.received)
    send_now(campaigns, campaign.id)
    assert wait_until(lambda: len(smtp.received) - baseline >= RECIPIENTS // 4, 30, 0.01), (
        worker.output()
    )

    private_redis.kill()
    killed_at = time.time()
    assert wait_until(lambda: not server.serving(), 10), "health still SERVING without Redis"
    time.sleep(max(0.0, killed_at + OUTAGE - time.time()))  # the outage itself, not a wait
    sent_while_down = len(smtp.received) - baseline
    assert sent_while_down < RECIPIENTS, "the campaign ended before Redis was back"
    private_redis.start()
    back_at = time.time()

    done = wait_final(campaigns, campaign.id, worker, timeout=45)
    assert done.status == SENT, (done, worker.output())
    assert worker.proc.poll() is None, "the worker died with Redis\n" + worker.output()
    status = assert_ledger_invariants(
        campaigns, campaign.id, smtp.received, suppressed=campaign.suppressed
    )
    assert status["sent"] + status["ambiguous"] == RECIPIENTS, status
    resumed = [r.at for r in smtp.of_campaign(campaign.id) if r.at > back_at]
    assert resumed, "nothing was sent after Redis came back"
    assert wait_until(server.serving, 10), server.output()
    restarts = _log_lines(worker, "RQ worker quit without being asked")
    _report(
        f"redis killed: {sent_while_down} sent before it came back, next message "
        f"{min(resumed) - back_at:.2f} s after Redis was back; RQ loop restarted "
        f"{restarts} time(s) in the same process; {status['ambiguous']} ambiguous",
        capsys,
    )


@pytest.mark.timeout(60)
def test_a_scheduled_campaign_whose_kickoff_was_lost_with_redis_starts_on_time(
    worker, private_redis, queue_name, smtp, campaigns, audience, messages, org_id, capsys
):
    campaign = email_campaign(campaigns, audience, messages, org_id, 20)
    when = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=4)).replace(microsecond=0)
    scheduled = campaigns.ScheduleCampaign(
        cpb.ScheduleCampaignRequest(id=campaign.id, scheduled_at=ts(when))
    ).campaign
    assert scheduled.status == SCHEDULED
    with redis.Redis(port=private_redis.port) as connection:
        assert connection.zcard(f"rq:scheduled:{queue_name}") == 1  # the kickoff, due at `when`
        private_redis.shutdown_nosave()
        private_redis.start()
        assert connection.zcard(f"rq:scheduled:{queue_name}") == 0, "the kickoff survived"

    while time.time() < when.timestamp() - 0.05:
        assert get(campaigns, campaign.id).status == SCHEDULED, "started before its time"
        time.sleep(0.1)
    done = wait_final(campaigns, campaign.id, worker, timeout=20)
    assert done.status == SENT, (done, worker.output())
    assert worker.proc.poll() is None, worker.output()
    assert_ledger_invariants(
        campaigns, campaign.id, smtp.received, suppressed=campaign.suppressed, scheduled_at=when
    )
    late = min(r.at for r in smtp.of_campaign(campaign.id)) - when.timestamp()
    assert 0 <= late < 5, late
    _report(f"kickoff lost with Redis: first message {late:.2f} s after scheduled_at", capsys)


@pytest.fixture
def proxy(private_redis) -> Iterator[TcpProxy]:
    with TcpProxy(("127.0.0.1", private_redis.port)) as running:
        yield running


@pytest.fixture
def proxied_worker(server, proxy, queue_name, workers) -> RunningWorker:
    """The same, reaching Redis through the proxy (stopped before the proxy is)."""
    return workers.start(redis_url=f"redis://127.0.0.1:{proxy.port}/0", queue_name=queue_name)


@pytest.mark.timeout(90)
def test_a_campaign_finishes_while_the_workers_redis_connections_are_cut(
    proxied_worker, proxy, smtp, campaigns, audience, messages, org_id, capsys
):
    worker = proxied_worker
    campaign = email_campaign(campaigns, audience, messages, org_id, RECIPIENTS)
    baseline = len(smtp.received)
    send_now(campaigns, campaign.id)
    for n in (1, 2):  # connections reset under the worker's feet, twice
        assert wait_until(
            lambda n=n: len(smtp.received) - baseline >= RECIPIENTS * n // 5, 30, 0.01
        ), worker.output()
        before = proxy.accepted
        proxy.cut()
        assert wait_until(lambda b=before: proxy.accepted > b, 10), "nobody reconnected"
    # Then Redis unreachable for a while: every connection refused.
    assert wait_until(lambda: len(smtp.received) - baseline >= RECIPIENTS * 3 // 5, 30, 0.01)
    proxy.refuse(True)
    time.sleep(OUTAGE)  # the outage itself
    proxy.refuse(False)

    done = wait_final(campaigns, campaign.id, worker, timeout=45)
    assert done.status == SENT, (done, worker.output())
    assert worker.proc.poll() is None, worker.output()
    status = assert_ledger_invariants(
        campaigns, campaign.id, smtp.received, suppressed=campaign.suppressed
    )
    assert status["sent"] + status["ambiguous"] == RECIPIENTS, status
    _report(
        f"redis connections cut twice and refused {OUTAGE:.0f} s: "
        f"{proxy.accepted} connections through the proxy, {status['ambiguous']} ambiguous, "
        f"RQ loop restarted {_log_lines(worker, 'RQ worker quit without being asked')} "
        f"time(s)",
        capsys,
    )
