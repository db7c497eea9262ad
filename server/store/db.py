"""The database: one proxy every model uses, opened from a URL (SQLite WAL or pooled PostgreSQL).

Losing the database is survivable: a connection the server dropped (a restart, a cut network
path) is never handed out again by the PostgreSQL pool, since every check-out first proves the
connection answers; connecting gives up after CONNECT_TIMEOUT seconds and TCP keepalives find
a silently dead peer. Callers see peewee's OperationalError / InterfaceError meanwhile, which
the RPC layer answers as UNAVAILABLE; once the database is back the next check-out connects.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar
from urllib.parse import urlparse

import peewee
import psycopg2
from playhouse import db_url
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase
from psycopg2 import extensions as pg_extensions

database = peewee.DatabaseProxy()

_POSTGRES_SCHEMES = {"postgres", "postgresql"}
SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",
    "busy_timeout": 15000,  # ms a writer waits for the lock before "database is locked"
    "foreign_keys": 1,
}
CONNECT_TIMEOUT = 5  # seconds: an unreachable PostgreSQL fails a call fast instead of hanging it
# libpq keepalives: an idle pooled connection whose peer vanished without a word (no RST) is
# found dead within about idle + interval * count seconds instead of the kernel's two hours.
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
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


class LivePooledPostgresqlDatabase(PooledPostgresqlDatabase):
    """A pool that looks at a connection before handing it out.

    psycopg2 only learns that the server went away when a query fails on the connection, so
    an idle pooled connection still looks open after a PostgreSQL restart or a cut network
    path. peewee 4 pings it with SELECT 1 on every check-out, a round trip under the pool's
    lock; here the socket itself is asked whether the server has said goodbye. A path that
    died without a word (no FIN, no RST) is left to the TCP keepalives below."""

    def _is_closed(self, conn: Any) -> bool:
        if conn.closed or conn.get_transaction_status() != pg_extensions.TRANSACTION_STATUS_IDLE:
            return True  # gone, or left mid-transaction: never worth handing out
        # An idle connection has nothing to read: anything readable is the server's goodbye
        # (a restart's FATAL message, EOF, a reset). Asking the socket costs no round trip,
        # where a SELECT 1 did, inside the pool's lock, on every RPC (py-spy, bench/rpc.py).
        try:
            readable, _, _ = select.select([conn.fileno()], [], [], 0)
        except (OSError, ValueError, psycopg2.Error):
            return True
        return bool(readable)


def _postgres(url: str, pool_size: int, async_commit: bool) -> peewee.Database:
    # The URL's own query parameters (e.g. ?connect_timeout=2) win over these defaults.
    params: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT, **_KEEPALIVES}
    params.update(db_url.parse(url))
    if async_commit:
        params["options"] = "-c synchronous_commit=off"
    return LivePooledPostgresqlDatabase(
        max_connections=pool_size,
        stale_timeout=300,
        timeout=30,  # seconds a caller waits for a free pooled connection
        field_types={"JSONDOC": "JSONB"},
        **params,
    )


def open_database(url: str, pool_size: int = 20, *, async_commit: bool = False) -> peewee.Database:
    """Open the database named by `url` and point every model at it.

    `async_commit` (PostgreSQL, for workers): commits return before the WAL is flushed. A
    PostgreSQL crash can then lose the last fraction of a second of commits, never corrupt
    anything; code whose commit must survive that (marking rows in flight before a send)
    says `SET LOCAL synchronous_commit = on` in its transaction (`server.store.leases.take`)."""
    scheme = urlparse(url).scheme
    if scheme.startswith("sqlite"):
        db = _sqlite(url, pool_size)
    elif scheme in _POSTGRES_SCHEMES:
        db = _postgres(url, pool_size, async_commit)
    else:
        raise DatabaseURLError(
            f"unsupported DATABASE_URL scheme {scheme!r}: use sqlite or postgresql"
        )
    database.initialize(db)
    return db


def is_postgres() -> bool:
    return isinstance(database.obj, peewee.PostgresqlDatabase)


# The database is unreachable or dropped the connection (a restart, a cut network): worth
# waiting out, unlike a constraint violation or a bad statement. psycopg2's own classes too:
# statements sent through a raw cursor come back unmapped.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    peewee.OperationalError,
    peewee.InterfaceError,
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
)


def decodes_natively() -> bool:
    """True when raw driver rows come back decoded (psycopg2: JSON as Python values, booleans
    as bool); SQLite hands back JSON text and booleans as 0/1."""
    return is_postgres()


Q = TypeVar("Q", bound=peewee.Query)


def locked(query: Q, mode: str = "FOR UPDATE") -> Q:
    """On PostgreSQL, lock the rows `query` reads until the transaction ends (FOR UPDATE, or
    FOR SHARE against a concurrent delete). SQLite's write transactions already run one at a
    time, and it has no row locks to ask for."""
    if not is_postgres():
        return query
    return query.for_update(mode)  # type: ignore[attr-defined,no-any-return]


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


# peewee raises its own classes (IntegrityError, OperationalError...) for the statements it
# runs, and the RPC layer maps those; a driver cursor's errors go through the same table.
# ExceptionWrapper and EXCEPTIONS are the objects peewee's own execute_sql uses: public names,
# if undocumented (peewee's major version is pinned in pyproject.toml).
_DRIVER_ERRORS = peewee.ExceptionWrapper(peewee.EXCEPTIONS)  # type: ignore[attr-defined]


@contextmanager
def driver_cursor() -> Iterator[Any]:
    """A cursor of the driver itself (psycopg2 or sqlite3) on this thread's connection, for what
    peewee cannot say (executemany, COPY, execute_values, mogrify). Its errors are raised as
    peewee's, as for any other query, and it is closed at the end."""
    cursor = database.cursor()  # a failure to connect is already peewee's
    with _DRIVER_ERRORS:
        try:
            yield cursor
        finally:
            cursor.close()


