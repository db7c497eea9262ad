"""One send job's speed, in this process, next to the raw smtplib loop on the same sink.

    python -m bench.send_job --recipients 20000 --database postgres [--profile out.prof]

The end-to-end benchmark (`bench.delivery`) goes through RQ worker processes and is what the
figures in BENCHMARKS.md come from; this one runs `jobs.pipeline.send.send` directly, so a change
to the send path can be measured in a minute and profiled with cProfile (`--profile`).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time
from pathlib import Path

import grpc

from bench.delivery import raw_email_rate
from bench.seeding import fresh_database, setup_campaign
from bench.sinks import start_smtp_sink
from campaigns.v1 import campaign_service_pb2 as cpb
from campaigns.v1 import campaign_service_pb2_grpc
from jobs import context
from jobs.pipeline.calculate import calculate
from jobs.pipeline.send import send
from scripts import localredis
from server.app import build
from server.config import Settings
from server.store.models import Campaign


def _worker_env(url: str, redis_url: str, port: int, connections: int) -> None:
    """What a worker process would read from its environment."""
    os.environ.update(
        {
            "DATABASE_URL": url,
            "REDIS_URL": redis_url,
            "EMAIL_PROVIDER": "smtp",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(port),
            "SMTP_CONNECTIONS": str(connections),
            "SEND_JOB_BUDGET_SECONDS": "600",
        }
    )
    context.settings.cache_clear()
    context.delivery_settings.cache_clear()


def _send_all(campaign_id: int, profile: str | None) -> float:
    """Seconds for send jobs, one after another, to take the campaign to its end."""
    profiler = cProfile.Profile() if profile else None
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    while send(campaign_id) not in ("sent", "failed", "not sending"):
        pass
    elapsed = time.perf_counter() - start
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
    return elapsed


def run(args: argparse.Namespace, port: int) -> tuple[int, float]:
    with tempfile.TemporaryDirectory() as tmp, fresh_database(args.database, Path(tmp)) as url:
        redis_proc, redis_url = localredis.start(Path(tmp) / "redis")
        app = build(
            Settings(database_url=url, redis_url=redis_url, host="127.0.0.1", port=0, dev_mode=True)
        )
        try:
            with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
                campaign_id = setup_campaign(channel, "email", args.recipients)
                stub = campaign_service_pb2_grpc.CampaignServiceStub(channel)
                stub.SendCampaignNow(cpb.SendCampaignNowRequest(id=campaign_id))
            _worker_env(url, redis_url, port, args.connections)
            calculate(campaign_id)
            elapsed = _send_all(campaign_id, args.profile)
            sent = Campaign.get_by_id(campaign_id).sent_count
            return sent, elapsed
        finally:
            app.stop(1)
            localredis.stop(redis_proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--connections", type=int, default=2, help="SMTP connections per job")
    parser.add_argument("--profile", help="write a cProfile of the send jobs here")
    args = parser.parse_args()
    sink, port = start_smtp_sink()
    try:
        raw = raw_email_rate(port)
        sent, elapsed = run(args, port)
        rate = sent / elapsed
        print(
            f"send job: {sent:,} emails in {elapsed:.1f} s = {rate:,.0f} msg/s; "
            f"raw smtplib loop {raw:,.0f} msg/s; ratio {rate / raw:.2f}",
            flush=True,
        )
    finally:
        sink.terminate()


if __name__ == "__main__":
    main()
