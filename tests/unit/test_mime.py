"""The hand-built MIME of bulk mail (`jobs.sending.mime`), read back with the standard library's
parser: every header a recipient's client and the relay rely on, two alternative parts that
decode to the bodies given, and nothing a subject or a body could smuggle into the headers."""

from __future__ import annotations

import email
import email.policy
import email.utils
from email.message import EmailMessage

import pytest

from jobs.sending.mime import MAX_LINE, MimeTemplate, address, header_value

MESSAGE_ID = "<campaign-7.user-42@campaigns.local>"
UNSUBSCRIBE = "https://t.example/u/abc.def"


def build(
    template: MimeTemplate | None = None,
    *,
    subject: str = "Doors open",
    text: str = "Hello Ann\nSee you!",
    html: str = "<p>Hello Ann</p>",
    to: str = "ann@x.example",
) -> tuple[bytes, EmailMessage]:
    template = template or MimeTemplate(address("Festival", "news@festival.example"))
    raw = template.build(
        to=to,
        subject=subject,
        message_id=MESSAGE_ID,
        unsubscribe_url=UNSUBSCRIBE,
        text=text,
        html=html,
    )
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert not message.defects, message.defects
    return raw, message


def content(part: EmailMessage) -> str:
    return str(part.get_content()).replace("\r\n", "\n")


def test_the_headers_a_recipient_and_the_relay_rely_on():
    _, message = build(to=address("Ann Østergaard", "ann@x.example"))
    assert message["From"] == "Festival <news@festival.example>"
    assert message["To"] == "Ann Østergaard <ann@x.example>"
    assert message["Subject"] == "Doors open"
    assert message["Message-ID"] == MESSAGE_ID
    assert message["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"  # RFC 8058
    assert message["MIME-Version"] == "1.0"
    assert message["Reply-To"] is None
    date = email.utils.parsedate_to_datetime(str(message["Date"]))
    assert date.utcoffset() is not None and date.utcoffset().total_seconds() == 0


def test_two_alternative_parts_text_first_that_decode_to_the_bodies():
    text, html = "Hej Søren\nDørene åbner kl. 18 — vel mødt!", "<p>Hej Søren &amp; co.</p>"
    _, message = build(text=text, html=html)
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert [content(p) for p in parts] == [text, html]
    assert content(message.get_body(("plain",))) == text  # type: ignore[arg-type]


def test_ascii_bodies_go_as_7bit_and_others_as_quoted_printable():
    _, message = build(text="plain ascii", html="<p>blå</p>")
    plain, rich = message.iter_parts()
    assert plain["Content-Transfer-Encoding"] == "7bit"
    assert rich["Content-Transfer-Encoding"] == "quoted-printable"


def test_a_line_longer_than_smtp_allows_is_encoded_and_comes_back_whole():
    long_line = "x" * (MAX_LINE + 500)
    raw, message = build(text=f"start\n{long_line}\nend")
    plain = next(message.iter_parts())
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"
    assert content(plain) == f"start\n{long_line}\nend"
    lines = raw.split(b"\r\n")
    assert max(len(line) for line in lines) <= MAX_LINE
    assert max(len(line) for line in lines if line.startswith(b"xxx")) <= 76  # RFC 2045


def test_every_line_ends_in_crlf_and_the_message_is_ascii():
    raw, _ = build(subject="Søren's 🎟️ tickets", text="a\nb\r\nc", html="<p>ü</p>")
    raw.decode("ascii")
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert raw.endswith(b"--\r\n")


def test_a_non_ascii_subject_is_rfc2047_encoded_and_decodes_back():
    subject = "Hej Åse, dørene åbner snart 🎉" + " og musikken spiller hele natten" * 3
    raw, message = build(subject=subject)
    headers = raw.split(b"\r\n\r\n", 1)[0]
    assert b"=?utf-8?" in headers
    assert max(len(line) for line in headers.split(b"\r\n")) <= MAX_LINE
    assert message["Subject"] == subject


@pytest.mark.parametrize("subject", ["Hi\r\nBcc: victim@x.example", "Hæ\r\nBcc: victim@x.example"])
def test_a_subject_cannot_add_a_header(subject):
    raw, message = build(subject=subject)
    assert message["Bcc"] is None
    assert b"\r\nBcc:" not in raw
    assert "Bcc: victim@x.example" in str(message["Subject"])


def test_reply_to_and_a_fresh_boundary_per_campaign():
    first = MimeTemplate("news@festival.example", reply_to="help@festival.example")
    second = MimeTemplate("news@festival.example")
    assert first.boundary != second.boundary
    _, message = build(first)
    assert message["Reply-To"] == "help@festival.example"
    assert message.get_boundary() == first.boundary
    # The same template builds every recipient's message with the same fixed part.
    _, again = build(first, to="bo@x.example")
    assert again.get_boundary() == first.boundary and again["To"] == "bo@x.example"


def test_header_value_and_address():
    assert header_value("  Doors \t open  now ") == "Doors open now"
    assert header_value("Å").startswith("=?utf-8?")
    assert address("", "ann@x.example") == "ann@x.example"
    assert address('Ann "A" B', "ann@x.example") == '"Ann \\"A\\" B" <ann@x.example>'
