"""Segment evaluation benchmark: bulk-load N synthetic users, then time count_matches.

    python -m bench.segment_eval --users 1000000 --database sqlite
    python -m bench.segment_eval --users 1000000 --database postgres

SQLite runs in a temporary file; PostgreSQL in a throwaway database created through the admin
connection (--admin-url) and dropped afterwards. Two expressions are timed: the typical one,
whose clauses are pushed down to SQL (~10% of users are vip), and one evaluated in CEL alone.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import random
import tempfile
import time
import uuid
from collections.abc import Iterator

import psycopg2

from server.audience.segments import engine
from server.store.db import database, open_database
from server.store.migrations import migrate
from server.store.models import User, utcnow

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
PUSHED = 'user.attributes.ticket_type == "vip" && "early-bird" in user.attributes.tags'
NOT_PUSHED = "user.attributes.orders > 2"
COLUMNS = (
    "organization_id",
    "external_id",
    "email",
    "phone",
    "first_name",
    "last_name",
    "language",
    "attributes",
    "email_consent",
    "sms_consent",
    "email_unsubscribed",
    "sms_unsubscribed",
    "created",
    "modified",
)
TAGS = ("early-bird", "local", "press", "crew", "family")
CHUNK = 50_000


def _attributes(rnd: random.Random) -> str:
    ticket = "vip" if rnd.random() < 0.1 else rnd.choice(("regular", "student", "day"))
    tags = [tag for tag in TAGS if rnd.random() < 0.3]
    doc = {
        "ticket_type": ticket,
        "tags": tags,
        "orders": rnd.randrange(6),
        "city": rnd.choice(("Roskilde", "Aarhus", "Odense", "Malmö")),
    }
    return json.dumps(doc, separators=(",", ":"))


def _rows(org: int, count: int, seed: int = 7) -> Iterator[list[tuple[object, ...]]]:
    """Synthetic users, CHUNK at a time."""
    rnd = random.Random(seed)
    now = utcnow()
    chunk: list[tuple[object, ...]] = []
    for i in range(count):
        chunk.append(
            (
                org,
                f"ext-{i}",
                f"user{i}@example.com",
                f"+45{20000000 + i}",
                "Ana",
                "Jensen",
                rnd.choice(("da", "en")),
                _attributes(rnd),
                rnd.random() < 0.7,
                rnd.random() < 0.4,
                False,
                False,
                now,
                now,
            )
        )
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _load_sqlite(org: int, count: int) -> None:
    marks = ",".join("?" * len(COLUMNS))
    sql = f"INSERT INTO {User._meta.table_name} ({','.join(COLUMNS)}) VALUES ({marks})"
    for chunk in _rows(org, count):
        with database.atomic():
            database.cursor().executemany(sql, chunk)


def _load_postgres(org: int, count: int) -> None:
    sql = f"COPY {User._meta.table_name} ({','.join(COLUMNS)}) FROM STDIN WITH (FORMAT csv)"
    for chunk in _rows(org, count):
        buffer = io.StringIO()
        csv.writer(buffer).writerows(chunk)
        buffer.seek(0)
        with database.atomic():
            database.cursor().copy_expert(sql, buffer)


@contextlib.contextmanager
def _database(kind: str, admin_url: str) -> Iterator[None]:
    """A fresh, migrated database of the given kind, removed afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            open_database(f"sqlite:///{directory}/bench.db")
            migrate()
            yield
            database.close_all()
        return
    name = f"segment_bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        open_database(admin_url.rsplit("/", 1)[0] + "/" + name)
        migrate()
        yield
    finally:
        database.close_all()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _time_count(expression: str, org: int, users: int, batch_size: int) -> None:
    compiled = engine.compile_segment(expression)
    start = time.perf_counter()
    count, evaluated = engine.count_matches(compiled, org, batch_size=batch_size)
    elapsed = time.perf_counter() - start
    print(f"\n{expression}\n  pushed down: {compiled.pushed_down or 'nothing'}")
    print(
        f"  matched {count:,}, evaluated in CEL {evaluated:,} in {elapsed:.2f}s: "
        f"{users / elapsed:,.0f} users/s, {evaluated / elapsed:,.0f} evaluations/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument("--batch-size", type=int, default=engine.DEFAULT_BATCH_SIZE)
    args = parser.parse_args()
    org = random.Random().randrange(1, 10**12)
    with _database(args.database, args.admin_url):
        start = time.perf_counter()
        (_load_postgres if args.database == "postgres" else _load_sqlite)(org, args.users)
        elapsed = time.perf_counter() - start
        print(
            f"{args.database}: loaded {args.users:,} users in {elapsed:.1f}s: "
            f"{args.users / elapsed:,.0f} users/s"
        )
        database.execute_sql("ANALYZE")  # as autovacuum would; SQLite's plan does not depend on it
        for expression in (PUSHED, NOT_PUSHED):
            _time_count(expression, org, args.users, args.batch_size)


if __name__ == "__main__":
    main()
