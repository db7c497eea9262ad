"""The delivery ledger's SQL: freeze recipients, claim rows under a lease, mark them in
flight, record outcomes, and reap leases of workers that died.

Every update after a claim is conditional on still holding the lease (`lease_owner`), so a
worker that lost its rows to the reaper can never overwrite what another worker did.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import peewee as pw

from server.db import database, is_postgres, tuples, write_transaction
from server.models import Delivery, DeliveryStatus, SkipReason, Suppression, User, utcnow

D = Delivery
IN_FLIGHT = (DeliveryStatus.PENDING, DeliveryStatus.CLAIMED, DeliveryStatus.SENDING)


@dataclass(frozen=True)
class Claimed:
    id: int
    user_id: int
    address: str
    attempts: int


@contextlib.contextmanager
def committed() -> Iterator[None]:
    """Around SQL that opens its own transaction (a BEGIN sent with the statement saves a
    round trip): COMMIT after it, ROLLBACK when it fails."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            database.execute_sql("ROLLBACK")
        raise
    database.execute_sql("COMMIT")


def _sql(text: str) -> str:
    """Write placeholders as %s; SQLite wants ?."""
    return text if is_postgres() else text.replace("%s", "?")


_FREEZE_COLUMNS = (
    "campaign_id",
    "user_id",
    "address",
    "status",
    "skip_reason",
    "attempts",
    "last_error",
    "created",
    "modified",
)


def freeze(rows: Sequence[tuple[int, int, str, str, str]]) -> None:
    """Insert ledger rows (campaign_id, user_id, address, status, skip_reason); a row already
    there (a re-run after a crash) is left alone. Built by the driver, not the ORM: building
    the statement through the ORM cost more than the calculation itself."""
    if not rows:
        return
    if is_postgres():
        _freeze_postgres(rows)
        return
    now = str(utcnow())
    marks = ", ".join("?" * len(_FREEZE_COLUMNS))
    database.cursor().executemany(
        f"INSERT OR IGNORE INTO delivery ({', '.join(_FREEZE_COLUMNS)}) VALUES ({marks})",
        [(*row, 0, "", now, now) for row in rows],
    )


def _freeze_postgres(rows: Sequence[tuple[int, int, str, str, str]]) -> None:
    """COPY into a scratch table, then one INSERT ... SELECT ... ON CONFLICT DO NOTHING:
    COPY itself cannot skip the rows a previous run already wrote."""
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    buffer.seek(0)
    now = utcnow()
    cursor = database.cursor()
    with write_transaction():
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS delivery_stage (campaign_id bigint, user_id bigint,"
            " address text, status text, skip_reason text) ON COMMIT DELETE ROWS"
        )
        cursor.copy_expert(
            "COPY delivery_stage FROM STDIN"
            " WITH (FORMAT csv, FORCE_NOT_NULL (address, skip_reason))",
            buffer,
        )
        cursor.execute(
            f"INSERT INTO delivery ({', '.join(_FREEZE_COLUMNS)})"
            " SELECT campaign_id, user_id, address, status, skip_reason, 0, '', %s, %s"
            " FROM delivery_stage ON CONFLICT DO NOTHING",
            (now, now),
        )


def skip_suppressed(campaign_id: int, organization_id: int, channel: str) -> int:
    # Addresses compare ignoring case, as duplicates do (mailbox case rarely matters).
    suppressed = Suppression.select(pw.fn.LOWER(Suppression.address)).where(
        (Suppression.organization_id == organization_id) & (Suppression.channel == channel)
    )
    return int(
        D.update(status=DeliveryStatus.SKIPPED, skip_reason=SkipReason.SUPPRESSED)
        .where(
            (D.campaign == campaign_id)
            & (D.status == DeliveryStatus.PENDING)
            & pw.fn.LOWER(D.address).in_(suppressed)
        )
        .execute()
    )


def skip_duplicates(campaign_id: int) -> int:
    """Keep the first row of each address (case-insensitively); skip the others."""
    first = (
        D.select(pw.fn.MIN(D.id))
        .where((D.campaign == campaign_id) & (D.status == DeliveryStatus.PENDING))
        .group_by(pw.fn.LOWER(D.address))
    )
    return int(
        D.update(status=DeliveryStatus.SKIPPED, skip_reason=SkipReason.DUPLICATE_ADDRESS)
        .where(
            (D.campaign == campaign_id) & (D.status == DeliveryStatus.PENDING) & D.id.not_in(first)
        )
        .execute()
    )


def count(campaign_id: int, statuses: Iterable[str]) -> int:
    return int(D.select().where((D.campaign == campaign_id) & D.status.in_(list(statuses))).count())


def claim(campaign_id: int, owner: str, limit: int, lease_seconds: int) -> list[Claimed]:
    """Take up to `limit` due pending rows. PostgreSQL: SKIP LOCKED lets workers claim side by
    side; SQLite: the IMMEDIATE transaction makes claims one at a time."""
    now = utcnow()
    lock = " FOR UPDATE SKIP LOCKED" if is_postgres() else ""
    sql = _sql(
        "UPDATE delivery SET status = %s, lease_owner = %s, lease_expires_at = %s, modified = %s"
        " WHERE id IN (SELECT id FROM delivery WHERE campaign_id = %s AND status = %s"
        " AND (next_attempt_at IS NULL OR next_attempt_at <= %s) ORDER BY id LIMIT %s"
        + lock
        + ") RETURNING id, user_id, address, attempts"
    )
    params = (
        DeliveryStatus.CLAIMED,
        owner,
        now + dt.timedelta(seconds=lease_seconds),
        now,
        campaign_id,
        DeliveryStatus.PENDING,
        now,
        limit,
    )
    if is_postgres():  # one statement is a transaction of its own: no BEGIN, no COMMIT
        rows = database.execute_sql(sql, params).fetchall()
    else:
        with write_transaction():
            rows = database.execute_sql(sql, params).fetchall()
    return sorted((Claimed(*row) for row in rows), key=lambda c: c.id)


