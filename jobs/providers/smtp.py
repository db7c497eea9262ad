"""Email over SMTP with smtplib: one connection reused across a batch, reopened when lost.

4xx replies and connection trouble are transient (retried later); 5xx replies are permanent
for that recipient.
"""

from __future__ import annotations

import smtplib
import ssl

from jobs.providers import OutgoingEmail, SendResult, permanent, sent, transient
from server.config import DeliverySettings


class SmtpProvider:
    name = "smtp"

    def __init__(self, settings: DeliverySettings) -> None:
        self.settings = settings
        self._conn: smtplib.SMTP | None = None

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
        return conn

    def send_email(self, message: OutgoingEmail) -> SendResult:
        try:
            if self._conn is None:
                self._conn = self._connect()
            self._conn.sendmail(message.sender, [message.recipient], message.data)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()))
            if code == 421:  # the server is closing the connection: don't reuse it
                self.close()
            return self._reply(code, reply)
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            return self._reply(exc.smtp_code, exc.smtp_error)
        except smtplib.SMTPResponseException as exc:
            self.close()
            return self._reply(exc.smtp_code, exc.smtp_error)
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            # Connection refused, dropped mid-transaction, timed out: try again later.
            self.close()
            return transient(f"smtp connection: {type(exc).__name__}: {exc}")
        return sent(message.message_id)

    @staticmethod
    def _reply(code: int, reply: bytes | str) -> SendResult:
        text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
        error = f"smtp {code}: {text}"
        return permanent(error) if 500 <= code < 600 else transient(error)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.quit()
            except (smtplib.SMTPException, OSError):
                self._conn.close()
            self._conn = None
