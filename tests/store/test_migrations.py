"""Schema upgrades keep existing data: a database at version 1 with rows in it is migrated to
the newest version in a separate process, and the rows are still there."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from tests.fixtures.stack import ADMIN_URL, BACKEND

SCRIPT = textwrap.dedent("""
    import sys
    from server.store.db import open_database, database
    from server.store import migrations
    from server.store import models
    open_database(sys.argv[1])
    with database.atomic():
        database.create_tables([models.SchemaVersion])
        migrations.STEPS[0](database.obj)
        # v1 creates tables from today's models: drop what v1 really lacked, as it shipped.
        database.execute_sql("ALTER TABLE delivery DROP COLUMN address")
        database.execute_sql("ALTER TABLE campaign DROP COLUMN heartbeat_at")
        models.SchemaVersion.create(version=1)
    edition = models.Edition.create(organization_id=1, name="Old", timezone="UTC")
    database.execute_sql(
        "INSERT INTO campaign (organization_id, edition_id, segment_id, name, channel, sms_body,"
        " status, total_recipients, sent_count, failed_count, user_count, error_message,"
        " created, modified, version) VALUES (1, %s, 1, 'Kept', 'sms', 'hi', 'draft', 0, 0, 0,"
        " 0, '', '2026-01-01 00:00:00', '2026-01-01 00:00:00', 1)".replace(
            "%s", str(edition.id)))
    cid = database.execute_sql("SELECT id FROM campaign").fetchone()[0]
    database.execute_sql(
        "INSERT INTO delivery (campaign_id, user_id, status, skip_reason, attempts, last_error,"
        f" created, modified) VALUES ({cid}, 5, 'sent', '', 1, '', '2026-01-01 00:00:00',"
        " '2026-01-01 00:00:00')")
    assert migrations.current_version() == 1
    newest = migrations.migrate()
    assert migrations.current_version() == newest > 1, migrations.current_version()
    assert migrations.migrate() == newest  # a second run is a no-op
    kept = models.Campaign.get(models.Campaign.name == "Kept")
    assert kept.edition.name == "Old" and kept.sms_body == "hi" and kept.heartbeat_at is None
    row = models.Delivery.get(models.Delivery.campaign == kept.id)
    assert row.status == "sent" and row.address == ""
    assert models.User.select().count() == 0  # a table of a later step exists
    print("migrated", newest)
""")


@pytest.fixture
def empty_database(tmp_path: Path) -> Iterator[str]:
    if BACKEND == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    name = f"campaigns_migrate_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def test_upgrade_from_version_1_keeps_data(empty_database: str, repo_root: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, empty_database],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("migrated")
