"""Fast RFC 5322 / MIME assembly for bulk mail: multipart/alternative (text + HTML).

Building each message through `email.message.EmailMessage` costs more than sending it. The
parts that are the same for every recipient (From, Reply-To, the boundary...) are encoded
once per campaign; per recipient only the variable headers and the two bodies are encoded,
with the standard library's own encoders (RFC 2047 words, quoted-printable).
"""

from __future__ import annotations

import binascii
import time
import uuid
from email.header import Header
from email.utils import formataddr, formatdate
from functools import lru_cache

CRLF = "\r\n"
MAX_LINE = 998  # RFC 5322 line limit


@lru_cache(maxsize=1)
def _date(second: int) -> str:
    """The Date header, formatted once per second rather than per message."""
    return formatdate(second, usegmt=True)


def header_value(value: str) -> str:
    """ASCII as is; anything else as RFC 2047 encoded words (folded)."""
    if value.isascii():
        return " ".join(value.split())
    return Header(value, "utf-8", maxlinelen=76).encode(linesep=CRLF)


def address(name: str, addr: str) -> str:
    return formataddr((name, addr), charset="utf-8") if name else addr


def _body(subtype: str, text: str) -> str:
    lines = text.replace("\r\n", "\n").split("\n")
    if text.isascii() and all(len(line) <= MAX_LINE for line in lines):
        encoding, payload = "7bit", CRLF.join(lines)
    else:
        encoding = "quoted-printable"
        raw = binascii.b2a_qp("\n".join(lines).encode("utf-8"), istext=True)
        payload = raw.decode("ascii").replace("\n", CRLF)
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"{CRLF}'
        f"Content-Transfer-Encoding: {encoding}{CRLF}{CRLF}{payload}{CRLF}"
    )


class MimeTemplate:
    """What one campaign's messages share, encoded once."""

    def __init__(self, sender: str, reply_to: str = "") -> None:
        self.boundary = f"=_campaign_{uuid.uuid4().hex}"
        fixed = [f"From: {sender}"]
        if reply_to:
            fixed.append(f"Reply-To: {reply_to}")
        fixed += [
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
            "MIME-Version: 1.0",
            f'Content-Type: multipart/alternative; boundary="{self.boundary}"',
        ]
        self.fixed = CRLF.join(fixed)

    def build(
        self, *, to: str, subject: str, message_id: str, unsubscribe_url: str, text: str, html: str
    ) -> bytes:
        headers = (
            f"To: {to}{CRLF}Subject: {header_value(subject)}{CRLF}"
            f"Date: {_date(int(time.time()))}{CRLF}Message-ID: {message_id}{CRLF}"
            f"List-Unsubscribe: <{unsubscribe_url}>{CRLF}{self.fixed}{CRLF}{CRLF}"
        )
        mark = f"--{self.boundary}"
        body = f"{mark}{CRLF}{_body('plain', text)}{mark}{CRLF}{_body('html', html)}{mark}--{CRLF}"
        return (headers + body).encode("ascii")
