"""DeliveryService: parse, call the domain, convert."""

from __future__ import annotations

import grpc

from campaigns.v1 import delivery_service_pb2 as pb
from campaigns.v1 import delivery_service_pb2_grpc as pb_grpc
from server.core.errors import InvalidArgument
from server.delivery import events, recipients
from server.delivery.events import EventInput
from server.rpc import convert
from server.rpc.enums import EnumNames
from server.store.models import Delivery
from server.store.pagination import PageRequest

EVENT_TYPES = EnumNames(pb.DeliveryEventType)
RECIPIENT_STATUSES = EnumNames(pb.RecipientStatus)


def _event(e: pb.DeliveryEvent) -> EventInput:
    problem = ""
    try:
        occurred_at = convert.optional_timestamp(e, "occurred_at", "occurred_at")
    except InvalidArgument as exc:  # a bad event is rejected alone, not the whole batch
        occurred_at, problem = None, "; ".join(f"{v.field} {v.description}" for v in exc.violations)
    return EventInput(
        type=EVENT_TYPES.from_pb.get(e.type, ""),
        event_id=e.event_id,
        provider_message_id=e.provider_message_id,
        campaign_id=e.campaign_id,
        user_id=e.user_id,
        url=e.url,
        detail=e.detail,
        occurred_at=occurred_at,
        problem=problem,
    )


def _recipient(d: Delivery) -> pb.Recipient:
    out = pb.Recipient(
        user_id=d.user_id,
        address=d.address,
        status=RECIPIENT_STATUSES.to_pb.get(d.status, RECIPIENT_STATUSES.unspecified),
        skip_reason=d.skip_reason,
        attempts=d.attempts,
        last_error=d.last_error,
        provider_message_id=d.provider_message_id or "",
    )
    for name in (
        "sent_at",
        "delivered_at",
        "opened_at",
        "clicked_at",
        "bounced_at",
        "unsubscribed_at",
        "next_attempt_at",
    ):
        convert.set_timestamp(getattr(out, name), getattr(d, name))
    return out


class DeliveryServicer(pb_grpc.DeliveryServiceServicer):
    def RecordDeliveryEvents(
        self, request: pb.RecordDeliveryEventsRequest, context: grpc.ServicerContext
    ) -> pb.RecordDeliveryEventsResponse:
        result = events.record_events([_event(e) for e in request.events])
        return pb.RecordDeliveryEventsResponse(
            recorded=result.recorded,
            duplicates=result.duplicates,
            rejected=len(result.rejections),
            rejections=[pb.EventRejection(index=i, reason=r) for i, r in result.rejections],
        )

    def ListCampaignRecipients(
        self, request: pb.ListCampaignRecipientsRequest, context: grpc.ServicerContext
    ) -> pb.ListCampaignRecipientsResponse:
        page = recipients.list_recipients(
            request.campaign_id,
            RECIPIENT_STATUSES.parse(request.status, "status", "recipient status"),
            PageRequest(request.page, request.page_size),
        )
        return pb.ListCampaignRecipientsResponse(
            count=page.count,
            next_page=page.next_page,
            previous_page=page.previous_page,
            results=[_recipient(d) for d in page.results],
        )
