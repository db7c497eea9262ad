"""SMS campaigns end to end: users imported with ImportUsers, a CEL segment, SendCampaignNow, a
real `python -m jobs` worker posting to a local server that speaks the Twilio Messages API
(basic auth, form fields, 201 with a sid) and answers 429/500 (transient) or 400 (permanent)
for chosen numbers."""

from __future__ import annotations

import random

import pytest

from campaigns.v1 import campaign_pb2
from tests.fixtures.twilio import FakeTwilio
from tests.support.delivery import (
    assert_counters_match_ledger,
    import_users,
    send_now,
    user,
    wait_final,
)
from tests.support.helpers import make_campaign, make_edition, make_segment

SENT = campaign_pb2.CAMPAIGN_STATUS_SENT
FAILED = campaign_pb2.CAMPAIGN_STATUS_FAILED
BODY = "Hi {{ user.first_name }}, doors open at 18:00. Stop: {{ unsubscribe_url }}"


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def worker_env(twilio: FakeTwilio) -> dict[str, str]:
    return twilio.env()


def _numbers(count: int) -> list[str]:
    """Distinct Danish mobile numbers, fresh for each test (the fake counts per number)."""
    start = random.randrange(26_000_000, 28_999_000)  # all valid mobile numbers
    return [f"+45{start + i}" for i in range(count)]


def _campaign(
    campaigns, audience, org_id, expression="user.attributes.vip"
) -> campaign_pb2.Campaign:
    edition = make_edition(audience, org_id)
    segment = make_segment(audience, edition, expression, name="VIPs")
    return make_campaign(campaigns, edition, segment_id=segment.id, sms_body=BODY)


def _vips(names: list[str], numbers: list[str]) -> list:
    return [
        user(
            name,
            phone=number,
            first_name=name.capitalize(),
            sms_consent=True,
            attributes={"vip": True},
        )
        for name, number in zip(names, numbers, strict=True)
    ]


def test_send_now_texts_every_eligible_user_once(worker, twilio, campaigns, audience, org_id):
    campaign = _campaign(campaigns, audience, org_id)
    eligible = ["ann", "bo", "cy", "dag"]
    numbers = _numbers(8)
    people = [
        *_vips(eligible, numbers[:4]),
        user(
            "nophone",
            first_name="Nils",
            sms_consent=True,
            email="nils@example.com",
            attributes={"vip": True},
        ),
        user("noconsent", phone=numbers[4], first_name="Nora", attributes={"vip": True}),
        user(
            "unsub",
            phone=numbers[5],
            first_name="Ulf",
            sms_consent=True,
            sms_unsubscribed=True,
            attributes={"vip": True},
        ),
        user("dup", phone=numbers[0], first_name="Dup", sms_consent=True, attributes={"vip": True}),
        user(
            "nomatch",
            phone=numbers[7],
            first_name="Max",
            sms_consent=True,
            attributes={"vip": False},
        ),
    ]
    ids = import_users(audience, org_id, campaign.edition_id, people)

    send_now(campaigns, campaign.id)
    done = wait_final(campaigns, campaign.id, worker)
    assert done.status == SENT, (done, worker.output())
    assert (done.user_count, done.total_recipients, done.sent_count, done.failed_count) == (
        8,
        4,
        4,
        0,
    )

    rows = {r.user_id: r for r in assert_counters_match_ledger(campaigns, campaign.id)}
    for name, number in zip(eligible, numbers, strict=False):
        (sms,) = twilio.to(number)
        assert sms.from_ == twilio.sender
        assert sms.body.startswith(f"Hi {name.capitalize()}, doors open at 18:00. Stop: http")
        assert "/u/" in sms.body
        row = rows[ids[name]]
        assert (row.status, row.attempts, row.address) == ("sent", 1, number)
        assert row.provider_message_id == sms.sid  # the id the provider answered with
    for number in numbers[4:]:
        assert twilio.to(number) == []
    assert ids["nomatch"] not in rows
    skipped = {
        name: rows[ids[name]].skip_reason for name in ("nophone", "noconsent", "unsub", "dup")
    }
    assert skipped == {
        "nophone": "no_address",
        "noconsent": "no_consent",
        "unsub": "unsubscribed",
        "dup": "duplicate_address",
    }
    assert twilio.unauthorised == 0


def test_rate_limits_and_server_errors_are_retried_and_a_400_fails(
    worker, twilio, campaigns, audience, org_id
):
    campaign = _campaign(campaigns, audience, org_id)
    names = ["limited", "flaky", "bad", "ok"]
    numbers = _numbers(4)
    twilio.fail(numbers[0], 429, times=2)
    twilio.fail(numbers[1], 500, times=1)
    twilio.fail(numbers[2], 400)
    ids = import_users(audience, org_id, campaign.edition_id, _vips(names, numbers))

    send_now(campaigns, campaign.id)
    done = wait_final(campaigns, campaign.id, worker, timeout=30)
    assert done.status == SENT, (done, worker.output())
    assert (done.total_recipients, done.sent_count, done.failed_count) == (4, 3, 1)
    assert [len(twilio.to(n)) for n in numbers] == [1, 1, 0, 1]
    assert [twilio.attempts[n] for n in numbers] == [3, 2, 1, 1]

    rows = {r.user_id: r for r in assert_counters_match_ledger(campaigns, campaign.id)}
    limited, flaky, bad, ok = (rows[ids[n]] for n in names)
    assert (limited.status, limited.attempts) == ("sent", 3)
    assert (flaky.status, flaky.attempts) == ("sent", 2)
    assert (ok.status, ok.attempts) == ("sent", 1)
    assert (bad.status, bad.attempts) == ("failed", 1)
    assert bad.last_error.startswith("twilio 400:") and "refused with 400" in bad.last_error


def test_refused_credentials_fail_the_campaign_with_the_reason(
    worker, twilio, campaigns, audience, org_id
):
    campaign = _campaign(campaigns, audience, org_id)
    numbers = _numbers(3)
    import_users(audience, org_id, campaign.edition_id, _vips(["a", "b", "c"], numbers))
    token, twilio.auth_token = twilio.auth_token, "rotated-token"  # ours is no longer valid
    try:
        send_now(campaigns, campaign.id)
        done = wait_final(campaigns, campaign.id, worker)
    finally:
        twilio.auth_token = token
    assert done.status == FAILED, (done, worker.output())
    assert (done.total_recipients, done.sent_count, done.failed_count) == (3, 0, 3)
    assert "all 3 messages failed" in done.error_message
    assert "twilio 401" in done.error_message and "invalid credentials" in done.error_message
    assert all(twilio.to(n) == [] for n in numbers)
    rows = assert_counters_match_ledger(campaigns, campaign.id)
    assert {(r.status, r.attempts) for r in rows} == {("failed", 1)}
