"""Translate between protobuf messages and domain values; parse errors are InvalidArgument."""

from __future__ import annotations

import datetime as dt
import hashlib
import zoneinfo
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.message import Message

from campaigns.v1 import campaign_pb2, edition_pb2, email_message_pb2, segment_pb2, user_pb2
from server.campaigns.commands import etag
from server.campaigns.queries import ROW_FIELDS, CampaignRow
from server.campaigns.stats import Stats
from server.core.channels import Channel
from server.core.validation import invalid
from server.rpc.enums import EnumNames
from server.store.models import Campaign, Edition, EmailMessage, Segment, User

CHANNELS = EnumNames(campaign_pb2.Channel, Channel)
STATUSES = EnumNames(campaign_pb2.CampaignStatus)
MESSAGE_TYPES = EnumNames(email_message_pb2.EmailMessageType)
# Timestamp's own valid range is years 1 to 9999; a send date needs far less.
_MAX_YEAR = 9000
_EPOCH = dt.datetime(1970, 1, 1)
_CAMPAIGN_TIMES = ("scheduled_at", "started_at", "completed_at", "created", "modified")


def fingerprint(request: Message) -> str:
    """What makes two requests "the same" for idempotent retries."""
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()


def channel(value: int, field: str = "channel") -> str | None:
    return CHANNELS.parse(value, field, "channel")


def status(value: int, field: str = "status") -> str | None:
    return STATUSES.parse(value, field, "status")


def from_timestamp(ts: timestamp_pb2.Timestamp, field: str) -> dt.datetime:
    """Naive UTC datetime from a Timestamp; out-of-range values are InvalidArgument."""
    try:
        value = ts.ToDatetime()
    except (ValueError, OverflowError) as exc:
        raise invalid(field, f"is not a valid timestamp: {exc}") from None
    if not 1970 <= value.year <= _MAX_YEAR:
        raise invalid(field, f"must be between 1970 and {_MAX_YEAR}")
    return value


def optional_timestamp(msg: Message, name: str, field: str | None = None) -> dt.datetime | None:
    return from_timestamp(getattr(msg, name), field or name) if msg.HasField(name) else None


def set_timestamp(target: timestamp_pb2.Timestamp, value: dt.datetime | None) -> None:
    """Set `target` from a naive UTC datetime (an aware one's zone is ignored, as stored).

    Timestamp.FromDatetime goes through utctimetuple and calendar.timegm for every value, and a
    page of 100 campaigns sets 500 of them (BENCHMARKS.md, "Where the time went"). The
    difference to the epoch is the same answer."""
    if value is None:
        return
    if value.tzinfo is not None:
        value = value.replace(tzinfo=None)
    delta = value - _EPOCH
    target.seconds = delta.days * 86_400 + delta.seconds
    target.nanos = delta.microseconds * 1000


def local_iso(value: dt.datetime | None, timezone: str) -> str:
    if value is None:
        return ""
    try:
        zone: dt.tzinfo = zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = dt.UTC
    return value.replace(tzinfo=dt.UTC).astimezone(zone).isoformat()


def campaign_to_pb(c: Campaign) -> campaign_pb2.Campaign:
    """A campaign model, its edition loaded, as a message."""
    row = {name: getattr(c, name) for name in ROW_FIELDS}
    row["edition_id"], row["timezone"] = c.edition_id, c.edition.timezone
    return campaign_row_to_pb(row)


def campaign_row_to_pb(row: CampaignRow) -> campaign_pb2.Campaign:
    """A campaign as `server.campaigns.queries` answers it (a dict of columns) as a message."""
    timezone = row["timezone"]
    pb = campaign_pb2.Campaign(
        id=row["id"],
        name=row["name"],
        organization_id=row["organization_id"],
        edition_id=row["edition_id"],
        segment_id=row["segment_id"],
        channel=CHANNELS.to_pb.get(row["channel"], CHANNELS.unspecified),
        email_message_id=row["email_message_id"] or 0,
        sms_body=row["sms_body"],
        status=STATUSES.to_pb[row["status"]],
        total_recipients=row["total_recipients"],
        sent_count=row["sent_count"],
        failed_count=row["failed_count"],
        user_count=row["user_count"],
        error_message=row["error_message"],
        timezone=timezone,
        scheduled_at_local=local_iso(row["scheduled_at"], timezone),
        etag=etag(row["id"], row["version"]),
    )
    for name in _CAMPAIGN_TIMES:
        set_timestamp(getattr(pb, name), row[name])
    return pb


