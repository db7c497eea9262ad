"""Small builders and assertions shared by the tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from campaigns.v1 import audience_service_pb2 as apb
from campaigns.v1 import campaign_pb2
from campaigns.v1 import campaign_service_pb2 as cpb
from campaigns.v1 import edition_pb2


def ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def future(seconds: float = 3600) -> timestamp_pb2.Timestamp:
    return ts(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds))


def make_edition(audience: Any, org_id: int, tz: str = "Europe/Copenhagen") -> edition_pb2.Edition:
    edition = edition_pb2.Edition(organization_id=org_id, name="Summer 2027", timezone=tz)
    return audience.CreateEdition(apb.CreateEditionRequest(edition=edition)).edition


def make_campaign(campaigns: Any, edition: edition_pb2.Edition, **fields: Any) -> campaign_pb2.Campaign:
    values: dict[str, Any] = {
        "organization_id": edition.organization_id, "edition_id": edition.id, "segment_id": 7,
        "name": "Early birds", "channel": campaign_pb2.CHANNEL_SMS, "sms_body": "Tickets are out!",
    }
    values.update(fields)
    return campaigns.CreateCampaign(cpb.CreateCampaignRequest(**values)).campaign


def details(error: grpc.RpcError) -> dict[str, Any]:
    """The rich error details of a failed call, unpacked by type name."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "error carries no google.rpc.Status"
    out: dict[str, Any] = {}
    for item in status.details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest,
                    error_details_pb2.PreconditionFailure, error_details_pb2.ResourceInfo,
                    error_details_pb2.RetryInfo):
            if item.Is(cls.DESCRIPTOR):
                msg = cls()
                item.Unpack(msg)
                out[cls.DESCRIPTOR.name] = msg
    return out


def violated_fields(error: grpc.RpcError) -> set[str]:
    return {v.field for v in details(error)["BadRequest"].field_violations}
