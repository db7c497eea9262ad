"""Suppression end to end: Twilio-style status callbacks and inbound replies, signed (or not)
as Twilio signs them, posted to the tracking app under gunicorn about SMS a real worker sent
through a Twilio-compatible server; then second campaigns, email and SMS, that skip everyone
the first one suppressed or unsubscribed, say why in the ledger, and send them nothing."""

from __future__ import annotations

import random
import uuid
from collections import Counter

import pytest

from campaigns.v1 import campaign_pb2
from server.delivery import webhooks
from server.store.db import release_connection
from server.store.models import DeliveryEvent
from tests.fixtures.smtp import SmtpSink
from tests.fixtures.tracking import TrackingServer
from tests.fixtures.twilio import TWILIO_TOKEN, FakeTwilio
from tests.support.delivery import import_users, ledger, send_now, user, wait_final
from tests.support.helpers import make_campaign, make_edition, make_email_message
from tests.support.tracking import (
    by_recipient,
    email_links,
    event,
    event_count,
    get_user,
    record,
    stats,
    suppressions,
    twilio_post,
)

STATUS, INBOUND = "/webhooks/twilio/status", "/webhooks/twilio/inbound"
SMS_BODY = "Hi {{ user.first_name }}, gates open at 12. Stop: {{ unsubscribe_url }}"


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def worker_env(smtp: SmtpSink, twilio: FakeTwilio, tracking: TrackingServer) -> dict[str, str]:
    # One account token, the API's and the webhooks': FakeTwilio's is TWILIO_TOKEN, as here.
    return {**smtp.env(), **twilio.env(), **tracking.env()}


def _sms_people(audience, org_id, names) -> tuple[object, dict[str, int], dict[str, str]]:
    """An edition whose users `names` have fresh mobile numbers and SMS consent."""
    edition = make_edition(audience, org_id)
    start = random.randrange(26_000_000, 28_999_000)
    phone = {n: f"+45{start + i}" for i, n in enumerate(names)}
    ids = import_users(
        audience,
        org_id,
        edition.id,
        [user(n, phone=phone[n], first_name=n.capitalize(), sms_consent=True) for n in names],
    )
    return edition, ids, phone


def _sms_campaign(campaigns, edition, worker) -> int:
    campaign = make_campaign(campaigns, edition, sms_body=SMS_BODY)
    send_now(campaigns, campaign.id)
    assert wait_final(campaigns, campaign.id, worker).status == campaign_pb2.CAMPAIGN_STATUS_SENT
    return campaign.id


def _status(sid: str, status: str, error: str = "") -> dict[str, str]:
    params = {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": FakeTwilio.account_sid,
        "MessageStatus": status,
        "SmsStatus": status,
    }
    return params | ({"ErrorCode": error} if error else {})


def _inbound(phone: str, body: str) -> dict[str, str]:
    return {
        "MessageSid": "SM" + uuid.uuid4().hex,
        "AccountSid": FakeTwilio.account_sid,
        "From": phone,
        "To": FakeTwilio.sender,
        "Body": body,
        "NumSegments": "1",
    }