def stats_to_pb(s: Stats) -> campaign_pb2.CampaignStats:
    pb = campaign_pb2.CampaignStats(
        campaign_id=s.campaign_id,
        status=STATUSES.to_pb[s.status],
        total_recipients=s.total_recipients,
        sent=s.sent,
        failed=s.failed,
        delivered=s.delivered,
        opened=s.opened,
        clicked=s.clicked,
        bounced=s.bounced,
        unsubscribed=s.unsubscribed,
        delivery_rate=s.delivery_rate,
        open_rate=s.open_rate,
        click_rate=s.click_rate,
        unsubscribe_rate=s.unsubscribe_rate,
        pending=s.pending,
        opens_total=s.opens_total,
        clicks_total=s.clicks_total,
        skipped=s.skipped,
        ambiguous=s.ambiguous,
    )
    set_timestamp(pb.observed_at, s.observed_at)
    return pb


def edition_to_pb(e: Edition) -> edition_pb2.Edition:
    pb = edition_pb2.Edition(
        id=e.id,
        organization_id=e.organization_id,
        name=e.name,
        timezone=e.timezone,
        default_country_code=e.default_country_code,
        default_language=e.default_language,
        start_date=e.start_date.isoformat() if e.start_date else "",
        end_date=e.end_date.isoformat() if e.end_date else "",
    )
    set_timestamp(pb.created, e.created)
    set_timestamp(pb.modified, e.modified)
    return pb


def _number(value: float) -> float | int:
    """Struct numbers are doubles; JSON has one number type, so 3.0 is stored as 3."""
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [_value(item) for item in value.list_value.values]
    if kind == "number_value":
        return _number(value.number_value)
    if kind in ("string_value", "bool_value"):
        return getattr(value, kind)
    return None  # null_value, or no kind set


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain Python. Unlike json_format this never raises: a NaN or an infinity
    stays a float, for the domain to refuse with the field named (imports._attributes_json)."""
    return {key: _value(value) for key, value in struct.fields.items()}


def user_to_pb(u: User, editions: list[int]) -> user_pb2.User:
    pb = user_pb2.User(
        id=u.id,
        external_id=u.external_id,
        organization_id=u.organization_id,
        edition_ids=editions,
        email=u.email,
        phone=u.phone,
        first_name=u.first_name,
        last_name=u.last_name,
        language=u.language,
        email_consent=u.email_consent,
        sms_consent=u.sms_consent,
        email_unsubscribed=u.email_unsubscribed,
        sms_unsubscribed=u.sms_unsubscribed,
    )
    pb.attributes.update(u.attributes or {})
    set_timestamp(pb.created, u.created)
    set_timestamp(pb.modified, u.modified)
    return pb


def segment_to_pb(s: Segment) -> segment_pb2.Segment:
    pb = segment_pb2.Segment(
        id=s.id,
        organization_id=s.organization_id,
        edition_id=s.edition_id or 0,
        name=s.name,
        expression=s.expression,
    )
    set_timestamp(pb.created, s.created)
    set_timestamp(pb.modified, s.modified)
    return pb


def message_type(value: int, field: str = "type") -> str | None:
    return MESSAGE_TYPES.parse(value, field, "email message type")


def email_message_to_pb(m: EmailMessage) -> email_message_pb2.EmailMessage:
    pb = email_message_pb2.EmailMessage(
        id=m.id,
        organization_id=m.organization_id,
        edition_id=m.edition_id,
        type=MESSAGE_TYPES.to_pb.get(m.type, MESSAGE_TYPES.unspecified),
        subject=m.subject,
        from_name=m.from_name,
        from_email=m.from_email,
        reply_to=m.reply_to,
        html_body=m.html_body,
        text_body=m.text_body,
    )
    set_timestamp(pb.created, m.created)
    set_timestamp(pb.modified, m.modified)
    return pb
