"""Database faults, end to end: a real `python -m server` and a `python -m jobs` worker lose
their database while a campaign sends email to a recording SMTP server, and must come back
on their own, without a restart, with the ledger intact.

- PostgreSQL behind TcpProxy (tests/support/tcpproxy.py): every connection cut mid-batch, then new
  ones refused for a few seconds. Right after the cut, reads answer at once (the pool never
  hands out a dead connection); while refused, unary RPCs answer UNAVAILABLE (from the
  server, with its ErrorInfo) and health says NOT_SERVING for every service; once allowed
  again both recover within a bound, a watch stream opened before the cut sees the end, and
  the campaign finishes exactly once.
- PostgreSQL behind a proxy that is cut while a write transaction is half done: the write
  lands whole or not at all, and its retry (same request_id) makes exactly one campaign.
- A private PostgreSQL cluster (tests/support/pgcluster.py) crash-restarted (`pg_ctl restart -m
  immediate`) mid-send, then stopped for a few seconds and started again.
- Both backends: the database stalled (its write lock held for seconds) mid-send. A stall
  shorter than the lease loses nothing; the real "locked" error of either driver is
  answered UNAVAILABLE.
- A health probe that hangs (a dead path with no RST) turns NOT_SERVING after its timeout.

A TCP path to cut and a server to restart exist only with PostgreSQL, so those tests skip on
SQLite (TEST_DATABASE=sqlite). Recovery times are printed (`pytest -s` shows them).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import grpc
import peewee
import psycopg2
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from playhouse import db_url

from campaigns.v1 import audience_service_pb2 as apb
from campaigns.v1 import (
    audience_service_pb2_grpc,
    campaign_pb2,
    campaign_service_pb2_grpc,
    email_message_service_pb2_grpc,
)
from campaigns.v1 import campaign_service_pb2 as cpb
from server.app import App
from server.config import Settings
from server.rpc.errors import to_status
from server.rpc.health import HealthReporter
from server.store.models import Campaign, Delivery, DeliveryStatus
from tests.fixtures.smtp import SmtpSink
from tests.fixtures.stack import BACKEND
from tests.fixtures.workers import start_worker
from tests.support import pgcluster
from tests.support.delivery import import_users, ledger, send_now, user, wait_final
from tests.support.helpers import (
    details,
    make_campaign,
    make_edition,
    make_email_message,
    make_segment,
)
from tests.support.invariants import assert_ledger_invariants
from tests.support.processes import free_port, wait_until
from tests.support.tcpproxy import TcpProxy

postgres_only = pytest.mark.skipif(
    BACKEND != "postgres",
    reason="needs TEST_DATABASE=postgres: SQLite is a local file, with no connection to cut"
    " and no server to restart (its stall is covered by test_a_stalled_database_loses_nothing)",
)

SERVICES = [
    "",
    "campaigns.v1.CampaignService",
    "campaigns.v1.AudienceService",
    "campaigns.v1.EmailMessageService",
    "campaigns.v1.DeliveryService",
]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SENT = campaign_pb2.CAMPAIGN_STATUS_SENT
HEALTH_INTERVAL = 0.2  # seconds between the subprocess server's health probes
OUTAGE_SECONDS = 3.0  # how long the database stays unreachable
RECOVERY_BOUND = 5.0  # seconds from the database's return to every RPC answering again
HEALTH_BOUND = 1.5  # seconds for health to follow the database, either way (~7 probes)
RECIPIENTS = 120
RATE = 40  # messages a second: the campaign sends for ~3 s, long enough to cut it mid-batch
# Small groups put many batches in flight; a short lease and stale time let the
# sweep reclaim a failed job's rows within seconds instead of the production minute.
FAULT_WORKER_ENV = {
    "EMAIL_RATE_LIMIT": str(RATE),
    "SEND_GROUP_SIZE": "10",
    "LEASE_SECONDS": "3",
    "STALE_SECONDS": "2",
}
pytestmark = [pytest.mark.fault, pytest.mark.slow]


# --- the server as its own process ----------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    log: Path
    channel: grpc.Channel
    campaigns: Any
    audience: Any
    messages: Any
    health: Any

    def stubs(self) -> tuple[Any, Any, Any]:
        return self.campaigns, self.audience, self.messages

    def output(self) -> str:
        return "server log (tail):\n" + self.log.read_text(errors="replace")[-6000:]


@contextmanager
def run_server(
    database_url: str, redis_url: str, queue_name: str, repo_root: Path, log_dir: Path
) -> Iterator[Server]:
    """`python -m server` on 127.0.0.1 with fast health probes; ready once it says SERVING."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CAMPAIGNS_QUEUE": queue_name,
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(port),
        "DEV_MODE": "1",
        "HEALTH_INTERVAL": str(HEALTH_INTERVAL),
        "GRPC_THREADS": "8",
        "MAX_WATCHERS": "4",
        "DB_POOL_SIZE": "8",
    }
    log = log_dir / "server.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server"], cwd=repo_root, env=env, stdout=sink, stderr=sink
        )
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    server = Server(
        proc,
        log,
        channel,
        campaign_service_pb2_grpc.CampaignServiceStub(channel),
        audience_service_pb2_grpc.AudienceServiceStub(channel),
        email_message_service_pb2_grpc.EmailMessageServiceStub(channel),
        health_pb2_grpc.HealthStub(channel),
    )
    try:
        assert wait_until(
            lambda: proc.poll() is not None or statuses(server) == {SERVING}, 20, 0.1
        ), server.output()
        assert proc.poll() is None, server.output()
        yield server
    finally:
        channel.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


