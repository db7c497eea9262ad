"""The tracking app over HTTP, as recipients reach it: a real email campaign goes out through
the worker and an SMTP sink, its links point at `python -m server.http.tracking` (gunicorn) on a
free port, and an httpx client fetches the pixel, follows rewritten links, reads the
unsubscribe page, posts RFC 8058 one-click, and tries forged or altered tokens."""

from __future__ import annotations

import time
import uuid

import pytest
from itsdangerous.encoding import base64_decode, base64_encode

from campaigns.v1 import campaign_pb2
from server.delivery.link_tokens import CLICK, OPEN, UNSUBSCRIBE, LinkToken, TokenSigner
from server.http.tracking import PIXEL
from server.store.db import release_connection
from server.store.models import DeliveryEvent
from tests.fixtures.smtp import SmtpSink
from tests.fixtures.tracking import TRACKING_SECRET, TrackingServer
from tests.support.delivery import import_users, ledger, send_now, user, wait_final
from tests.support.helpers import make_campaign, make_edition, make_email_message
from tests.support.processes import wait_until
from tests.support.tracking import (
    EmailLinks,
    by_recipient,
    email_links,
    event_count,
    get_user,
    stats,
)

LINEUP = "https://festival.example/lineup?day=1&region=eu&currency=DKK#acts"
TICKETS = "https://tickets.example/buy?event=7&tier=vip"  # written &amp; in the HTML
HTML = (
    "<html><body><p>Hello {{ user.first_name }}!</p>"
    f'<p><a href="{LINEUP}">Line-up</a> '
    "<a href='https://tickets.example/buy?event=7&amp;tier=vip'>Tickets</a> "
    '<a href="mailto:info@festival.example">Write to us</a></p></body></html>'
)


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def worker_env(smtp: SmtpSink, tracking: TrackingServer) -> dict[str, str]:
    return {**smtp.env(), **tracking.env()}


def _send(
    worker, smtp, campaigns, audience, messages, org_id, names
) -> tuple[int, dict[str, int], dict[str, EmailLinks]]:
    """An email campaign to `names`; (campaign id, name -> user id, name -> its links)."""
    tag = uuid.uuid4().hex[:8]
    edition = make_edition(audience, org_id)
    message = make_email_message(messages, edition, html_body=HTML, subject="Line-up")
    campaign = make_campaign(
        campaigns,
        edition,
        channel=campaign_pb2.CHANNEL_EMAIL,
        sms_body="",
        email_message_id=message.id,
    )
    people = [
        user(n, email=f"{n}.{tag}@mail.example.com", first_name=n.capitalize(), email_consent=True)
        for n in names
    ]
    ids = import_users(audience, org_id, edition.id, people)
    send_now(campaigns, campaign.id)
    done = wait_final(campaigns, campaign.id, worker)
    assert done.sent_count == len(names), (done, worker.output())
    got = by_recipient(smtp.of_campaign(campaign.id))
    return campaign.id, ids, {n: email_links(got[f"{n}.{tag}@mail.example.com"]) for n in names}


