"""Email campaigns end to end: users imported with ImportUsers, a CEL segment, SendCampaignNow,
a real `python -m jobs` worker sending over SMTP (smtplib) to an aiosmtpd server that records
every message and refuses chosen recipients with 451 (transient) or 550 (permanent)."""

from __future__ import annotations

import re
import uuid

import pytest

from campaigns.v1 import campaign_pb2
from server.delivery.link_tokens import UNSUBSCRIBE, TokenSigner
from server.store.db import release_connection
from server.store.models import Suppression
from tests.fixtures.smtp import SmtpSink
from tests.support.delivery import (
    assert_counters_match_ledger,
    import_users,
    send_now,
    user,
    wait_final,
)
from tests.support.helpers import make_campaign, make_edition, make_email_message, make_segment

EMAIL = campaign_pb2.CHANNEL_EMAIL
SENT = campaign_pb2.CAMPAIGN_STATUS_SENT
FAILED = campaign_pb2.CAMPAIGN_STATUS_FAILED
MAX_ATTEMPTS = 3


# Every test twice: with PIPELINING offered (MAIL, RCPT, DATA in one write) and without.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize(
        "smtp", [True, False], ids=["pipelined", "step-by-step"], indirect=True, scope="module"
    ),
]


@pytest.fixture(scope="module")
def worker_env(smtp: SmtpSink) -> dict[str, str]:
    return {**smtp.env(), "MAX_SEND_ATTEMPTS": str(MAX_ATTEMPTS)}


def _address(tag: str, name: str) -> str:
    return f"{name}.{tag}@mail.example.com"


def _campaign(
    campaigns,
    audience,
    messages,
    org_id,
    expression="user.attributes.tickets > 0",
    **message_fields,
) -> campaign_pb2.Campaign:
    edition = make_edition(audience, org_id)
    segment = make_segment(audience, edition, expression, name="Ticket holders")
    fields = {
        "subject": "Hi {{ user.first_name }}, doors open soon",
        "html_body": "<html><body><p>Hello {{ user.first_name }}!</p></body></html>",
        "text_body": "Hello {{ user.first_name }}!\n",
        **message_fields,
    }
    message = make_email_message(messages, edition, **fields)
    return make_campaign(
        campaigns,
        edition,
        channel=EMAIL,
        sms_body="",
        email_message_id=message.id,
        segment_id=segment.id,
    )


def _holders(tag: str, names: list[str]) -> list:
    return [
        user(
            name,
            email=_address(tag, name),
            first_name=name.capitalize(),
            email_consent=True,
            attributes={"tickets": 2},
        )
        for name in names
    ]


