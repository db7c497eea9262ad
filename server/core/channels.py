"""The channels a campaign can go out on.

A `StrEnum`: its members are the strings stored in `campaign.channel` and `suppression.channel`,
so they compare equal to what the database hands back.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Channel"]


class Channel(StrEnum):
    EMAIL = "email"  # to users.email, over SMTP (or the outbox)
    SMS = "sms"  # to users.phone (E.164), over a Twilio-style API (or the outbox)
