"""RPC benchmark: unary latency/throughput and WatchCampaignStats fan-out, server in a subprocess.

    python -m bench.rpc --database postgres --campaigns 100000

Seeds N campaigns straight into a fresh database, runs `python -m server` as a subprocess, drives
GetCampaign/ListCampaigns from a spawned process pool (own channel and threads each), then holds
200 watchers on one sending campaign while the ledger moves every 0.5 s. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import datetime as dt
import io
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.seeding import fresh_database
from campaigns.v1 import audience_service_pb2 as apb
from campaigns.v1 import (
    audience_service_pb2_grpc,
    campaign_service_pb2_grpc,
    edition_pb2,
    segment_pb2,
)
from campaigns.v1 import campaign_pb2 as cp
from campaigns.v1 import campaign_service_pb2 as cpb
from scripts import localredis
from server.store.db import database, open_database
from server.store.models import Campaign, Delivery

ORGS = (101, 102, 103, 104, 105)
STATUSES = ("draft", "scheduled", "sent", "sent", "cancelled", "failed")
WORDS = ("spring", "summer", "early", "bird", "vip", "reminder", "lineup", "final", "weekend")
COLUMNS = (
    "organization_id",
    "edition_id",
    "segment_id",
    "name",
    "channel",
    "sms_body",
    "status",
    "scheduled_at",
    "total_recipients",
    "created",
    "modified",
    "sent_count",
    "failed_count",
    "user_count",
    "error_message",
    "version",
)
KEYS = ("created", "modified", "name", "scheduled_at", "total_recipients")
ORDERINGS = [p + k for k in KEYS for p in ("", "-")]
_channel: grpc.Channel | None = None


def _stub() -> campaign_service_pb2_grpc.CampaignServiceStub:
    global _channel
    if _channel is None:
        _channel = grpc.insecure_channel(os.environ["BENCH_TARGET"])
        grpc.channel_ready_future(_channel).result(timeout=10)
    return campaign_service_pb2_grpc.CampaignServiceStub(_channel)


def _health_stub() -> health_pb2_grpc.HealthStub:
    _stub()
    return health_pb2_grpc.HealthStub(_channel)


def _request(kind: str, rnd: random.Random, ids: tuple[int, int]) -> tuple[str, object]:
    if kind == "health":  # the baseline: grpcio's own path to a handler that does nothing
        return "Check", health_pb2.HealthCheckRequest()
    if kind == "id":
        return "GetCampaign", cpb.GetCampaignRequest(id=rnd.randint(*ids))
    req = cpb.ListCampaignsRequest(page_size=100, page=rnd.randint(1, 5))
    if kind == "organization":
        req.organization_id = rnd.choice(ORGS)
    elif kind == "status":
        req.status = cp.CAMPAIGN_STATUS_SCHEDULED
    elif kind == "search":
        req.search, req.page = rnd.choice(WORDS), 1
    else:
        req.ordering = kind
    return "ListCampaigns", req


def load_task(
    kind: str, threads: int, start_at: float, duration: float, ids: tuple[int, int]
) -> tuple[list[float], int]:
    """In a pool process: `threads` closed loops of one RPC from start_at for duration."""
    stub = _health_stub() if kind == "health" else _stub()
    lat: list[float] = []
    errors = [0]

    def loop(seed: int) -> None:
        rnd = random.Random(seed)
        time.sleep(max(0.0, start_at - time.time()))
        end = start_at + duration
        while (t0 := time.perf_counter()) and time.time() < end:
            method, req = _request(kind, rnd, ids)
            try:
                getattr(stub, method)(req, timeout=10)
                lat.append(time.perf_counter() - t0)
            except grpc.RpcError:
                errors[0] += 1

    _run_threads(loop, [random.randrange(1 << 30) for _ in range(threads)])
    return lat, errors[0]


def _run_threads(target: object, args: list[int]) -> None:
    ts = [threading.Thread(target=target, args=(a,)) for a in args]  # type: ignore[arg-type]
    [t.start() for t in ts] + [t.join() for t in ts]


def watch_task(count: int, campaign_id: int, until: float) -> list[list[tuple[float, int]]]:
    """In a pool process: `count` WatchCampaignStats streams; each returns (time, sent) seen."""
    stub = _stub()
    seen: list[list[tuple[float, int]]] = [[] for _ in range(count)]
    calls = [
        stub.WatchCampaignStats(cpb.WatchCampaignStatsRequest(id=campaign_id)) for _ in range(count)
    ]

    def read(i: int) -> None:
        try:
            for msg in calls[i]:
                seen[i].append((time.time(), msg.stats.sent))
        except grpc.RpcError:
            pass

    def stop() -> None:
        time.sleep(max(0.0, until - time.time()))
        for c in calls:
            c.cancel()

    threading.Thread(target=stop).start()
    _run_threads(read, list(range(count)))
    return seen


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU the process has used so far (utime, stime of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _threads(pid: int) -> int:
    return int(Path(f"/proc/{pid}/status").read_text().split("Threads:")[1].split()[0])


def seed(n: int, edition_id: int, segment_id: int, kind: str) -> tuple[int, int]:
    rnd, now = random.Random(7), dt.datetime.now(dt.UTC).replace(tzinfo=None)
    table = Campaign._meta.table_name
    for start in range(0, n, 20_000):
        rows = []
        for i in range(start, min(n, start + 20_000)):
            status = rnd.choice(STATUSES)
            created = now - dt.timedelta(seconds=rnd.randrange(86400 * 365))
            sched = created + dt.timedelta(days=rnd.randrange(60)) if status != "draft" else None
            name = f"{rnd.choice(WORDS).title()} {rnd.choice(WORDS)} {i}"
            channel = rnd.choice(("email", "sms"))
            body = "Hi {{ user.first_name }}" if channel == "sms" else ""
            rows.append(
                (
                    rnd.choice(ORGS),
                    edition_id,
                    segment_id,
                    name,
                    channel,
                    body,
                    status,
                    sched,
                    rnd.randrange(100_000),
                    created,
                    created + dt.timedelta(seconds=rnd.randrange(86400)),
                    0,
                    0,
                    0,
                    "",
                    1,
                )
            )
        with database.atomic():
            if kind == "postgres":
                buf = io.StringIO()
                csv.writer(buf).writerows(rows)
                buf.seek(0)
                sql = f"COPY {table} ({','.join(COLUMNS)}) FROM STDIN WITH (FORMAT csv, "
                database.cursor().copy_expert(
                    sql + "FORCE_NOT_NULL (sms_body, error_message))", buf
                )
            else:
                marks = ",".join("?" * len(COLUMNS))
                database.cursor().executemany(
                    f"INSERT INTO {table} ({','.join(COLUMNS)}) VALUES ({marks})",
                    [tuple(str(v) if isinstance(v, dt.datetime) else v for v in r) for r in rows],
                )
    # VACUUM as autovacuum soon would: it sets the visibility map, without which a COUNT
    # right after a bulk load reads the heap instead of answering from the index.
    database.execute_sql("VACUUM ANALYZE" if kind == "postgres" else "ANALYZE")
    lo, hi = database.execute_sql(f"SELECT MIN(id), MAX(id) FROM {table}").fetchone()
    return int(lo), int(hi)


def profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the server while a cell runs (collapsed stacks, for summarise())."""
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(seconds))),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarise(raw: Path, top: int = 12) -> None:
    """Self time and inclusive time per function from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f.split(" (")[0] + " " + f.split("/")[-1].rstrip(")") for f in stack.split(";")]
        n = int(count)
        total += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
    print(f"\nprofile {raw.name}: {total} samples; self / inclusive share")
    for name, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  self {n / total:6.1%}  {name}")
    ours = [kv for kv in inclusive.items() if any(m in kv[0] for m in ("server", "rpc/", "peewee"))]
    for name, n in sorted(ours, key=lambda kv: -kv[1])[:top]:
        print(f"  incl {n / total:6.1%}  {name}")


def _names(kind: str) -> tuple[str, str]:
    if kind == "health":
        return "Health.Check", "baseline: no database, none of our interceptors"
    if kind == "id":
        return "GetCampaign", "random id"
    return "ListCampaigns", f"ordering {kind}" if kind in ORDERINGS else f"{kind} filter"


def bench_unary(
    pool: cf.ProcessPoolExecutor,
    procs: int,
    ids: tuple[int, int],
    args: argparse.Namespace,
    server_pid: int,
) -> None:
    head = "RPC | scenario | concurrency | calls/s | p50 ms | p99 ms | errors | server CPU ms/call"
    print(f"\n| {head} |\n|{'---|' * 8}")
    for kind in args.only or ["health", "id", "organization", "status", "search", *ORDERINGS]:
        for conc in args.concurrency:
            n = min(procs, conc)
            start = time.time() + 0.5
            spy = None
            if args.profile and conc == 16:
                out = Path(args.profile) / f"{kind}-c{conc}.txt"
                spy = profile(server_pid, args.duration, out)
            cpu = _cpu_seconds(server_pid)
            futs = [
                pool.submit(load_task, kind, conc // n + (i < conc % n), start, args.duration, ids)
                for i in range(n)
            ]
            lat = [x for f in futs for x in f.result()[0]]
            errs = sum(f.result()[1] for f in futs)
            cpu = _cpu_seconds(server_pid) - cpu  # the idle 0.5 s before the start is noise
            if spy is not None:
                spy.wait(30)
            rpc, label = _names(kind)
            print(
                f"| {rpc} | {label} | {conc} | "
                f"{len(lat) / args.duration:,.0f} | {_pct(lat, 0.5):.1f} | {_pct(lat, 0.99):.1f} "
                f"| {errs} | {cpu * 1000 / max(1, len(lat) + errs):.2f} |",
                flush=True,
            )
            if spy is not None and out.exists():
                summarise(out)


def bench_watch(
    pool: cf.ProcessPoolExecutor, procs: int, campaign_id: int, pid: int, args: argparse.Namespace
) -> None:
    rows = args.ledger_rows  # the watched campaign: sending, with a ledger of pending rows
    with database.atomic():
        Campaign.update(status="sending", total_recipients=rows, sent_count=0).where(
            Campaign.id == campaign_id
        ).execute()
        for s in range(0, rows, 500):
            Delivery.insert_many(
                [
                    {"campaign": campaign_id, "user_id": u, "address": f"+45{u}"}
                    for u in range(s, min(rows, s + 500))
                ]
            ).execute()
    before = _threads(pid)
    settle, until = 3.0, time.time() + 3.0 + args.watch_seconds + 1.5
    futs = [
        pool.submit(
            watch_task, args.watchers // procs + (i < args.watchers % procs), campaign_id, until
        )
        for i in range(procs)
    ]
    time.sleep(settle)
    during, changes, sent = before, [], 0
    end = time.time() + args.watch_seconds
    while time.time() < end:
        with database.atomic():
            pick = (
                Delivery.select(Delivery.id)
                .where((Delivery.campaign == campaign_id) & (Delivery.status == "pending"))
                .order_by(Delivery.id)
                .limit(100)
            )
            sent += (
                Delivery.update(status="sent", sent_at=dt.datetime.now(dt.UTC).replace(tzinfo=None))
                .where(Delivery.id.in_(pick))
                .execute()
            )
            Campaign.update(sent_count=sent).where(Campaign.id == campaign_id).execute()
        changes.append((time.time(), sent))
        during = max(during, _threads(pid))
        time.sleep(max(0.0, 0.5 - (time.time() - changes[-1][0])))
    streams = [s for f in futs for s in f.result()]
    delays, complete = [], 0
    for seen in streams:  # when each stream first showed each change's figure
        hits = [next((ts for ts, v in seen if v >= value), None) for _, value in changes]
        delays += [max(0.0, t - c[0]) for t, c in zip(hits, changes, strict=True) if t is not None]
        complete += None not in hits
    print(
        f"\n| watchers | streams with first message | streams with every change | ledger changes "
        f"| delay p50 ms | delay p99 ms | max ms | server threads before | during |\n|"
        f"{'---|' * 9}\n| {args.watchers} | {sum(bool(s) for s in streams)} | {complete} | "
        f"{len(changes)} | {_pct(delays, 0.5):.0f} | {_pct(delays, 0.99):.0f} | "
        f"{_pct(delays, 1.0):.0f} | {before} | {during} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    for flag, default in (
        ("campaigns", 100_000),
        ("duration", 3.0),
        ("watchers", 200),
        ("watch-seconds", 10.0),
        ("ledger-rows", 5_000),
        ("processes", max(2, os.cpu_count() or 2)),
    ):
        parser.add_argument(f"--{flag}", type=type(default), default=default)
    parser.add_argument(
        "--only",
        nargs="*",
        help="scenarios: health id organization status search or an ordering (-created...)",
    )
    parser.add_argument("--profile", help="directory for py-spy profiles of the c=16 cells")
    parser.add_argument("--no-watch", action="store_true", help="skip the watcher part")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, fresh_database(args.database, Path(tmp)) as url:
        redis_proc, redis_url = localredis.start(Path(tmp) / "redis")
        port = localredis.free_port()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "REDIS_URL": redis_url,
            "GRPC_HOST": "127.0.0.1",
            "DEV_MODE": "1",
            "GRPC_PORT": str(port),
        }
        log = open(Path(tmp) / "server.log", "w")  # noqa: SIM115
        server = subprocess.Popen([sys.executable, "-m", "server"], env=env, stderr=log, stdout=log)
        target = f"127.0.0.1:{port}"
        os.environ["BENCH_TARGET"] = target
        try:
            with grpc.insecure_channel(target) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                req = health_pb2.HealthCheckRequest()
                while health.Check(req, timeout=60, wait_for_ready=True).status != 1:  # SERVING
                    time.sleep(0.1)
                audience = audience_service_pb2_grpc.AudienceServiceStub(channel)
                edition = audience.CreateEdition(
                    apb.CreateEditionRequest(
                        edition=edition_pb2.Edition(
                            organization_id=ORGS[0], name="Bench", timezone="Europe/Copenhagen"
                        )
                    )
                ).edition
                segment = audience.CreateSegment(
                    apb.CreateSegmentRequest(
                        segment=segment_pb2.Segment(
                            organization_id=ORGS[0],
                            name="vip",
                            expression="user.attributes.ticket_type == 'vip'",
                        )
                    )
                ).segment
            open_database(url)
            t0 = time.perf_counter()
            ids = seed(args.campaigns, edition.id, segment.id, args.database)
            print(
                f"{args.database}: seeded {args.campaigns:,} campaigns + ANALYZE in "
                f"{time.perf_counter() - t0:.1f}s; server pid {server.pid}, "
                f"{args.processes} load processes, {os.cpu_count()} CPUs",
                flush=True,
            )
            procs, ctx = args.processes, multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(procs, mp_context=ctx) as pool:
                bench_unary(pool, procs, ids, args, server.pid)
                if not args.no_watch:
                    bench_watch(pool, procs, ids[0], server.pid, args)
        finally:
            server.terminate()
            server.wait(30)
            localredis.stop(redis_proc)


if __name__ == "__main__":
    main()
