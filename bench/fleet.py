"""A delivery stack whose workers come and go, for the sending engine's fault and load
benchmarks (issue 20): a fresh database, a private Redis, the gRPC server in this process, and
`python -m jobs` worker processes that can be started, killed hard (kill -9 of the worker and
every process below it, as a crashed machine loses them) and started again, one at a time.

Workers get this process's environment without PYTHONUNBUFFERED (production's stderr is
buffered; issue 20 found hangs that the variable hides) plus the benchmark's settings, and
write their JSON log lines (with those of their job, scheduler and sweep processes) to one
file each; `Fleet.log_records` reads them all back.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from redis import Redis
from rq import Queue

from bench.seeding import fresh_database
from bench.stack import descendants, stop_workers
from campaigns.v1 import (
    audience_service_pb2_grpc,
    campaign_service_pb2_grpc,
    email_message_service_pb2_grpc,
)
from scripts import localredis
from server.app import build
from server.config import Settings

QUEUE = "campaigns"


@dataclass
class Fleet:
    """The running stack: stubs on the in-process server, and the worker processes."""

    database_url: str
    redis_url: str
    channel: grpc.Channel
    env: dict[str, str]  # every worker's environment
    logs: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    killed: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def campaigns(self) -> campaign_service_pb2_grpc.CampaignServiceStub:
        return campaign_service_pb2_grpc.CampaignServiceStub(self.channel)

    @property
    def audience(self) -> audience_service_pb2_grpc.AudienceServiceStub:
        return audience_service_pb2_grpc.AudienceServiceStub(self.channel)

    @property
    def messages(self) -> email_message_service_pb2_grpc.EmailMessageServiceStub:
        return email_message_service_pb2_grpc.EmailMessageServiceStub(self.channel)

    def start_worker(self) -> subprocess.Popen[bytes]:
        number = len(self.workers) + len(self.killed)
        with open(self.logs / f"worker{number}.log", "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "jobs"], env=self.env, stderr=log)
        self.workers.append(proc)
        return proc

    def kill_hard(self, proc: subprocess.Popen[bytes]) -> list[int]:
        """SIGKILL the worker and everything below it (job, scheduler and sweep processes);
        the pids killed, the worker's first. Stopped first, so it forks nothing meanwhile."""
        os.kill(proc.pid, signal.SIGSTOP)
        family = descendants(proc.pid)
        for pid in [proc.pid, *family]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while any(_running(pid) for pid in family) and time.monotonic() < deadline:
            time.sleep(0.02)  # reparented to init, which reaps them
        self.workers.remove(proc)
        self.killed.append(proc)
        return [proc.pid, *family]

    def stop(self) -> int:
        """Stop every worker (SIGTERM, SIGKILL after 10 s); how many had to be killed."""
        killed = stop_workers(self.workers)
        self.killed += self.workers
        self.workers = []
        return killed

    def save_logs(self, directory: Path) -> None:
        """Copy the workers' logs out of the temporary directory (it goes with the fleet)."""
        directory.mkdir(parents=True, exist_ok=True)
        for path in self.logs.glob("worker*.log"):
            shutil.copy(path, directory / path.name)

    def queued(self) -> int:
        """Jobs waiting in the queue, and jobs running now."""
        with Redis.from_url(self.redis_url) as connection:
            queue = Queue(QUEUE, connection=connection)
            return int(queue.count) + len(queue.started_job_registry)

    def log_records(self) -> Iterator[dict[str, Any]]:
        """Every JSON line the workers (and their children) wrote."""
        for path in sorted(self.logs.glob("worker*.log")):
            with open(path, errors="replace") as lines:
                for line in lines:
                    with contextlib.suppress(ValueError):
                        record = json.loads(line)
                        if isinstance(record, dict):
                            yield record


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def worker_env(database_url: str, redis_url: str, env: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return base | env | {"DATABASE_URL": database_url, "REDIS_URL": redis_url}


@contextlib.contextmanager
def running_fleet(
    env: dict[str, str],
    workers: int,
    database: str = "postgres",
    worker_url: Callable[[str], str] = lambda url: url,
) -> Iterator[Fleet]:
    """Everything up with `workers` workers (their database URL through `worker_url`, e.g. a
    proxy); all of it torn down on exit (workers: SIGTERM, SIGKILL after 10 s)."""
    with tempfile.TemporaryDirectory() as tmp, fresh_database(database, Path(tmp)) as url:
        redis_proc, redis_url = localredis.start(Path(tmp) / "redis")
        settings = Settings(
            database_url=url, redis_url=redis_url, host="127.0.0.1", port=0, dev_mode=True
        )
        app = build(settings)
        full_env = worker_env(worker_url(url), redis_url, env | {"CAMPAIGNS_QUEUE": QUEUE})
        fleet = None
        try:
            with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
                fleet = Fleet(url, redis_url, channel, full_env, Path(tmp))
                for _ in range(workers):
                    fleet.start_worker()
                yield fleet
        finally:
            if fleet is not None:
                stop_workers(fleet.workers)
            app.stop(1)
            localredis.stop(redis_proc)


def wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll `check` until it is true or `timeout` seconds pass; whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()