_MARK = (
    "UPDATE delivery SET status = %s, lease_expires_at = %s WHERE lease_owner = %s"
    " AND status = %s AND id IN ({ids}) RETURNING id, user_id"
)
# PostgreSQL, in one round trip instead of five (BEGIN, SET, UPDATE, SELECT users, COMMIT
# was most of a group's database time): the mark and the recipients it hands back.
_MARK_POSTGRES = (
    "BEGIN; SET LOCAL synchronous_commit = on;"
    " WITH marked AS (" + _MARK + ")"
    " SELECT users.*, marked.id AS delivery_id"
    " FROM marked LEFT JOIN users ON users.id = marked.user_id"
)


# A users row as a named tuple with User's field names: building a model instance per
# recipient cost more than the mark's round trip.
Recipient = Any


def mark_sending(ids: Sequence[int], owner: str, lease_seconds: int) -> dict[int, Recipient]:
    """Claimed -> sending, durably, before any network call. Returns the rows still ours,
    each with its recipient (None if the user row is gone)."""
    if not ids:
        return {}
    lease = utcnow() + dt.timedelta(seconds=lease_seconds)
    params = (DeliveryStatus.SENDING, lease, owner, DeliveryStatus.CLAIMED, *ids)
    marks = ", ".join(["%s"] * len(ids))
    # Durable even on an async-commit session: if this mark were lost in a crash, the
    # reaper would hand the rows out again and a sent message could go twice.
    if is_postgres():
        with committed():  # the statement itself opens the transaction
            users = list(User.raw(_MARK_POSTGRES.format(ids=marks), *params).namedtuples())
        return {u.delivery_id: u if u.id is not None else None for u in users}
    with write_transaction():
        rows = database.execute_sql(_sql(_MARK.format(ids=marks)), params).fetchall()
    found = {u.id: u for u in User.select().where(User.id.in_([r[1] for r in rows])).namedtuples()}
    return {delivery_id: found.get(user_id) for delivery_id, user_id in rows}


def extend_lease(campaign_id: int, owner: str, lease_seconds: int) -> None:
    D.update(lease_expires_at=utcnow() + dt.timedelta(seconds=lease_seconds)).where(
        (D.campaign == campaign_id)
        & (D.lease_owner == owner)
        & D.status.in_([DeliveryStatus.CLAIMED, DeliveryStatus.SENDING])
    ).execute()


def release(ids: Sequence[int], owner: str) -> None:
    """Give claimed rows back untouched (the campaign was cancelled, or the job stops)."""
    if ids:
        D.update(status=DeliveryStatus.PENDING, lease_owner=None, lease_expires_at=None).where(
            (D.lease_owner == owner) & (D.status == DeliveryStatus.CLAIMED) & D.id.in_(list(ids))
        ).execute()


def skip_pending(campaign_id: int, reason: SkipReason) -> int:
    """Close every row still waiting (a cancelled campaign's unsent recipients)."""
    return int(
        D.update(status=DeliveryStatus.SKIPPED, skip_reason=reason, modified=utcnow())
        .where((D.campaign == campaign_id) & (D.status == DeliveryStatus.PENDING))
        .execute()
    )


def reap(campaign_id: int) -> tuple[int, int]:
    """Expired leases: claimed rows go back to pending (nothing was sent); rows left in
    sending become ambiguous (they may have been delivered) and are never sent again."""
    now = utcnow()
    expired = (D.campaign == campaign_id) & (D.lease_expires_at < now)
    with write_transaction():
        returned = (
            D.update(
                status=DeliveryStatus.PENDING, lease_owner=None, lease_expires_at=None, modified=now
            )
            .where(expired & (D.status == DeliveryStatus.CLAIMED))
            .execute()
        )
        ambiguous = (
            D.update(
                status=DeliveryStatus.AMBIGUOUS,
                lease_owner=None,
                lease_expires_at=None,
                modified=now,
                last_error="worker lost while sending: may have been delivered",
            )
            .where(expired & (D.status == DeliveryStatus.SENDING))
            .execute()
        )
    return int(returned), int(ambiguous)


def next_retry_at(campaign_id: int) -> dt.datetime | None:
    value = (
        D.select(pw.fn.MIN(D.next_attempt_at))
        .where((D.campaign == campaign_id) & (D.status == DeliveryStatus.PENDING))
        .scalar()
    )
    # SQLite hands an aggregate back as text: let the field parse it.
    return D.next_attempt_at.python_value(value) if value else None


def totals(campaign_id: int) -> dict[str, int]:
    query = (
        D.select(D.status, pw.fn.COUNT(D.id)).where(D.campaign == campaign_id).group_by(D.status)
    )
    return {status: int(n) for status, n in tuples(query)}


def most_common_error(campaign_id: int) -> str:
    row = (
        D.select(D.last_error, pw.fn.COUNT(D.id).alias("n"))
        .where((D.campaign == campaign_id) & (D.status == DeliveryStatus.FAILED))
        .group_by(D.last_error)
        .order_by(pw.SQL("n DESC"))
        .limit(1)
        .tuples()
        .first()
    )
    return str(row[0]) if row else ""


def claimable(campaign_id: int) -> bool:
    """Is there a pending row due now?"""
    now = utcnow()
    return bool(
        D.select()
        .where(
            (D.campaign == campaign_id)
            & (D.status == DeliveryStatus.PENDING)
            & (D.next_attempt_at.is_null() | (D.next_attempt_at <= now))
        )
        .exists()
    )
