"""Tracking HTTP benchmark: requests per second the tracking app sustains under gunicorn.

    python -m bench.tracking_http --database sqlite
    python -m bench.tracking_http --database postgres --workers 2 --clients 16 --seconds 10
    python -m bench.tracking_http --database postgres --client wrk   # apt-get install wrk

Starts `python -m server.http.tracking` (TRACKING_WORKERS gunicorn sync workers) on a fresh SQLite
file or a throwaway PostgreSQL database, writes a sent campaign and its ledger straight through
the models, then drives it for --seconds (after a 1 s warm-up) with --clients concurrent
clients. Every request is a pixel fetch or a click redirect of a random recipient, and each
records an event in the database. Prints requests/s and p50/p99 latency.

Clients: `httpx` (default) runs threads, each with its own httpx.Client, spread over
--client-processes processes so the client's GIL does not cap the figure; `wrk` runs wrk with
a Lua script picking the same URLs, lighter on the CPU the server shares on a small machine.
gunicorn's sync workers close the connection after each response, so every request is a new
TCP connection either way, as most mail clients' image fetches and link clicks are.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import httpx

from bench.seeding import fresh_database
from scripts.localredis import free_port
from server.delivery.link_tokens import LinkMaker, TokenSigner
from server.store.db import database, open_database
from server.store.migrations import migrate
from server.store.models import Campaign, Delivery, DeliveryEvent, Edition, utcnow

ORG = 4343
SECRET = "bench-tracking-secret"
TARGET = "https://festival.example/lineup?day=1&region=eu"
WARMUP = 1.0  # seconds of load before measuring


def _ledger(recipients: int) -> int:
    """A sent email campaign with `recipients` sent rows; its id."""
    now = utcnow()
    with database.atomic():
        edition = Edition.create(organization_id=ORG, name="Bench", timezone="Europe/Copenhagen")
        campaign = Campaign.create(
            organization_id=ORG,
            edition=edition,
            segment_id=1,
            name="bench",
            channel="email",
            email_message_id=1,
            status="sent",
            total_recipients=recipients,
            sent_count=recipients,
            user_count=recipients,
            started_at=now,
            completed_at=now,
        )
        rows = [
            {
                "campaign": campaign.id,
                "user_id": i + 1,
                "address": f"user{i}@example.com",
                "status": "sent",
                "attempts": 1,
                "sent_at": now,
                "provider_message_id": f"<campaign-{campaign.id}.user-{i + 1}@bench>",
                "created": now,
                "modified": now,
            }
            for i in range(recipients)
        ]
        for start in range(0, len(rows), 1000):
            Delivery.insert_many(rows[start : start + 1000]).execute()
    return int(campaign.id)


def _start_server(url: str, port: int, workers: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "TRACKING_HOST": "127.0.0.1",
        "TRACKING_PORT": str(port),
        "TRACKING_WORKERS": str(workers),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "TRACKING_SECRET": SECRET,
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server.http.tracking"], env=env, stdout=out, stderr=out
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"tracking app did not start:\n{log.read_text()[-3000:]}")


def _client_process(
    urls: list[tuple[str, int]],
    threads: int,
    start: float,
    stop: float,
    seed: int,
    results: Queue[Any],
) -> None:
    """Run `threads` clients until `stop` (time.time()); put (latencies, errors, warmup)."""
    latencies: list[float] = []
    counts = {"errors": 0, "warmup": 0}
    lock = threading.Lock()

    def client(n: int) -> None:
        rnd = random.Random(seed * 1000 + n)
        mine: list[float] = []
        errors = warm = 0
        with httpx.Client(follow_redirects=False, timeout=30) as http:
            while (now := time.time()) < stop:
                url, expected = urls[rnd.randrange(len(urls))]
                began = time.perf_counter()
                try:
                    ok = http.get(url).status_code == expected
                except httpx.HTTPError:
                    ok = False
                took = time.perf_counter() - began
                if now < start:
                    warm += ok
                elif ok:
                    mine.append(took)
                else:
                    errors += 1
        with lock:
            latencies.extend(mine)
            counts["errors"] += errors
            counts["warmup"] += warm

    pool = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    results.put((latencies, counts["errors"], counts["warmup"]))


def _drive_httpx(urls: list[tuple[str, int]], args: argparse.Namespace) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = args.client_processes
    start = time.time() + 2.0 + WARMUP  # spawned clients are up by then
    stop = start + args.seconds
    shares = [args.clients // procs + (n < args.clients % procs) for n in range(procs)]
    children = [
        ctx.Process(target=_client_process, args=(urls, share, start, stop, n, results))
        for n, share in enumerate(shares)
        if share
    ]
    for child in children:
        child.start()
    gathered = [results.get(timeout=args.seconds + 60) for _ in children]
    for child in children:
        child.join()
    latencies = sorted(x for lat, _, _ in gathered for x in lat)
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "requests": len(latencies),
        "errors": sum(e for _, e, _ in gathered),
        "rps": len(latencies) / args.seconds,
        "p50_ms": quantiles[49] * 1000,
        "p99_ms": quantiles[98] * 1000,
        "expected_events": len(latencies) + sum(w for _, _, w in gathered),
    }


WRK_SCRIPT = """
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
function init(args)
  math.randomseed(id)
  paths = {}
  for line in io.lines(os.getenv("TRACKING_PATHS")) do paths[#paths + 1] = line end
end
function request()
  return wrk.format("GET", paths[math.random(#paths)])
end
"""
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk(base: str, args: argparse.Namespace, tmp: Path, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "--latency",
            "-t",
            str(args.client_processes),
            "-c",
            str(args.clients),
            "-d",
            f"{seconds:g}s",
            "-s",
            str(tmp / "tracking.lua"),
            base + "/",
        ],
        env={**os.environ, "TRACKING_PATHS": str(tmp / "paths.txt")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def number(pattern: str) -> float:
        found = re.search(pattern, out)
        return float(found.group(1)) if found else 0.0

    def latency(percent: str) -> float:
        found = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)$", out, re.MULTILINE)
        assert found, out
        return float(found.group(1)) * _UNIT_MS[found.group(2)]

    errors = number(r"Non-2xx or 3xx responses: (\d+)")
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+)", out)
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    requests = number(r"(\d+) requests in")
    return {
        "requests": requests,
        "errors": errors,
        "rps": number(r"Requests/sec:\s+([\d.]+)"),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
    }


def _drive_wrk(
    urls: list[tuple[str, int]], base: str, args: argparse.Namespace, tmp: Path
) -> dict[str, float]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk, or use --client httpx")
    (tmp / "tracking.lua").write_text(WRK_SCRIPT)
    (tmp / "paths.txt").write_text("".join(url[len(base) :] + "\n" for url, _ in urls))
    warm = _wrk(base, args, tmp, WARMUP)
    measured = _wrk(base, args, tmp, args.seconds)
    measured["expected_events"] = measured["requests"] + warm["requests"]
    return measured


def run(args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, fresh_database(args.database, Path(tmp)) as url:
        open_database(url)
        migrate()
        campaign_id = _ledger(args.recipients)
        database.close()
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = _start_server(url, port, args.workers, Path(tmp) / "tracking.log")
        try:
            links = LinkMaker(base, TokenSigner(SECRET))
            recipients = range(1, args.recipients + 1)
            urls = [(links.pixel(campaign_id, u), 200) for u in recipients]
            urls += [(links.click(campaign_id, u, TARGET), 302) for u in recipients]
            if args.client == "wrk":
                result = _drive_wrk(urls, base, args, Path(tmp))
            else:
                result = _drive_httpx(urls, args)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
        open_database(url)
        result["events"] = (
            DeliveryEvent.select().where(DeliveryEvent.campaign_id == campaign_id).count()
        )
        database.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--client-processes", type=int, default=2, help="or wrk threads")
    parser.add_argument("--client", choices=("httpx", "wrk"), default="httpx")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--recipients", type=int, default=1000)
    args = parser.parse_args()
    r = run(args)
    print(
        f"tracking http | {args.database} | {args.workers} gunicorn workers | "
        f"{args.clients} {args.client} clients | "
        f"{int(r['requests']):,} requests in {args.seconds:g} s | "
        f"{r['rps']:,.0f} req/s | p50 {r['p50_ms']:.1f} ms | p99 {r['p99_ms']:.1f} ms | "
        f"errors {int(r['errors'])} | events recorded {int(r['events']):,} "
        f"(requests answered, warm-up included: {int(r['expected_events']):,})",
        flush=True,
    )


if __name__ == "__main__":
    main()
