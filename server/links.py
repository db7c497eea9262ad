"""Click and open tracking for an email's HTML: links become signed redirects, and a 1x1
pixel is added. Runs per recipient, so it is a single regular-expression pass."""

from __future__ import annotations

import html
import re

from server.tokens import LinkMaker

# href="http..." or href='http...' on any tag; other schemes (mailto:, tel:) stay untouched.
_HREF = re.compile(r"""(href\s*=\s*)(["'])(https?://[^"']+)\2""", re.IGNORECASE)


def track(body_html: str, maker: LinkMaker, campaign_id: int, user_id: int, skip: str = "") -> str:
    """`body_html` with every http(s) link (but `skip`, the unsubscribe URL) tracked."""

    def rewrite(match: re.Match[str]) -> str:
        url = html.unescape(match.group(3))
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
