"""Peewee models: editions, campaigns, the per-recipient delivery ledger and idempotency keys."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import peewee as pw

from server.core.clock import utcnow
from server.store.db import database


class BaseModel(pw.Model):
    class Meta:
        database = database
        legacy_table_names = False


class JSONField(pw.Field):
    """A JSON document: JSONB on PostgreSQL (queryable, indexed by the pushdown), TEXT on SQLite
    (queried with the JSON1 functions). The type name is mapped per database in server.store.db."""

    field_type = "JSONDOC"

    def db_value(self, value: Any) -> Any:
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def python_value(self, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str | bytes) else value


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
    edition = pw.ForeignKeyField(
        Edition, column_name="edition_id", on_delete="RESTRICT", index=True
    )
    edition_id: int  # the foreign key's raw value, which peewee provides
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
    # Workers touch this as they progress; the sweep resumes a campaign whose beat stops.
    heartbeat_at = pw.DateTimeField(null=True)

    class Meta:
        # One index per ordering, each ending in id: the tie-breaker that keeps pages apart.
        indexes = (
            (("created", "id"), False),
            (("organization_id", "created", "id"), False),  # a tenant's newest first
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


# Not settled yet: waiting, or held by a send job (the stats call these "pending").
IN_FLIGHT = (DeliveryStatus.PENDING, DeliveryStatus.CLAIMED, DeliveryStatus.SENDING)


class Delivery(BaseModel):
    """The ledger: one row per (campaign, user), the record of what that user was sent."""

    id = pw.BigAutoField()
    # No index of its own: the unique (campaign, user_id) index serves every lookup by campaign.
    campaign = pw.ForeignKeyField(
        Campaign, column_name="campaign_id", on_delete="CASCADE", index=False
    )
    campaign_id: int
    user_id = pw.BigIntegerField()
    address = pw.CharField(max_length=320, default="")  # frozen at calculation
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
            # Claims take the lowest pending ids: with id in the index that is a range read,
            # not a sort of every pending row per claim.
            (("campaign", "status", "id"), False),
            (("provider_message_id",), False),
        )


class EventType(StrEnum):
    """What happened to a message after it left."""

    DELIVERED = "delivered"
    BOUNCED_HARD = "bounced_hard"
    BOUNCED_SOFT = "bounced_soft"
    COMPLAINED = "complained"
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"


class DeliveryEvent(BaseModel):
    """One event about one delivery. `dedupe_key` makes recording idempotent."""

    id = pw.BigAutoField()
    campaign_id = pw.BigIntegerField()
    user_id = pw.BigIntegerField()
    type = pw.CharField(max_length=16)
    dedupe_key = pw.CharField(max_length=255, unique=True)
    occurred_at = pw.DateTimeField()
    url = pw.TextField(default="")
    detail = pw.TextField(default="")
    created = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("campaign_id", "type"), False),)


class SkipReason(StrEnum):
    """Why a matched user gets no message."""

    NO_ADDRESS = "no_address"
    NO_CONSENT = "no_consent"
    UNSUBSCRIBED = "unsubscribed"
    SUPPRESSED = "suppressed"
    INVALID_ADDRESS = "invalid_address"
    DUPLICATE_ADDRESS = "duplicate_address"
    CANCELLED = "cancelled"  # the campaign was cancelled before this recipient's turn


class Suppression(BaseModel):
    """An address an organization must not send to on a channel (hard bounce, complaint, STOP)."""

    id = pw.BigAutoField()
    organization_id = pw.BigIntegerField()
    channel = pw.CharField(max_length=8)
    address = pw.CharField(max_length=320)
    reason = pw.CharField(max_length=64, default="")
    created = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("organization_id", "channel", "address"), True),)


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


class User(BaseModel):
    """A recipient. Erasure blanks the personal fields and sets `erased_at`; the row stays so
    past ledger rows keep pointing somewhere (and counting)."""

    id = pw.BigAutoField()
    organization_id = pw.BigIntegerField()
    external_id = pw.CharField(max_length=255)
    email = pw.CharField(max_length=320, default="")
    phone = pw.CharField(max_length=20, default="")
    first_name = pw.CharField(max_length=255, default="")
    last_name = pw.CharField(max_length=255, default="")
    language = pw.CharField(max_length=35, default="")
    attributes = JSONField(default=dict)
    email_consent = pw.BooleanField(default=False)
    sms_consent = pw.BooleanField(default=False)
    email_unsubscribed = pw.BooleanField(default=False)
    sms_unsubscribed = pw.BooleanField(default=False)
    erased_at = pw.DateTimeField(null=True)
    created = pw.DateTimeField(default=utcnow)
    modified = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "users"  # "user" is reserved in PostgreSQL
        indexes = (
            (("organization_id", "external_id"), True),
            # Segment scans walk an organization's users by id (keyset pages).
            (("organization_id", "id"), False),
        )


# A user's own fields, as segments and templates see them (segments read rows in this order).
USER_TEXT_FIELDS = ("external_id", "email", "phone", "first_name", "last_name", "language")
USER_FLAGS = ("email_consent", "sms_consent", "email_unsubscribed", "sms_unsubscribed")
USER_FIELDS = ("id", *USER_TEXT_FIELDS, "attributes", *USER_FLAGS)


class UserEdition(BaseModel):
    """Membership of a user in an edition."""

    user = pw.ForeignKeyField(User, column_name="user_id", on_delete="CASCADE")
    edition = pw.ForeignKeyField(Edition, column_name="edition_id", on_delete="CASCADE")

    class Meta:
        primary_key = pw.CompositeKey("user", "edition")
        indexes = ((("edition", "user"), False),)


class Segment(BaseModel):
    """An audience: users of an organization (optionally one edition) matching a CEL expression."""

    id = pw.BigAutoField()
    organization_id = pw.BigIntegerField(index=True)
    edition = pw.ForeignKeyField(
        Edition, column_name="edition_id", null=True, on_delete="RESTRICT", index=True
    )
    edition_id: int | None
    name = pw.CharField(max_length=255)
    expression = pw.TextField()
    created = pw.DateTimeField(default=utcnow)
    modified = pw.DateTimeField(default=utcnow)


class EmailMessage(BaseModel):
    """Email content: Jinja2 templates for subject, HTML and text bodies."""

    id = pw.BigAutoField()
    organization_id = pw.BigIntegerField(index=True)
    edition = pw.ForeignKeyField(
        Edition, column_name="edition_id", on_delete="RESTRICT", index=True
    )
    edition_id: int
    type = pw.CharField(max_length=16)
    subject = pw.CharField(max_length=998)
    from_name = pw.CharField(max_length=255, default="")
    from_email = pw.CharField(max_length=320)
    reply_to = pw.CharField(max_length=320, default="")
    html_body = pw.TextField(default="")
    text_body = pw.TextField(default="")
    created = pw.DateTimeField(default=utcnow)
    modified = pw.DateTimeField(default=utcnow)


ALL_MODELS: list[type[BaseModel]] = [
    SchemaVersion,
    Edition,
    Campaign,
    Delivery,
    IdempotencyKey,
    User,
    UserEdition,
    Segment,
    EmailMessage,
    Suppression,
    DeliveryEvent,
]
