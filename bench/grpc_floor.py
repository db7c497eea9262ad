"""What grpcio itself allows on this machine: a bare server with only the health service,
synchronous (as `python -m server`) or asyncio, under bench.rpc's load.

    python -m bench.grpc_floor

No database, no interceptors, an empty handler: the latency any RPC of ours would have at
best, with the load generator on the same cores. Prints one markdown row per server kind
and concurrency (calls/s, p50 ms, p99 ms, server CPU ms per call).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures as cf
import multiprocessing
import os
import subprocess
import sys
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from bench.rpc import _cpu_seconds, _pct, load_task
from scripts.localredis import free_port


def serve_sync(port: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


async def _serve_aio(port: int) -> None:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def serve_aio(port: int) -> None:
    asyncio.run(_serve_aio(port))


def _measure(kind: str, pid: int, args: argparse.Namespace, pool: cf.Executor) -> None:
    for conc in args.concurrency:
        n = min(args.processes, conc)
        start = time.time() + 0.5
        cpu = _cpu_seconds(pid)
        threads = [conc // n + (i < conc % n) for i in range(n)]
        futs = [pool.submit(load_task, "health", t, start, args.duration, (0, 0)) for t in threads]
        lat = [x for f in futs for x in f.result()[0]]
        cpu = _cpu_seconds(pid) - cpu
        print(
            f"| {kind} | {conc} | {len(lat) / args.duration:,.0f} | {_pct(lat, 0.5):.1f} | "
            f"{_pct(lat, 0.99):.1f} | {cpu * 1000 / max(1, len(lat)):.2f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--serve", choices=("sync", "aio"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        (serve_sync if args.serve == "sync" else serve_aio)(args.port)
        return
    print("| server | concurrency | calls/s | p50 ms | p99 ms | server CPU ms/call |")
    print("|---|---|---|---|---|---|")
    for kind in ("sync", "aio"):
        port = free_port()
        cmd = [sys.executable, "-m", "bench.grpc_floor", "--serve", kind, "--port", str(port)]
        server = subprocess.Popen(cmd)
        os.environ["BENCH_TARGET"] = f"127.0.0.1:{port}"
        try:
            with grpc.insecure_channel(os.environ["BENCH_TARGET"]) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                stub.Check(health_pb2.HealthCheckRequest(), timeout=30, wait_for_ready=True)
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(args.processes, mp_context=ctx) as pool:
                _measure(kind, server.pid, args, pool)
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