def test_pixel_and_clicks_are_recorded_and_counted_uniquely_and_in_total(
    worker, tracking, smtp, http, campaigns, audience, messages, org_id
):
    campaign_id, ids, links = _send(
        worker, smtp, campaigns, audience, messages, org_id, ["ann", "bo", "cy", "dag"]
    )
    for got in links.values():
        lineup, tickets, mailto, unsubscribe = got.hrefs
        assert lineup.startswith(tracking.url("/c/")) and tickets.startswith(tracking.url("/c/"))
        assert lineup != tickets
        assert mailto == "mailto:info@festival.example"  # other schemes are left alone
        assert unsubscribe == got.unsubscribe  # the visible link is not click-tracked
        assert got.pixel.startswith(tracking.url("/o/")) and got.pixel.endswith(".gif")
    assert len({got.pixel for got in links.values()}) == 4  # one per recipient
    before = event_count(campaign_id=campaign_id)
    assert before == 0

    ann, bo, cy = links["ann"], links["bo"], links["cy"]
    for _ in range(3):
        pixel = http.get(ann.pixel)
        assert pixel.status_code == 200, tracking.output()
        assert pixel.headers["content-type"] == "image/gif"
        assert pixel.content == PIXEL and pixel.content.startswith(b"GIF89a")
        assert "no-store" in pixel.headers["cache-control"]
    assert http.get(bo.pixel).status_code == 200
    redirects = [
        http.get(ann.hrefs[0]),
        http.get(ann.hrefs[0]),
        http.get(ann.hrefs[1]),
        http.get(cy.hrefs[0]),
    ]  # cy blocks images: the click alone proves the open
    for response, target in zip(redirects, [LINEUP, LINEUP, TICKETS, LINEUP], strict=True):
        assert response.status_code == 302, tracking.output()
        assert response.headers["location"] == target  # exactly the URL of the template
    answered = time.monotonic()

    expected = {
        "sent": 4,
        "delivered": 3,
        "opened": 3,
        "opens_total": 4,
        "clicked": 2,
        "clicks_total": 4,
        "unsubscribed": 0,
        "bounced": 0,
    }

    def figures() -> dict[str, int]:
        s = stats(campaigns, campaign_id)
        return {key: getattr(s, key) for key in expected}

    assert wait_until(lambda: figures() == expected, 1.0, 0.02), figures()
    assert time.monotonic() - answered < 1.0
    s = stats(campaigns, campaign_id)
    # Rates as the proto defines them; an open or click proves delivery, so none exceeds 1.
    assert s.delivery_rate == pytest.approx(3 / 4)  # delivered / sent
    assert s.open_rate == pytest.approx(3 / 3)  # opened / delivered
    assert s.click_rate == pytest.approx(2 / 3)  # clicked / delivered
    assert s.unsubscribe_rate == 0.0
    assert event_count(campaign_id=campaign_id, type="opened") == 4
    assert event_count(campaign_id=campaign_id, type="clicked") == 4
    assert sorted(_click_urls(campaign_id)) == sorted([LINEUP, LINEUP, TICKETS, LINEUP])

    rows = {r.user_id: r for r in ledger(campaign_id)}
    assert rows[ids["ann"]].opened_at <= rows[ids["ann"]].clicked_at
    assert rows[ids["bo"]].opened_at is not None and rows[ids["bo"]].clicked_at is None
    assert rows[ids["cy"]].opened_at is not None and rows[ids["cy"]].clicked_at is not None
    dag = rows[ids["dag"]]
    assert (dag.opened_at, dag.clicked_at, dag.delivered_at) == (None, None, None)


def _click_urls(campaign_id: int) -> list[str]:
    try:
        return [
            e.url
            for e in DeliveryEvent.select().where(
                (DeliveryEvent.campaign_id == campaign_id) & (DeliveryEvent.type == "clicked")
            )
        ]
    finally:
        release_connection()


