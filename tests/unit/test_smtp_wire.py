"""The SMTP provider's shortcuts say exactly what smtplib would: the quoted address in MAIL
and RCPT, and the dot-stuffed payload (property-based, against smtplib itself)."""

from __future__ import annotations

import smtplib
import string

from hypothesis import given
from hypothesis import strategies as st

from jobs.sending.providers.smtp import _payload, quoteaddr

ATOM = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
local_parts = st.text(ATOM + ".", min_size=1, max_size=12)
domains = st.text(string.ascii_letters + string.digits + "-.", min_size=1, max_size=12)


@given(local_parts, domains)
def test_plain_addresses_are_quoted_as_smtplib_quotes_them(local: str, domain: str) -> None:
    address = f"{local}@{domain}"
    assert quoteaddr(address) == smtplib.quoteaddr(address)


@given(st.text(min_size=1, max_size=40))
def test_any_other_address_falls_back_to_smtplib(address: str) -> None:
    assert quoteaddr(address) == smtplib.quoteaddr(address)


lines = st.lists(
    st.text(string.printable.replace("\r", "").replace("\n", ""), max_size=8).map(
        lambda s: s.encode()
    ),
    max_size=8,
)


@given(lines, st.booleans())
def test_the_payload_is_dot_stuffed_as_smtplib_stuffs_it(parts: list[bytes], ends: bool) -> None:
    data = b"\r\n".join(b"." + p if i % 2 else p for i, p in enumerate(parts))
    data += b"\r\n" if ends else b""
    expected = smtplib._quote_periods(data)  # what SMTP.data sends before the final dot
    if not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert _payload(data) == expected + b".\r\n"
