"""A relay that refuses connections past its own limit (421 "too many connections" in the
greeting) lowers the send job's concurrency for that relay instead of burning attempts:
every message goes out on the connections the relay lets us keep, each on its first attempt,
and the circuit breaker stays closed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from campaigns.v1 import campaign_pb2
from tests.fixtures.smtp import SmtpSink
from tests.support.delivery import ledger, send_now, wait_final
from tests.support.invariants import email_campaign
from tests.support.tcpproxy import TcpProxy

SENT = campaign_pb2.CAMPAIGN_STATUS_SENT
pytestmark = pytest.mark.slow
RELAY_LIMIT = 3
RECIPIENTS = 60


def _events(worker, message: str) -> list[dict[str, object]]:
    lines = worker.log.read_text(errors="replace").splitlines()
    return [
        e for e in (json.loads(x) for x in lines if x.startswith("{")) if e.get("msg") == message
    ]


@pytest.fixture(scope="module")
def relay(smtp: SmtpSink) -> Iterator[TcpProxy]:
    with TcpProxy(("127.0.0.1", smtp.port)) as proxy:
        proxy.limit(RELAY_LIMIT, b"421 4.7.0 Error: too many connections from 127.0.0.1\r\n")
        yield proxy


@pytest.fixture(scope="module")
def worker_env(smtp: SmtpSink, relay: TcpProxy) -> dict[str, str]:
    return {
        **smtp.env(),
        "SMTP_PORT": str(relay.port),
        "SMTP_MAX_CONNECTIONS": "12",
        "CIRCUIT_FAILURES": "3",
    }


def test_a_relay_at_its_connection_limit_costs_no_attempt(
    worker, smtp, relay, campaigns, audience, messages, org_id
):
    campaign = email_campaign(campaigns, audience, messages, org_id, RECIPIENTS, suppressed=0)
    for address in campaign.addresses:
        smtp.slow_down(address, 0.05)  # so that connections are busy when more are asked for
    send_now(campaigns, campaign.id)
    done = wait_final(campaigns, campaign.id, worker)
    assert (done.status, done.sent_count) == (SENT, RECIPIENTS), (done, worker.output())
    assert smtp.per_address(campaign.id) == {a.lower(): 1 for a in campaign.addresses}
    assert {(r.status, r.attempts) for r in ledger(campaign.id)} == {("sent", 1)}
    assert relay.turned_away > 0 and relay.peak_open <= RELAY_LIMIT
    assert _events(worker, "smtp relay refused a connection past its limit; lowering ours")
    assert _events(worker, "circuit opened") == [], worker.output()
