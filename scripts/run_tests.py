"""`make test`: run the whole suite on SQLite, then on PostgreSQL.

PostgreSQL is not something `make test` can install; when it is unreachable the PostgreSQL run
is skipped with a clear message on a developer machine, and fails in CI (CI=true), where it
must run. Extra arguments go to pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg2

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def postgres_reachable() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        psycopg2.connect(ADMIN_URL, connect_timeout=5).close()
    except psycopg2.OperationalError as exc:
        return str(exc).strip()
    return None


def run(backend: str, args: list[str]) -> int:
    print(f"\n=== tests on {backend} ===", flush=True)
    env = {**os.environ, "TEST_DATABASE": backend}
    return subprocess.call([sys.executable, "-m", "pytest", "-q", *args], env=env)


def main() -> int:
    args = sys.argv[1:] or ["-n", "2"]
    failed = run("sqlite", args) != 0
    problem = postgres_reachable()
    if problem is None:
        failed |= run("postgres", args) != 0
    elif os.environ.get("CI"):
        print(f"error: PostgreSQL at {ADMIN_URL} is unreachable in CI: {problem}", file=sys.stderr)
        failed = True
    else:
        print(
            f"\nwarning: skipped the PostgreSQL run: {ADMIN_URL} is unreachable ({problem}).\n"
            "Start PostgreSQL or set TEST_POSTGRES_URL to run it.",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
