"""Versioned schema migrations: each step runs once, in order, and keeps existing data.

Add a step by appending a function to STEPS; never edit one that has shipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import peewee as pw
from playhouse.migrate import SchemaMigrator
from playhouse.migrate import migrate as migrate_schema

from server.store import models
from server.store.db import database, is_postgres, write_transaction

log = logging.getLogger(__name__)

# Any constant will do: it only has to be the same in every process that migrates.
_PG_LOCK_KEY = 7_305_112_001


def _v1_initial(db: pw.Database) -> None:
    db.create_tables(
        [models.Edition, models.Campaign, models.Delivery, models.IdempotencyKey], safe=True
    )


def _v2_audience_and_content(db: pw.Database) -> None:
    db.create_tables(
        [models.User, models.UserEdition, models.Segment, models.EmailMessage], safe=True
    )


def _add_columns(db: pw.Database, table: str, columns: dict[str, pw.Field]) -> None:
    """ALTER TABLE ADD COLUMN for each column the table lacks, so existing rows are kept.
    (A database created fresh at v1 already has them: v1 creates tables from today's models.)"""
    present = {column.name for column in db.get_columns(table)}
    migrator = SchemaMigrator.from_database(db)
    operations = [
        migrator.add_column(table, name, field)
        for name, field in columns.items()
        if name not in present
    ]
    if operations:
        migrate_schema(*operations)


def _v3_delivery_engine(db: pw.Database) -> None:
    _add_columns(db, "delivery", {"address": pw.CharField(max_length=320, default="")})
    _add_columns(db, "campaign", {"heartbeat_at": pw.DateTimeField(null=True)})
    db.create_tables([models.Suppression], safe=True)


def _v4_delivery_events(db: pw.Database) -> None:
    db.create_tables([models.DeliveryEvent], safe=True)
    db.execute_sql(
        "CREATE INDEX IF NOT EXISTS delivery_provider_message_id ON delivery (provider_message_id)"
    )


def _v5_claim_index(db: pw.Database) -> None:
    db.execute_sql(
        "CREATE INDEX IF NOT EXISTS delivery_campaign_id_status_id"
        " ON delivery (campaign_id, status, id)"
    )
    db.execute_sql("DROP INDEX IF EXISTS delivery_campaign_id_status")
    # Redundant with the unique (campaign_id, user_id) index; every ledger insert paid for it.
    db.execute_sql("DROP INDEX IF EXISTS delivery_campaign_id")


def _v6_listing_indexes(db: pw.Database) -> None:
    # Every scoped list filters by organization and shows the newest first by default.
    db.execute_sql(
        "CREATE INDEX IF NOT EXISTS campaign_organization_id_created_id"
        " ON campaign (organization_id, created, id)"
    )
    if is_postgres():
        _trigram_index(db)


def _trigram_index(db: pw.Database) -> None:
    """ListCampaigns' `search` is LOWER(name) LIKE '%term%': only a trigram index serves
    that. pg_trgm ships with PostgreSQL and is a trusted extension, but a role that may not
    create it still gets a working (slower, scanning) search, so failing here is logged."""
    try:
        with db.atomic():  # a savepoint: a refusal must not abort the migration
            db.execute_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            db.execute_sql(
                "CREATE INDEX IF NOT EXISTS campaign_name_trgm"
                " ON campaign USING gin (LOWER(name) gin_trgm_ops)"
            )
    except pw.DatabaseError as exc:
        log.warning("search stays unindexed: cannot use pg_trgm", extra={"error": str(exc)})


def _v7_scheduled_at_descending(db: pw.Database) -> None:
    # `-scheduled_at` sorts NULLs (unscheduled campaigns) last. PostgreSQL reads an ascending
    # index backwards as NULLS FIRST, so without this index it sorted the whole table for
    # every page. SQLite already reads its index backwards NULLs last.
    if is_postgres():
        db.execute_sql(
            "CREATE INDEX IF NOT EXISTS campaign_scheduled_at_desc_id"
            " ON campaign (scheduled_at DESC NULLS LAST, id DESC)"
        )


STEPS: list[Callable[[pw.Database], None]] = [
    _v1_initial,
    _v2_audience_and_content,
    _v3_delivery_engine,
    _v4_delivery_events,
    _v5_claim_index,
    _v6_listing_indexes,
    _v7_scheduled_at_descending,
]


def current_version() -> int:
    row = models.SchemaVersion.select(pw.fn.MAX(models.SchemaVersion.version)).scalar()
    return int(row or 0)


def migrate() -> int:
    """Bring the schema up to the newest version; safe to run from several processes at once."""
    db = database.obj
    with write_transaction():
        if is_postgres():
            # Serialises concurrent migrators (several servers and workers starting together).
            database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_KEY,))
        database.create_tables([models.SchemaVersion], safe=True)
        version = current_version()
        for number, step in enumerate(STEPS, start=1):
            if number > version:
                log.info("applying migration", extra={"version": number, "step": step.__name__})
                step(db)
                models.SchemaVersion.create(version=number)
    return len(STEPS)
