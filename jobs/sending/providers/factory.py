"""Choose a provider for a channel from the delivery settings."""

from __future__ import annotations

from typing import Any

from jobs.sending.providers.outbox import OutboxProvider
from jobs.sending.providers.smtp import SmtpProvider
from jobs.sending.providers.twilio import TwilioProvider
from server.config import DeliverySettings
from server.core.channels import Channel


def make_provider(channel: str, settings: DeliverySettings) -> Any:
    """An EmailProvider for "email", an SmsProvider for "sms" (OutboxProvider is both)."""
    if channel == Channel.EMAIL:
        return (
            SmtpProvider(settings)
            if settings.email_provider == "smtp"
            else OutboxProvider(settings.outbox_dir)
        )
    if settings.sms_provider == "twilio":
        return TwilioProvider(settings)
    return OutboxProvider(settings.outbox_dir)
