"""`make run`: bring up the whole stack on embedded defaults and keep it in the foreground.

Redis: REDIS_URL if set, else one on 127.0.0.1:6379 if it answers, else a private
redis-server from the venv. Database: DATABASE_URL, else SQLite under ./var/. Then the gRPC
server and one RQ worker with the scheduler. Ctrl-C stops everything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from scripts import localredis

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"


def _redis(env: dict[str, str]) -> subprocess.Popen[bytes] | None:
    url = env.get("REDIS_URL")
    if url:
        if not localredis.reachable(url):
            sys.exit(f"error: REDIS_URL={url} does not answer; start that Redis or unset REDIS_URL")
        return None
    if localredis.reachable("redis://127.0.0.1:6379/0"):
        env["REDIS_URL"] = "redis://127.0.0.1:6379/0"
        print("using the Redis already running on 127.0.0.1:6379", flush=True)
        return None
    try:
        proc, env["REDIS_URL"] = localredis.start(VAR / "redis")
    except localredis.RedisUnavailable as exc:
        sys.exit(f"error: {exc}")
    print(f"started a private Redis at {env['REDIS_URL']}", flush=True)
    return proc


def main() -> None:
    VAR.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", f"sqlite:///{VAR / 'campaigns.db'}")
    if not env.get("AUTH_TOKENS_FILE"):
        # Embedded defaults are a developer's stack: calls need no token (a line in the
        # server's log says so). Set AUTH_TOKENS_FILE to run it with tokens.
        env.setdefault("DEV_MODE", "1")
    redis_proc = _redis(env)
    procs = [
        subprocess.Popen([sys.executable, "-m", "server"], env=env, cwd=ROOT),
        subprocess.Popen([sys.executable, "-m", "jobs"], env=env, cwd=ROOT),
        subprocess.Popen([sys.executable, "-m", "server.http.tracking"], env=env, cwd=ROOT),
    ]
    port = env.get("GRPC_PORT", "50051")
    print(
        f"campaign service on 127.0.0.1:{port}; tracking on "
        f"{env.get('PUBLIC_BASE_URL', 'http://127.0.0.1:8080')}; database "
        f"{env['DATABASE_URL']}; outbox {env.get('OUTBOX_DIR', 'var/outbox')}; Ctrl-C to stop",
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    code = 0
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        code = next(p.returncode for p in procs if p.poll() is not None) or 1
        print("a process of the stack exited; stopping the rest", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        if redis_proc is not None:
            localredis.stop(redis_proc)
    sys.exit(code)


if __name__ == "__main__":
    main()
