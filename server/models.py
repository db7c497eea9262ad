"""Peewee models: editions, campaigns, the per-recipient delivery ledger and idempotency keys."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

import peewee as pw

from server.db import database


def utcnow() -> dt.datetime:
    """Naive UTC: every datetime column holds UTC without a zone."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class BaseModel(pw.Model):
    class Meta:
        database = database
        legacy_table_names = False


class SchemaVersion(BaseModel):
    """The highest migration applied to this database."""

    version = pw.IntegerField(primary_key=True)
    applied_at = pw.DateTimeField(default=utcnow)


class Edition(BaseModel):
    """A dated run of an organization's event; campaign times are displayed in its timezone."""

    id = pw.BigAutoField()
    organization_id = pw.BigIntegerField(index=True)
    name = pw.CharField(max_length=255)
    timezone = pw.CharField(max_length=64)
    default_country_code = pw.CharField(max_length=8, default="")
    default_language = pw.CharField(max_length=35, default="")
    start_date = pw.DateField(null=True)
    end_date = pw.DateField(null=True)
    created = pw.DateTimeField(default=utcnow)
    modified = pw.DateTimeField(default=utcnow)


class Campaign(BaseModel):
    """One email or SMS send to a segment; `version` backs the etag and compare-and-set."""

    id = pw.BigAutoField()
    organization_id = pw.BigIntegerField(index=True)
    edition = pw.ForeignKeyField(Edition, column_name="edition_id", on_delete="RESTRICT", index=True)
    segment_id = pw.BigIntegerField(index=True)
    name = pw.CharField(max_length=255)
    channel = pw.CharField(max_length=8, index=True)
    email_message_id = pw.BigIntegerField(null=True)
    sms_body = pw.TextField(default="")
    status = pw.CharField(max_length=16, index=True)
    scheduled_at = pw.DateTimeField(null=True)
    total_recipients = pw.BigIntegerField(default=0)
    sent_count = pw.BigIntegerField(default=0)
    failed_count = pw.BigIntegerField(default=0)
    user_count = pw.BigIntegerField(default=0)
    error_message = pw.TextField(default="")
    started_at = pw.DateTimeField(null=True)
    completed_at = pw.DateTimeField(null=True)
    created = pw.DateTimeField(default=utcnow)
    modified = pw.DateTimeField(default=utcnow)
    version = pw.IntegerField(default=1)

    class Meta:
        # One index per ordering, each ending in id: the tie-breaker that keeps pages apart.
        indexes = (
            (("created", "id"), False),
            (("modified", "id"), False),
            (("name", "id"), False),
            (("scheduled_at", "id"), False),
            (("total_recipients", "id"), False),
            (("status", "scheduled_at"), False),
        )


class DeliveryStatus(StrEnum):
    """Where one recipient of one campaign is."""

    PENDING = "pending"
    CLAIMED = "claimed"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"
    AMBIGUOUS = "ambiguous"


class Delivery(BaseModel):
    """The ledger: one row per (campaign, user), the record of what that user was sent."""

    id = pw.BigAutoField()
    campaign = pw.ForeignKeyField(Campaign, column_name="campaign_id", on_delete="CASCADE")
    user_id = pw.BigIntegerField()
    status = pw.CharField(max_length=16, default=DeliveryStatus.PENDING)
    skip_reason = pw.CharField(max_length=32, default="")
    attempts = pw.IntegerField(default=0)
    lease_owner = pw.CharField(max_length=64, null=True)
    lease_expires_at = pw.DateTimeField(null=True)
    next_attempt_at = pw.DateTimeField(null=True)
    provider_message_id = pw.CharField(max_length=128, null=True)
    last_error = pw.TextField(default="")
    sent_at = pw.DateTimeField(null=True)
    delivered_at = pw.DateTimeField(null=True)
    opened_at = pw.DateTimeField(null=True)
    clicked_at = pw.DateTimeField(null=True)
    bounced_at = pw.DateTimeField(null=True)
    unsubscribed_at = pw.DateTimeField(null=True)
    created = pw.DateTimeField(default=utcnow)
    modified = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = (
            (("campaign", "user_id"), True),
            (("campaign", "status"), False),
        )


class IdempotencyKey(BaseModel):
    """The first result of a mutating call made with a `request_id`, replayed on retries."""

    id = pw.BigAutoField()
    method = pw.CharField(max_length=64)
    key = pw.CharField(max_length=128)
    fingerprint = pw.CharField(max_length=64)
    campaign_id = pw.BigIntegerField()
    result = pw.TextField()  # JSON snapshot of the campaign as first returned
    created = pw.DateTimeField(default=utcnow, index=True)

    class Meta:
        indexes = ((("method", "key"), True),)


ALL_MODELS: list[type[BaseModel]] = [SchemaVersion, Edition, Campaign, Delivery, IdempotencyKey]