def test_send_now_delivers_one_personalised_message_to_each_eligible_user(
    worker, smtp, campaigns, audience, messages, org_id
):
    tag = uuid.uuid4().hex[:8]
    campaign = _campaign(campaigns, audience, messages, org_id)
    eligible = ["ann", "bo", "cy", "dag", "eva"]
    people = [
        *_holders(tag, eligible),
        user("noemail", first_name="Nils", email_consent=True, attributes={"tickets": 1}),
        user(
            "noconsent",
            email=_address(tag, "noconsent"),
            first_name="Nora",
            attributes={"tickets": 1},
        ),
        user(
            "unsub",
            email=_address(tag, "unsub"),
            first_name="Ulf",
            email_consent=True,
            email_unsubscribed=True,
            attributes={"tickets": 1},
        ),
        # Ann's address again, in other case: the second row of an address is skipped.
        user(
            "dup",
            email=_address(tag, "ann").upper().replace("MAIL.EXAMPLE.COM", "mail.example.com"),
            first_name="Dup",
            email_consent=True,
            attributes={"tickets": 1},
        ),
        user(
            "suppressed",
            email=_address(tag, "bounced"),
            first_name="Sid",
            email_consent=True,
            attributes={"tickets": 1},
        ),
        user(
            "nomatch",
            email=_address(tag, "nomatch"),
            first_name="Max",
            email_consent=True,
            attributes={"tickets": 0},
        ),
    ]
    ids = import_users(audience, org_id, campaign.edition_id, people)
    try:
        Suppression.create(
            organization_id=org_id,
            channel="email",
            address=_address(tag, "bounced"),
            reason="hard bounce",
        )
    finally:
        release_connection()

    send_now(campaigns, campaign.id)
    done = wait_final(campaigns, campaign.id, worker)
    assert done.status == SENT, (done, worker.output())
    assert (done.user_count, done.total_recipients, done.sent_count, done.failed_count) == (
        10,
        5,
        5,
        0,
    )

    received = smtp.of_campaign(campaign.id)
    assert smtp.per_address(campaign.id) == {_address(tag, n): 1 for n in eligible}
    signer = TokenSigner("dev-only-secret-change-me")
    for got in received:
        (rcpt,) = got.rcpt_tos
        name = rcpt.split(".")[0]
        first, user_id = name.capitalize(), ids[name]
        msg = got.message
        assert got.mail_from == "news@festival.example"
        assert msg["To"] == rcpt
        assert msg["From"] == "Festival <news@festival.example>"
        assert msg["Subject"] == f"Hi {first}, doors open soon"
        assert msg["Message-ID"] == f"<campaign-{campaign.id}.user-{user_id}@campaigns.local>"
        unsubscribe = re.fullmatch(r"<(https?://\S+/u/(\S+))>", str(msg["List-Unsubscribe"]))
        assert unsubscribe, msg["List-Unsubscribe"]
        token = signer.verify(unsubscribe.group(2), UNSUBSCRIBE)
        assert (token.campaign_id, token.user_id, token.purpose) == (
            campaign.id,
            user_id,
            UNSUBSCRIBE,
        )
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert msg.get_content_type() == "multipart/alternative"
        text, html = msg.get_body(("plain",)), msg.get_body(("html",))
        assert text is not None and html is not None
        assert f"Hello {first}!" in text.get_content()
        assert f"<p>Hello {first}!</p>" in html.get_content()
        # A visible unsubscribe link in both bodies (the templates had none).
        assert unsubscribe.group(1) in text.get_content()
        assert unsubscribe.group(1) in html.get_content()

    rows = {r.user_id: r for r in assert_counters_match_ledger(campaigns, campaign.id)}
    assert ids["nomatch"] not in rows  # not in the segment: not a recipient at all
    skipped = {
        name: rows[ids[name]].skip_reason
        for name in ("noemail", "noconsent", "unsub", "dup", "suppressed")
    }
    assert skipped == {
        "noemail": "no_address",
        "noconsent": "no_consent",
        "unsub": "unsubscribed",
        "dup": "duplicate_address",
        "suppressed": "suppressed",
    }
    assert all(rows[ids[name]].status == "skipped" for name in skipped)
    for name in eligible:
        row = rows[ids[name]]
        assert (row.status, row.attempts, row.skip_reason, row.last_error) == ("sent", 1, "", "")
        assert row.provider_message_id == (
            f"<campaign-{campaign.id}.user-{ids[name]}@campaigns.local>"
        )
        assert row.address == _address(tag, name)


def test_transient_refusals_are_retried_and_permanent_ones_fail(
    worker, smtp, campaigns, audience, messages, org_id
):
    tag = uuid.uuid4().hex[:8]
    campaign = _campaign(campaigns, audience, messages, org_id)
    names = ["later", "never", "fine", "busy"]
    smtp.refuse(_address(tag, "later"), 451, times=2)  # third attempt goes through
    smtp.refuse(_address(tag, "never"), 550)
    smtp.refuse(_address(tag, "busy"), 451)  # busy for good: gives up after MAX_ATTEMPTS
    ids = import_users(audience, org_id, campaign.edition_id, _holders(tag, names))

    send_now(campaigns, campaign.id)
    done = wait_final(campaigns, campaign.id, worker, timeout=30)
    assert done.status == SENT, (done, worker.output())
    assert (done.total_recipients, done.sent_count, done.failed_count) == (4, 2, 2)
    assert done.error_message == ""
    assert smtp.per_address(campaign.id) == {_address(tag, "later"): 1, _address(tag, "fine"): 1}
    assert smtp.attempts[_address(tag, "later")] == 3
    assert smtp.attempts[_address(tag, "busy")] == MAX_ATTEMPTS
    assert smtp.attempts[_address(tag, "never")] == 1  # a permanent refusal is not retried

    rows = {r.user_id: r for r in assert_counters_match_ledger(campaigns, campaign.id)}
    later, never, fine, busy = (rows[ids[n]] for n in names)
    assert (later.status, later.attempts, later.last_error) == ("sent", 3, "")
    assert (fine.status, fine.attempts) == ("sent", 1)
    assert (never.status, never.attempts) == ("failed", 1)
    assert never.last_error.startswith("smtp 550") and "Mailbox unavailable" in never.last_error
    assert (busy.status, busy.attempts) == ("failed", MAX_ATTEMPTS)
    assert busy.last_error.startswith(f"gave up after {MAX_ATTEMPTS} attempts: smtp 451")


