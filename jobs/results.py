"""Record what happened to each message: sent, failed, ambiguous, or back to pending.

Outcomes are written per kind in one transaction together with the campaign's counters, so
`sent_count` and `failed_count` always equal the ledger. Only rows still held by this worker
(lease owner, status sending) are updated. Every outcome spends one attempt except a deferred
one (the circuit was open, nothing went out). Transient failures come back after an
exponential backoff with jitter, never sooner than the provider's Retry-After; an ambiguous
send (it may have been delivered) is final and never retried.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass

from psycopg2.extras import execute_values

from jobs.claims import Claimed
from jobs.providers import Outcome, SendResult
from server.config import DeliverySettings
from server.db import database, is_postgres, sql_literals, write_transaction
from server.models import Campaign, DeliveryStatus, utcnow

# (id, provider_message_id, last_error, next_attempt_at, sent_at, attempts spent)
Row = tuple[int, str | None, str, dt.datetime | None, dt.datetime | None, int]

# What each kind of outcome makes of the row.
KINDS = {
    "sent": DeliveryStatus.SENT,
    "failed": DeliveryStatus.FAILED,
    "retried": DeliveryStatus.PENDING,
    "deferred": DeliveryStatus.PENDING,
    "ambiguous": DeliveryStatus.AMBIGUOUS,
}

# PostgreSQL: every outcome of a group and the campaign's counters in one statement (one
# statement is its own transaction: no BEGIN/COMMIT round trips). `v.kind` tells apart the
# outcomes that land on the same status (retried and deferred are both pending again).
_PG_RECORD = (
    "WITH v(id, kind, status, pmid, err, nat, sent_at, spent) AS (VALUES %s),"
    " done AS (UPDATE delivery SET status = v.status, provider_message_id = v.pmid,"
    " last_error = v.err, next_attempt_at = v.nat, sent_at = v.sent_at,"
    " attempts = attempts + v.spent, lease_owner = NULL, lease_expires_at = NULL,"
    " modified = {now} FROM v WHERE delivery.id = v.id AND delivery.lease_owner = {owner}"
    " AND delivery.status = 'sending' RETURNING v.kind),"
    " counters AS (UPDATE campaign SET"
    " sent_count = sent_count + (SELECT count(*) FROM done WHERE kind = 'sent'),"
    " failed_count = failed_count + (SELECT count(*) FROM done WHERE kind = 'failed'),"
    " heartbeat_at = {now} WHERE id = {campaign})"
    " SELECT kind, count(*) FROM done GROUP BY kind"
)
_SQLITE_UPDATE = (
    "UPDATE delivery SET status = :status, provider_message_id = :pmid, last_error = :err,"
    " next_attempt_at = :nat, sent_at = :sent_at, attempts = attempts + :spent,"
    " lease_owner = NULL, lease_expires_at = NULL, modified = :now"
    " WHERE id = :id AND lease_owner = :owner AND status = 'sending'"
)


@dataclass
class Tally:
    sent: int = 0
    failed: int = 0
    retried: int = 0
    deferred: int = 0
    ambiguous: int = 0

    def add(self, other: Tally) -> None:
        for kind in KINDS:
            setattr(self, kind, getattr(self, kind) + getattr(other, kind))


def backoff(attempt: int, settings: DeliverySettings) -> dt.timedelta:
    """Exponential with "equal" jitter (between half the ceiling and the ceiling): retries of
    many recipients don't land together, and none comes back much sooner than planned."""
    ceiling = min(settings.retry_max_seconds, settings.retry_base_seconds * 2**attempt)
    return dt.timedelta(seconds=random.uniform(ceiling / 2, ceiling))


def retry_delay(attempt: int, result: SendResult, settings: DeliverySettings) -> dt.timedelta:
    """The backoff, but never sooner than the provider asked (Retry-After, capped)."""
    floor = min(result.retry_after, settings.retry_max_seconds)
    return max(backoff(attempt, settings), dt.timedelta(seconds=floor))


def _place(
    row: Claimed, result: SendResult, settings: DeliverySettings, now: dt.datetime
) -> tuple[str, Row]:
    """The kind of outcome and the row's new values."""
    if result.outcome == Outcome.SENT:
        return "sent", (row.id, result.provider_message_id, "", None, now, 1)
    if result.outcome == Outcome.DEFERRED:  # never attempted: the attempt is not spent
        resume = now + dt.timedelta(seconds=result.retry_after)
        return "deferred", (row.id, None, result.error, resume, None, 0)
    if result.outcome == Outcome.AMBIGUOUS:
        return "ambiguous", (row.id, None, result.error, None, None, 1)
    if result.outcome == Outcome.TRANSIENT and row.attempts + 1 < settings.max_attempts:
        retry_at = now + retry_delay(row.attempts, result, settings)
        return "retried", (row.id, None, result.error, retry_at, None, 1)
    error = (
        result.error
        if result.outcome == Outcome.PERMANENT
        else f"gave up after {row.attempts + 1} attempts: {result.error}"
    )
    return "failed", (row.id, None, error, None, None, 1)


def _classify(
    items: Sequence[tuple[Claimed, SendResult]], settings: DeliverySettings
) -> dict[str, list[Row]]:
    now = utcnow()
    groups: dict[str, list[Row]] = {kind: [] for kind in KINDS}
    for row, result in items:
        kind, values = _place(row, result, settings, now)
        groups[kind].append(values)
    return groups


def _record_postgres(campaign_id: int, owner: str, groups: dict[str, list[Row]]) -> Tally:
    """One round trip for the whole group."""
    # execute_values wants exactly one %s (the VALUES list): bind the rest beforehand.
    now, held_by, campaign = sql_literals(utcnow(), owner, campaign_id)
    rows = [(r[0], kind, KINDS[kind], *r[1:]) for kind, group in groups.items() for r in group]
    if not rows:
        return Tally()
    counts = execute_values(
        database.cursor(),
        _PG_RECORD.format(now=now, owner=held_by, campaign=campaign),
        rows,
        template="(%s, %s, %s, %s, %s, %s::timestamp, %s::timestamp, %s::int)",
        fetch=True,
    )
    tally = Tally()
    for kind, n in counts:  # a group of over 100 rows goes as several statements
        setattr(tally, kind, getattr(tally, kind) + n)
    return tally


def _text(value: dt.datetime | None) -> str | None:
    return None if value is None else str(value)  # the form peewee stores in SQLite


def _apply_sqlite(status: str, rows: list[Row], owner: str) -> int:
    now = _text(utcnow())
    params = [
        {
            "status": status,
            "pmid": pmid,
            "err": err,
            "nat": _text(nat),
            "sent_at": _text(sent_at),
            "spent": spent,
            "id": id_,
            "owner": owner,
            "now": now,
        }
        for id_, pmid, err, nat, sent_at, spent in rows
    ]
    cursor = database.cursor()
    cursor.executemany(_SQLITE_UPDATE, params)
    return int(cursor.rowcount)


def record(
    campaign_id: int,
    owner: str,
    items: Sequence[tuple[Claimed, SendResult]],
    settings: DeliverySettings,
) -> Tally:
    groups = _classify(items, settings)
    if is_postgres():
        return _record_postgres(campaign_id, owner, groups)
    tally = Tally()
    with write_transaction():
        for kind, rows in groups.items():
            if rows:
                setattr(tally, kind, _apply_sqlite(KINDS[kind], rows, owner))
        Campaign.update(
            sent_count=Campaign.sent_count + tally.sent,
            failed_count=Campaign.failed_count + tally.failed,
            heartbeat_at=utcnow(),
        ).where(Campaign.id == campaign_id).execute()
    return tally
