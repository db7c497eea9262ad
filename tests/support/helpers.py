"""Small builders and assertions shared by the tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from campaigns.v1 import audience_service_pb2 as apb
from campaigns.v1 import campaign_pb2, edition_pb2, email_message_pb2, segment_pb2
from campaigns.v1 import campaign_service_pb2 as cpb
from campaigns.v1 import email_message_service_pb2 as epb


def ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def future(seconds: float = 3600) -> timestamp_pb2.Timestamp:
    return ts(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds))


# edition id -> the id of the "everyone" segment made with it (see make_edition)
DEFAULT_SEGMENTS: dict[int, int] = {}


def make_edition(audience: Any, org_id: int, tz: str = "Europe/Copenhagen") -> edition_pb2.Edition:
    """An edition, plus a segment of everyone in it that make_campaign uses by default."""
    edition = edition_pb2.Edition(organization_id=org_id, name="Summer 2027", timezone=tz)
    created = audience.CreateEdition(apb.CreateEditionRequest(edition=edition)).edition
    DEFAULT_SEGMENTS[created.id] = make_segment(audience, created).id
    return created


def make_segment(
    audience: Any, edition: edition_pb2.Edition, expression: str = "true", name: str = "Everyone"
) -> segment_pb2.Segment:
    segment = segment_pb2.Segment(
        organization_id=edition.organization_id,
        edition_id=edition.id,
        name=name,
        expression=expression,
    )
    return audience.CreateSegment(apb.CreateSegmentRequest(segment=segment)).segment


def make_email_message(
    messages: Any, edition: edition_pb2.Edition, **fields: Any
) -> email_message_pb2.EmailMessage:
    values: dict[str, Any] = {
        "organization_id": edition.organization_id,
        "edition_id": edition.id,
        "type": email_message_pb2.EMAIL_MESSAGE_TYPE_CAMPAIGN,
        "subject": "Hi {{ user.first_name }}",
        "from_name": "Festival",
        "from_email": "news@festival.example",
        "html_body": "<p>Hello {{ user.first_name }}</p><a href='{{ unsubscribe_url }}'>Stop</a>",
    }
    values.update(fields)
    message = email_message_pb2.EmailMessage(**values)
    return messages.CreateEmailMessage(
        epb.CreateEmailMessageRequest(email_message=message)
    ).email_message


def make_campaign(
    campaigns: Any, edition: edition_pb2.Edition, **fields: Any
) -> campaign_pb2.Campaign:
    values: dict[str, Any] = {
        "organization_id": edition.organization_id,
        "edition_id": edition.id,
        "segment_id": DEFAULT_SEGMENTS.get(edition.id, 0),
        "name": "Early birds",
        "channel": campaign_pb2.CHANNEL_SMS,
        "sms_body": "Tickets are out!",
    }
    values.update(fields)
    return campaigns.CreateCampaign(cpb.CreateCampaignRequest(**values)).campaign


def details(error: grpc.RpcError) -> dict[str, Any]:
    """The rich error details of a failed call, unpacked by type name."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "error carries no google.rpc.Status"
    out: dict[str, Any] = {}
    for item in status.details:
        for cls in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.PreconditionFailure,
            error_details_pb2.ResourceInfo,
            error_details_pb2.RetryInfo,
        ):
            if item.Is(cls.DESCRIPTOR):
                msg = cls()
                item.Unpack(msg)
                out[cls.DESCRIPTOR.name] = msg
    return out


def violated_fields(error: grpc.RpcError) -> set[str]:
    return {v.field for v in details(error)["BadRequest"].field_violations}


# Stand-ins for ids a parametrized case needs but only a running test can create.
NEW_SEGMENT = "<id of a new segment>"
NEW_EMAIL_MESSAGE = "<id of a new campaign email message>"


def with_references(
    audience: Any, messages: Any, edition: edition_pb2.Edition, values: dict[str, Any]
) -> dict[str, Any]:
    """`values` with each NEW_SEGMENT / NEW_EMAIL_MESSAGE replaced by the id of a fresh one,
    made in `edition`'s organization."""
    makers = {
        NEW_SEGMENT: lambda: make_segment(audience, edition, name="Another").id,
        NEW_EMAIL_MESSAGE: lambda: make_email_message(messages, edition).id,
    }
    return {
        key: makers[value]() if isinstance(value, str) and value in makers else value
        for key, value in values.items()
    }
