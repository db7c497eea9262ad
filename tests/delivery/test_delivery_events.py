"""DeliveryService over gRPC, as the platform's bounce and feedback processors use it:
RecordDeliveryEvents batches (duplicates, both ways of naming a message, rejections, limits,
suppression and unsubscribe effects) and ListCampaignRecipients (paging, filters, fields,
errors), on ledgers written by a real worker sending through an SMTP sink."""

from __future__ import annotations

import datetime as dt
import uuid

import grpc
import pytest

from campaigns.v1 import campaign_pb2
from campaigns.v1 import delivery_service_pb2 as dpb
from tests.fixtures.smtp import SmtpSink
from tests.support.delivery import import_users, ledger, send_now, user, wait_final
from tests.support.helpers import (
    make_campaign,
    make_edition,
    make_email_message,
    ts,
    violated_fields,
)
from tests.support.tracking import event, event_count, get_user, record, stats, suppressions

MAX_ATTEMPTS = 2


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def worker_env(smtp: SmtpSink) -> dict[str, str]:
    return {**smtp.env(), "MAX_SEND_ATTEMPTS": str(MAX_ATTEMPTS)}


def _send(
    worker, smtp, campaigns, audience, messages, org_id, names, extra=()
) -> tuple[int, dict[str, int], dict[str, str]]:
    """An email campaign to `names` (+ `extra` users); (campaign id, name -> user id,
    name -> its address)."""
    tag = uuid.uuid4().hex[:8]
    edition = make_edition(audience, org_id)
    message = make_email_message(messages, edition)
    campaign = make_campaign(
        campaigns,
        edition,
        channel=campaign_pb2.CHANNEL_EMAIL,
        sms_body="",
        email_message_id=message.id,
    )
    address = {n: f"{n}.{tag}@mail.example.com" for n in names}
    people = [user(n, email=address[n], first_name=n, email_consent=True) for n in names]
    ids = import_users(audience, org_id, edition.id, [*people, *extra])
    send_now(campaigns, campaign.id)
    wait_final(campaigns, campaign.id, worker, timeout=30)
    return campaign.id, ids, address


def _message_ids(campaign_id: int) -> dict[int, str]:
    return {r.user_id: r.provider_message_id for r in ledger(campaign_id)}


def test_duplicates_count_once_within_a_batch_and_across_batches(
    worker, smtp, campaigns, audience, messages, delivery, org_id
):
    campaign_id, ids, _ = _send(
        worker, smtp, campaigns, audience, messages, org_id, ["ann", "bo", "cy"]
    )
    ann_mid = _message_ids(campaign_id)[ids["ann"]]
    assert ann_mid.startswith(f"<campaign-{campaign_id}.user-")
    seen = dt.datetime(2030, 5, 1, 12, 0, 0)
    bo, cy = (
        {"campaign_id": campaign_id, "user_id": ids["bo"]},
        {"campaign_id": campaign_id, "user_id": ids["cy"]},
    )
    batch = [
        event("delivered", event_id="mx-1", provider_message_id=ann_mid),
        event("delivered", event_id="mx-1", provider_message_id=ann_mid),  # same event_id
        event("opened", occurred_at=ts(seen), **bo),
        event("opened", occurred_at=ts(seen), **bo),  # same content, no event_id
        event("opened", occurred_at=ts(seen + dt.timedelta(seconds=5)), **bo),  # another open
        event("clicked", url="https://festival.example/a", **cy),
        event("clicked", url="https://festival.example/a", **cy),
    ]
    first = record(delivery, *batch)
    assert (first.recorded, first.duplicates, first.rejected) == (4, 3, 0), first
    again = record(delivery, *batch)  # a processor retrying the whole batch
    assert (again.recorded, again.duplicates, again.rejected) == (0, 7, 0), again
    assert event_count(campaign_id=campaign_id) == 4

    s = stats(campaigns, campaign_id)
    assert (s.delivered, s.opened, s.opens_total, s.clicked, s.clicks_total) == (3, 2, 2, 1, 1)
    assert s.open_rate == pytest.approx(2 / 3) and s.click_rate == pytest.approx(1 / 3)
    rows = {r.user_id: r for r in ledger(campaign_id)}
    assert rows[ids["bo"]].opened_at == seen  # the first time, as the source reported it
    assert rows[ids["cy"]].opened_at == rows[ids["cy"]].clicked_at  # a click is an open