UNREACHABLE = -1  # the health call itself failed: not an answer from the server


def statuses(server: Server) -> set[int]:
    """The health status of every service, as the server reports it."""
    out = set()
    for service in SERVICES:
        try:
            out.add(
                server.health.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=2
                ).status
            )
        except grpc.RpcError:
            out.add(UNREACHABLE)
    return out


# --- probes and clocks ----------------------------------------------------------------------


def outcome(call: Callable[[], object]) -> str:
    """How a call ended: OK, or its status code's name. UNAVAILABLE counts only when the
    server itself said so (an ErrorInfo of domain campaigns.v1 in the details); a channel
    that could not reach the server gives "UNAVAILABLE (transport)"."""
    try:
        call()
    except grpc.RpcError as error:
        code = error.code()
        if code != grpc.StatusCode.UNAVAILABLE:
            return str(code.name)
        if rpc_status.from_call(error) is None:  # type: ignore[arg-type]
            return "UNAVAILABLE (transport)"
        info = details(error).get("ErrorInfo")
        ours = info is not None and info.domain == "campaigns.v1"
        return "UNAVAILABLE" if ours else "UNAVAILABLE (transport)"
    return "OK"


def reads(server: Server, campaign: campaign_pb2.Campaign) -> dict[str, str]:
    """A read of each kind (campaigns, stats, editions, users) and how it ended."""
    org, edition = campaign.organization_id, campaign.edition_id
    return {
        "GetCampaign": outcome(
            lambda: server.campaigns.GetCampaign(cpb.GetCampaignRequest(id=campaign.id), timeout=5)
        ),
        "GetCampaignStats": outcome(
            lambda: server.campaigns.GetCampaignStats(
                cpb.GetCampaignStatsRequest(id=campaign.id), timeout=5
            )
        ),
        "ListCampaigns": outcome(
            lambda: server.campaigns.ListCampaigns(
                cpb.ListCampaignsRequest(organization_id=org), timeout=5
            )
        ),
        "ListEditions": outcome(
            lambda: server.audience.ListEditions(
                apb.ListEditionsRequest(organization_id=org), timeout=5
            )
        ),
        "ListUsers": outcome(
            lambda: server.audience.ListUsers(
                apb.ListUsersRequest(organization_id=org, edition_id=edition), timeout=5
            )
        ),
    }


def create_request(
    campaign: campaign_pb2.Campaign, name: str, request_id: str
) -> cpb.CreateCampaignRequest:
    return cpb.CreateCampaignRequest(
        organization_id=campaign.organization_id,
        edition_id=campaign.edition_id,
        segment_id=campaign.segment_id,
        name=name,
        channel=campaign_pb2.CHANNEL_SMS,
        sms_body="Doors open",
        request_id=request_id,
    )


def seconds_until(
    predicate: Callable[[], bool], timeout: float, since: float | None = None
) -> float:
    """Seconds from `since` (default: now) until `predicate` holds; fails after `timeout`."""
    started = time.monotonic() if since is None else since
    while not predicate():
        assert time.monotonic() - started < timeout, f"not within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - started


