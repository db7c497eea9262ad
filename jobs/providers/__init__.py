"""Message providers: where messages leave the system (SMTP, a Twilio-style API, or files).

Every provider answers each send with a `SendResult`: sent (with the provider's id),
transient (worth retrying later) or permanent (this recipient will never get it this way).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Outcome(StrEnum):
    SENT = "sent"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    provider_message_id: str = ""
    error: str = ""


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

    def send_email(self, message: OutgoingEmail) -> SendResult: ...

    def close(self) -> None: ...


class SmsProvider(Protocol):
    name: str

    def send_sms(self, message: OutgoingSms) -> SendResult: ...

    def close(self) -> None: ...


def sent(provider_message_id: str) -> SendResult:
    return SendResult(Outcome.SENT, provider_message_id=provider_message_id)


def transient(error: str) -> SendResult:
    return SendResult(Outcome.TRANSIENT, error=error[:1000])


def permanent(error: str) -> SendResult:
    return SendResult(Outcome.PERMANENT, error=error[:1000])
