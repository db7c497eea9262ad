"""`server.store.db.driver_cursor`: a driver cursor whose errors come back as peewee's, as the
errors of every statement peewee runs itself do (the RPC layer and the workers map those)."""

from __future__ import annotations

import peewee
import pytest

from server.app import App
from server.store.db import driver_cursor, release_connection


def test_driver_errors_are_peewee_errors(app: App) -> None:
    try:
        with pytest.raises(peewee.DatabaseError) as caught, driver_cursor() as cursor:
            cursor.execute("SELECT no_such_column FROM no_such_table")
        assert type(caught.value).__module__ == "peewee"
    finally:
        release_connection()


def test_driver_cursor_runs_statements(app: App) -> None:
    try:
        with driver_cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone()[0] == 1
    finally:
        release_connection()