def sent_rows(campaign_id: int) -> int:
    return sum(row.status == DeliveryStatus.SENT for row in ledger(campaign_id))


# --- campaigns and their end ----------------------------------------------------------------


def email_campaign(
    campaigns: Any, audience: Any, messages: Any, org_id: int, count: int = RECIPIENTS
) -> tuple[campaign_pb2.Campaign, list[str]]:
    """An email campaign to `count` imported users; their addresses."""
    edition = make_edition(audience, org_id)
    segment = make_segment(audience, edition, "user.email_consent")
    message = make_email_message(messages, edition)
    campaign = make_campaign(
        campaigns,
        edition,
        channel=campaign_pb2.CHANNEL_EMAIL,
        sms_body="",
        email_message_id=message.id,
        segment_id=segment.id,
    )
    tag = uuid.uuid4().hex[:8]
    addresses = [f"f{i}.{tag}@mail.example.com" for i in range(count)]
    import_users(
        audience,
        org_id,
        edition.id,
        [
            user(f"f{i}-{tag}", email=address, first_name=f"F{i}", email_consent=True)
            for i, address in enumerate(addresses)
        ],
    )
    return campaign, addresses


def assert_delivered_once(
    campaigns: Any, campaign_id: int, smtp: SmtpSink, addresses: list[str]
) -> Counter[str]:
    """The shared ledger invariants, and stricter for these faults (nothing is ever resent
    after a database fault): every recipient's row is sent or ambiguous, nobody got two."""
    counts = assert_ledger_invariants(campaigns, campaign_id, smtp.received)
    assert set(counts) <= {DeliveryStatus.SENT, DeliveryStatus.AMBIGUOUS}, counts
    assert sum(counts.values()) == len(addresses), counts
    per_address = smtp.per_address(campaign_id)
    assert max(per_address.values(), default=0) <= 1, per_address.most_common(3)
    return counts


@contextmanager
def models_on(url: str) -> Iterator[peewee.Database]:
    """Campaign and Delivery read from another database (the private cluster) meanwhile.
    Bound models, not the shared proxy: the session's in-process server (its health probe
    above all) must go on using the test database. Close the yielded database after a
    restart: its connection died with the server."""
    db = peewee.PostgresqlDatabase(**db_url.parse(url))
    try:
        with db.bind_ctx([Campaign, Delivery], bind_refs=False, bind_backrefs=False):
            yield db
    finally:
        db.close()


def via(proxy: TcpProxy, url: str) -> str:
    """`url` with its host and port replaced by the proxy's."""
    parsed = urlparse(url)
    netloc = parsed.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    return parsed._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host).geturl()


