"""Writing one chunk of imported users (`server.audience.imports`): the upsert by (organization_id,
external_id) and the edition memberships, inside the caller's transaction.

On PostgreSQL the chunk is one INSERT ... ON CONFLICT DO UPDATE ... RETURNING whose VALUES list
psycopg2's execute_values renders in C. peewee's insert_many rendered the same SQL value by
value in Python, a large part of an import's time, and two more look-ups (which keys existed,
then their ids) were round trips of their own (BENCHMARKS.md, ImportUsers). RETURNING gives
the ids, and `xmax = 0` tells a row this statement inserted from one it
updated (an updated row's new version carries this transaction's id as its lock). SQLite keeps
the peewee statements: it is the small-installation backend.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Collection, Sequence
from typing import Any

import peewee as pw
from psycopg2.extras import execute_values

from server.store.db import driver_cursor, is_postgres, sql_literals, tuples
from server.store.models import USER_FIELDS, User, UserEdition

# An unsubscribe recorded here is never undone by an import: OR, not overwrite.
_KEPT = ("email_unsubscribed", "sms_unsubscribed")
# The columns an import sets; a re-import overwrites them (unsubscribes aside, see _KEPT):
# email, phone, the names, language, attributes and the consents.
IMPORTED = tuple(name for name in USER_FIELDS if name not in ("id", "external_id", *_KEPT))
# Rows carry their attributes serialised too, from the import's size check: PostgreSQL stores
# that text (JSONB parses it), sparing a second json.dumps per row; SQLite stores the dict.
ATTRIBUTES_JSON = "attributes_json"
# What differs from row to row, in _COLUMNS' order (organization_id comes before them,
# erased_at, created and modified after); a row's values hold the attributes as JSON text.
_PER_ROW = ("external_id", *IMPORTED, *_KEPT)
_COLUMNS = ("organization_id", *_PER_ROW, "erased_at", "created", "modified")
_ROW_VALUES = operator.itemgetter(*(ATTRIBUTES_JSON if c == "attributes" else c for c in _PER_ROW))
_OVERWRITTEN = (*IMPORTED, "modified", "erased_at")
_UPSERT_SQL = (
    'INSERT INTO "users" (' + ", ".join(f'"{c}"' for c in _COLUMNS) + ") VALUES %s "
    'ON CONFLICT ("organization_id", "external_id") DO UPDATE SET '
    + ", ".join(
        [f'"{c}" = EXCLUDED."{c}"' for c in _OVERWRITTEN]
        + [f'"{c}" = ("users"."{c}" OR EXCLUDED."{c}")' for c in _KEPT]
    )
    + ' RETURNING "external_id", "id", ("xmax" = 0)'
)
_MEMBERSHIP_SQL = (
    'INSERT INTO "user_edition" ("user_id", "edition_id") VALUES %s ON CONFLICT DO NOTHING'
)


def upsert(
    organization_id: int, rows: Sequence[dict[str, Any]], now: dt.datetime
) -> tuple[dict[str, int], int]:
    """Insert or update `rows` (column values keyed by name, external_ids distinct): each
    external_id's user id, and how many of them were new."""
    if is_postgres():
        return _upsert_postgres(organization_id, rows, now)
    return _upsert_peewee(organization_id, rows, now)


def add_memberships(pairs: Collection[tuple[int, int]]) -> None:
    """Put users in editions, (user_id, edition_id) pairs; existing memberships stay as they are."""
    if not pairs:
        return
    if is_postgres():
        _execute_values(_MEMBERSHIP_SQL, list(pairs))
        return
    UserEdition.insert_many(
        [{"user": u, "edition": e} for u, e in pairs]
    ).on_conflict_ignore().as_rowcount().execute()


def _upsert_postgres(
    organization_id: int, rows: Sequence[dict[str, Any]], now: dt.datetime
) -> tuple[dict[str, int], int]:
    values = list(map(_ROW_VALUES, rows))
    # The chunk's constant columns are rendered once into the row template rather than once
    # per row: psycopg2 adapts a datetime slowly, and these would be adapted for every row.
    # erased_at is NULL: re-importing an erased user's external_id makes them current again.
    constants = sql_literals(organization_id, now)
    per_row = ", ".join(["%s"] * len(_PER_ROW))
    template = f"({constants[0]}, {per_row}, NULL, {constants[1]}, {constants[1]})"
    returned = _execute_values(_UPSERT_SQL, values, template, fetch=True)
    ids = {external_id: user_id for external_id, user_id, _ in returned}
    return ids, sum(1 for *_, inserted in returned if inserted)


def _execute_values(
    sql: str, values: list[tuple[Any, ...]], template: str | None = None, fetch: bool = False
) -> list[Any]:
    """One statement for all `values` (page_size), so RETURNING covers every row; psycopg2's
    errors become peewee's, as for any other query (the RPC layer maps those to statuses)."""
    with driver_cursor() as cursor:
        return execute_values(cursor, sql, values, template, page_size=len(values), fetch=fetch)


def _upsert_peewee(
    organization_id: int, rows: Sequence[dict[str, Any]], now: dt.datetime
) -> tuple[dict[str, int], int]:
    keys = [row["external_id"] for row in rows]
    existing = _ids(organization_id, keys)
    fixed = {"organization_id": organization_id, "created": now, "modified": now, "erased_at": None}
    User.insert_many(
        [{k: v for k, v in row.items() if k != ATTRIBUTES_JSON} | fixed for row in rows]
    ).on_conflict(
        conflict_target=[User.organization_id, User.external_id],
        preserve=[getattr(User, name) for name in _OVERWRITTEN],
        update={getattr(User, c): getattr(User, c) | getattr(pw.EXCLUDED, c) for c in _KEPT},
    ).as_rowcount().execute()  # not RETURNING a thousand ids nobody reads
    return _ids(organization_id, keys), len(keys) - len(existing)


def _ids(organization_id: int, keys: list[str]) -> dict[str, int]:
    query = User.select(User.external_id, User.id).where(
        (User.organization_id == organization_id) & User.external_id.in_(keys)
    )
    return dict(tuples(query))
