"""Hang test (issue 20): thousands of short jobs through forking workers under CPU load, with
a fast sweep and without PYTHONUNBUFFERED; does any job process hang?

    python -m bench.hang --campaigns 1100 --per-campaign 2 --workers 2 --busy 2 \\
        --sweep-interval 0.05 [--window 90] [--hung-after 60] [--json out.json]

Set-up: `--campaigns` small email campaigns (`bench/tenants.py`), `--workers` `python -m
jobs` workers (`bench/fleet.py`: no PYTHONUNBUFFERED, SWEEP_INTERVAL=`--sweep-interval`, every
other setting at its default) and an SMTP sink with no delay in its own process. Then
`--busy` CPU-bound loops (`python -c "while True: pass"`, started here and killed by their
pid at the end) load the cores while half the campaigns are scheduled for whole seconds
spread over the next `--window` seconds and the other half are sent now, one at a time over
the same window. Every `--sample` seconds each worker's job processes (its children that
lead their own process group, as RQ's work horse does) are listed with their age from /proc;
one older than `--hung-after` seconds counts as hung and is dumped with py-spy. Reported:
jobs completed (the workers' "Successfully completed" log lines) and how long they ran, hung
job processes (with their dumps), "forking with threads alive" lines, whether every
campaign ended, and the ledger.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import observe
from bench.fleet import Fleet, running_fleet
from bench.latency_sink import SinkProcess
from bench.stack import sink_env
from bench.tenants import Tenant, create_all, many, schedule, send_now

LEAD = 10  # seconds from issuing to the first scheduled campaign


@contextlib.contextmanager
def busy_loops(count: int) -> Iterator[list[int]]:
    """`count` CPU-bound processes, killed by their pid on exit."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)


def issue(fleet: Fleet, tenants: list[Tenant], window: float) -> threading.Thread:
    """Half scheduled for whole seconds over `window` (from LEAD seconds on: time to make
    the calls), half sent now one at a time across it, on a thread."""
    scheduled, now_sent = tenants[::2], tenants[1::2]
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=LEAD)
    step = window / len(scheduled)
    for n, tenant in enumerate(scheduled):
        schedule(fleet, tenant.campaign_id, start + dt.timedelta(seconds=int(n * step)))

    def paced() -> None:
        began, pace = time.monotonic(), window / len(now_sent)
        for n, tenant in enumerate(now_sent):
            time.sleep(max(0.0, began + n * pace - time.monotonic()))
            send_now(fleet, tenant.campaign_id)

    thread = threading.Thread(target=paced, name="send-now", daemon=True)
    thread.start()
    return thread


class HangWatch:
    """Job processes seen, their ages, and a py-spy dump of each one past `hung_after`."""

    def __init__(self, hung_after: float) -> None:
        self.hung_after = hung_after
        self.seen: set[int] = set()
        self.oldest = 0.0
        self.dumps: dict[int, str] = {}

    def sample(self, worker_pids: list[int]) -> None:
        for worker in worker_pids:
            for pid in observe.job_processes(worker):
                self.seen.add(pid)
                age = observe.age_seconds(pid)
                self.oldest = max(self.oldest, age)
                if age > self.hung_after and pid not in self.dumps:
                    print(f"job process {pid} of worker {worker}: {age:.0f} s old", flush=True)
                    dump = observe.py_spy_dump(pid)
                    self.dumps[pid] = f"worker {worker}, age {age:.0f} s\n{dump}"
                    print(self.dumps[pid], flush=True)


def wait_all(
    fleet: Fleet, ids: list[int], watch: HangWatch, timeout: float, interval: float
) -> bool:
    """Sample the job processes until every campaign has ended (or `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        watch.sample([p.pid for p in fleet.workers])
        counts = observe.campaign_counts(ids)
        if counts["sent"] + counts["failed"] == len(ids):
            return True
        time.sleep(interval)
    return False


def under_load(args: argparse.Namespace, fleet: Fleet, tenants: list[Tenant]) -> dict[str, Any]:
    """The busy loops on, the campaigns issued, waited for; the figures of the run."""
    ids = [t.campaign_id for t in tenants]
    watch = HangWatch(args.hung_after)
    started = time.monotonic()
    with busy_loops(args.busy) as busy:
        issuing = issue(fleet, tenants, args.window)
        ended = wait_all(fleet, ids, watch, args.timeout, args.sample)
        issuing.join(10)
        load = Path("/proc/loadavg").read_text().split()[:3]
    took = round(time.monotonic() - started, 1)
    result = {"busy_pids": busy, "loadavg_under_load": load, "run_s": took, "all_ended": ended}
    result["campaigns"] = dict(observe.campaign_counts(ids))
    result["ledger"] = dict(observe.ledger_counts(ids))
    return result | hang_figures(watch)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with SinkProcess("bench.latency_smtp", []) as sink:
        env = sink_env("email", sink.port) | {"SWEEP_INTERVAL": str(args.sweep_interval)}
        with running_fleet(env, args.workers) as fleet:
            tenants = many(args.orgs, args.campaigns, args.per_campaign)
            create_all(fleet, tenants)
            result = under_load(args, fleet, tenants)
            result["sink_accepted"] = sink.stats()["accepted"]
            result["workers_killed_on_stop"] = fleet.stop()
            summary = observe.log_summary(fleet.log_records())
            summary.pop("per_campaign")
            if args.keep_logs:
                fleet.save_logs(args.keep_logs)
    return result | summary


def hang_figures(watch: HangWatch) -> dict[str, Any]:
    return {
        "job_processes_seen": len(watch.seen),
        "oldest_job_process_s": round(watch.oldest, 1),
        "hung": len(watch.dumps),
        "hung_dumps": watch.dumps,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaigns", type=int, default=1100)
    parser.add_argument("--per-campaign", type=int, default=2, help="recipients per campaign")
    parser.add_argument("--orgs", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--busy", type=int, default=2, help="CPU-bound loops")
    parser.add_argument("--sweep-interval", type=float, default=0.05)
    parser.add_argument("--window", type=float, default=90.0, help="seconds to issue over")
    parser.add_argument("--hung-after", type=float, default=60.0)
    parser.add_argument("--sample", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep-logs", type=Path, help="copy the workers' logs here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    observe.emit({"args": vars(args)} | run(args), args.json)


if __name__ == "__main__":
    main()
