"""The load test's report: markdown tables of what `bench.load` measured, and its verdict."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench import load_calls as lc
from bench.rpc import _pct
from campaigns.v1 import campaign_pb2 as cp

GROWTH_LIMIT = 0.5  # last-10 s RSS peak over first-10 s RSS peak, minus one
WINDOW = 10.0


@dataclass
class Sample:
    """One second's reading: server RSS and threads, worker RSS, the campaign's sent count."""

    at: float
    server_kb: int
    threads: int
    worker_kb: int
    sent: int


@dataclass
class Watched:
    """What one WatchCampaignStats stream saw: (time, status) per update, how it ended."""

    updates: list[tuple[float, int]]
    final: bool = False
    code: str = "OK"  # the status the stream ended with; CANCELLED when we hung up


@dataclass
class Outcome:
    """Everything the load run produced."""

    measured: lc.Measured
    watched: list[Watched]
    start: float
    end: float
    final: cp.Campaign
    samples: list[Sample]
    logs: list[Path]


def merge(parts: list[lc.Measured]) -> lc.Measured:
    out: lc.Measured = {}
    for part in parts:
        for name, (latencies, codes) in part.items():
            mine = out.setdefault(name, ([], Counter()))
            mine[0].extend(latencies)
            mine[1].update(codes)
    return out


def rpc_table(measured: lc.Measured, watched: list[Watched], seconds: float) -> int:
    """Per-RPC table; returns the number of unexpected outcomes (incl. RPCs never called)."""
    print(f"\n| RPC | calls | calls/s | p50 ms | p99 ms | not OK (code: count) |\n|{'---|' * 6}")
    rows = {name: measured.get(name, ([], Counter())) for name in sorted(lc.all_methods())}
    # A stream's latency is its whole life: watchers get calls and codes only.
    rows["WatchCampaignStats"] = (
        [],
        Counter("OK" if w.code in ("OK", "CANCELLED") else w.code for w in watched),
    )
    unexpected = 0
    for name, (latencies, codes) in rows.items():
        calls = len(latencies) or sum(codes.values())
        bad = {c: n for c, n in codes.items() if c != "OK"}
        unexpected += sum(bad.values()) + (calls == 0)
        shown = ", ".join(f"{c}: {n}" for c, n in sorted(bad.items())) or "-"
        lat = " | ".join(f"{_pct(latencies, q):.1f}" if latencies else "-" for q in (0.5, 0.99))
        print(f"| {name} | {calls:,} | {calls / seconds:,.1f} | {lat} | {shown} |")
    total = sum(len(v[0]) for v in measured.values())
    print(f"| **all unary + ImportUsers** | {total:,} | {total / seconds:,.1f} | | | |")
    return unexpected


def watch_table(watched: list[Watched]) -> bool:
    """Updates per watcher, the longest silence (overall and while sending), how they ended."""
    pairs = [(a, b) for w in watched for a, b in zip(w.updates, w.updates[1:], strict=False)]
    gap = max((b[0] - a[0] for a, b in pairs), default=0.0)
    sending = cp.CAMPAIGN_STATUS_SENDING
    gap_sending = max((b[0] - a[0] for a, b in pairs if a[1] == b[1] == sending), default=0.0)
    counts = [len(w.updates) for w in watched]
    ended = sum(w.final for w in watched)
    cancelled = sum(w.code == "CANCELLED" for w in watched)
    print(
        f"\n| watchers | updates | min per watcher | max gap s | max gap while sending s | "
        f"ended with final | hung up by us |\n|{'---|' * 7}\n| {len(watched)} | "
        f"{sum(counts):,} | {min(counts, default=0)} | {gap:.2f} | {gap_sending:.2f} | "
        f"{ended} | {cancelled} |"
    )
    return ended == len(watched)


def campaign_table(final: cp.Campaign, samples: list[Sample], end: float, recipients: int) -> bool:
    started = final.started_at.ToDatetime().timestamp() if final.HasField("started_at") else 0
    done = final.completed_at.ToDatetime().timestamp() if final.HasField("completed_at") else 0
    during = [s for s in samples if started < s.at <= end] if started else []
    rate_load = during[-1].sent / (during[-1].at - started) if during else float("nan")
    rate_all = final.sent_count / (done - started) if done > started else float("nan")
    print(
        f"\n| recipients | status | sent | failed | msg/s during load | msg/s overall | "
        f"sending s |\n|{'---|' * 7}\n| {recipients:,} | "
        f"{cp.CampaignStatus.Name(final.status)} | {final.sent_count:,} | "
        f"{final.failed_count:,} | {rate_load:,.0f} | {rate_all:,.0f} | "
        f"{f'{done - started:.1f}' if done > started else 'not finished'} |"
    )
    return final.status == cp.CAMPAIGN_STATUS_SENT


def memory_table(samples: list[Sample], start: float, end: float) -> bool:
    load = [s for s in samples if start <= s.at <= end] or samples
    first = [s for s in load if s.at <= load[0].at + WINDOW]
    last = [s for s in load if s.at >= load[-1].at - WINDOW]
    print(
        f"\n| process | start MB | first 10 s peak | last 10 s peak | end | peak | growth |"
        f"\n|{'---|' * 7}"
    )
    growth = 0.0
    for name, key in (("server", "server_kb"), ("worker + job", "worker_kb")):
        peak_a, peak_b = (max(getattr(s, key) for s in part) for part in (first, last))
        change = peak_b / peak_a - 1 if peak_a else 0.0
        growth = change if name == "server" else growth
        mb = [getattr(s, key) / 1024 for s in (load[0], load[-1])]
        print(
            f"| {name} | {mb[0]:.0f} | {peak_a / 1024:.0f} | {peak_b / 1024:.0f} | "
            f"{mb[1]:.0f} | {max(getattr(s, key) for s in samples) / 1024:.0f} | "
            f"{change:+.0%} |"
        )
    threads = [s.threads for s in load]
    print(
        f"\nserver threads: start {threads[0]}, peak {max(threads)}, end {threads[-1]}; "
        f"memory gate: server growth {growth:+.0%} (limit +{GROWTH_LIMIT:.0%})"
    )
    return growth <= GROWTH_LIMIT


def logged_errors(logs: list[Path]) -> int:
    """Error-level lines in the server's and worker's JSON logs (the first few are shown)."""
    errors = []
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            try:
                level = json.loads(line).get("level")
            except (ValueError, AttributeError):
                level = "error" if "Traceback" in line else None
            if level in ("error", "critical"):
                errors.append(f"{log.name}: {line[:300]}")
    print(f"\nerror-level log lines: {len(errors)}", *errors[:5], sep="\n")
    return len(errors)


def report(out: Outcome, recipients: int) -> int:
    """Print every table; 0 when every check passed, else 1."""
    unexpected = rpc_table(out.measured, out.watched, out.end - out.start)
    checks = {
        "unexpected errors": unexpected == 0,
        "watchers ended": watch_table(out.watched),
        "campaign sent": campaign_table(out.final, out.samples, out.end, recipients),
        "memory bounded": memory_table(out.samples, out.start, out.end),
        "no errors logged": logged_errors(out.logs) == 0,
    }
    print(
        f"\nunexpected outcomes: {unexpected}; "
        + ", ".join(f"{name}: {'ok' if ok else 'FAILED'}" for name, ok in checks.items()),
        flush=True,
    )
    return 0 if all(checks.values()) else 1
