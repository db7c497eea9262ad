"""SMS delivery against a misbehaving Twilio-style API, through a real `python -m jobs` worker:
429 with Retry-After (honoured), 500 (retried), 400 (fails the recipient, never the circuit),
an API answering 5xx or 429 for a while (the circuit opens; no attempts spent meanwhile), and
requests that time out after they were sent (ambiguous: never resent, as Twilio takes no
idempotency key). Each test checks the final ledger: nobody got a message twice, every row
final, counters equal to the ledger, attempts bounded."""

from __future__ import annotations

import random
import time

import pytest

from campaigns.v1 import campaign_pb2
from campaigns.v1 import campaign_service_pb2 as cpb
from tests.fixtures.twilio import FakeTwilio, FaultyTwilio
from tests.support.delivery import import_users, send_now, user, wait_final
from tests.support.faults import assert_final_ledger, log_events, log_offset, reset_circuit
from tests.support.helpers import make_campaign, make_edition, make_segment
from tests.support.processes import wait_until

SENT = campaign_pb2.CAMPAIGN_STATUS_SENT
BODY = "Hi {{ user.first_name }}, doors open at 18:00. Stop: {{ unsubscribe_url }}"
MAX_ATTEMPTS = 4
THRESHOLD = 3
IN_FLIGHT = 4  # requests in flight per send job (SMS_MAX_IN_FLIGHT, set below)


TWILIO_API = FaultyTwilio
pytestmark = [pytest.mark.fault, pytest.mark.slow]


@pytest.fixture(scope="module")
def worker_env(twilio: FakeTwilio) -> dict[str, str]:
    return {
        **twilio.env(),
        "TWILIO_TIMEOUT": "1",
        "SMS_MAX_IN_FLIGHT": str(IN_FLIGHT),
        "MAX_SEND_ATTEMPTS": str(MAX_ATTEMPTS),
        "RETRY_BASE_SECONDS": "0.2",
        "CIRCUIT_FAILURES": str(THRESHOLD),
        "CIRCUIT_OPEN_SECONDS": "1",
        "CIRCUIT_PROBE_SECONDS": "5",
    }


@pytest.fixture
def circuit(redis_url, twilio) -> str:
    """This module's breaker, closed at the start of each test; the API healthy."""
    name = f"twilio:http://127.0.0.1:{twilio.port}/{twilio.account_sid}"
    reset_circuit(redis_url, name)
    twilio.burst_left, twilio.outage_until, twilio.faults_answered = 0, 0.0, 0
    return name


def _numbers(count: int) -> list[str]:
    start = random.randrange(26_000_000, 28_999_000)  # valid Danish mobile numbers
    return [f"+45{start + i}" for i in range(count)]


def _start(
    campaigns, audience, org_id, names: list[str], numbers: list[str]
) -> tuple[campaign_pb2.Campaign, dict[str, int]]:
    edition = make_edition(audience, org_id)
    segment = make_segment(audience, edition, "user.sms_consent", name="Consenting")
    campaign = make_campaign(campaigns, edition, segment_id=segment.id, sms_body=BODY)
    people = [
        user(name, phone=number, first_name=name, sms_consent=True)
        for name, number in zip(names, numbers, strict=True)
    ]
    return campaign, import_users(audience, org_id, campaign.edition_id, people)


def test_retry_after_is_honoured_and_a_400_never_opens_the_circuit(
    worker, twilio, circuit, campaigns, audience, org_id
):
    names = ["limited", "flaky", "ok1", "ok2", "bad1", "bad2", "bad3", "bad4"]
    numbers = _numbers(len(names))
    number = dict(zip(names, numbers, strict=True))
    twilio.fail(number["limited"], 429, times=1)
    twilio.retry_after[number["limited"]] = "2"  # ten times the longest backoff here
    twilio.fail(number["flaky"], 500, times=1)
    for name in names[4:]:
        twilio.fail(number[name], 400)  # invalid number: the recipient's problem
    campaign, ids = _start(campaigns, audience, org_id, names, numbers)
    since = log_offset(worker)

    send_now(campaigns, campaign.id)
    done = wait_final(campaigns, campaign.id, worker, timeout=30)
    assert done.status == SENT, (done, worker.output())
    assert (done.sent_count, done.failed_count) == (4, 4)
    assert [len(twilio.to(number[n])) for n in names] == [1, 1, 1, 1, 0, 0, 0, 0]

    rows = {r.user_id: r for r in assert_final_ledger(campaigns, campaign.id, MAX_ATTEMPTS)}
    assert [(rows[ids[n]].status, rows[ids[n]].attempts) for n in names] == [
        ("sent", 2),
        ("sent", 2),
        ("sent", 1),
        ("sent", 1),
        ("failed", 1),
        ("failed", 1),
        ("failed", 1),
        ("failed", 1),
    ]
    first, second = twilio.times[number["limited"]]
    assert second - first >= 2.0  # the Retry-After, not the 0.1-0.2 s backoff
    first, second = twilio.times[number["flaky"]]
    assert second - first >= 0.1  # backoff: at least half of RETRY_BASE_SECONDS
    assert log_events(worker, "circuit opened", circuit, since) == []


