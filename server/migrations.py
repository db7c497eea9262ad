"""Versioned schema migrations: each step runs once, in order, and keeps existing data.

Add a step by appending a function to STEPS; never edit one that has shipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import peewee as pw

from server import models
from server.db import database, is_postgres, write_transaction

log = logging.getLogger(__name__)

# Any constant will do: it only has to be the same in every process that migrates.
_PG_LOCK_KEY = 7_305_112_001


def _v1_initial(db: pw.Database) -> None:
    db.create_tables(
        [models.Edition, models.Campaign, models.Delivery, models.IdempotencyKey], safe=True
    )


STEPS: list[Callable[[pw.Database], None]] = [_v1_initial]


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
