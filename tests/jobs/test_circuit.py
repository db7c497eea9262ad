"""The circuit breaker's shared state on a real Redis, seen by several workers at once (each a
`Circuit` handle with its own owner): what opens it, that one worker opening it stops the
others, that exactly one of them probes, what closes it, and that it fails open without Redis.
The end-to-end behaviour through a worker is in tests/faults/test_faults_email.py and
test_faults_sms.py."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from redis import Redis

from jobs.sending.circuit import CLOSED, HALF_OPEN, OPEN, PROBE, Circuit
from jobs.sending.providers import Outcome, deferred, permanent, sent, transient
from server.config import DeliverySettings

SETTINGS = DeliverySettings(circuit_failures=3, circuit_open_seconds=0.3, circuit_probe_seconds=5)
FAULT = transient("smtp 421: closing", fault=True)


@pytest.fixture
def circuits(redis: Redis) -> Iterator[list[Circuit]]:
    """Three workers' handles on one fresh breaker (the tests' a, b and c)."""
    name = f"smtp:test-{uuid.uuid4().hex[:8]}"
    yield [Circuit(redis, name, SETTINGS, f"worker-{i}") for i in range(3)]


def _open(circuit: Circuit) -> None:
    for _ in range(SETTINGS.circuit_failures):
        circuit.observe(FAULT)
    assert circuit.tripped.is_set()


def test_consecutive_faults_open_it_and_answers_about_recipients_do_not(circuits):
    a, b, _ = circuits
    for _ in range(5):  # 550s, 451s to RCPT and 400s are about recipients: never faults
        a.observe(permanent("smtp 550: no such user"))
        a.observe(transient("smtp 451: greylisted"))
    a.observe(FAULT)
    a.observe(FAULT)
    gate = b.check()
    assert (gate.state, gate.failures) == (CLOSED, 2)
    b.observe(sent("<id>"))  # another worker gets through: the count starts again
    a.observe(FAULT)
    a.observe(FAULT)
    assert not a.tripped.is_set() and a.check().state == CLOSED
    a.observe(FAULT)
    assert a.tripped.is_set()
    gate = b.check()
    assert (gate.state, gate.allowed, gate.failures) == (OPEN, False, 3)
    assert 0 < gate.wait <= SETTINGS.circuit_open_seconds


def test_a_fault_seen_while_open_pushes_the_row_past_the_next_probe(circuits):
    a = circuits[0]
    for _ in range(SETTINGS.circuit_failures - 1):
        assert a.observe(FAULT) is FAULT  # closed: the result as it was
    last = a.observe(FAULT)
    assert last.outcome == Outcome.TRANSIENT and last.fault
    assert last.retry_after > SETTINGS.circuit_open_seconds
    untouched = deferred(0.2)
    assert a.observe(untouched) is untouched


def test_exactly_one_worker_probes_and_its_answer_decides(circuits):
    a, b, c = circuits
    _open(a)
    time.sleep(SETTINGS.circuit_open_seconds + 0.05)
    gate = b.check()
    assert gate.probing and gate.allowed
    assert b.check(may_probe=False).probing  # still b's probe on a second look
    assert (c.check().state, c.check().allowed) == (HALF_OPEN, False)
    b.observe(FAULT)  # the probe failed: open again, for a whole interval
    assert b.tripped.is_set() and c.check().state == OPEN
    time.sleep(SETTINGS.circuit_open_seconds + 0.05)
    assert c.check(may_probe=False).state == OPEN  # a job mid-claim does not take the probe
    assert c.check().state == PROBE
    c.observe(permanent("smtp 550: no such user"))  # the server answers: it is back
    fresh = Circuit(a.redis, a.name, SETTINGS, "worker-new")
    assert (fresh.check().state, fresh.check().failures) == (CLOSED, 0)


def test_a_probe_with_nothing_to_send_is_handed_on(circuits):
    a, b, c = circuits
    _open(a)
    time.sleep(SETTINGS.circuit_open_seconds + 0.05)
    assert b.check().probing
    assert not c.check().allowed
    b.release_probe()
    assert c.check().probing


def test_without_redis_it_fails_open():
    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    circuit = Circuit(unreachable, "smtp:nowhere", SETTINGS, "worker-0")
    for _ in range(SETTINGS.circuit_failures + 1):
        circuit.observe(FAULT)
    assert circuit.check().state == CLOSED
    assert not circuit.tripped.is_set()