@pytest.mark.parametrize("status", [503, 429])
def test_an_api_failing_for_a_while_opens_the_circuit_and_spends_no_attempts(
    status, worker, twilio, circuit, campaigns, audience, org_id
):
    names = [f"r{i}" for i in range(24)]
    numbers = _numbers(len(names))
    campaign, _ = _start(campaigns, audience, org_id, names, numbers)
    twilio.outage(600, status)
    since = log_offset(worker)

    send_now(campaigns, campaign.id)
    assert wait_until(lambda: log_events(worker, "circuit opened", circuit, since), 15), (
        worker.output()
    )
    time.sleep(3)  # still failing through a probe or two
    twilio.outage_until = 0.0
    done = wait_final(campaigns, campaign.id, worker, timeout=30)
    assert done.status == SENT, (done, worker.output())
    assert all(len(twilio.to(n)) == 1 for n in numbers)

    rows = assert_final_ledger(campaigns, campaign.id, MAX_ATTEMPTS)
    assert {r.status for r in rows} == {"sent"}, (
        [(r.status, r.attempts, r.last_error) for r in rows],
        worker.output(),
    )
    opened = log_events(worker, "circuit opened", circuit, since)
    assert opened[0]["failures"] == THRESHOLD
    assert len(log_events(worker, "circuit closed", circuit, since)) == 1
    # Every fault answered cost one attempt, and only those: what reached the API before the
    # circuit opened (up to IN_FLIGHT - 1 requests were already on their way), then probes.
    spent = sum(r.attempts for r in rows) - len(rows)
    assert spent == twilio.faults_answered
    assert spent <= THRESHOLD + IN_FLIGHT - 1 + len(opened) - 1, (spent, len(opened))


def test_a_request_that_times_out_after_it_was_sent_is_ambiguous(
    worker, twilio, circuit, campaigns, audience, org_id
):
    names = ["ok1", "accepted", "ok2", "dropped", "ok3"]
    numbers = _numbers(len(names))
    number = dict(zip(names, numbers, strict=True))
    twilio.stall(number["accepted"], 2.5, deliver=True)  # taken, but answered too late
    twilio.stall(number["dropped"], 2.5, deliver=False)  # never taken
    campaign, ids = _start(campaigns, audience, org_id, names, numbers)

    send_now(campaigns, campaign.id)
    done = wait_final(campaigns, campaign.id, worker, timeout=30)
    assert done.status == SENT, (done, worker.output())
    assert (done.sent_count, done.failed_count) == (3, 0)
    stats = campaigns.GetCampaignStats(cpb.GetCampaignStatsRequest(id=campaign.id)).stats
    assert stats.ambiguous == 2

    assert [len(twilio.to(number[n])) for n in names] == [1, 1, 1, 0, 1]
    rows = {r.user_id: r for r in assert_final_ledger(campaigns, campaign.id, MAX_ATTEMPTS)}
    for name in ("accepted", "dropped"):
        row = rows[ids[name]]
        assert (row.status, row.attempts) == ("ambiguous", 1), name
        assert (
            row.last_error == "may have been delivered: twilio: no answer to the request: "
            "ReadTimeout"
        )
        assert len(twilio.times[number[name]]) == 1  # never tried again
    assert all(rows[ids[n]].attempts == 1 for n in names if n.startswith("ok"))
