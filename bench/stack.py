"""A running delivery stack for benchmarks: a fresh database seeded with one campaign, a private
Redis, the gRPC server in this process and `python -m jobs` worker processes; then
SendCampaignNow and a wait until the campaign ends, sampling each worker's memory from /proc.

Workers get this process's environment without PYTHONUNBUFFERED (production's stderr is
buffered, and issue 20 found hangs that the variable hides), plus the sink's settings.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bench.seeding import fresh_database, setup_campaign
from campaigns.v1 import campaign_pb2, campaign_service_pb2_grpc
from campaigns.v1 import campaign_service_pb2 as cpb
from scripts import localredis
from server.app import build
from server.config import Settings

FINAL = (campaign_pb2.CAMPAIGN_STATUS_SENT, campaign_pb2.CAMPAIGN_STATUS_FAILED)
TWILIO_SID = "AC1"


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """Children (RQ's forked job processes) via /proc, without spawning `ps`."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            kids += [int(k) for k in task.read_text().split()]
    return kids + [g for k in kids for g in descendants(k)]


def tree_rss_kb(pid: int) -> int:
    """A worker and its forked job process(es)."""
    return rss_kb(pid) + sum(rss_kb(k) for k in descendants(pid))


def sink_env(channel: str, port: int) -> dict[str, str]:
    """A worker's provider settings for a local sink on `port`."""
    if channel == "email":
        return {"EMAIL_PROVIDER": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port)}
    return {
        "SMS_PROVIDER": "twilio",
        "TWILIO_BASE_URL": f"http://127.0.0.1:{port}",
        "TWILIO_ACCOUNT_SID": TWILIO_SID,
        "TWILIO_AUTH_TOKEN": "token",
        "TWILIO_FROM": "+4512345678",
    }


@dataclass
class Stack:
    channel: grpc.Channel
    campaign_id: int
    workers: list[subprocess.Popen[bytes]]
    logs: Path
    killed_on_stop: int = 0  # workers still there `grace` seconds after SIGTERM


def _start_workers(count: int, env: dict[str, str], logs: Path) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "jobs"],
            env=env,
            stderr=open(logs / f"worker{n}.log", "w"),
        )
        for n in range(count)
    ]


def stop_workers(procs: list[subprocess.Popen[bytes]], grace: float = 10.0) -> int:
    """SIGTERM every worker, SIGKILL (with its job and scheduler processes) whatever is left
    after `grace` seconds: RQ's shutdown can take a minute (its pub/sub thread is joined while
    it waits 60 s for a message), and the database is thrown away anyway. How many were
    killed."""
    for p in procs:
        p.terminate()
    deadline = time.monotonic() + grace
    killed = 0
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.1, deadline - time.monotonic()))
            continue
        for pid in [*descendants(p.pid), p.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        p.wait(10)
        killed += 1
    return killed


@contextlib.contextmanager
def running_stack(
    database: str, channel: str, recipients: int, workers: int, env: dict[str, str]
) -> Iterator[Stack]:
    """Everything up, the campaign created (not yet sent); all of it torn down on exit."""
    with tempfile.TemporaryDirectory() as tmp, fresh_database(database, Path(tmp)) as url:
        redis_proc, redis_url = localredis.start(Path(tmp) / "redis")
        app = build(
            Settings(database_url=url, redis_url=redis_url, host="127.0.0.1", port=0, dev_mode=True)
        )
        worker_env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | env
        worker_env |= {
            "DATABASE_URL": url,
            "REDIS_URL": redis_url,
            "CAMPAIGNS_QUEUE": "campaigns",
            "PARALLEL_SEND_JOBS": env.get("PARALLEL_SEND_JOBS", str(max(2, workers * 2))),
        }
        procs = _start_workers(workers, worker_env, Path(tmp))
        stack = None
        try:
            with grpc.insecure_channel(f"127.0.0.1:{app.port}") as grpc_channel:
                campaign_id = setup_campaign(grpc_channel, channel, recipients)
                stack = Stack(grpc_channel, campaign_id, procs, Path(tmp))
                yield stack
        finally:
            killed = stop_workers(procs)
            if stack is not None:
                stack.killed_on_stop = killed
            app.stop(1)
            localredis.stop(redis_proc)


def send_and_wait(stack: Stack, timeout: float = 3600.0, interval: float = 0.5) -> dict[str, Any]:
    """SendCampaignNow, then poll until the campaign is sent or failed (or `timeout` passes, or
    every worker has exited), sampling every worker's memory (with its job process) every
    `interval` seconds."""
    campaigns = campaign_service_pb2_grpc.CampaignServiceStub(stack.channel)
    time.sleep(1.0)  # workers up
    peak = [0] * len(stack.workers)
    t0 = time.time()
    campaigns.SendCampaignNow(cpb.SendCampaignNowRequest(id=stack.campaign_id))
    while True:
        c = campaigns.GetCampaign(cpb.GetCampaignRequest(id=stack.campaign_id)).campaign
        peak = [max(old, tree_rss_kb(p.pid)) for old, p in zip(peak, stack.workers, strict=True)]
        gone = all(p.poll() is not None for p in stack.workers)
        if c.status in FINAL or gone or time.time() - t0 > timeout:
            break
        time.sleep(interval)
    started = c.started_at.ToDatetime().timestamp() if c.HasField("started_at") else t0
    completed = c.completed_at.ToDatetime().timestamp() if c.HasField("completed_at") else 0.0
    if c.status in FINAL:
        status = campaign_pb2.CampaignStatus.Name(c.status)
    else:  # someone else's signal can end a worker: say so rather than wait for the timeout
        status = "workers exited" if gone else "timeout"
    return {
        "status": status,
        "exit_codes": [p.poll() for p in stack.workers],
        "recipients": c.sent_count,
        "failed": c.failed_count,
        "calculating_s": started - t0,
        "sending_s": completed - started if completed else 0.0,
        "wall_s": (completed or time.time()) - t0,
        "peak_mb": max(peak) / 1024,
        "peak_mb_per_worker": [round(kb / 1024, 1) for kb in peak],
    }
