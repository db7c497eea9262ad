"""Signed, opaque tokens for the links in messages: open pixel, click redirect, unsubscribe.

A token names a campaign and a user (and, for a click, the link's URL); it is signed with the
configured secret, so a forged or altered one is refused, and a click can only lead to a URL
that we put in the message ourselves (no open redirect).
"""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeSerializer

OPEN, CLICK, UNSUBSCRIBE = "o", "c", "u"


@dataclass(frozen=True)
class LinkToken:
    campaign_id: int
    user_id: int
    purpose: str  # OPEN, CLICK or UNSUBSCRIBE
    url: str = ""  # the original link, for clicks


class InvalidToken(ValueError):
    """The token was not made by us, or was altered."""


class TokenSigner:
    def __init__(self, secret: str) -> None:
        self._serializer = URLSafeSerializer(secret, salt="campaigns.v1.links")

    def sign(self, token: LinkToken) -> str:
        payload: list[object] = [token.campaign_id, token.user_id, token.purpose]
        if token.url:
            payload.append(token.url)
        return str(self._serializer.dumps(payload))

    def verify(self, text: str, purpose: str) -> LinkToken:
        try:
            payload = self._serializer.loads(text)
            campaign_id, user_id, kind = int(payload[0]), int(payload[1]), str(payload[2])
            url = str(payload[3]) if len(payload) > 3 else ""
        except (BadSignature, ValueError, TypeError, IndexError) as exc:
            raise InvalidToken("invalid link token") from exc
        if kind != purpose:
            raise InvalidToken("token made for another purpose")
        return LinkToken(campaign_id, user_id, kind, url)


class LinkMaker:
    """Builds the tracking URLs of one message under the public base URL."""

    def __init__(self, base_url: str, signer: TokenSigner) -> None:
        self.base = base_url.rstrip("/")
        self.signer = signer

    def unsubscribe(self, campaign_id: int, user_id: int) -> str:
        return f"{self.base}/u/{self.signer.sign(LinkToken(campaign_id, user_id, UNSUBSCRIBE))}"

    def pixel(self, campaign_id: int, user_id: int) -> str:
        return f"{self.base}/o/{self.signer.sign(LinkToken(campaign_id, user_id, OPEN))}.gif"

    def click(self, campaign_id: int, user_id: int, url: str) -> str:
        return f"{self.base}/c/{self.signer.sign(LinkToken(campaign_id, user_id, CLICK, url))}"


def unsubscribe_url(base_url: str, signer: TokenSigner, campaign_id: int, user_id: int) -> str:
    return LinkMaker(base_url, signer).unsubscribe(campaign_id, user_id)