def test_events_name_a_message_either_way_and_bad_ones_are_rejected_alone(
    worker, smtp, campaigns, audience, messages, delivery, org_id
):
    campaign_id, ids, _ = _send(
        worker,
        smtp,
        campaigns,
        audience,
        messages,
        org_id,
        ["dan", "eli"],
        extra=[user("nope", first_name="No")],
    )
    dan_mid = _message_ids(campaign_id)[ids["dan"]]
    response = record(
        delivery,
        event("delivered", provider_message_id=dan_mid),
        event("delivered", provider_message_id="<unknown@campaigns.local>"),
        dpb.DeliveryEvent(provider_message_id=dan_mid),  # no type
        event("opened"),  # names no message
        event("opened", campaign_id=campaign_id),  # a campaign without a user
        event("delivered", campaign_id=campaign_id, user_id=ids["eli"]),
        event("opened", campaign_id=campaign_id, user_id=10**15),  # not a recipient
        event("opened", campaign_id=campaign_id, user_id=ids["nope"]),  # skipped: never sent
        event("delivered", event_id="x" * 129, provider_message_id=dan_mid),
        event("opened", provider_message_id=dan_mid, occurred_at=ts(dt.datetime(1960, 1, 1))),
    )
    assert (response.recorded, response.duplicates, response.rejected) == (2, 0, 8), response
    reasons = {r.index: r.reason for r in response.rejections}
    assert sorted(reasons) == [1, 2, 3, 4, 6, 7, 8, 9]
    assert "no delivery matches" in reasons[1]
    assert "type is required" in reasons[2]
    assert "provider_message_id, or campaign_id and user_id" in reasons[3] == reasons[4]
    assert "no delivery matches" in reasons[6]
    assert "skipped" in reasons[7]
    assert "event_id" in reasons[8]
    assert "occurred_at" in reasons[9]
    assert event_count(campaign_id=campaign_id) == 2
    s = stats(campaigns, campaign_id)
    assert (s.sent, s.delivered, s.opened, s.delivery_rate) == (2, 2, 0, 1.0)


def test_an_empty_or_oversized_batch_is_invalid(campaigns, delivery):
    with pytest.raises(grpc.RpcError) as empty:
        delivery.RecordDeliveryEvents(dpb.RecordDeliveryEventsRequest())
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(empty.value) == {"events"}
    before = event_count()
    too_many = [event("opened", campaign_id=1, user_id=1, event_id=str(i)) for i in range(1001)]
    with pytest.raises(grpc.RpcError) as oversized:
        record(delivery, *too_many)
    assert oversized.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "1001" in (oversized.value.details() or "")
    assert event_count() == before


def test_a_full_batch_of_1000_is_taken(
    worker, smtp, campaigns, audience, messages, delivery, org_id
):
    campaign_id, ids, _ = _send(worker, smtp, campaigns, audience, messages, org_id, ["fox"])
    fox = {"campaign_id": campaign_id, "user_id": ids["fox"]}
    response = record(
        delivery, *[event("opened", event_id=f"open-{i}", **fox) for i in range(1000)]
    )
    assert (response.recorded, response.rejected) == (1000, 0)
    s = stats(campaigns, campaign_id)
    assert (s.opened, s.opens_total) == (1, 1000)


def test_hard_bounces_and_complaints_suppress_and_unsubscribes_clear_consent(
    worker, smtp, campaigns, audience, messages, delivery, org_id
):
    names = ["hard", "spam", "soft", "quit"]
    campaign_id, ids, address = _send(worker, smtp, campaigns, audience, messages, org_id, names)
    mids = _message_ids(campaign_id)
    response = record(
        delivery,
        event("bounced_hard", provider_message_id=mids[ids["hard"]], detail="5.1.1 unknown"),
        event("complained", provider_message_id=mids[ids["spam"]], detail="abuse"),
        event("bounced_soft", provider_message_id=mids[ids["soft"]], detail="4.2.2 full"),
        event("unsubscribed", campaign_id=campaign_id, user_id=ids["quit"]),
    )
    assert (response.recorded, response.rejected) == (4, 0), response
    assert suppressions(org_id) == {
        ("email", address["hard"]): "hard_bounce",
        ("email", address["spam"]): "complaint",
    }
    assert suppressions(org_id + 1) == {}  # another organization may still write to them

    quitter = get_user(audience, ids["quit"])
    assert (quitter.email_unsubscribed, quitter.sms_unsubscribed) == (True, False)
    assert quitter.email_consent  # what the user said stays; the unsubscribe wins over it
    assert not any(get_user(audience, ids[n]).email_unsubscribed for n in names[:3])

    rows = {r.user_id: r for r in ledger(campaign_id)}
    assert rows[ids["hard"]].bounced_at is not None
    assert rows[ids["soft"]].bounced_at is None
    assert rows[ids["quit"]].unsubscribed_at is not None
    s = stats(campaigns, campaign_id)
    assert (s.bounced, s.unsubscribed, s.delivered) == (1, 1, 1)
    assert s.unsubscribe_rate == pytest.approx(1.0)


# --- ListCampaignRecipients --------------------------------------------------------------------

