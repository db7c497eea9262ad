"""Sending against a slow provider (issue 20): the send engine's rate when the relay answers
the end of DATA (email) or each request (SMS) after D ms, next to raw client loops.

    python -m bench.latency --recipients 20000 --channel email sms --workers 1 2 \\
        --email-delays 0 20 100 --sms-delays 0 50 200 --cap 100:2000 --cap 200:2000 \\
        [--database postgres] [--json out.json] [--worker-env SMTP_CONNECTIONS=10]

For each channel and delay one sink runs in its own process (`bench/latency_smtp.py`,
`bench/latency_http.py`). First the raw loops (`bench/latency_raw.py`: plain smtplib / httpx
with 1 and with 10 connections, --raw-seconds each), then for each worker count a fresh stack
(`bench/stack.py`: database, Redis, server, `python -m jobs` workers without PYTHONUNBUFFERED)
sends a campaign of --recipients (at most N for a delay given as --cap D:N). Reported: msg/s at
the sink from its first to its last accepted message, peak open connections at the sink, peak
RSS per worker process tree (/proc, every 0.25 s), the sink's own CPU use.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.latency_raw import sms_loop, smtp_loop
from bench.latency_sink import SinkProcess
from bench.stack import running_stack, send_and_wait, sink_env

SINKS = {"email": "bench.latency_smtp", "sms": "bench.latency_http"}
RAW: dict[str, Callable[..., dict[str, float]]] = {"email": smtp_loop, "sms": sms_loop}
COLUMNS = (
    "channel | D (ms) | workers | recipients | status | msg/s at sink | peak connections |"
    " peak RSS per worker (MB) | raw 1 conn (msg/s) | raw 10 conn (msg/s) | pipeline / raw 10 |"
    " sink CPU | load average (1, 5 min)"
)


def sink_share(stats: dict[str, Any]) -> float:
    """The sink's CPU seconds over its first-to-last span: near 1.0, the sink was the limit."""
    span = stats["last_at"] - stats["first_at"]
    return stats["cpu_s"] / span if span > 0 else 0.0


def raw_baselines(
    sink: SinkProcess, channel: str, connections: list[int], seconds: float
) -> dict[int, dict[str, float]]:
    """Each raw loop against the sink, rated as the pipeline is: first to last at the sink."""
    out = {}
    for count in connections:
        sink.reset()
        client = RAW[channel](sink.port, count, seconds)
        stats = sink.stats()
        out[count] = {
            "rate": stats["rate"],
            "client_rate": client["rate"],
            "messages": stats["accepted"],
            "peak_open": stats["peak_open"],
            "sink_cpu": sink_share(stats),
        }
        print(
            f"  raw {channel}, {count} connection(s): {stats['rate']:,.1f} msg/s "
            f"({stats['accepted']:,} messages, peak {stats['peak_open']} open)",
            flush=True,
        )
    return out


def pipeline_cell(
    args: argparse.Namespace, sink: SinkProcess, channel: str, workers: int, recipients: int
) -> dict[str, Any]:
    """One campaign through real workers; the sink's counters over exactly its sending."""
    env = sink_env(channel, sink.port) | dict(args.worker_env)
    with running_stack(args.database, channel, recipients, workers, env) as stack:
        sink.reset()
        result = send_and_wait(stack, timeout=args.timeout, interval=0.25)
    stats = sink.stats()
    result["killed_on_stop"] = stack.killed_on_stop
    result["loadavg"] = loadavg()  # at the cell's end: the machine is shared
    return result | {
        "rate": stats["rate"],
        "accepted": stats["accepted"],
        "refused": stats["refused"],
        "peak_open": stats["peak_open"],
        "sink_cpu": sink_share(stats),
    }


def row(cell: dict[str, Any]) -> str:
    raw1, raw10 = cell["raw"].get(1, {}), cell["raw"].get(10, {})
    ratio = cell["rate"] / raw10["rate"] if raw10.get("rate") else 0.0
    status = cell["status"].removeprefix("CAMPAIGN_STATUS_").lower()
    return (
        f"| {cell['channel']} | {cell['delay_ms']:g} | {cell['workers']} | "
        f"{cell['accepted']:,} / {cell['recipients_asked']:,} | {status} | {cell['rate']:,.1f} | "
        f"{cell['peak_open']} | {cell['peak_mb']:.0f} | {raw1.get('rate', 0):,.1f} | "
        f"{raw10.get('rate', 0):,.1f} | {ratio:.2f} | {cell['sink_cpu']:.0%} | "
        f"{' / '.join(cell.get('loadavg', [])[:2])} |"
    )


def run_delay(
    args: argparse.Namespace, channel: str, delay: float, cells: list[dict[str, Any]]
) -> None:
    """The raw loops and a campaign per worker count against one sink; cells appended (and
    written out) as each ends, so an interrupted run keeps what it measured."""
    recipients = min(args.recipients, args.cap.get(delay, args.recipients))
    sink_args = ["--delay-ms", str(delay), "--max-connections", str(args.sink_max_connections)]
    with SinkProcess(SINKS[channel], sink_args) as sink:
        print(f"{channel}, D = {delay:g} ms, {recipients:,} recipients", flush=True)
        raw = raw_baselines(sink, channel, args.raw_connections, args.raw_seconds)
        for workers in args.workers:
            cell = pipeline_cell(args, sink, channel, workers, recipients)
            cell |= {"channel": channel, "delay_ms": delay, "workers": workers, "raw": raw}
            cell["recipients_asked"] = recipients
            print(row(cell), flush=True)
            cells.append(cell)
            write_json(args, cells)


def loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def machine() -> dict[str, Any]:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {
        "cpus": os.cpu_count(),
        "loadavg": loadavg(),
        "commit": rev.stdout.strip() or "unknown",
    }


def _cap(value: str) -> tuple[float, int]:
    delay, _, count = value.partition(":")
    return float(delay), int(count)


def _env(value: str) -> tuple[str, str]:
    key, _, val = value.partition("=")
    return key, val


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--channel", nargs="+", choices=tuple(SINKS), default=list(SINKS))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--email-delays", type=float, nargs="+", default=[0, 20, 100])
    parser.add_argument("--sms-delays", type=float, nargs="+", default=[0, 50, 200])
    parser.add_argument(
        "--cap", type=_cap, action="append", default=[], metavar="D:N", help="at most N at D ms"
    )
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--raw-connections", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--raw-seconds", type=float, default=5.0)
    parser.add_argument("--sink-max-connections", type=int, default=0, help="0: no limit")
    parser.add_argument("--worker-env", type=_env, action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--timeout", type=float, default=1200.0, help="per campaign, seconds")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--label", default="", help="what is measured, kept in the JSON")
    args = parser.parse_args()
    args.cap = dict(args.cap)
    return args


def write_json(args: argparse.Namespace, cells: list[dict[str, Any]]) -> None:
    if not args.json:
        return
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": args.machine, "loadavg_now": machine()["loadavg"]}
    meta["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args.json.write_text(json.dumps({"meta": meta, "cells": cells}, indent=1, default=str))


def main() -> None:
    args = parse_args()
    args.machine = machine() | {"label": args.label}
    print(f"machine: {args.machine}", flush=True)
    cells: list[dict[str, Any]] = []
    for channel in args.channel:
        delays = args.email_delays if channel == "email" else args.sms_delays
        for delay in delays:
            run_delay(args, channel, delay, cells)
    print(f"\n| {COLUMNS} |\n|{'---|' * len(COLUMNS.split('|'))}")
    print("\n".join(row(cell) for cell in cells), flush=True)


if __name__ == "__main__":
    main()
