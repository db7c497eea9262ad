"""What the sending engine's benchmarks read back: the ledger and campaign rows (straight from
the database), the workers' JSON logs (RQ's "Successfully completed <call> job" lines, the
worker's "forking with threads alive" error), job processes and their ages (/proc), and the
SMTP sink's per-message records (`bench/latency_smtp.py --record`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import peewee as pw

from bench.stack import descendants
from server.store.db import release_connection
from server.store.models import Campaign, Delivery

COMPLETED = re.compile(
    r"Successfully completed (?P<func>[\w.]+)\((?P<arg>\d+)\) job in "
    r"(?P<h>\d+):(?P<m>\d+):(?P<s>[\d.]+)s"
)
FORKING = "forking with threads alive"
UNSETTLED = ("pending", "claimed", "sending")


def ledger_counts(campaign_ids: Iterable[int] | None = None) -> Counter[str]:
    """Rows by status (of the given campaigns, or of all)."""
    query = Delivery.select(Delivery.status, pw.fn.COUNT(Delivery.id)).group_by(Delivery.status)
    if campaign_ids is not None:
        query = query.where(Delivery.campaign.in_(list(campaign_ids)))
    try:
        return Counter({str(status): int(n) for status, n in query.tuples()})
    finally:
        release_connection()


def campaign_counts(campaign_ids: Iterable[int] | None = None) -> Counter[str]:
    query = Campaign.select(Campaign.status, pw.fn.COUNT(Campaign.id)).group_by(Campaign.status)
    if campaign_ids is not None:
        query = query.where(Campaign.id.in_(list(campaign_ids)))
    try:
        return Counter({str(status): int(n) for status, n in query.tuples()})
    finally:
        release_connection()


def campaign(campaign_id: int) -> dict[str, Any]:
    try:
        row = Campaign.select().where(Campaign.id == campaign_id).dicts().get()
    finally:
        release_connection()
    return dict(row)


def started_range(campaign_ids: Iterable[int]) -> tuple[float, float]:
    """The first and last `started_at` (calculated, sending begins) as time.time() values."""
    query = Campaign.select(pw.fn.MIN(Campaign.started_at), pw.fn.MAX(Campaign.started_at))
    try:
        low, high = query.where(Campaign.id.in_(list(campaign_ids))).scalar(as_tuple=True)
    finally:
        release_connection()
    return tuple(epoch(v) if v else 0.0 for v in (low, high))  # type: ignore[return-value]


def epoch(naive_utc: dt.datetime) -> float:
    """A naive UTC datetime (the database's) as time.time() counts."""
    return naive_utc.replace(tzinfo=dt.UTC).timestamp()


def addresses_with_status(campaign_id: int, status: str) -> set[str]:
    query = Delivery.select(Delivery.address).where(
        (Delivery.campaign == campaign_id) & (Delivery.status == status)
    )
    try:
        return {address.lower() for (address,) in query.tuples()}
    finally:
        release_connection()


def rows_with_status(campaign_id: int, status: str) -> dict[int, str]:
    """The campaign's rows of `status`: id -> address."""
    query = Delivery.select(Delivery.id, Delivery.address).where(
        (Delivery.campaign == campaign_id) & (Delivery.status == status)
    )
    try:
        return {int(i): address.lower() for i, address in query.tuples()}
    finally:
        release_connection()


def id_runs(ids: Iterable[int]) -> list[tuple[int, int]]:
    """Row ids as runs of consecutive ids, (first id, length) each: rows taken together into
    "sending" are consecutive."""
    runs: list[tuple[int, int]] = []
    for row_id in sorted(ids):
        if runs and runs[-1][0] + runs[-1][1] == row_id:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((row_id, 1))
    return runs


def settled(campaign_ids: Iterable[int] | None = None) -> bool:
    """No row pending, claimed or sending."""
    counts = ledger_counts(campaign_ids)
    return not any(counts[s] for s in UNSETTLED)


def completed_jobs(records: Iterable[dict[str, Any]]) -> Counter[tuple[str, int]]:
    """RQ jobs that completed, by (function, campaign id)."""
    jobs: Counter[tuple[str, int]] = Counter()
    for record in records:
        found = COMPLETED.search(str(record.get("msg", "")))
        if found:
            jobs[found["func"].rsplit(".", 1)[-1], int(found["arg"])] += 1
    return jobs


def job_seconds(records: Iterable[dict[str, Any]]) -> list[float]:
    """How long each completed job ran, as RQ logged it."""
    out = []
    for record in records:
        found = COMPLETED.search(str(record.get("msg", "")))
        if found:
            out.append(int(found["h"]) * 3600 + int(found["m"]) * 60 + float(found["s"]))
    return out


def log_summary(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Jobs completed (by function) and how long they ran, "forking with threads alive"
    lines, error lines."""
    records = list(records)
    jobs = completed_jobs(records)
    took = job_seconds(records)
    by_func: Counter[str] = Counter()
    for (func, _), n in jobs.items():
        by_func[func] += n
    errors = Counter(str(r.get("msg", ""))[:120] for r in records if r.get("level") == "error")
    warnings = Counter(str(r.get("msg", ""))[:120] for r in records if r.get("level") == "warning")
    return {
        "jobs": sum(jobs.values()),
        "jobs_by_function": dict(by_func),
        "job_s_p50_p99_max": [round(percentile(took, q), 3) for q in (0.5, 0.99, 1.0)],
        "forking_with_threads": sum(FORKING in str(r.get("msg", "")) for r in records),
        "error_lines": sum(errors.values()),
        "errors": dict(errors.most_common(5)),
        "warnings": dict(warnings.most_common(8)),
        "per_campaign": jobs,
    }


def jobs_per_campaign(jobs: Counter[tuple[str, int]], campaign_ids: Iterable[int]) -> Counter[int]:
    """How many campaigns ran how many jobs (a histogram)."""
    per: Counter[int] = Counter()
    for (_, campaign_id), n in jobs.items():
        per[campaign_id] += n
    return Counter(per[c] for c in campaign_ids)


_TICKS = os.sysconf("SC_CLK_TCK")


def age_seconds(pid: int) -> float:
    """How long the process has existed (/proc/PID/stat start time against the uptime)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except OSError:
        return 0.0
    start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
    return uptime - start_ticks / _TICKS


def job_processes(worker_pid: int) -> list[int]:
    """The worker's work horses: RQ's job process leads its own process group (the
    scheduler and sweep processes, its other children, do not)."""
    out = []
    for child in descendants(worker_pid):
        try:
            if os.getpgid(child) == child:
                out.append(child)
        except ProcessLookupError:
            continue
    return out


def py_spy_dump(pid: int) -> str:
    spy = Path(sys.executable).parent / "py-spy"
    result = subprocess.run(
        [str(spy), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60
    )
    return result.stdout + result.stderr


def first_accepted(messages: list[list[Any]], owner: dict[str, int]) -> dict[int, float]:
    """Per campaign, when the sink answered 250 to its first message (time.time())."""
    first: dict[int, float] = {}
    for _, _, replied, rcpts in messages:
        if not replied:
            continue
        for rcpt in rcpts.split(","):
            campaign_id = owner.get(rcpt)
            if campaign_id is not None and replied < first.get(campaign_id, float("inf")):
                first[campaign_id] = replied
    return first


def per_address(messages: list[list[Any]], step: int) -> Counter[str]:
    """How many messages reached `step` (0: MAIL FROM, 1: data complete, 2: answered 250)
    for each recipient."""
    seen: Counter[str] = Counter()
    for record in messages:
        if record[step]:
            seen.update(record[3].split(","))
    return seen


def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def head_commit() -> str:
    """The commit measured; BENCH_SOURCE names it when running from an export (git archive)
    rather than a checkout, which may hold other people's uncommitted changes."""
    if os.environ.get("BENCH_SOURCE"):
        return os.environ["BENCH_SOURCE"]
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "jobs", "server"], capture_output=True, text=True
    )
    return rev.stdout.strip() + (" (jobs/ or server/ modified)" if dirty.stdout.strip() else "")


def emit(result: dict[str, Any], path: Path | None) -> None:
    """Print the figures as JSON, and write them to `path` when given."""
    load = Path("/proc/loadavg").read_text().split()[:3]
    result = {"commit": head_commit(), "loadavg_at_end": load} | result
    text = json.dumps(result, indent=1, default=str)
    print(text, flush=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
