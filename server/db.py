"""The database: one proxy every model uses, opened from a URL (SQLite WAL or pooled PostgreSQL)."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import urlparse

import peewee
from playhouse import db_url
from playhouse.pool import PooledSqliteDatabase

database = peewee.DatabaseProxy()

_POSTGRES_SCHEMES = {"postgres", "postgresql"}
SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",
    "busy_timeout": 15000,  # ms a writer waits for the lock before "database is locked"
    "foreign_keys": 1,
}


class DatabaseURLError(ValueError):
    """DATABASE_URL names no database this service can use."""


def _sqlite(url: str, pool_size: int) -> peewee.Database:
    path = url.split("://", 1)[1]
    path = path[1:] if path.startswith("/") else path  # sqlite:///rel, sqlite:////abs
    if not path or path == ":memory:":
        # Every thread of the server would get its own empty in-memory database.
        raise DatabaseURLError("SQLite needs a file path, e.g. sqlite:///var/campaigns.db")
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    db = PooledSqliteDatabase(
        path,
        max_connections=pool_size,
        stale_timeout=300,
        timeout=30,
        pragmas=SQLITE_PRAGMAS,
        check_same_thread=False,  # pooled: a connection moves between server threads
        field_types={"JSONDOC": "TEXT"},
    )
    # SQLite's built-in lower() folds ASCII only; searches must fold "Æ" as PostgreSQL does.
    db.register_function(_lower, "lower", 1)
    return db


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def open_database(url: str, pool_size: int = 20, *, async_commit: bool = False) -> peewee.Database:
    """Open the database named by `url` and point every model at it.

    `async_commit` (PostgreSQL, for workers): commits return before the WAL is flushed. A
    PostgreSQL crash can then lose the last fraction of a second of commits, never corrupt
    anything; code whose commit must survive that (marking rows in flight before a send)
    asks for `durable_commit()` inside its transaction."""
    scheme = urlparse(url).scheme
    if scheme.startswith("sqlite"):
        db = _sqlite(url, pool_size)
    elif scheme in _POSTGRES_SCHEMES:
        pooled = url.replace(f"{scheme}://", "postgresql+pool://", 1)
        db = db_url.connect(
            pooled,
            max_connections=pool_size,
            stale_timeout=300,
            timeout=30,
            field_types={"JSONDOC": "JSONB"},
            **({"options": "-c synchronous_commit=off"} if async_commit else {}),
        )
    else:
        raise DatabaseURLError(
            f"unsupported DATABASE_URL scheme {scheme!r}: use sqlite or postgresql"
        )
    database.initialize(db)
    return db


def durable_commit() -> None:
    """Inside a transaction: this commit waits for the WAL flush whatever the session says."""
    if is_postgres():
        database.execute_sql("SET LOCAL synchronous_commit = on")


def is_postgres() -> bool:
    return isinstance(database.obj, peewee.PostgresqlDatabase)


def release_connection() -> None:
    """Give this thread's connection back to the pool (a no-op when it holds none)."""
    if not database.is_closed():
        database.close()


def ping() -> None:
    """Raise unless the database answers a trivial query."""
    try:
        database.execute_sql("SELECT 1")
    finally:
        release_connection()


def write_transaction() -> AbstractContextManager[Any]:
    """A transaction that will write: on SQLite it takes the write lock up front (IMMEDIATE),
    so a read-then-write never fails half-way with "database is locked"."""
    if isinstance(database.obj, peewee.SqliteDatabase):
        return database.atomic(lock_type="IMMEDIATE")
    return database.atomic()


def tuples(query: Any) -> list[tuple[Any, ...]]:
    """A query's rows as plain tuples (peewee's stubs type `.tuples()` as model rows)."""
    return list(query.tuples())


def first_dict(query: Any) -> dict[str, Any]:
    """A query's first row as a dict."""
    return dict(query.dicts().get())
