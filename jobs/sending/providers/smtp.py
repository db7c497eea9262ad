"""Email over SMTP with smtplib: a pool of connections shared by the send threads, each
reused from message to message and reopened when lost.

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

import logging
import re
import smtplib
import ssl
import threading

from jobs.sending.providers import OutgoingEmail, SendResult, ambiguous, permanent, sent, transient
from server.config import DeliverySettings

log = logging.getLogger(__name__)

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
    """A pool of SMTP connections shared by the send job's I/O threads: a send takes an idle
    connection, or opens one while fewer than `limit` are open, or waits for one to come back.

    A relay that refuses a new connection with 421 while we already hold some is saying "too
    many connections": the pool lowers its limit to what is open and the send waits for an
    idle connection, so the refusal costs no attempt and feeds no circuit breaker. With no
    connection open, a refusal is a provider fault like any other.
    """

    name = "smtp"

    def __init__(self, settings: DeliverySettings) -> None:
        self.settings = settings
        self.endpoint = f"{settings.smtp_host}:{settings.smtp_port}"
        self.limit = settings.smtp_max_connections
        self._idle: list[smtplib.SMTP] = []  # LIFO: the warmest connection first
        self._open = 0  # idle + in use + being opened
        self._closed = False
        self._changed = threading.Condition()

    @property
    def concurrency(self) -> int:
        """Messages worth having in flight: one per connection the relay lets us hold."""
        return self.limit

    def _acquire(self) -> smtplib.SMTP:
        with self._changed:
            while not self._idle and self._open >= self.limit:
                self._changed.wait()
            if self._idle:
                return self._idle.pop()
            self._open += 1
        try:
            return self._connect()
        except BaseException as exc:
            with self._changed:
                self._open -= 1
                if _too_many(exc) and self._open > 0:
                    self._lower_limit()
                    raise _OverLimit from exc
                self._changed.notify()
            raise

    def _lower_limit(self) -> None:
        """Under the lock: the relay's limit is what we already hold."""
        if self._open < self.limit:
            log.warning(
                "smtp relay refused a connection past its limit; lowering ours",
                extra={"endpoint": self.endpoint, "was": self.limit, "now": self._open},
            )
            self.limit = self._open

    def _release(self, conn: smtplib.SMTP) -> None:
        with self._changed:
            if self._closed:
                self._open -= 1
            else:
                self._idle.append(conn)
            self._changed.notify()
        if self._closed:
            _quit(conn)

    def _discard(self, conn: smtplib.SMTP | None) -> None:
        """A broken or closing connection: gone from the pool; the next send opens another."""
        if conn is not None:
            with self._changed:
                self._open -= 1
                self._changed.notify()
            _quit(conn)

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
        while True:
            try:
                conn = self._acquire()
            except _OverLimit:
                continue  # wait for one of the connections we hold
            except smtplib.SMTPResponseException as exc:  # a refusal while connecting
                return self._reply(exc.smtp_code, exc.smtp_error, recipient=False)
            except (TimeoutError, smtplib.SMTPException, OSError) as exc:
                return transient(f"smtp connection: {type(exc).__name__}: {exc}", fault=True)
            return self._send_on(conn, message)

    def _send_on(self, conn: smtplib.SMTP, message: OutgoingEmail) -> SendResult:
        use = _Use(conn)
        try:
            result = self._transaction(use, message)
        except smtplib.SMTPResponseException as exc:
            use.broken = True
            result = self._reply(exc.smtp_code, exc.smtp_error, recipient=False)
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            # Refused, dropped or timed out before the payload went out: not delivered.
            use.broken = True
            result = transient(f"smtp connection: {type(exc).__name__}: {exc}", fault=True)
        except UnicodeError as exc:  # an address smtplib cannot put on the wire
            use.broken = True
            result = permanent(f"smtp: address cannot be sent: {exc}")
        except BaseException:
            self._discard(conn)  # never leak the pool's slot, whatever went wrong
            raise
        if use.broken:
            self._discard(conn)
        else:
            self._release(conn)
        return result

    def _transaction(self, use: _Use, message: OutgoingEmail) -> SendResult:
        conn = use.conn
        options = [f"SIZE={len(message.data)}"] if conn.has_extn("size") else []
        if conn.has_extn("pipelining") and (message.sender + message.recipient).isascii():
            return self._pipelined(use, message, options)
        code, reply = conn.mail(message.sender, options)
        if code != 250:
            return self._refused(use, code, reply, recipient=False)
        code, reply = conn.rcpt(message.recipient)
        if code not in (250, 251):
            return self._refused(use, code, reply, recipient=True)
        conn.putcmd("data")
        code, reply = conn.getreply()
        if code != 354:
            return self._refused(use, code, reply, recipient=False)
        return self._data(use, message)

    def _pipelined(self, use: _Use, message: OutgoingEmail, options: list[str]) -> SendResult:
        conn = use.conn
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
            return self._refused(use, mail, mail_text, recipient=False)
        if rcpt not in (250, 251):
            return self._refused(use, rcpt, rcpt_text, recipient=True)
        if data != 354:
            return self._refused(use, data, data_text, recipient=False)
        return self._data(use, message)

    def _data(self, use: _Use, message: OutgoingEmail) -> SendResult:
        """After 354: the payload, then the final reply (lost: ambiguous, never resent)."""
        use.conn.send(_payload(message.data))  # fails only if the payload did not all go out
        try:
            code, reply = use.conn.getreply()
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            use.broken = True
            return ambiguous(f"smtp: no reply after the message data: {exc}")
        if 200 <= code < 300:
            return sent(message.message_id)
        return self._reply(code, reply, recipient=False)  # the transaction is over either way

    def _refused(self, use: _Use, code: int, reply: bytes, *, recipient: bool) -> SendResult:
        """A refusal mid-transaction: reset it so the connection serves the next message,
        or drop the connection when the server is closing it (421)."""
        if code == 421:
            use.broken = True
        else:
            try:
                use.conn.rset()
            except (smtplib.SMTPException, OSError):
                use.broken = True
        return self._reply(code, reply, recipient=recipient)

    @staticmethod
    def _reply(code: int, reply: bytes | str, *, recipient: bool) -> SendResult:
        error = f"smtp {code}: {_text(reply)}"
        if 500 <= code < 600:
            return permanent(error)
        return transient(error, fault=code == 421 or not recipient)

    def close(self) -> None:
        """Every idle connection; one still in use is closed when it comes back."""
        with self._changed:
            idle, self._idle, self._closed = self._idle, [], True
            self._open -= len(idle)
            self._changed.notify_all()
        for conn in idle:
            _quit(conn)


class _Use:
    """One transaction on a pooled connection: `broken` when it must not go back."""

    __slots__ = ("broken", "conn")

    def __init__(self, conn: smtplib.SMTP) -> None:
        self.conn = conn
        self.broken = False


class _OverLimit(Exception):
    """The relay refused one more connection while we hold others (its limit is reached)."""


def _too_many(exc: BaseException) -> bool:
    """A refusal at connect that means "too many connections" (421 in the greeting)."""
    return isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code == 421


def _quit(conn: smtplib.SMTP) -> None:
    try:
        conn.quit()
    except (smtplib.SMTPException, OSError):
        conn.close()