def upstream(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or 5432


class Watcher:
    """WatchCampaignStats read on a thread; keeps every status it saw and how it ended."""

    def __init__(self, server: Server, campaign_id: int) -> None:
        self.seen: list[int] = []
        self.ended = "running"
        self._call = server.campaigns.WatchCampaignStats(
            cpb.WatchCampaignStatsRequest(id=campaign_id), timeout=55
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for update in self._call:
                self.seen.append(update.stats.status)
            self.ended = "OK"
        except grpc.RpcError as error:
            self.ended = error.code().name

    def wait(self, timeout: float) -> None:
        self._thread.join(timeout)


# --- the tests ------------------------------------------------------------------------------


@postgres_only
def test_a_cut_then_refused_connection_recovers_without_restart(
    app: App, database_url: str, redis_url: str, repo_root: Path, org_id: int, tmp_path: Path
) -> None:
    queue = f"faults-{uuid.uuid4().hex[:8]}"
    target = upstream(database_url)
    with (
        TcpProxy(target) as server_path,
        TcpProxy(target) as worker_path,
        SmtpSink.running() as smtp,
        run_server(via(server_path, database_url), redis_url, queue, repo_root, tmp_path) as server,
        start_worker(
            database_url=via(worker_path, database_url),
            redis_url=redis_url,
            queue_name=queue,
            repo_root=repo_root,
            log_dir=tmp_path,
            env={**smtp.env(), **FAULT_WORKER_ENV},
        ) as worker,
    ):
        campaign, addresses = email_campaign(*server.stubs(), org_id)
        send_now(server.campaigns, campaign.id)
        watcher = Watcher(server, campaign.id)
        assert wait_until(lambda: sent_rows(campaign.id) >= 10, 20, 0.05), worker.output()

        # Mid-batch: every connection of the server and the worker dies at once.
        server_path.cut()
        worker_path.cut()
        assert set(reads(server, campaign).values()) == {"OK"}, server.output()

        server_path.refuse(True)
        worker_path.refuse(True)
        down_at = time.monotonic()
        during = reads(server, campaign)
        outage_id = f"outage-{uuid.uuid4().hex[:8]}"
        during["CreateCampaign"] = outcome(
            lambda: server.campaigns.CreateCampaign(
                create_request(campaign, outage_id, outage_id), timeout=5
            )
        )
        assert set(during.values()) == {"UNAVAILABLE"}, (during, server.output())
        to_not_serving = seconds_until(
            lambda: statuses(server) == {NOT_SERVING}, HEALTH_BOUND, since=down_at
        )
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
        assert set(reads(server, campaign).values()) == {"UNAVAILABLE"}
        assert statuses(server) == {NOT_SERVING}

        server_path.refuse(False)
        worker_path.refuse(False)
        back_at = time.monotonic()
        rpcs_back = seconds_until(
            lambda: set(reads(server, campaign).values()) == {"OK"}, RECOVERY_BOUND, since=back_at
        )
        health_back = seconds_until(
            lambda: statuses(server) == {SERVING}, HEALTH_BOUND, since=back_at
        )

        # The create that failed wrote nothing: its retry makes the one campaign.
        assert Campaign.select().where(Campaign.name == outage_id).count() == 0
        server.campaigns.CreateCampaign(create_request(campaign, outage_id, outage_id), timeout=5)
        assert Campaign.select().where(Campaign.name == outage_id).count() == 1

        done = wait_final(server.campaigns, campaign.id, worker, timeout=40)
        finished = time.monotonic() - back_at
        assert done.status == SENT, (done, worker.output())
        counts = assert_delivered_once(server.campaigns, campaign.id, smtp, addresses)
        watcher.wait(10)
        assert (watcher.ended, watcher.seen[-1:]) == ("OK", [SENT]), watcher.seen
        assert worker.proc.poll() is None, worker.output()
        assert server.proc.poll() is None, server.output()
    print(
        f"\nproxy outage: NOT_SERVING after {to_not_serving:.2f} s; after the database came"
        f" back RPCs answered in {rpcs_back:.2f} s, health SERVING in {health_back:.2f} s,"
        f" campaign sent {finished:.1f} s later; ledger {dict(counts)}"
    )


def writing_backends(database_url: str) -> int:
    """Backends of this database (other than ours) inside a transaction that has written."""
    with psycopg2.connect(database_url, connect_timeout=5) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
        )
        row = cursor.fetchone()
    conn.close()
    return int(row[0]) if row else 0


@postgres_only
def test_a_write_cut_mid_transaction_lands_whole_or_not_at_all(
    app: App, database_url: str, redis_url: str, repo_root: Path, org_id: int, tmp_path: Path
) -> None:
    queue = f"faults-{uuid.uuid4().hex[:8]}"
    with (
        TcpProxy(upstream(database_url)) as path,
        run_server(via(path, database_url), redis_url, queue, repo_root, tmp_path) as server,
    ):
        campaign, _ = email_campaign(*server.stubs(), org_id, 1)
        name = f"cut-{uuid.uuid4().hex[:8]}"
        # Each chunk crosses the proxy 150 ms late, so the create's transaction (BEGIN,
        # reads, two INSERTs, COMMIT) spans seconds; the cut comes once it has written.
        path.delay = 0.15
        first: dict[str, str] = {}
        call = threading.Thread(
            target=lambda: first.update(
                result=outcome(
                    lambda: server.campaigns.CreateCampaign(
                        create_request(campaign, name, name), timeout=20
                    )
                )
            )
        )
        call.start()
        assert wait_until(lambda: writing_backends(database_url) > 0, 10, 0.02), first
        path.refuse(True)
        call.join(25)
        path.delay = 0.0
        path.refuse(False)
        assert first == {"result": "UNAVAILABLE"}, (first, server.output())
        # Rolled back whole: no campaign (and so no request id pointing at none).
        assert Campaign.select().where(Campaign.name == name).count() == 0

        # The retry, with the same request_id, makes exactly one.
        retried = server.campaigns.CreateCampaign(
            create_request(campaign, name, name), timeout=10
        ).campaign
        again = server.campaigns.CreateCampaign(
            create_request(campaign, name, name), timeout=10
        ).campaign
        assert retried.name == name and again.id == retried.id
        assert Campaign.select().where(Campaign.name == name).count() == 1


@pytest.fixture
def private_cluster() -> Iterator[pgcluster.PgCluster]:
    if BACKEND != "postgres":
        pytest.skip("needs TEST_DATABASE=postgres (the private cluster runs in that pass only)")
    reason = pgcluster.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with pgcluster.PgCluster(free_port()) as cluster:
        admin = psycopg2.connect(cluster.url(), connect_timeout=5)
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute("CREATE DATABASE campaigns")
        admin.close()
        yield cluster


def test_postgres_restarted_mid_send_recovers_without_restart(
    private_cluster: pgcluster.PgCluster,
    app: App,
    redis_url: str,
    repo_root: Path,
    org_id: int,
    tmp_path: Path,
) -> None:
    # `app` opens the shared database proxy, which the ledger helpers release after reading.
    cluster = private_cluster
    url = cluster.url("campaigns")
    queue = f"faults-{uuid.uuid4().hex[:8]}"
    with (
        SmtpSink.running() as smtp,
        models_on(url) as cluster_db,
        run_server(url, redis_url, queue, repo_root, tmp_path) as server,
        start_worker(
            database_url=url,
            redis_url=redis_url,
            queue_name=queue,
            repo_root=repo_root,
            log_dir=tmp_path,
            env={**smtp.env(), **FAULT_WORKER_ENV},
        ) as worker,
    ):
        campaign, addresses = email_campaign(*server.stubs(), org_id)
        send_now(server.campaigns, campaign.id)
        assert wait_until(lambda: sent_rows(campaign.id) >= 10, 20, 0.05), worker.output()

        # A crash and restart while batches are in flight (pg_ctl waits until it is up).
        started = time.monotonic()
        cluster.restart("immediate")
        restart_took = time.monotonic() - started
        after_restart = seconds_until(
            lambda: set(reads(server, campaign).values()) == {"OK"}, RECOVERY_BOUND
        )

        # Then down for a while: every call fails fast and health says so.
        cluster.stop("immediate")
        down_at = time.monotonic()
        during = reads(server, campaign)
        assert set(during.values()) == {"UNAVAILABLE"}, (during, server.output())
        to_not_serving = seconds_until(
            lambda: statuses(server) == {NOT_SERVING}, HEALTH_BOUND, since=down_at
        )
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
        cluster.start()
        back_at = time.monotonic()
        rpcs_back = seconds_until(
            lambda: set(reads(server, campaign).values()) == {"OK"}, RECOVERY_BOUND, since=back_at
        )
        health_back = seconds_until(
            lambda: statuses(server) == {SERVING}, HEALTH_BOUND, since=back_at
        )

        done = wait_final(server.campaigns, campaign.id, worker, timeout=40)
        finished = time.monotonic() - back_at
        assert done.status == SENT, (done, worker.output(), cluster.log_tail())
        cluster_db.close()  # the test's own connection died in the restart
        counts = assert_delivered_once(server.campaigns, campaign.id, smtp, addresses)
        assert worker.proc.poll() is None, worker.output()
        assert server.proc.poll() is None, server.output()
    print(
        f"\npg_ctl restart -m immediate took {restart_took:.2f} s, reads answered"
        f" {after_restart:.2f} s later; stopped: NOT_SERVING after {to_not_serving:.2f} s;"
        f" started again: RPCs in {rpcs_back:.2f} s, health SERVING in {health_back:.2f} s,"
        f" campaign sent {finished:.1f} s later; ledger {dict(counts)}"
    )


@contextmanager
def write_lock_held(database_url: str) -> Iterator[Callable[[], Exception]]:
    """Hold the database's write lock on the ledger (SQLite: the whole file; PostgreSQL: the
    delivery table, reads still allowed). Yields a function that tries a write of its own
    without waiting and returns the driver's real error, as peewee raises it."""
    if database_url.startswith("sqlite"):
        path = database_url.split("://", 1)[1][1:]
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")

        def attempt() -> Exception:
            impatient = peewee.SqliteDatabase(path, timeout=0)
            return _error_of(lambda: impatient.execute_sql("BEGIN IMMEDIATE"), impatient)
    else:
        holder = psycopg2.connect(database_url, connect_timeout=5)
        holder.cursor().execute("LOCK TABLE delivery IN EXCLUSIVE MODE")

        def attempt() -> Exception:
            impatient = peewee.PostgresqlDatabase(
                **db_url.parse(database_url), options="-c lock_timeout=100"
            )
            return _error_of(
                lambda: impatient.execute_sql(
                    "UPDATE delivery SET modified = modified WHERE id = -1"
                ),
                impatient,
            )

    try:
        yield attempt
    finally:
        holder.rollback()
        holder.close()


def _error_of(call: Callable[[], object], db: peewee.Database) -> Exception:
    try:
        call()
    except Exception as exc:
        return exc
    finally:
        db.close()
    raise AssertionError("the write went through while the lock was held")


def test_a_stalled_database_loses_nothing(
    app: App,
    campaigns: Any,
    audience: Any,
    messages: Any,
    database_url: str,
    redis_url: str,
    settings: Settings,
    repo_root: Path,
    org_id: int,
    tmp_path: Path,
) -> None:
    # The production lease: a stall of seconds must not make anything ambiguous.
    env = {**FAULT_WORKER_ENV, "LEASE_SECONDS": "60", "STALE_SECONDS": "60"}
    with (
        SmtpSink.running() as smtp,
        start_worker(
            database_url=database_url,
            redis_url=redis_url,
            queue_name=settings.queue_name,
            repo_root=repo_root,
            log_dir=tmp_path,
            env={**smtp.env(), **env},
        ) as worker,
    ):
        campaign, addresses = email_campaign(campaigns, audience, messages, org_id)
        send_now(campaigns, campaign.id)
        assert wait_until(lambda: sent_rows(campaign.id) >= 10, 20, 0.05), worker.output()
        with write_lock_held(database_url) as attempt_write:
            stalled_at = sent_rows(campaign.id)
            error = attempt_write()
            status, expected = to_status(error)
            assert (status.code, expected) == (grpc.StatusCode.UNAVAILABLE, True), repr(error)
            # Reads go on meanwhile (SQLite's WAL, PostgreSQL's EXCLUSIVE lock allow them).
            assert get_status(campaigns, campaign.id) != SENT
            time.sleep(OUTAGE_SECONDS)
            assert sent_rows(campaign.id) == stalled_at  # nothing recorded while stalled
        done = wait_final(campaigns, campaign.id, worker, timeout=40)
        assert done.status == SENT, (done, worker.output())
        counts = assert_delivered_once(campaigns, campaign.id, smtp, addresses)
        assert counts == {DeliveryStatus.SENT: len(addresses)}, counts
        assert worker.proc.poll() is None, worker.output()
    print(
        f"\n{BACKEND} write lock held {OUTAGE_SECONDS:g} s mid-send ({type(error).__name__}:"
        f" {str(error).strip()[:60]}) -> UNAVAILABLE; ledger {dict(counts)}"
    )


def get_status(campaigns: Any, campaign_id: int) -> int:
    return int(
        campaigns.GetCampaign(cpb.GetCampaignRequest(id=campaign_id), timeout=5).campaign.status
    )


def test_a_hung_database_probe_turns_health_not_serving_and_is_not_piled_up() -> None:
    """A probe stuck on a dead network path (no RST: a query that never answers) must not
    freeze the last status: it counts as failing after the probe timeout, and while it hangs
    no second copy of it is started."""
    servicer = health.HealthServicer()
    release = threading.Event()
    calls: list[float] = []

    def hung_ping() -> None:
        calls.append(time.monotonic())
        release.wait(10)

    reporter = HealthReporter(
        servicer,
        ["campaigns.v1.CampaignService"],
        {"database": hung_ping, "redis": lambda: True},
        interval=0.05,
        probe_timeout=0.3,
    )

    def status() -> int:
        request = health_pb2.HealthCheckRequest(service="campaigns.v1.CampaignService")
        return int(servicer.Check(request, cast(grpc.ServicerContext, None)).status)

    try:
        started = time.monotonic()
        assert reporter.check() is False
        assert 0.3 <= time.monotonic() - started < 2.0
        assert status() == NOT_SERVING
        assert reporter.check() is False
        assert len(calls) == 1  # still the first one, waited on again
        release.set()
        assert reporter.check() is True
        assert status() == SERVING
    finally:
        release.set()
        reporter.stop()
    assert status() == NOT_SERVING  # stopped