def test_signed_status_callbacks_count_deliveries_and_hard_failures_suppress(
    worker, twilio, tracking, http, campaigns, audience, org_id
):
    names = ["ann", "bo", "cy", "dag"]
    edition, ids, phone = _sms_people(audience, org_id, names)
    campaign_id = _sms_campaign(campaigns, edition, worker)
    sid = {n: twilio.to(phone[n])[0].sid for n in names}
    assert {r.user_id: r.provider_message_id for r in ledger(campaign_id)} == {
        ids[n]: sid[n] for n in names
    }

    delivered = _status(sid["ann"], "delivered")
    forged = [
        twilio_post(http, tracking, STATUS, delivered, token=None),  # no signature
        twilio_post(http, tracking, STATUS, delivered, token="another-" + TWILIO_TOKEN),
        http.post(
            tracking.url(STATUS),
            data=_status(sid["cy"], "undelivered", "30006"),
            headers={
                "X-Twilio-Signature":  # signed, then altered on the way
                _signature(tracking, _status(sid["cy"], "delivered"))
            },
        ),
        http.post(
            tracking.url(STATUS),
            data=delivered,  # signed for another URL
            headers={"X-Twilio-Signature": _signature(tracking, delivered, INBOUND)},
        ),
    ]
    assert [r.status_code for r in forged] == [403] * 4, tracking.output()
    assert event_count(campaign_id=campaign_id) == 0 and suppressions(org_id) == {}

    answers = [
        twilio_post(http, tracking, STATUS, delivered),
        twilio_post(http, tracking, STATUS, delivered),  # Twilio retries: counted once
        twilio_post(http, tracking, STATUS, _status(sid["bo"], "sent")),  # no event
        twilio_post(http, tracking, STATUS, _status(sid["cy"], "undelivered", "30006")),
        twilio_post(http, tracking, STATUS, _status(sid["dag"], "failed", "30003")),
        twilio_post(http, tracking, STATUS, _status("SM" + "0" * 32, "delivered")),
    ]
    assert [r.status_code for r in answers] == [204] * 6, tracking.output()
    assert Counter(_types(campaign_id)) == {"delivered": 1, "bounced_hard": 1, "bounced_soft": 1}
    assert suppressions(org_id) == {("sms", phone["cy"]): "hard_bounce"}  # 30003 is temporary
    rows = {r.user_id: r for r in ledger(campaign_id)}
    assert rows[ids["ann"]].delivered_at is not None and rows[ids["bo"]].delivered_at is None
    assert rows[ids["cy"]].bounced_at is not None and rows[ids["dag"]].bounced_at is None
    s = stats(campaigns, campaign_id)
    assert (s.sent, s.delivered, s.bounced) == (4, 1, 1)
    assert s.delivery_rate == pytest.approx(1 / 4)


def _signature(tracking: TrackingServer, params: dict[str, str], path: str = STATUS) -> str:
    return webhooks.signature(TWILIO_TOKEN, tracking.url(path), params)


def _types(campaign_id: int) -> list[str]:
    try:
        return [
            e.type for e in DeliveryEvent.select().where(DeliveryEvent.campaign_id == campaign_id)
        ]
    finally:
        release_connection()


def test_stop_replies_suppress_the_number_and_a_second_sms_campaign_skips_them(
    worker, twilio, tracking, http, campaigns, audience, org_id
):
    names = ["eve", "fay", "gus", "hal", "ivy"]
    edition, ids, phone = _sms_people(audience, org_id, names)
    first = _sms_campaign(campaigns, edition, worker)
    assert (
        twilio_post(http, tracking, INBOUND, _inbound(phone["eve"], "STOP"), token=None).status_code
        == 403
    )
    assert suppressions(org_id) == {}

    replies = {"eve": "STOP", "fay": "  stop \n", "gus": "Stop  All", "hal": "Thanks, see you!"}
    for name, body in replies.items():
        answer = twilio_post(http, tracking, INBOUND, _inbound(phone[name], body))
        assert answer.status_code == 200, tracking.output()
        assert answer.headers["content-type"].startswith("application/xml")
    stranger = twilio_post(http, tracking, INBOUND, _inbound("+4529999999", "STOP"))
    assert stranger.status_code == 200  # nobody texted this number: nothing to suppress
    stopped = {"eve", "fay", "gus"}
    assert suppressions(org_id) == {("sms", phone[n]): "stop_reply" for n in stopped}
    for name in names:
        person = get_user(audience, ids[name])
        assert (person.sms_unsubscribed, person.email_unsubscribed) == (name in stopped, False)
    # ivy's number bounced for good meanwhile: suppressed, though her consent is untouched.
    ivy_sid = twilio.to(phone["ivy"])[0].sid
    assert (
        twilio_post(http, tracking, STATUS, _status(ivy_sid, "undelivered", "30006")).status_code
        == 204
    )

    second = _sms_campaign(campaigns, edition, worker)
    rows = {r.user_id: r for r in ledger(second)}
    assert {n: (rows[ids[n]].status, rows[ids[n]].skip_reason) for n in names} == {
        "eve": ("skipped", "unsubscribed"),
        "fay": ("skipped", "unsubscribed"),
        "gus": ("skipped", "unsubscribed"),
        "hal": ("sent", ""),
        "ivy": ("skipped", "suppressed"),
    }
    assert {n: len(twilio.to(phone[n])) for n in names} == {
        "eve": 1,
        "fay": 1,
        "gus": 1,
        "hal": 2,
        "ivy": 1,
    }
    s = stats(campaigns, second)
    assert (s.total_recipients, s.sent, s.skipped) == (1, 1, 4)
    assert stats(campaigns, first).skipped == 0


