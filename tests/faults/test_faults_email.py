"""Email delivery against a misbehaving SMTP server, through a real `python -m jobs` worker:
bursts of 421/451, 550s, a server that is down or answers 421 for a while (the circuit opens
and no recipient's attempts are spent meanwhile), and connections that close or stall after
the message data (ambiguous: never sent again). Each test checks the final ledger: nobody got
a message twice, every row final, counters equal to the ledger, attempts bounded."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from campaigns.v1 import campaign_pb2
from campaigns.v1 import campaign_service_pb2 as cpb
from tests.fixtures.smtp import FaultySmtp
from tests.support.delivery import import_users, send_now, user, wait_final
from tests.support.faults import assert_final_ledger, log_events, log_offset, reset_circuit
from tests.support.helpers import make_campaign, make_edition, make_email_message, make_segment
from tests.support.processes import wait_until
from tests.support.tcpproxy import TcpProxy

EMAIL = campaign_pb2.CHANNEL_EMAIL
SENT = campaign_pb2.CAMPAIGN_STATUS_SENT
MAX_ATTEMPTS = 4
THRESHOLD = 3  # consecutive faults that open the circuit
OPEN_SECONDS = 1


SMTP_SINK = FaultySmtp
pytestmark = [pytest.mark.fault, pytest.mark.slow]


@pytest.fixture(scope="module")
def proxy(smtp: FaultySmtp) -> Iterator[TcpProxy]:
    """The worker reaches the SMTP server through this, so a test can take it "down"."""
    with TcpProxy(("127.0.0.1", smtp.port)) as running:
        yield running


@pytest.fixture(scope="module")
def worker_env(proxy: TcpProxy) -> dict[str, str]:
    return {
        "EMAIL_PROVIDER": "smtp",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(proxy.port),
        "SMTP_TIMEOUT": "1",
        "MAX_SEND_ATTEMPTS": str(MAX_ATTEMPTS),
        "RETRY_BASE_SECONDS": "0.2",
        "CIRCUIT_FAILURES": str(THRESHOLD),
        "CIRCUIT_OPEN_SECONDS": str(OPEN_SECONDS),
        "CIRCUIT_PROBE_SECONDS": "5",
        # Several send jobs per campaign, several groups per claim: a circuit opening
        # meets sends in flight, groups rendered but not sent, and jobs not started yet.
        "SEND_GROUP_SIZE": "4",
        # One connection: the tests interleave faults so that a given number come in a
        # row, which parallel connections would reorder.
        "SMTP_CONNECTIONS": "1",
    }


@pytest.fixture
def circuit(redis_url, proxy, smtp) -> Iterator[str]:
    """This module's breaker, closed at the start of each test; the server healthy."""
    name = f"smtp:127.0.0.1:{proxy.port}"
    reset_circuit(redis_url, name)
    smtp.bursts.clear()
    smtp.outage_until = 0.0
    proxy.refuse(False)
    yield name
    proxy.refuse(False)


def _address(tag: str, name: str) -> str:
    return f"{name}.{tag}@mail.example.com"


def _campaign(campaigns, audience, messages, org_id) -> campaign_pb2.Campaign:
    edition = make_edition(audience, org_id)
    segment = make_segment(audience, edition, "user.email_consent", name="Consenting")
    message = make_email_message(messages, edition, text_body="Hello {{ user.first_name }}!\n")
    return make_campaign(
        campaigns,
        edition,
        channel=EMAIL,
        sms_body="",
        email_message_id=message.id,
        segment_id=segment.id,
    )


def _start(
    campaigns, audience, messages, org_id, tag: str, names: list[str]
) -> tuple[campaign_pb2.Campaign, dict[str, int]]:
    campaign = _campaign(campaigns, audience, messages, org_id)
    people = [user(n, email=_address(tag, n), first_name=n, email_consent=True) for n in names]
    return campaign, import_users(audience, org_id, campaign.edition_id, people)


def test_bursts_of_421_and_451_are_retried_without_opening_the_circuit(
    worker, smtp, circuit, campaigns, audience, messages, org_id
):
    tag = uuid.uuid4().hex[:8]
    names = [f"r{i}" for i in range(10)]
    campaign, ids = _start(campaigns, audience, messages, org_id, tag, [*names, "gone"])
    smtp.refuse(_address(tag, "gone"), 550)
    # Two 421s (faults, one short of the threshold), then three 451s to RCPT: about the
    # recipient, so they must not push the count over it.
    smtp.burst(421, 2)
    smtp.burst(451, 3)
    since = log_offset(worker)

    send_now(campaigns, campaign.id)
    done = wait_final(campaigns, campaign.id, worker, timeout=30)
    assert done.status == SENT, (done, worker.output())
    assert smtp.faults_answered == 5
    assert smtp.per_address(campaign.id) == {_address(tag, n): 1 for n in names}

    rows = {r.user_id: r for r in assert_final_ledger(campaigns, campaign.id, MAX_ATTEMPTS)}
    gone = rows[ids["gone"]]
    assert (gone.status, gone.attempts) == ("failed", 1)
    assert gone.last_error.startswith("smtp 550")
    delivered = [rows[ids[n]] for n in names]
    assert {r.status for r in delivered} == {"sent"}
    # Each refusal cost its recipient exactly one attempt.
    assert Counter(r.attempts for r in delivered) == {1: 5, 2: 5}
    assert log_events(worker, "circuit opened", circuit, since) == []


