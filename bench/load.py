"""Load test (issue 8): every RPC of every service under concurrent callers, plus
WatchCampaignStats watchers, while a real email campaign sends.

    python -m bench.load --database postgres --seconds 60

The server runs as in production: `python -m server` with a tokens file (DEV_MODE unset),
plaintext on 127.0.0.1, every call carrying `authorization: Bearer <token>`. One organization
is seeded through the API (recipients via the ImportUsers stream); a small warm-up campaign is
sent so that RecordDeliveryEvents has deliveries to name. Then, for --seconds, --callers
closed-loop callers (over --processes spawned processes, bench/load_calls.py) and --watchers
watchers run while one `python -m jobs` worker sends the main campaign (--recipients) to a local
SMTP sink. Memory and threads are sampled every second.

Exit status 1 when: any call ended other than OK (watchers we hang up on excepted), an RPC
was never called, a watcher did not get its final update, the campaign did not reach `sent`,
the server's RSS peak in the last 10 s of load exceeds the first 10 s peak by over 50%, or
the server or worker logged at error level (tables and checks: bench/load_report.py).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import load_calls as lc
from bench.load_report import Outcome, Sample, Watched, merge, report
from bench.load_seed import seed, wait_final
from bench.rpc import _threads
from bench.seeding import fresh_database
from bench.sinks import _wait_for, start_smtp_sink
from bench.stack import descendants, rss_kb
from campaigns.v1 import campaign_service_pb2 as cpb
from campaigns.v1 import campaign_service_pb2_grpc as cgrpc
from scripts import localredis
from server.security.bearer_tokens import digest

ORG = 8008


def start_sink() -> tuple[subprocess.Popen[bytes], int]:
    """Postfix's smtp-sink when installed, otherwise aiosmtpd's discarding handler."""
    if shutil.which("smtp-sink") or Path("/usr/sbin/smtp-sink").exists():
        return start_smtp_sink()
    port = localredis.free_port()
    cmd = [sys.executable, "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink"]
    proc = subprocess.Popen([*cmd, "-l", f"127.0.0.1:{port}"], stderr=subprocess.PIPE)
    _wait_for(port, proc)
    return proc, port


def environments(
    tmp: Path, url: str, redis_url: str, smtp_port: int
) -> tuple[dict[str, str], dict[str, str]]:
    """(server, worker) environments: tokens required, no DEV_MODE."""
    base = {k: v for k, v in os.environ.items() if k not in ("DEV_MODE", "AUTH_TOKENS_FILE")}
    base |= {
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "TRACKING_SECRET": uuid.uuid4().hex,
        "OUTBOX_DIR": str(tmp / "outbox"),
    }
    server = base | {
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(localredis.free_port()),
        "AUTH_TOKENS_FILE": str(tmp / "tokens.json"),
    }
    worker = base | {
        "EMAIL_PROVIDER": "smtp",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_port),
    }
    return server, worker


def write_tokens(path: Path) -> str:
    token = "load-" + uuid.uuid4().hex
    entry = {"name": "bench-load", "sha256": digest(token), "organizations": [ORG]}
    path.write_text(json.dumps({"tokens": [entry]}))
    return token


@contextlib.contextmanager
def spawn(module: str, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", module], env=env, stdout=out, stderr=out)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)


def wait_serving(target: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(grpc.RpcError):
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.1)
    sys.exit(f"server at {target} did not become SERVING")


class Sampler(threading.Thread):
    """Every second: server RSS and threads, worker RSS (with its job process), sent count."""

    def __init__(self, world: lc.World, server: int, worker: int) -> None:
        super().__init__(daemon=True)
        self.world, self.server, self.worker = world, server, worker
        self.samples: list[Sample] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with grpc.insecure_channel(self.world.target) as channel:
            stub = cgrpc.CampaignServiceStub(channel)
            request = cpb.GetCampaignRequest(id=self.world.campaign_id)
            sent = 0
            while not self.stop.wait(1.0 - time.time() % 1.0):
                with contextlib.suppress(grpc.RpcError):  # a failed read keeps the last count
                    reply = stub.GetCampaign(request, metadata=self.world.metadata, timeout=5)
                    sent = reply.campaign.sent_count
                worker = self.worker, *descendants(self.worker)
                self.samples.append(
                    Sample(
                        time.time(),
                        rss_kb(self.server),
                        _threads(self.server),
                        sum(map(rss_kb, worker)),
                        sent,
                    )
                )


def watch_task(world: lc.World, count: int, hang_up_at: float) -> list[Watched]:
    """In a pool process: `count` watchers of the main campaign, until its final update (or
    until hang_up_at, when the ones still open are cancelled)."""
    seen = [Watched([]) for _ in range(count)]
    with grpc.insecure_channel(world.target) as channel:
        stub = cgrpc.CampaignServiceStub(channel)
        request = cpb.WatchCampaignStatsRequest(id=world.campaign_id)
        calls = [stub.WatchCampaignStats(request, metadata=world.metadata) for _ in range(count)]

        def read(i: int) -> None:
            try:
                for msg in calls[i]:
                    seen[i].updates.append((time.time(), msg.stats.status))
                    seen[i].final = seen[i].final or msg.final
            except grpc.RpcError as exc:
                seen[i].code = exc.code().name

        def hang_up() -> None:
            while time.time() < hang_up_at and not all(w.final for w in seen):
                time.sleep(0.2)
            for call in calls:
                call.cancel()

        threading.Thread(target=hang_up, daemon=True).start()
        lc.run_threads(read, list(range(count)))
    return seen


def run_load(
    args: argparse.Namespace, world: lc.World, sampler: Sampler
) -> tuple[lc.Measured, list[Watched], float, float]:
    """Callers and watchers in spawned processes, and SendCampaignNow on the main campaign
    when they start. What they measured, and the load's start and end times."""
    procs = args.processes
    start = time.time() + 4.0  # spawned processes are up by then
    end = start + args.seconds
    shares = [args.callers // procs + (i < args.callers % procs) for i in range(procs)]
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(procs + 1, mp_context=ctx) as pool:
        watchers = pool.submit(watch_task, world, args.watchers, end + args.finish_timeout)
        callers = [pool.submit(lc.caller_task, world, n, start, end) for n in shares]
        time.sleep(max(0.0, start - time.time()))
        with grpc.insecure_channel(world.target) as channel:
            cgrpc.CampaignServiceStub(channel).SendCampaignNow(
                cpb.SendCampaignNowRequest(id=world.campaign_id),
                metadata=world.metadata,
                timeout=30,
            )
        sampler.start()
        return merge([f.result() for f in callers]), watchers.result(), start, end


def load_test(args: argparse.Namespace, tmp: Path, url: str, smtp_port: int) -> Outcome:
    """Redis, server and worker up; seed; run the load; wait for the campaign to finish."""
    redis_proc, redis_url = localredis.start(tmp / "redis")
    server_env, worker_env = environments(tmp, url, redis_url, smtp_port)
    world = lc.World(f"127.0.0.1:{server_env['GRPC_PORT']}", write_tokens(tmp / "tokens.json"), ORG)
    logs = [tmp / "server.log", tmp / "worker.log"]
    try:
        with (
            spawn("server", server_env, logs[0]) as server,
            spawn("jobs", worker_env, logs[1]) as worker,
        ):
            wait_serving(world.target, server)
            world = seed(world, args.recipients)
            print(
                f"{args.database}: {args.recipients:,} recipients, {args.callers} callers in "
                f"{args.processes} processes, {args.watchers} watchers, {args.seconds:.0f} s, "
                f"{os.cpu_count()} CPUs",
                flush=True,
            )
            sampler = Sampler(world, server.pid, worker.pid)
            measured, watched, start, end = run_load(args, world, sampler)
            final = wait_final(world, world.campaign_id, args.finish_timeout)
            sampler.stop.set()
        return Outcome(measured, watched, start, end, final, sampler.samples, logs)
    finally:
        localredis.stop(redis_proc)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    for flag, default in (
        ("seconds", 60.0),
        ("callers", 32),
        ("watchers", 50),
        ("recipients", 30_000),
        ("processes", 2),
        ("finish-timeout", 300.0),
    ):
        parser.add_argument(f"--{flag}", type=type(default), default=default)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    sink, smtp_port = start_sink()
    try:
        with tempfile.TemporaryDirectory() as tmp, fresh_database(args.database, Path(tmp)) as url:
            return report(load_test(args, Path(tmp), url, smtp_port), args.recipients)
    finally:
        sink.terminate()


if __name__ == "__main__":
    sys.exit(main())
