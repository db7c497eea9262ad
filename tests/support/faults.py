"""For the provider-fault tests: resetting a circuit breaker, reading the worker's JSON log,
and checking a finished campaign's ledger."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from redis import Redis

from jobs.sending.circuit import key_for
from server.store.models import Delivery
from tests.fixtures.workers import RunningWorker
from tests.support.delivery import assert_counters_match_ledger

FINAL_ROWS = {"sent", "failed", "skipped", "ambiguous"}


def reset_circuit(redis_url: str, name: str) -> None:
    """Forget a breaker's state (each test starts closed)."""
    connection = Redis.from_url(redis_url)
    try:
        connection.delete(key_for(name))
    finally:
        connection.close()


def log_events(
    worker: RunningWorker, message: str, circuit: str, since: int = 0
) -> list[dict[str, Any]]:
    """The worker's JSON log lines with this message about this circuit, from byte `since`."""
    text = worker.log.read_bytes()[since:].decode(errors="replace")
    events = []
    for line in text.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("msg") == message and entry.get("circuit") == circuit:
                events.append(entry)
    return events


def log_offset(worker: RunningWorker) -> int:
    return worker.log.stat().st_size


def assert_final_ledger(campaigns: Any, campaign_id: int, max_attempts: int) -> list[Delivery]:
    """Every row final, counters equal to the ledger, attempts within the bound."""
    rows = assert_counters_match_ledger(campaigns, campaign_id)
    assert {r.status for r in rows} <= FINAL_ROWS, Counter(r.status for r in rows)
    assert all(0 <= r.attempts <= max_attempts for r in rows), [r.attempts for r in rows]
    return rows
