"""Email over SMTP with smtplib: one connection reused across a batch, reopened when lost.

The transaction is driven step by step (MAIL, RCPT, DATA, payload, final reply) rather than
with `sendmail`, because one distinction matters for exactly-once delivery: a connection lost
*before* the payload went out means the message was certainly not accepted (retry it), while
one lost *after* it went out, waiting for the final reply, means it may have been (ambiguous:
never resend). The "354" reply is read before the payload is sent, so a server that hangs up
on the DATA command itself is a plain retry.

With a server that offers PIPELINING (RFC 2920: Postfix and most relays do) MAIL, RCPT and DATA
go out in one write and their three replies are read together: two round trips per message
instead of four. The send thread was the pipeline's bottleneck, mostly waiting on replies.

Replies: 5xx are permanent for that recipient. 4xx are transient; they count as a provider
fault (towards the circuit breaker) except a 4xx to RCPT other than 421, which is about the
recipient (greylisting, a full or busy mailbox). 421 (closing) and connection trouble are
faults.
"""

from __future__ import annotations

import re
import smtplib
import ssl
import threading

from jobs.sending.providers import OutgoingEmail, SendResult, ambiguous, permanent, sent, transient
from server.config import DeliverySettings

# A plain addr-spec (dot-atoms on both sides): `smtplib.quoteaddr` would only wrap it in <>,
# after a full RFC 2822 parse that cost the send thread a quarter of its time.
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\Z"
)


def quoteaddr(address: str) -> str:
    """What `smtplib.quoteaddr` returns, without parsing the common case."""
    if _PLAIN_ADDRESS.match(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


def _payload(data: bytes) -> bytes:
    """What smtplib's `data` sends: dot-stuffed, ending with CRLF . CRLF (a replace, not
    smtplib's multi-line regex: the same result at a fraction of the cost)."""
    stuffed = data.replace(b"\n.", b"\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)


class SmtpProvider:
    """Each sending thread has a connection of its own (`concurrency` of them at most)."""

    name = "smtp"

    def __init__(self, settings: DeliverySettings) -> None:
        self.settings = settings
        self.endpoint = f"{settings.smtp_host}:{settings.smtp_port}"
        self.concurrency = settings.smtp_connections
        self._local = threading.local()
        self._open: set[smtplib.SMTP] = set()  # every thread's, for close()
        self._lock = threading.Lock()

    @property
    def _conn(self) -> smtplib.SMTP | None:
        return getattr(self._local, "conn", None)

    @_conn.setter
    def _conn(self, conn: smtplib.SMTP | None) -> None:
        with self._lock:
            if conn is None:
                self._open.discard(self._local.conn)
            else:
                self._open.add(conn)
        self._local.conn = conn

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        if s.smtp_security == "tls":
            conn: smtplib.SMTP = smtplib.SMTP_SSL(
                s.smtp_host,
                s.smtp_port,
                timeout=s.smtp_timeout,
                context=ssl.create_default_context(),
            )
        else:
            conn = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout)
            if s.smtp_security == "starttls":
                conn.starttls(context=ssl.create_default_context())
        if s.smtp_username:
            conn.login(s.smtp_username, s.smtp_password)
        conn.ehlo_or_helo_if_needed()  # `mail` below does not say hello by itself
        return conn

    def send_email(self, message: OutgoingEmail) -> SendResult:
        try:
            if self._conn is None:
                self._conn = self._connect()
            return self._transaction(self._conn, message)
        except smtplib.SMTPResponseException as exc:  # a refusal while connecting
            self._drop()
            return self._reply(exc.smtp_code, exc.smtp_error, recipient=False)
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            # Refused, dropped or timed out before the payload went out: not delivered.
            self._drop()
            return transient(f"smtp connection: {type(exc).__name__}: {exc}", fault=True)

    def _transaction(self, conn: smtplib.SMTP, message: OutgoingEmail) -> SendResult:
        options = [f"SIZE={len(message.data)}"] if conn.has_extn("size") else []
        if conn.has_extn("pipelining") and (message.sender + message.recipient).isascii():
            return self._pipelined(conn, message, options)
        code, reply = conn.mail(message.sender, options)
        if code != 250:
            return self._refused(conn, code, reply, recipient=False)
        code, reply = conn.rcpt(message.recipient)
        if code not in (250, 251):
            return self._refused(conn, code, reply, recipient=True)
        conn.putcmd("data")
        code, reply = conn.getreply()
        if code != 354:
            return self._refused(conn, code, reply, recipient=False)
        return self._data(conn, message)

    def _pipelined(
        self, conn: smtplib.SMTP, message: OutgoingEmail, options: list[str]
    ) -> SendResult:
        extra = "".join(f" {option}" for option in options)
        conn.send(
            f"MAIL FROM:{quoteaddr(message.sender)}{extra}\r\n"
            f"RCPT TO:{quoteaddr(message.recipient)}\r\nDATA\r\n"
        )
        (mail, mail_text), (rcpt, rcpt_text), (data, data_text) = (
            conn.getreply() for _ in range(3)
        )
        if data == 354 and (mail != 250 or rcpt not in (250, 251)):
            # A server may open DATA with no valid recipient: end it with an empty message.
            conn.send(".\r\n")
            conn.getreply()
        if mail != 250:
            return self._refused(conn, mail, mail_text, recipient=False)
        if rcpt not in (250, 251):
            return self._refused(conn, rcpt, rcpt_text, recipient=True)
        if data != 354:
            return self._refused(conn, data, data_text, recipient=False)
        return self._data(conn, message)

    def _data(self, conn: smtplib.SMTP, message: OutgoingEmail) -> SendResult:
        """After 354: the payload, then the final reply (lost: ambiguous, never resent)."""
        conn.send(_payload(message.data))  # fails only if the payload did not all go out
        try:
            code, reply = conn.getreply()
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            self._drop()
            return ambiguous(f"smtp: no reply after the message data: {exc}")
        if 200 <= code < 300:
            return sent(message.message_id)
        return self._reply(code, reply, recipient=False)  # the transaction is over either way

    def _refused(
        self, conn: smtplib.SMTP, code: int, reply: bytes, *, recipient: bool
    ) -> SendResult:
        """A refusal mid-transaction: reset it so the connection serves the next message,
        or drop the connection when the server is closing it (421)."""
        if code == 421:
            self._drop()
        else:
            try:
                conn.rset()
            except (smtplib.SMTPException, OSError):
                self._drop()
        return self._reply(code, reply, recipient=recipient)

    @staticmethod
    def _reply(code: int, reply: bytes | str, *, recipient: bool) -> SendResult:
        error = f"smtp {code}: {_text(reply)}"
        if 500 <= code < 600:
            return permanent(error)
        return transient(error, fault=code == 421 or not recipient)

    def _drop(self) -> None:
        """This thread's connection is broken or refused: close it; the next send reopens."""
        if self._conn is not None:
            _quit(self._conn)
            self._conn = None

    def close(self) -> None:
        """Every thread's connection (called once the sending threads are done)."""
        with self._lock:
            conns, self._open = self._open, set()
        for conn in conns:
            _quit(conn)
        self._local = threading.local()


def _quit(conn: smtplib.SMTP) -> None:
    try:
        conn.quit()
    except (smtplib.SMTPException, OSError):
        conn.close()