def test_a_second_email_campaign_skips_everyone_the_first_suppressed_or_unsubscribed(
    worker, smtp, tracking, http, delivery, campaigns, audience, messages, org_id
):
    tag = uuid.uuid4().hex[:8]
    names = ["hard", "spam", "oneclick", "told", "soft", "fine"]
    address = {n: f"{n}.{tag}@mail.example.com" for n in names}
    edition = make_edition(audience, org_id)
    message = make_email_message(messages, edition)
    ids = import_users(
        audience,
        org_id,
        edition.id,
        [user(n, email=address[n], first_name=n, email_consent=True) for n in names],
    )

    def send() -> int:
        campaign = make_campaign(
            campaigns,
            edition,
            channel=campaign_pb2.CHANNEL_EMAIL,
            sms_body="",
            email_message_id=message.id,
        )
        send_now(campaigns, campaign.id)
        done = wait_final(campaigns, campaign.id, worker)
        assert done.status == campaign_pb2.CAMPAIGN_STATUS_SENT, (done, worker.output())
        return campaign.id

    first = send()
    got = by_recipient(smtp.of_campaign(first))
    assert set(got) == set(address.values())
    mid = {n: str(got[address[n]].message["Message-ID"]) for n in names}
    response = record(
        delivery,
        event("bounced_hard", provider_message_id=mid["hard"], detail="5.1.1 no such user"),
        event("complained", provider_message_id=mid["spam"], detail="abuse report"),
        event("unsubscribed", provider_message_id=mid["told"], detail="replied 'remove me'"),
        event("bounced_soft", provider_message_id=mid["soft"], detail="4.2.2 mailbox full"),
    )
    assert (response.recorded, response.rejected) == (4, 0), response
    one_click = http.post(
        email_links(got[address["oneclick"]]).unsubscribe, data={"List-Unsubscribe": "One-Click"}
    )
    assert one_click.status_code == 200, tracking.output()
    assert suppressions(org_id) == {
        ("email", address["hard"]): "hard_bounce",
        ("email", address["spam"]): "complaint",
    }

    second = send()
    rows = {r.user_id: r for r in ledger(second)}
    assert {n: (rows[ids[n]].status, rows[ids[n]].skip_reason) for n in names} == {
        "hard": ("skipped", "suppressed"),
        "spam": ("skipped", "suppressed"),
        "oneclick": ("skipped", "unsubscribed"),
        "told": ("skipped", "unsubscribed"),
        "soft": ("sent", ""),
        "fine": ("sent", ""),
    }
    assert smtp.per_address(second) == {address["soft"]: 1, address["fine"]: 1}
    s = stats(campaigns, second)
    assert (s.total_recipients, s.sent, s.skipped) == (2, 2, 4)
    first_stats = stats(campaigns, first)
    assert (first_stats.bounced, first_stats.unsubscribed) == (1, 2)
