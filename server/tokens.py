"""Signed, opaque tokens for links in messages (unsubscribe, and later opens and clicks).

A token names a campaign and a user (and optionally a link); it is signed with the configured
secret, so a forged or altered one is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeSerializer


@dataclass(frozen=True)
class LinkToken:
    campaign_id: int
    user_id: int
    purpose: str  # "unsubscribe", "open", "click"
    link: int = -1  # index of the link in the message, for clicks


class InvalidToken(ValueError):
    """The token was not made by us, or was altered."""


class TokenSigner:
    def __init__(self, secret: str) -> None:
        self._serializer = URLSafeSerializer(secret, salt="campaigns.v1.links")

    def sign(self, token: LinkToken) -> str:
        return str(self._serializer.dumps(
            [token.campaign_id, token.user_id, token.purpose, token.link]
        ))

    def verify(self, text: str) -> LinkToken:
        try:
            campaign_id, user_id, purpose, link = self._serializer.loads(text)
        except (BadSignature, ValueError, TypeError) as exc:
            raise InvalidToken("invalid link token") from exc
        return LinkToken(int(campaign_id), int(user_id), str(purpose), int(link))


def unsubscribe_url(base_url: str, signer: TokenSigner, campaign_id: int, user_id: int) -> str:
    token = signer.sign(LinkToken(campaign_id, user_id, "unsubscribe"))
    return f"{base_url.rstrip('/')}/u/{token}"
