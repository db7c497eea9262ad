"""Per-process resources of job code: the database and Redis, opened once per process.

RQ forks a child per job; a child must never reuse a pooled connection it inherited from
its parent, so the database is reopened whenever the process id changes.
"""

from __future__ import annotations

import os
from functools import cache

from redis import Redis
from rq import Queue

from server.config import DeliverySettings, Settings
from server.store.db import open_database

_opened_in: int | None = None


@cache
def settings() -> Settings:
    return Settings.from_env()


@cache
def delivery_settings() -> DeliverySettings:
    return DeliverySettings.from_env()


def ensure_database() -> None:
    global _opened_in
    if _opened_in != os.getpid():
        # Workers commit asynchronously; the one commit that must be durable (rows marked
        # "sending" before the network call) says so itself (see server.store.leases.take).
        open_database(settings().database_url, settings().db_pool_size, async_commit=True)
        _opened_in = os.getpid()


def redis_connection(url: str | None = None) -> Redis:
    return Redis.from_url(url or settings().redis_url, socket_timeout=10, socket_connect_timeout=5)


_redis: dict[int, Redis] = {}


def shared_redis() -> Redis:
    """This process's Redis client (a forked job process makes its own)."""
    pid = os.getpid()
    if pid not in _redis:
        _redis.clear()
        _redis[pid] = redis_connection()
    return _redis[pid]


def queue(connection: Redis | None = None, name: str | None = None) -> Queue:
    return Queue(name or settings().queue_name, connection=connection or shared_redis())
