"""`python -m server` as a subprocess with its own environment, for tests of what only a
whole process shows: start-up refusals, TLS on the port, tokens from a file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.processes import stop_process

ROOT = Path(__file__).resolve().parent.parent


def server_env(database_url: str, redis_url: str, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DEV_MODE", "AUTH_TOKENS_FILE")}
    env.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "GRPC_HOST": "127.0.0.1",
            "GRPC_PORT": str(port),
            **extra,
        }
    )
    return env


def run_to_exit(env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a server that is expected to refuse to start; its exit code and output."""
    return subprocess.run(
        [sys.executable, "-m", "server"],
        cwd=ROOT,
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


def _serving(channel: grpc.Channel) -> bool:
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=1
        )
    except grpc.RpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@contextmanager
def running_server(
    env: dict[str, str], ready: grpc.Channel, log: Path, timeout: float = 30
) -> Iterator[subprocess.Popen[bytes]]:
    """Start the server; ready once health answers SERVING on `ready` (a channel the caller
    made with whatever credentials the port needs)."""
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server"], cwd=ROOT, env=env, stdout=sink, stderr=sink
        )
    try:
        deadline = time.monotonic() + timeout
        while not _serving(ready):
            assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-4000:]
            time.sleep(0.1)
        yield proc
    finally:
        stop_process(proc)
