"""The delivery ledger's SQL: freeze recipients, skip the ones not to send, count, and reap
leases of workers that died. Taking rows to send is `server.store.leases`; recording what
happened to them is `server.store.outcomes`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Sequence

import peewee as pw

from server.core.status import Status
from server.store.db import driver_cursor, is_postgres, tuples, write_transaction
from server.store.models import IN_FLIGHT as IN_FLIGHT  # re-exported: count(id, IN_FLIGHT)
from server.store.models import (
    Campaign,
    Delivery,
    DeliveryStatus,
    SkipReason,
    Suppression,
    utcnow,
)

D = Delivery


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
    with driver_cursor() as cursor:
        cursor.executemany(
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
    with write_transaction(), driver_cursor() as cursor:
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


def skip_pending(campaign_id: int, reason: SkipReason) -> int:
    """Close every row still waiting (a cancelled campaign's unsent recipients)."""
    return int(
        D.update(status=DeliveryStatus.SKIPPED, skip_reason=reason, modified=utcnow())
        .where((D.campaign == campaign_id) & (D.status == DeliveryStatus.PENDING))
        .execute()
    )


def reap(campaign_id: int) -> tuple[int, int]:
    """Expired leases: rows left in sending become ambiguous (they may have been delivered)
    and are never sent again. Claimed rows, which earlier versions held before marking them
    sending, go back to pending (nothing was sent)."""
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


def cancelled_with_rows_left(now: dt.datetime, limit: int = 100) -> list[int]:
    """Cancelled campaigns with rows that will never move by themselves: pending, or held
    under a lease that has expired (its worker is gone)."""
    stuck = D.select(D.id).where(
        (D.campaign == Campaign.id)
        & (
            (D.status == DeliveryStatus.PENDING)
            | (
                D.status.in_([DeliveryStatus.CLAIMED, DeliveryStatus.SENDING])
                & (D.lease_expires_at < now)
            )
        )
    )
    query = (
        Campaign.select(Campaign.id)
        .where((Campaign.status == Status.CANCELLED) & pw.fn.EXISTS(stuck))
        .limit(limit)
    )
    return [int(c.id) for c in query]


def discard(campaign_id: int) -> int:
    """Drop a ledger that never started sending (its calculation failed): pending and skipped
    rows only, so nothing that went out is ever forgotten."""
    return int(
        D.delete()
        .where(
            (D.campaign == campaign_id)
            & D.status.in_([DeliveryStatus.PENDING, DeliveryStatus.SKIPPED])
        )
        .execute()
    )