def test_unsubscribe_page_never_unsubscribes_and_one_click_post_does(
    worker, tracking, smtp, http, campaigns, audience, messages, org_id
):
    campaign_id, ids, links = _send(
        worker, smtp, campaigns, audience, messages, org_id, ["eve", "fay"]
    )
    eve = links["eve"]
    page = http.get(eve.hrefs[3])  # the body's link: a page with a form, nothing recorded
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<form method=post" in page.text and "One-Click" in page.text
    assert "location" not in page.headers
    assert http.head(eve.unsubscribe).status_code == 200  # a scanner's HEAD does nothing either
    assert event_count(campaign_id=campaign_id) == 0
    assert not get_user(audience, ids["eve"]).email_unsubscribed

    # RFC 8058: what a mailbox provider sends to the List-Unsubscribe URL.
    for _ in range(2):  # a repeated POST answers the same and records nothing more
        done = http.post(
            eve.unsubscribe,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert done.status_code == 200, tracking.output()
        assert "location" not in done.headers and "unsubscribed" in done.text.lower()
    assert get_user(audience, ids["eve"]).email_unsubscribed
    assert not get_user(audience, ids["eve"]).sms_unsubscribed  # only this channel
    assert not get_user(audience, ids["fay"]).email_unsubscribed
    rows = {r.user_id: r for r in ledger(campaign_id)}
    assert rows[ids["eve"]].unsubscribed_at is not None
    assert rows[ids["fay"]].unsubscribed_at is None
    assert event_count(campaign_id=campaign_id, type="unsubscribed") == 1
    s = stats(campaigns, campaign_id)
    assert (s.unsubscribed, s.delivered) == (1, 1)  # following the link proves delivery
    assert s.unsubscribe_rate == pytest.approx(1.0)


def _swap_url(token: str, old: str, new: str) -> str:
    """The click token with `new` in place of `old` in its payload, its signature kept."""
    payload, signature = token.rsplit(".", 1)
    raw = base64_decode(payload)
    assert old.encode() in raw, raw  # the URL rides in the (signed, not encrypted) payload
    return base64_encode(raw.replace(old.encode(), new.encode())).decode() + "." + signature


def test_forged_or_altered_tokens_are_refused_and_record_nothing(
    worker, tracking, smtp, http, campaigns, audience, messages, org_id
):
    campaign_id, ids, links = _send(worker, smtp, campaigns, audience, messages, org_id, ["gus"])
    gus = links["gus"]
    click_token = gus.hrefs[0].rsplit("/", 1)[1]
    pixel_token = gus.pixel.rsplit("/", 1)[1].removesuffix(".gif")
    unsubscribe_token = gus.unsubscribe.rsplit("/", 1)[1]
    flipped = pixel_token[:-3] + ("A" if pixel_token[-3] != "A" else "B") + pixel_token[-2:]
    other_secret = TokenSigner("not-" + TRACKING_SECRET)
    forged_click = other_secret.sign(
        LinkToken(campaign_id, ids["gus"], CLICK, "https://evil.example/phish")
    )
    assert _swap_url(click_token, LINEUP, LINEUP) == click_token  # the codec is right
    rows_before = event_count()

    refused = [
        http.get(tracking.url(f"/o/{flipped}.gif")),  # one character changed
        http.get(
            tracking.url(f"/o/{other_secret.sign(LinkToken(campaign_id, ids['gus'], OPEN))}.gif")
        ),  # signed with another secret
        http.get(tracking.url("/o/garbage.gif")),
        http.get(tracking.url(f"/o/{click_token}.gif")),  # a click token is no pixel
        http.get(tracking.url(f"/c/{forged_click}")),
        http.get(tracking.url(f"/c/{_swap_url(click_token, LINEUP, 'https://evil.example/')}")),
        http.get(tracking.url(f"/c/{pixel_token}")),  # a pixel token leads nowhere
        http.get(tracking.url(f"/c/{unsubscribe_token[:-1]}")),
        http.post(tracking.url(f"/u/{unsubscribe_token}x"), data={"List-Unsubscribe": "One-Click"}),
        http.post(tracking.url(f"/u/{click_token}"), data={"List-Unsubscribe": "One-Click"}),
        http.get(tracking.url(f"/u/{pixel_token[:-2]}")),
    ]
    for response in refused:
        assert response.status_code == 404, (response.request.url, response.status_code)
        assert "location" not in response.headers
        assert b"GIF" not in response.content[:3]
    assert event_count() == rows_before
    assert not get_user(audience, ids["gus"]).email_unsubscribed
    assert ledger(campaign_id)[0].unsubscribed_at is None

    # Extra parameters cannot steer the redirect: the token's URL is the only target.
    steered = http.get(gus.hrefs[0], params={"url": "https://evil.example/", "next": "//evil"})
    assert (steered.status_code, steered.headers["location"]) == (302, LINEUP)
    assert event_count() == rows_before + 1


@pytest.mark.parametrize(
    "token",
    [
        LinkToken(1, 2, OPEN),
        LinkToken(10**12, 7, CLICK, "https://festival.example/a?b=c&d=ü"),
        LinkToken(3, 4, UNSUBSCRIBE),
    ],
)
def test_fast_signing_is_byte_for_byte_itsdangerous(token: LinkToken) -> None:
    """Links already in inboxes must keep working: the precomputed-HMAC signer writes exactly
    what itsdangerous' Signer writes, and itsdangerous verifies it."""
    signer = TokenSigner(TRACKING_SECRET)
    assert signer.sign(token) == signer.sign_slowly(token)
    assert signer.verify(signer.sign(token), token.purpose) == token