def test_a_campaign_whose_every_message_is_refused_ends_failed(
    worker, smtp, campaigns, audience, messages, org_id
):
    tag = uuid.uuid4().hex[:8]
    campaign = _campaign(campaigns, audience, messages, org_id)
    names = ["x", "y", "z"]
    for name in names:
        smtp.refuse(_address(tag, name), 550)
    import_users(audience, org_id, campaign.edition_id, _holders(tag, names))

    send_now(campaigns, campaign.id)
    done = wait_final(campaigns, campaign.id, worker)
    assert done.status == FAILED, (done, worker.output())
    assert (done.total_recipients, done.sent_count, done.failed_count) == (3, 0, 3)
    assert "all 3 messages failed" in done.error_message
    assert "smtp 550" in done.error_message and "Mailbox unavailable" in done.error_message
    assert smtp.of_campaign(campaign.id) == []
    rows = assert_counters_match_ledger(campaigns, campaign.id)
    assert {r.status for r in rows} == {"failed"}


def test_a_template_failing_for_one_user_fails_only_that_message(
    worker, smtp, campaigns, audience, messages, org_id
):
    tag = uuid.uuid4().hex[:8]
    campaign = _campaign(
        campaigns,
        audience,
        messages,
        org_id,
        expression="user.email_consent",
        text_body="{{ user.first_name }}: {{ 100 // user.attributes.tickets }} euro each\n",
    )
    people = _holders(tag, ["paid", "free"])
    people[1].attributes["tickets"] = 0  # 100 // 0 fails at render time, for this user only
    ids = import_users(audience, org_id, campaign.edition_id, people)

    send_now(campaigns, campaign.id)
    done = wait_final(campaigns, campaign.id, worker)
    assert done.status == SENT, (done, worker.output())
    assert (done.sent_count, done.failed_count) == (1, 1)
    (got,) = smtp.of_campaign(campaign.id)
    assert got.rcpt_tos == [_address(tag, "paid")]
    assert "Paid: 50 euro each" in got.message.get_body(("plain",)).get_content()
    rows = {r.user_id: r for r in assert_counters_match_ledger(campaigns, campaign.id)}
    free = rows[ids["free"]]
    assert (free.status, free.attempts) == ("failed", 1)
    assert free.last_error.startswith("template failed for this user")
    assert smtp.attempts[_address(tag, "free")] == 0  # never reached the SMTP server


def test_a_send_job_keeps_several_connections_busy(
    worker, smtp, campaigns, audience, messages, org_id
):
    """SMTP_CONNECTIONS (2 by default): while one connection waits on a slow server, another
    carries on, so two slow recipients are in progress at the same time."""
    tag = uuid.uuid4().hex[:8]
    campaign = _campaign(campaigns, audience, messages, org_id)
    names = ["slow1", "slow2", *(f"quick{i}" for i in range(6))]
    import_users(audience, org_id, campaign.edition_id, _holders(tag, names))
    for name in ("slow1", "slow2"):
        smtp.slow_down(_address(tag, name), 1.0)

    send_now(campaigns, campaign.id)
    done = wait_final(campaigns, campaign.id, worker)
    assert done.status == SENT, (done, worker.output())
    assert smtp.per_address(campaign.id) == {_address(tag, n).lower(): 1 for n in names}
    finished = {r.rcpt_tos[0].lower(): r.at for r in smtp.of_campaign(campaign.id)}
    slow = [_address(tag, name).lower() for name in ("slow1", "slow2")]
    # Each slow recipient's RCPT began before the other one's message was done.
    assert smtp.rcpt_started[slow[0]] < finished[slow[1]]
    assert smtp.rcpt_started[slow[1]] < finished[slow[0]]