RECIPIENTS = ["r1", "r2", "r3", "r4", "r5", "r6", "r7"]


@pytest.fixture(scope="module")
def roster(worker, smtp, campaigns, audience, messages, delivery) -> tuple[int, dict[str, int]]:
    """A sent campaign: 7 sent, 2 failed (550 at once; 451 until gave up), 2 skipped."""
    org = uuid.uuid4().int % 10**12 + 1
    tag = uuid.uuid4().hex[:8]
    smtp.refuse(f"never.{tag}@mail.example.com", 550)
    smtp.refuse(f"busy.{tag}@mail.example.com", 451)
    extra = [
        user(n, email=f"{n}.{tag}@mail.example.com", email_consent=True) for n in ("never", "busy")
    ]
    extra += [
        user("noconsent", email=f"noconsent.{tag}@mail.example.com"),
        user("nomail", email_consent=True),
    ]
    campaign_id, ids, _ = _send(worker, smtp, campaigns, audience, messages, org, RECIPIENTS, extra)
    record(delivery, event("opened", campaign_id=campaign_id, user_id=ids["r2"]))
    return campaign_id, ids


def _list(delivery, campaign_id: int, **fields) -> dpb.ListCampaignRecipientsResponse:
    return delivery.ListCampaignRecipients(
        dpb.ListCampaignRecipientsRequest(campaign_id=campaign_id, **fields)
    )


def test_recipients_page_in_user_order(roster, delivery):
    campaign_id, ids = roster
    pages, page = [], 1
    while page:
        got = _list(delivery, campaign_id, page=page, page_size=4)
        assert got.count == 11
        assert got.previous_page == (page - 1)
        pages.append([r.user_id for r in got.results])
        page = got.next_page
    assert [len(p) for p in pages] == [4, 4, 3]
    everyone = [u for p in pages for u in p]
    assert everyone == sorted(ids.values())
    assert [r.user_id for r in _list(delivery, campaign_id).results] == everyone  # default size


def test_recipients_filter_by_status_with_attempts_errors_reasons_and_times(roster, delivery):
    campaign_id, ids = roster
    sent = _list(delivery, campaign_id, status=dpb.RECIPIENT_STATUS_SENT)
    assert sent.count == 7 and {r.user_id for r in sent.results} == {ids[n] for n in RECIPIENTS}
    for row in sent.results:
        assert (row.status, row.attempts, row.last_error, row.skip_reason) == (
            dpb.RECIPIENT_STATUS_SENT,
            1,
            "",
            "",
        )
        assert row.HasField("sent_at") and row.address.endswith("@mail.example.com")
        assert (
            row.provider_message_id == f"<campaign-{campaign_id}.user-{row.user_id}"
            "@campaigns.local>"
        )
        opened = row.user_id == ids["r2"]
        assert row.HasField("opened_at") == opened and row.HasField("delivered_at") == opened
        assert not row.HasField("clicked_at") and not row.HasField("bounced_at")

    failed = {
        r.user_id: r
        for r in _list(delivery, campaign_id, status=dpb.RECIPIENT_STATUS_FAILED).results
    }
    assert set(failed) == {ids["never"], ids["busy"]}
    never, busy = failed[ids["never"]], failed[ids["busy"]]
    assert (never.status, never.attempts) == (dpb.RECIPIENT_STATUS_FAILED, 1)
    assert never.last_error.startswith("smtp 550")
    assert busy.attempts == MAX_ATTEMPTS
    assert busy.last_error.startswith(f"gave up after {MAX_ATTEMPTS} attempts: smtp 451")
    assert not never.HasField("sent_at") and not never.HasField("next_attempt_at")

    skipped = {
        r.user_id: r
        for r in _list(delivery, campaign_id, status=dpb.RECIPIENT_STATUS_SKIPPED).results
    }
    assert {u: r.skip_reason for u, r in skipped.items()} == {
        ids["noconsent"]: "no_consent",
        ids["nomail"]: "no_address",
    }
    assert all(r.attempts == 0 and not r.HasField("sent_at") for r in skipped.values())
    assert _list(delivery, campaign_id, status=dpb.RECIPIENT_STATUS_PENDING).count == 0


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"campaign_id": 10**15}, grpc.StatusCode.NOT_FOUND),
        ({"campaign_id": 0}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"status": 99}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"page_size": 1001}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"page": -1}, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_recipients_of_an_unknown_campaign_or_with_bad_filters_are_refused(
    roster, delivery, fields, code
):
    request = {"campaign_id": roster[0], **fields}
    with pytest.raises(grpc.RpcError) as error:
        delivery.ListCampaignRecipients(dpb.ListCampaignRecipientsRequest(**request))
    assert error.value.code() == code, error.value.details()
