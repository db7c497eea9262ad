"""ImportUsers benchmark: stream N synthetic users through a real gRPC server, then again.

    python -m bench.import_users --users 100000 --database sqlite
    python -m bench.import_users --users 100000 --database postgres

The server runs in this process (server.app.build, as the tests do) on a fresh database: a
temporary SQLite file, or a throwaway PostgreSQL database created through the admin connection
(--admin-url) and dropped afterwards, with a private Redis (scripts.localredis). Users go in
batches of --batch-size per stream message, with realistic emails, local and international
phones (normalised against the edition's +45) and attributes; about 0.2% carry a bad email and
are rejected. The first pass creates every user, the second re-imports them all (updates).
Requests are built before the clock starts, so the figure is the server's rate (the client
still shares the GIL with it while serialising).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg2

from campaigns.v1 import audience_service_pb2 as apb
from campaigns.v1 import audience_service_pb2_grpc, edition_pb2, user_pb2
from scripts import localredis
from server.app import build
from server.config import Settings
from server.store.db import database

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
FIRST = ("Ana", "Mads", "Freja", "Oliver", "Ida", "Noah", "Emma", "Lucas", "Sofie", "Ærling")
LAST = ("Jensen", "Nielsen", "Hansen", "Pedersen", "Andersen", "Larsen", "Sørensen", "Berg")
DOMAINS = ("gmail.com", "hotmail.com", "yahoo.dk", "outlook.com", "mail.dk", "live.se")
TAGS = ("early-bird", "local", "press", "crew", "family", "camping")
CITIES = ("Roskilde", "Aarhus", "Odense", "København", "Malmö", "Berlin")


def _phone(rnd: random.Random) -> str:
    """Mostly Danish numbers written locally (the edition's +45 applies), some foreign ones."""
    kind = rnd.random()
    if kind < 0.6:
        digits = f"{rnd.choice((26, 27, 28))}{rnd.randrange(10**6):06}"
        return " ".join(digits[i : i + 2] for i in range(0, 8, 2))
    if kind < 0.75:
        return f"+45{rnd.choice((26, 27, 28))}{rnd.randrange(10**6):06}"
    if kind < 0.85:
        return f"+46 70 {rnd.randrange(100, 1000)} {rnd.randrange(1000, 10000)}"
    if kind < 0.9:
        return f"+49 151 {rnd.randrange(10**7, 10**8)}"
    return ""


def _user(i: int, rnd: random.Random) -> user_pb2.User:
    first, last = rnd.choice(FIRST), rnd.choice(LAST)
    email = f"{first.lower()}.{last.lower()}{i}@{rnd.choice(DOMAINS)}"
    if rnd.random() < 0.002:
        email = email.replace("@", " at ")  # a typo the import must reject, row by row
    user = user_pb2.User(
        external_id=f"member-{i}",
        email=email,
        phone=_phone(rnd),
        first_name=first,
        last_name=last,
        language=rnd.choice(("da", "da", "en", "sv", "de")),
        email_consent=rnd.random() < 0.7,
        sms_consent=rnd.random() < 0.4,
    )
    user.attributes.update(
        {
            "ticket_type": "vip" if rnd.random() < 0.1 else rnd.choice(("regular", "day", "youth")),
            "tags": [tag for tag in TAGS if rnd.random() < 0.25],
            "orders": rnd.randrange(8),
            "spent": round(rnd.uniform(0, 5000), 2),
            "profile": {"city": rnd.choice(CITIES), "birth_year": rnd.randrange(1950, 2008)},
        }
    )
    return user


def _requests(
    org: int, edition_id: int, count: int, batch: int, seed: int
) -> list[apb.ImportUsersRequest]:
    rnd = random.Random(seed)
    users = [_user(i, rnd) for i in range(count)]
    requests = [apb.ImportUsersRequest(users=users[i : i + batch]) for i in range(0, count, batch)]
    requests[0].organization_id, requests[0].edition_id = org, edition_id
    return requests


@contextlib.contextmanager
def _database_url(kind: str, directory: Path, admin_url: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'bench.db'}"
        database.close_all()
        return
    name = f"import_bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        if database.obj is not None:
            database.close_all()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _run(
    stub: audience_service_pb2_grpc.AudienceServiceStub,
    label: str,
    requests: list[apb.ImportUsersRequest],
    count: int,
) -> apb.ImportUsersResponse:
    start = time.perf_counter()
    result = stub.ImportUsers(iter(requests), timeout=3600)
    elapsed = time.perf_counter() - start
    print(
        f"  {label}: {count:,} users in {elapsed:.1f}s = {count / elapsed:,.0f} users/s "
        f"(created {result.created:,}, updated {result.updated:,}, "
        f"rejected {result.rejected:,})",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    org = random.Random().randrange(1, 10**12)
    with tempfile.TemporaryDirectory() as tmp:
        redis_proc, redis_url = localredis.start(Path(tmp) / "redis")
        try:
            with _database_url(args.database, Path(tmp), args.admin_url) as url:
                app = build(
                    Settings(
                        database_url=url,
                        redis_url=redis_url,
                        host="127.0.0.1",
                        port=0,
                        queue_name=f"bench-{uuid.uuid4().hex[:8]}",
                        dev_mode=True,
                    )
                )
                try:
                    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
                        stub = audience_service_pb2_grpc.AudienceServiceStub(channel)
                        edition = stub.CreateEdition(
                            apb.CreateEditionRequest(
                                edition=edition_pb2.Edition(
                                    organization_id=org,
                                    name="Bench",
                                    timezone="Europe/Copenhagen",
                                    default_country_code="+45",
                                )
                            )
                        ).edition
                        requests = _requests(
                            org, edition.id, args.users, args.batch_size, args.seed
                        )
                        print(
                            f"{args.database}: ImportUsers, {args.users:,} users in "
                            f"{len(requests):,} messages of {args.batch_size:,}",
                            flush=True,
                        )
                        first = _run(stub, "first import (creates)", requests, args.users)
                        again = _run(stub, "re-import (updates)", requests, args.users)
                        assert first.created + first.rejected == args.users, first
                        assert again.updated == first.created, again
                finally:
                    app.stop(1.0)
        finally:
            localredis.stop(redis_proc)


if __name__ == "__main__":
    main()
