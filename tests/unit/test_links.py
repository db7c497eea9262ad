"""Click and open tracking in an email's HTML (`server.delivery.links.track`), read back with
the standard library's HTML parser and the token signer: which links are rewritten, that each
redirect leads to the URL as a browser would have read it, and where the pixel goes."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from server.delivery.link_tokens import CLICK, OPEN, LinkMaker, LinkToken, TokenSigner
from server.delivery.links import track

BASE = "https://t.example"
SIGNER = TokenSigner("links-test-secret")
MAKER = LinkMaker(BASE + "/", SIGNER)  # a trailing slash on the base is dropped
CAMPAIGN, USER = 7, 42


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.images: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a":
            self.hrefs.append(values.get("href") or "")
        if tag == "img":
            self.images.append(values)


def parsed(body: str) -> Tags:
    tags = Tags()
    tags.feed(body)
    return tags


def clicked(href: str) -> str:
    """The URL a tracked link redirects to (the token must verify as this user's click)."""
    assert href.startswith(f"{BASE}/c/"), href
    token = SIGNER.verify(href.removeprefix(f"{BASE}/c/"), CLICK)
    assert (token.campaign_id, token.user_id) == (CAMPAIGN, USER)
    return token.url


def test_http_and_https_links_become_signed_redirects_to_the_same_url():
    body = (
        '<html><body><a href="https://a.example/x">A</a>'
        "<A HREF='http://b.example/'>B</A></body></html>"
    )
    hrefs = parsed(track(body, MAKER, CAMPAIGN, USER)).hrefs
    assert [clicked(h) for h in hrefs] == ["https://a.example/x", "http://b.example/"]


def test_the_redirect_leads_where_the_browser_would_have_gone():
    # `&amp;` is an ampersand; `&region` (no semicolon, before "=") stays literal, as in HTML5.
    body = '<a href="https://a.example/q?day=1&region=eu&amp;tier=vip&copy;x">Q</a>'
    (href,) = parsed(track(body, MAKER, CAMPAIGN, USER)).hrefs
    assert clicked(href) == "https://a.example/q?day=1&region=eu&tier=vip©x"


@pytest.mark.parametrize(
    "href",
    ["mailto:info@festival.example", "tel:+4512345678", "#top", "/relative", "ftp://f.example/"],
)
def test_other_schemes_and_relative_links_are_left_alone(href):
    body = f'<a href="{href}">x</a>'
    assert parsed(track(body, MAKER, CAMPAIGN, USER)).hrefs == [href]


def test_the_unsubscribe_link_and_our_own_links_are_not_tracked():
    unsubscribe = MAKER.unsubscribe(CAMPAIGN, USER)
    body = f'<a href="{unsubscribe}">Stop</a><a href="{BASE}/u/other">ours</a>'
    hrefs = parsed(track(body, MAKER, CAMPAIGN, USER, skip=unsubscribe)).hrefs
    assert hrefs == [unsubscribe, f"{BASE}/u/other"]


def test_one_hidden_pixel_before_the_end_of_the_body():
    out = track("<html><body><p>Hi</p></body></html>", MAKER, CAMPAIGN, USER)
    (pixel,) = parsed(out).images
    assert (pixel["width"], pixel["height"], pixel["alt"]) == ("1", "1", "")
    assert out.endswith("</body></html>") and out.index("<img") < out.index("</body>")
    src = str(pixel["src"])
    assert src.startswith(f"{BASE}/o/") and src.endswith(".gif")
    token = SIGNER.verify(src.removeprefix(f"{BASE}/o/").removesuffix(".gif"), OPEN)
    assert token == LinkToken(CAMPAIGN, USER, OPEN)


def test_without_a_body_tag_the_pixel_is_appended():
    out = track("<p>Hi</p>", MAKER, CAMPAIGN, USER)
    assert out.startswith("<p>Hi</p><img ") and len(parsed(out).images) == 1


def test_the_text_around_the_links_is_unchanged():
    body = '<p>Before <a class="b" href="https://a.example/">link</a> after &amp; more</p>'
    out = track(body, MAKER, CAMPAIGN, USER)
    head, rest = out.split('href="', 1)
    assert head == '<p>Before <a class="b" '
    assert rest.split('"', 1)[1].startswith(">link</a> after &amp; more</p><img ")


def test_each_recipient_gets_links_of_their_own():
    body = '<a href="https://a.example/">A</a>'
    first = track(body, MAKER, CAMPAIGN, 1)
    second = track(body, MAKER, CAMPAIGN, 2)
    assert first != second
