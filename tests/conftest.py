"""Test fixtures: a real Redis, a real database (SQLite file or PostgreSQL) and a real gRPC
server on 127.0.0.1, reached over a real channel.

The backend comes from TEST_DATABASE (sqlite, the default, or postgres); `make test` runs the
suite once for each. PostgreSQL is reached at TEST_POSTGRES_URL (default: the local server,
database `test`); each test process gets its own fresh database, dropped at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg2
import pytest

from campaigns.v1 import (
    audience_service_pb2_grpc,
    campaign_service_pb2_grpc,
    email_message_service_pb2_grpc,
)
from scripts import localredis
from server.app import App, build
from server.config import Settings

BACKEND = os.environ.get("TEST_DATABASE", "sqlite")
ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def pytest_report_header(config: pytest.Config) -> str:
    return f"database backend: {BACKEND}"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server for this test process: isolated, and ours to stop."""
    try:
        proc, url = localredis.start(tmp_path_factory.mktemp("redis"))
    except localredis.RedisUnavailable as exc:
        pytest.exit(f"cannot start Redis for the tests: {exc}", returncode=3)
    yield url
    localredis.stop(proc)


def _admin() -> psycopg2.extensions.connection:
    try:
        conn = psycopg2.connect(ADMIN_URL, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        pytest.exit(
            f"TEST_DATABASE=postgres but PostgreSQL at {ADMIN_URL} is unreachable: {exc}"
            "\nstart PostgreSQL or set TEST_POSTGRES_URL",
            returncode=3,
        )
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if BACKEND == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'campaigns.db'}"
        return
    name = f"campaigns_test_{uuid.uuid4().hex[:12]}"
    admin = _admin()
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    from server.store.db import database

    database.close_all() if hasattr(database.obj, "close_all") else None
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        host="127.0.0.1",
        port=0,
        queue_name=f"test-{uuid.uuid4().hex[:8]}",
        max_watchers=8,
        watch_interval=0.1,
        unary_threads=16,
        dev_mode=True,
    )


@pytest.fixture(scope="session")
def app(settings: Settings) -> Iterator[App]:
    running = build(settings)
    yield running
    running.stop(1.0)


@pytest.fixture(scope="session")
def address(app: App) -> str:
    return f"127.0.0.1:{app.port}"


@pytest.fixture(scope="session")
def channel(address: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(address) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch


@pytest.fixture(scope="session")
def campaigns(channel: grpc.Channel) -> campaign_service_pb2_grpc.CampaignServiceStub:
    return campaign_service_pb2_grpc.CampaignServiceStub(channel)


@pytest.fixture(scope="session")
def audience(channel: grpc.Channel) -> audience_service_pb2_grpc.AudienceServiceStub:
    return audience_service_pb2_grpc.AudienceServiceStub(channel)


@pytest.fixture(scope="session")
def messages(channel: grpc.Channel) -> email_message_service_pb2_grpc.EmailMessageServiceStub:
    return email_message_service_pb2_grpc.EmailMessageServiceStub(channel)


@pytest.fixture
def org_id() -> int:
    """A fresh organization per test keeps tests apart without truncating tables."""
    return uuid.uuid4().int % 10**12 + 1


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The fuzz tests checksum whole tables around every rejected call: run them first, while
    the test database is small (xdist hands tests out in this order)."""
    items.sort(key=lambda item: 0 if item.nodeid.startswith("tests/test_fuzz_rpcs.py") else 1)
