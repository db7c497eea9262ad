"""The protobuf enum maps (`server.rpc.enums`, read off the descriptors): every domain value
has its enum value and every enum value but the zero one is a domain value, both ways."""

from __future__ import annotations

from collections.abc import Collection

import pytest

from campaigns.v1 import campaign_pb2, delivery_service_pb2, email_message_pb2
from server.content.email_messages import TYPES
from server.core.channels import Channel
from server.core.errors import InvalidArgument
from server.core.sms import cost
from server.core.status import Status
from server.rpc import convert
from server.rpc.enums import EnumNames
from server.rpc.servicers import delivery, email_messages
from server.store.models import DeliveryStatus, EventType

CASES: list[tuple[EnumNames[int], Collection[str]]] = [
    (convert.CHANNELS, list(Channel)),
    (convert.STATUSES, list(Status)),
    (convert.MESSAGE_TYPES, TYPES),
    (delivery.EVENT_TYPES, list(EventType)),
    (delivery.RECIPIENT_STATUSES, list(DeliveryStatus)),
    (email_messages.ENCODINGS, {cost("hello").encoding, cost("привет").encoding}),
]


@pytest.mark.parametrize(("names", "domain"), CASES)
def test_every_domain_value_has_its_enum_value(
    names: EnumNames[int], domain: Collection[str]
) -> None:
    assert set(names.to_pb) == set(domain)
    for value in domain:
        assert names.from_pb[names.to_pb[value]] == value
    assert names.unspecified == 0 and 0 not in names.from_pb


def test_names_follow_the_enum_value_names() -> None:
    assert convert.CHANNELS.to_pb[Channel.SMS] == campaign_pb2.CHANNEL_SMS
    assert convert.CHANNELS.from_pb[campaign_pb2.CHANNEL_EMAIL] is Channel.EMAIL
    bounced = delivery.EVENT_TYPES.from_pb[delivery_service_pb2.DELIVERY_EVENT_TYPE_BOUNCED_HARD]
    assert bounced == "bounced_hard"
    assert convert.MESSAGE_TYPES.to_pb["transactional"] == (
        email_message_pb2.EMAIL_MESSAGE_TYPE_TRANSACTIONAL
    )


def test_parse_refuses_a_number_the_enum_lacks() -> None:
    assert convert.status(0) is None
    assert convert.status(campaign_pb2.CAMPAIGN_STATUS_SENT) == "sent"
    with pytest.raises(InvalidArgument) as refused:
        convert.status(99)
    assert refused.value.violations[0].description == "unknown status 99"