@pytest.mark.parametrize("fault", ["refused", "421"])
def test_a_server_that_is_down_opens_the_circuit_and_spends_no_attempts(
    fault, worker, smtp, proxy, circuit, campaigns, audience, messages, org_id
):
    tag = uuid.uuid4().hex[:8]
    names = [f"r{i}" for i in range(30)]
    campaign, _ = _start(campaigns, audience, messages, org_id, tag, names)
    if fault == "refused":
        proxy.refuse(True)  # connections are reset at once: the relay is down
    else:
        smtp.outage(600)  # every RCPT answers 421
    since = log_offset(worker)

    send_now(campaigns, campaign.id)
    assert wait_until(lambda: log_events(worker, "circuit opened", circuit, since), 15), (
        worker.output()
    )
    time.sleep(3)  # still failing through a probe or two
    proxy.refuse(False)
    smtp.outage_until = 0.0
    done = wait_final(campaigns, campaign.id, worker, timeout=30)
    assert done.status == SENT, (done, worker.output())
    assert smtp.per_address(campaign.id) == {_address(tag, n): 1 for n in names}

    rows = assert_final_ledger(campaigns, campaign.id, MAX_ATTEMPTS)
    assert {r.status for r in rows} == {"sent"}, (
        [(r.status, r.attempts, r.last_error) for r in rows],
        worker.output(),
    )
    opened = log_events(worker, "circuit opened", circuit, since)
    probes = log_events(worker, "circuit half-open: probing", circuit, since)
    assert opened[0]["failures"] == THRESHOLD
    assert [e["after_probe"] for e in opened] == [False] + [True] * (len(opened) - 1)
    idle = log_events(worker, "circuit probe released: nothing due", circuit, since)
    assert len(probes) - len(idle) == len(opened)  # the last probe got through...
    assert len(log_events(worker, "circuit closed", circuit, since)) == 1  # ...and closed it
    # Attempts spent: the faults that opened it, then one per failed probe; none while open.
    spent = sum(r.attempts for r in rows) - len(rows)
    assert spent == THRESHOLD + len(opened) - 1, Counter(r.attempts for r in rows)
    assert len(opened) <= 6, opened  # probes came about once per open interval


def test_a_connection_lost_after_the_data_leaves_the_message_ambiguous(
    worker, smtp, circuit, campaigns, audience, messages, org_id
):
    tag = uuid.uuid4().hex[:8]
    # Faulty ones between healthy ones: three faults in a row would open the circuit.
    names = ["ok1", "delivered", "ok2", "lost", "ok3", "stalled", "ok4", "hangup", "ok5"]
    campaign, ids = _start(campaigns, audience, messages, org_id, tag, names)
    smtp.data_faults.update(
        {
            _address(tag, "delivered"): "delivered",  # closed before the 250
            _address(tag, "lost"): "lost",  # closed, message dropped
            _address(tag, "stalled"): "stall",
        }
    )  # 250 after the client left
    smtp.hang_ups[_address(tag, "hangup")] = 1  # closed at RCPT: nothing was sent

    send_now(campaigns, campaign.id)
    done = wait_final(campaigns, campaign.id, worker, timeout=30)
    assert done.status == SENT, (done, worker.output())
    assert (done.sent_count, done.failed_count) == (6, 0)
    stats = campaigns.GetCampaignStats(cpb.GetCampaignStatsRequest(id=campaign.id)).stats
    assert stats.ambiguous == 3

    received = smtp.per_address(campaign.id)
    assert received == {_address(tag, n): 1 for n in names if n != "lost"}
    rows = {r.user_id: r for r in assert_final_ledger(campaigns, campaign.id, MAX_ATTEMPTS)}
    for name in ("delivered", "lost", "stalled"):
        row = rows[ids[name]]
        assert (row.status, row.attempts) == ("ambiguous", 1), name
        assert row.last_error.startswith("may have been delivered: smtp: no reply"), row.last_error
    assert smtp.attempts[_address(tag, "stalled")] == 1  # never tried again
    hangup = rows[ids["hangup"]]
    assert (hangup.status, hangup.attempts) == ("sent", 2)
    assert smtp.attempts[_address(tag, "hangup")] == 2
    assert all(rows[ids[n]].attempts == 1 for n in names if n.startswith("ok"))
