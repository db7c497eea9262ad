"""A segment too costly to evaluate fails its own campaign, in a real worker, and another
organization's campaign queued behind it is sent: the calculation evaluates in the sandbox
under a time budget per batch (CALCULATE_EVAL_SECONDS), as PreviewSegment does.

The costly expression is one that validation lets through (each `matches()` compiles its
pattern on every call, about a hundredth of a second here), over enough users that a batch
needs many times the budget the worker is given.
"""

from __future__ import annotations

import pytest

from campaigns.v1 import campaign_pb2
from server.store.db import release_connection
from server.store.models import Delivery
from tests.support.delivery import import_users, send_now, user, wait_final
from tests.support.helpers import make_campaign, make_edition, make_email_message, make_segment
from tests.support.invariants import email_campaign

SENT = campaign_pb2.CAMPAIGN_STATUS_SENT
FAILED = campaign_pb2.CAMPAIGN_STATUS_FAILED
pytestmark = pytest.mark.slow

TEXT = "'" + "a" * 60 + "'"
COSTLY = " || ".join(f"{TEXT}.matches('\\\\w{{1,{n}}}x')" for n in range(32, 20, -1))
USERS = 60


@pytest.fixture(scope="module")
def worker_env(worker_env: dict[str, str]) -> dict[str, str]:
    return {**worker_env, "CALCULATE_EVAL_SECONDS": "0.5"}


def _ledger_size(campaign_id: int) -> int:
    try:
        return int(Delivery.select().where(Delivery.campaign == campaign_id).count())
    finally:
        release_connection()


def test_a_costly_segment_fails_its_campaign_and_others_go_on(
    worker, campaigns, audience, messages, org_id
):
    edition = make_edition(audience, org_id)
    segment = make_segment(audience, edition, f"user.email_consent && ({COSTLY})")
    message = make_email_message(messages, edition)
    costly = make_campaign(
        campaigns,
        edition,
        channel=campaign_pb2.CHANNEL_EMAIL,
        sms_body="",
        email_message_id=message.id,
        segment_id=segment.id,
    )
    users = [user(f"c{i}", email=f"c{i}@example.com", email_consent=True) for i in range(USERS)]
    import_users(audience, org_id, edition.id, users)
    other = email_campaign(campaigns, audience, messages, org_id + 1, 3, suppressed=0)

    send_now(campaigns, costly.id)
    send_now(campaigns, other.id)

    done = wait_final(campaigns, costly.id, worker)
    assert done.status == FAILED, (done, worker.output())
    assert "too costly to evaluate" in done.error_message, done.error_message
    assert "longer than 0.5 s" in done.error_message, done.error_message
    assert _ledger_size(costly.id) == 0  # nothing was sent; nothing half-frozen is left
    small = wait_final(campaigns, other.id, worker)
    assert (small.status, small.sent_count) == (SENT, 3), (small, worker.output())
