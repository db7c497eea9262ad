"""Message providers: where messages leave the system (SMTP, a Twilio-style API, or files).

Every provider answers each send with a `SendResult`:

- sent: accepted, with the provider's id;
- transient: not accepted, worth retrying later (`retry_after` when the provider asked for a
  pause); `fault` says the provider itself is failing (refused or dropped connections,
  timeouts, SMTP 421, HTTP 429 and 5xx): those count towards opening the circuit breaker,
  while a per-recipient refusal (greylisting, a busy mailbox) never does;
- permanent: this recipient will never get it this way;
- ambiguous: the whole message went out but no answer came back (a connection closed or timed
  out after the SMTP DATA payload or the HTTP request was sent). It may have been delivered,
  so it is never sent again;
- deferred: never attempted (the circuit was open); back to pending, the attempt not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Outcome(StrEnum):
    SENT = "sent"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    AMBIGUOUS = "ambiguous"
    DEFERRED = "deferred"


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    provider_message_id: str = ""
    error: str = ""
    fault: bool = False  # the provider (not the recipient) failed: feeds the circuit breaker
    retry_after: float = 0.0  # seconds the provider asked us to wait (a floor for the retry)


@dataclass(frozen=True)
class OutgoingEmail:
    sender: str  # the envelope sender (bare address)
    recipient: str
    message_id: str
    data: bytes  # the whole RFC 5322 message


@dataclass(frozen=True)
class OutgoingSms:
    to: str  # E.164
    body: str
    reference: str  # our id for the message, for logs and the outbox


class EmailProvider(Protocol):
    name: str
    endpoint: str  # where it sends: one circuit breaker per (name, endpoint)

    def send_email(self, message: OutgoingEmail) -> SendResult: ...

    def close(self) -> None: ...


class SmsProvider(Protocol):
    name: str
    endpoint: str

    def send_sms(self, message: OutgoingSms) -> SendResult: ...

    def close(self) -> None: ...


def sent(provider_message_id: str) -> SendResult:
    return SendResult(Outcome.SENT, provider_message_id=provider_message_id)


def transient(error: str, *, fault: bool = False, retry_after: float = 0.0) -> SendResult:
    return SendResult(Outcome.TRANSIENT, error=error[:1000], fault=fault, retry_after=retry_after)


def permanent(error: str) -> SendResult:
    return SendResult(Outcome.PERMANENT, error=error[:1000])


def ambiguous(error: str) -> SendResult:
    """The connection failed after the message left: a fault, and never to be resent."""
    return SendResult(
        Outcome.AMBIGUOUS, error=f"may have been delivered: {error}"[:1000], fault=True
    )


def deferred(wait: float) -> SendResult:
    return SendResult(Outcome.DEFERRED, error="circuit open: not attempted", retry_after=wait)
