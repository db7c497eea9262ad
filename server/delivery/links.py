"""Click and open tracking for an email's HTML: links become signed redirects, and a 1x1
pixel is added. Runs per recipient, so it is a single regular-expression pass."""

from __future__ import annotations

import html
import re
from html.entities import html5

from server.delivery.link_tokens import LinkMaker

# href="http..." or href='http...' on any tag; other schemes (mailto:, tel:) stay untouched.
_HREF = re.compile(r"""(href\s*=\s*)(["'])(https?://[^"']+)\2""", re.IGNORECASE)
_CHARREF = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[A-Za-z][A-Za-z0-9]*;?)")


def _attribute_unescape(value: str) -> str:
    """Decode character references in an attribute value as browsers do (HTML5 tokenizer):
    a named one without ";" followed by "=" or a letter or digit stays literal, so the query
    `?day=1&region=eu` keeps `&region` (html.unescape would make it "\u00aeion")."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("#"):
            return html.unescape(match.group(0))
        following = match.string[match.end() : match.end() + 1]
        if name in html5 and (name.endswith(";") or following != "="):
            return html5[name]
        return match.group(0)

    return _CHARREF.sub(one, value)


def track(body_html: str, maker: LinkMaker, campaign_id: int, user_id: int, skip: str = "") -> str:
    """`body_html` with every http(s) link (but `skip`, the unsubscribe URL) tracked."""

    def rewrite(match: re.Match[str]) -> str:
        url = _attribute_unescape(match.group(3))
        if url == skip or url.startswith(maker.base + "/"):
            return match.group(0)
        tracked = html.escape(maker.click(campaign_id, user_id, url), quote=True)
        return f"{match.group(1)}{match.group(2)}{tracked}{match.group(2)}"

    tracked_html = _HREF.sub(rewrite, body_html)
    pixel = (
        f'<img src="{html.escape(maker.pixel(campaign_id, user_id))}" width="1" '
        'height="1" alt="" style="display:none">'
    )
    if "</body>" in tracked_html:
        return tracked_html.replace("</body>", pixel + "</body>", 1)
    return tracked_html + pixel
