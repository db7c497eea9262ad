"""Recording what happened to each message in the ledger: one statement (PostgreSQL) or one
transaction (SQLite) per group, together with the campaign's counters, so `sent_count` and
`failed_count` always equal the ledger. Only rows still held by the caller (lease owner, status
sending) are updated. What each outcome makes of a row is decided by `jobs.sending.outcomes`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from psycopg2.extras import execute_values

from server.store.db import driver_cursor, is_postgres, sql_literals, write_transaction
from server.store.models import Campaign, DeliveryStatus, utcnow

# (id, provider_message_id, last_error, next_attempt_at, sent_at, attempts spent)
Row = tuple[int, str | None, str, dt.datetime | None, dt.datetime | None, int]

# What each kind of outcome (`jobs.sending.outcomes.KINDS`) makes of the row.
STATUS = {
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
        for kind in STATUS:
            setattr(self, kind, getattr(self, kind) + getattr(other, kind))


def _record_postgres(campaign_id: int, owner: str, groups: dict[str, list[Row]]) -> Tally:
    """One round trip for the whole group."""
    # execute_values wants exactly one %s (the VALUES list): bind the rest beforehand.
    now, held_by, campaign = sql_literals(utcnow(), owner, campaign_id)
    rows = [(r[0], kind, STATUS[kind], *r[1:]) for kind, group in groups.items() for r in group]
    if not rows:
        return Tally()
    with driver_cursor() as cursor:
        counts = execute_values(
            cursor,
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
    with driver_cursor() as cursor:
        cursor.executemany(_SQLITE_UPDATE, params)
        return int(cursor.rowcount)


def record(campaign_id: int, owner: str, groups: dict[str, list[Row]]) -> Tally:
    """Write every row of `groups` (kind -> rows) held by `owner`; the counts that landed."""
    if is_postgres():
        return _record_postgres(campaign_id, owner, groups)
    tally = Tally()
    with write_transaction():
        for kind, rows in groups.items():
            if rows:
                setattr(tally, kind, _apply_sqlite(STATUS[kind], rows, owner))
        Campaign.update(
            sent_count=Campaign.sent_count + tally.sent,
            failed_count=Campaign.failed_count + tally.failed,
            heartbeat_at=utcnow(),
        ).where(Campaign.id == campaign_id).execute()
    return tally
