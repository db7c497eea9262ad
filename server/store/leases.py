"""Taking ledger rows to send: a group of due rows goes straight to "sending" under a lease,
durably, together with the recipients the messages are rendered for.

"sending" is written and flushed before any network call: a worker that dies after it
leaves rows the reaper makes ambiguous (they may have gone out), never rows that are
handed out again. Every later update is conditional on still holding the lease
(`lease_owner`), so a worker that lost its rows can never overwrite another's work.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from server.store.db import database, is_postgres, write_transaction
from server.store.models import Delivery, DeliveryStatus, User, utcnow

D = Delivery

# A users row as a named tuple with User's field names (None when the user row is gone):
# building a model instance per recipient cost more than the statement that fetched it.
Recipient = Any


@dataclass(frozen=True)
class LeasedRow:
    id: int
    user_id: int
    address: str
    attempts: int


_TAKE = (
    "UPDATE delivery SET status = %s, lease_owner = %s, lease_expires_at = %s, modified = %s"
    " WHERE id IN (SELECT id FROM delivery WHERE campaign_id = %s AND status = %s"
    " AND (next_attempt_at IS NULL OR next_attempt_at <= %s) ORDER BY id LIMIT %s{lock})"
    " RETURNING id, user_id, address, attempts"
)
# PostgreSQL: one round trip and a COMMIT. BEGIN and SET LOCAL travel with the statement
# (separately they were round trips of their own, most of a group's database time); SKIP
# LOCKED lets workers take rows side by side.
_TAKE_POSTGRES = (
    "BEGIN; SET LOCAL synchronous_commit = on;"
    " WITH taken AS (" + _TAKE.format(lock=" FOR UPDATE SKIP LOCKED") + ")"
    " SELECT taken.id AS delivery_id, taken.user_id AS delivery_user_id,"
    " taken.address AS delivery_address, taken.attempts AS delivery_attempts, users.*"
    " FROM taken LEFT JOIN users ON users.id = taken.user_id ORDER BY taken.id"
)


@contextlib.contextmanager
def committed() -> Iterator[None]:
    """Around SQL that opens its own transaction: COMMIT after it, ROLLBACK when it fails."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            database.execute_sql("ROLLBACK")
        raise
    database.execute_sql("COMMIT")


def take(
    campaign_id: int, owner: str, limit: int, lease_seconds: int
) -> list[tuple[LeasedRow, Recipient]]:
    """Up to `limit` due pending rows, now "sending" and ours, lowest ids first, each with
    its recipient. The commit is durable even on an async-commit session: were it lost in a
    crash, the rows would be pending again and a sent message could go twice."""
    now = utcnow()
    params = (
        DeliveryStatus.SENDING,
        owner,
        now + dt.timedelta(seconds=lease_seconds),
        now,
        campaign_id,
        DeliveryStatus.PENDING,
        now,
        limit,
    )
    if is_postgres():
        with committed():
            rows = list(User.raw(_TAKE_POSTGRES, *params).namedtuples())
        return [(_leased_row(r), r if r.id is not None else None) for r in rows]
    # SQLite: the IMMEDIATE transaction makes takes one at a time; commits are durable.
    with write_transaction():
        taken = database.execute_sql(_TAKE.format(lock="").replace("%s", "?"), params).fetchall()
        users = User.select().where(User.id.in_([t[1] for t in taken])).namedtuples()
        found = {u.id: u for u in users}
    return sorted(((LeasedRow(*t), found.get(t[1])) for t in taken), key=lambda pair: pair[0].id)


def _leased_row(row: Any) -> LeasedRow:
    return LeasedRow(
        row.delivery_id, row.delivery_user_id, row.delivery_address, row.delivery_attempts
    )


def extend_lease(campaign_id: int, owner: str, lease_seconds: int) -> None:
    """Keep the rows still held; a lease left to expire makes them ambiguous."""
    D.update(lease_expires_at=utcnow() + dt.timedelta(seconds=lease_seconds)).where(
        (D.campaign == campaign_id)
        & (D.lease_owner == owner)
        & D.status.in_([DeliveryStatus.CLAIMED, DeliveryStatus.SENDING])
    ).execute()