def sql_literals(*values: Any) -> list[str]:
    """PostgreSQL: each value quoted as an SQL literal by the driver, with `%` doubled: for the
    fixed parts of a statement psycopg2 formats once more (`execute_values`' query and row
    template), where a lone `%` would be taken for a placeholder."""
    with driver_cursor() as cursor:
        return [cursor.mogrify("%s", (v,)).decode().replace("%", "%%") for v in values]


def tuples(query: Any) -> list[tuple[Any, ...]]:
    """A query's rows as plain tuples (peewee's stubs type `.tuples()` as model rows)."""
    return list(query.tuples())


def first_dict(query: Any) -> dict[str, Any]:
    """A query's first row as a dict."""
    return dict(query.dicts().get())


# Stand-ins for a CachedSelect's arguments while its SQL is built: values no real query holds.
_MARKERS = tuple(-7_340_000_000_000_000_001 - i for i in range(8))


class CachedSelect:
    """A select run often with different integer arguments, its SQL built once per dialect.

    peewee renders a query's SQL on every execution: for a campaign's columns and its edition's
    that took more CPU than the database round trip of a GetCampaign (BENCHMARKS.md, "Where
    the time went"). `build(*args)` makes the query; it is built once with marker values, and
    each run puts the real arguments where the markers landed among the parameters."""

    def __init__(self, build: Callable[..., Any]) -> None:
        self._build = build
        self._compiled: dict[type, tuple[Any, str, list[Any], list[int | None]]] = {}

    def _compile(self, arity: int) -> tuple[Any, str, list[Any], list[int | None]]:
        kind = type(database.obj)  # the SQL differs per dialect: placeholders, quoting
        compiled = self._compiled.get(kind)
        if compiled is None:
            markers = _MARKERS[:arity]
            query = self._build(*markers)
            sql, params = query.sql()
            slots = [markers.index(p) if p in markers else None for p in params]
            compiled = self._compiled[kind] = (query, sql, params, slots)
        return compiled

    def rows(self, *args: int) -> Iterable[Any]:
        """The query's rows (models, dicts or tuples, as the query says) for these arguments."""
        query, sql, params, slots = self._compile(len(args))
        bound = [p if slot is None else args[slot] for p, slot in zip(params, slots, strict=True)]
        # The query's own row wrapper: the same models/dicts and value conversions as
        # iterating the query would give. A private method, kept on purpose: peewee has no
        # public way to run SQL it did not render and still get a select's rows (Model.raw
        # would not rebuild the joined Edition, and maps columns by name, not by the select).
        # It has been there since peewee 3.0; the `<5` pin and the GetCampaign tests hold it.
        return query._get_cursor_wrapper(database.execute_sql(sql, bound))  # type: ignore[no-any-return]
