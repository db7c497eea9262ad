"""Signed link tokens (`server.delivery.link_tokens`): what is signed comes back, in every
purpose; anything altered, forged, signed with another secret or used for another purpose is
refused; and the fast signing path is byte for byte itsdangerous's own."""

from __future__ import annotations

import pytest
from itsdangerous import Signer
from itsdangerous.encoding import base64_decode, base64_encode

from server.delivery.link_tokens import (
    CLICK,
    OPEN,
    UNSUBSCRIBE,
    InvalidToken,
    LinkMaker,
    LinkToken,
    TokenSigner,
)

SIGNER = TokenSigner("tokens-test-secret")
TOKENS = [
    LinkToken(1, 2, OPEN),
    LinkToken(10**12, 987654321, UNSUBSCRIBE),
    LinkToken(7, 42, CLICK, "https://a.example/q?day=1&region=eu#acts"),
    LinkToken(7, 42, CLICK, "https://å.example/søg?q=blåbær&x=\u00e9 y"),
]


@pytest.mark.parametrize("token", TOKENS)
def test_a_signed_token_verifies_to_itself(token):
    text = SIGNER.sign(token)
    assert text.isascii() and "/" not in text  # safe in a URL path segment
    assert SIGNER.verify(text, token.purpose) == token


@pytest.mark.parametrize("token", TOKENS)
def test_the_fast_signature_is_itsdangerous_own(token):
    assert SIGNER.sign(token) == SIGNER.sign_slowly(token)


def test_the_same_token_signs_the_same_and_another_differs():
    assert SIGNER.sign(TOKENS[0]) == SIGNER.sign(LinkToken(1, 2, OPEN))
    assert SIGNER.sign(TOKENS[0]) != SIGNER.sign(LinkToken(1, 3, OPEN))


def test_another_purpose_is_refused():
    text = SIGNER.sign(LinkToken(1, 2, OPEN))
    with pytest.raises(InvalidToken, match="another purpose"):
        SIGNER.verify(text, UNSUBSCRIBE)


def test_another_secret_is_refused():
    text = TokenSigner("someone-else").sign(LinkToken(1, 2, UNSUBSCRIBE))
    with pytest.raises(InvalidToken):
        SIGNER.verify(text, UNSUBSCRIBE)


def _flip(text: str, index: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    char = text[index]
    return text[:index] + alphabet[(alphabet.index(char) + 1) % len(alphabet)] + text[index + 1 :]


def test_an_altered_character_is_refused_or_changes_nothing():
    text = SIGNER.sign(TOKENS[2])
    refused = 0
    for index, char in enumerate(text):
        if char == ".":
            continue
        try:
            token = SIGNER.verify(_flip(text, index), CLICK)
        except InvalidToken:
            refused += 1
            continue
        # Base64's unused low bits in a last character: the same bytes, so the same token.
        assert token == TOKENS[2], index
    assert refused >= len(text) - 3


def test_another_user_or_url_under_the_old_signature_is_refused():
    payload, signature = SIGNER.sign(TOKENS[2]).split(".")
    fields = base64_decode(payload).decode().split("\x1f")
    for changed in (
        [fields[0], "43", *fields[2:]],  # someone else's unsubscribe
        [*fields[:3], "https://evil.example/"],  # an open redirect
    ):
        forged = base64_encode("\x1f".join(changed).encode()).decode() + "." + signature
        with pytest.raises(InvalidToken):
            SIGNER.verify(forged, CLICK)


@pytest.mark.parametrize("payload", ["x\x1f2\x1fo", "1\x1fo", "", "1\x1f2"])
def test_a_well_signed_but_malformed_payload_is_refused(payload):
    # Signed with the right key and salt: only the payload's shape is wrong.
    signer = Signer("tokens-test-secret", salt="campaigns.v1.links")
    text = signer.sign(base64_encode(payload.encode())).decode()
    with pytest.raises(InvalidToken):
        SIGNER.verify(text, OPEN)


@pytest.mark.parametrize("garbage", ["", ".", "abc", "a.b.c", "é.é", "MR8yH28"])
def test_garbage_is_refused(garbage):
    with pytest.raises(InvalidToken):
        SIGNER.verify(garbage, OPEN)


def test_link_maker_builds_the_three_urls_under_the_base():
    maker = LinkMaker("https://t.example/", SIGNER)
    unsubscribe = maker.unsubscribe(7, 42)
    pixel = maker.pixel(7, 42)
    click = maker.click(7, 42, "https://a.example/")
    assert unsubscribe.startswith("https://t.example/u/")
    assert pixel.startswith("https://t.example/o/") and pixel.endswith(".gif")
    assert click.startswith("https://t.example/c/")
    assert SIGNER.verify(unsubscribe.rsplit("/", 1)[1], UNSUBSCRIBE) == LinkToken(
        7, 42, UNSUBSCRIBE
    )
    assert SIGNER.verify(pixel.rsplit("/", 1)[1].removesuffix(".gif"), OPEN) == LinkToken(
        7, 42, OPEN
    )
    assert SIGNER.verify(click.rsplit("/", 1)[1], CLICK).url == "https://a.example/"
