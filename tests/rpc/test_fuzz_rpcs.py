"""Property-based fuzzing of every RPC of every service, through a real channel.

Each RPC listed in the service descriptors (so a new one is covered without a change here)
gets requests built from its input descriptor (`tests.fuzz_strategies`): a third hostile
throughout, a third realistic (ids of the objects made in setup, values that validate) so
calls reach the code behind validation, a third realistic but for a bad field here and there.
Two properties must hold for every call:

1. the answer is deliberate: never UNKNOWN or INTERNAL (a bug that escaped the error table),
   never UNAVAILABLE (the database and Redis are up: it would be a misfiled error), and never
   DEADLINE_EXCEEDED except for the server stream, which is read briefly;
2. a call that fails changes nothing: every table's row count and content checksum are the
   same after it as before (except the users an ImportUsers stream committed before a later
   message of it was refused: each message is committed as it arrives, by design).

The budget per RPC is FUZZ_EXAMPLES (default 40) examples; CI gets a fixed seed
(derandomize) so a red run is reproducible, a developer's run explores new inputs.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor as d
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns.v1 import (
    audience_service_pb2,
    campaign_service_pb2,
    delivery_service_pb2,
    email_message_service_pb2,
    user_pb2,
)
from campaigns.v1 import audience_service_pb2 as apb
from server.store.db import release_connection
from server.store.models import ALL_MODELS, Campaign, Delivery, EmailMessage, Segment, User
from tests.support import fuzz_strategies as fs
from tests.support.helpers import make_campaign, make_edition, make_email_message, make_segment

SERVICES = [
    campaign_service_pb2.DESCRIPTOR.services_by_name["CampaignService"],
    audience_service_pb2.DESCRIPTOR.services_by_name["AudienceService"],
    email_message_service_pb2.DESCRIPTOR.services_by_name["EmailMessageService"],
    delivery_service_pb2.DESCRIPTOR.services_by_name["DeliveryService"],
]
METHODS = [method for service in SERVICES for method in service.methods]
FORBIDDEN = {
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.DATA_LOSS,
}
UNARY_TIMEOUT = 30.0  # a call this slow is a hang, and fails
STREAM_TIMEOUT = 0.5  # the watch stream is read this long, then cut
STREAM_COMMITTED = {"users", "user_edition"}
PHONE = "+4520123456"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))

settings.register_profile(
    "fuzz",
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the work tree
    derandomize=os.environ.get("CI") == "true",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
FUZZ = settings.get_profile("fuzz")
# Some 30 s of calls on two cores (FUZZ_EXAMPLES per RPC): not for the quick loop.
pytestmark = pytest.mark.slow


# --- the objects requests refer to -----------------------------------------------------------


@dataclass
class World:
    """One organization with an edition, a segment, a campaign email message, a draft SMS
    campaign, a user, and a sent campaign with a ledger row for that user. Fuzzed calls may
    delete or change any of them; `ensure` puts back what is gone before each example."""

    audience: Any
    messages: Any
    campaigns: Any
    org: int
    ids: dict[str, int] = field(default_factory=dict)

    def ensure(self) -> dict[str, int]:
        self.ids["organization"] = self.org
        if "edition" not in self.ids:  # editions cannot be deleted
            edition = make_edition(self.audience, self.org)
            self.ids["edition"] = edition.id
            self.ids["segment"] = _default_segment(edition.id)
        edition = _edition_pb(self.audience, self.ids["edition"])
        if not Segment.select().where(Segment.id == self.ids["segment"]).exists():
            self.ids["segment"] = make_segment(self.audience, edition).id
        message = EmailMessage.get_or_none(EmailMessage.id == self.ids.get("email_message", 0))
        if message is None or message.type != "campaign":
            self.ids["email_message"] = make_email_message(self.messages, edition).id
        if not _live_user(self.ids.get("user", 0)):
            self.ids["user"] = _import_user(self.audience, self.org, edition.id)
        draft = Campaign.get_or_none(Campaign.id == self.ids.get("campaign", 0))
        if draft is None or draft.status != "draft":
            campaign = make_campaign(self.campaigns, edition, segment_id=self.ids["segment"])
            self.ids["campaign"] = campaign.id
        if (
            not Delivery.select()
            .where(
                (Delivery.campaign == self.ids.get("sent_campaign", 0))
                & (Delivery.user_id == self.ids["user"])
            )
            .exists()
        ):
            self.ids["sent_campaign"] = self._sent_campaign(edition)
        release_connection()
        return dict(self.ids)

    def _sent_campaign(self, edition: Any) -> int:
        """A campaign that went out: made through the API, its status and ledger set directly
        (no worker runs in these tests)."""
        campaign = make_campaign(self.campaigns, edition, segment_id=self.ids["segment"])
        Campaign.update(status="sent", total_recipients=1, sent_count=1).where(
            Campaign.id == campaign.id
        ).execute()
        Delivery.create(
            campaign=campaign.id,
            user_id=self.ids["user"],
            address=PHONE,
            status="sent",
            provider_message_id="<m@campaigns.local>",
        )
        return campaign.id


def _default_segment(edition_id: int) -> int:
    from tests.support.helpers import DEFAULT_SEGMENTS

    return DEFAULT_SEGMENTS[edition_id]


def _edition_pb(audience: Any, edition_id: int) -> Any:
    return audience.GetEdition(apb.GetEditionRequest(id=edition_id)).edition


def _live_user(user_id: int) -> bool:
    return User.select().where((User.id == user_id) & User.erased_at.is_null()).exists()


def _import_user(audience: Any, org: int, edition_id: int) -> int:
    external_id = f"fuzz-user-{uuid.uuid4().hex[:8]}"
    user = user_pb2.User(
        external_id=external_id,
        email="ada@festival.example",
        phone=PHONE,
        first_name="Ada",
        email_consent=True,
        sms_consent=True,
    )
    user.attributes.update({"vip": True, "tickets": 2, "tags": ["x", "y"]})
    request = apb.ImportUsersRequest(organization_id=org, edition_id=edition_id, users=[user])
    result = audience.ImportUsers(iter([request]))
    assert result.created == 1, result
    return int(User.get((User.organization_id == org) & (User.external_id == external_id)).id)


@pytest.fixture(scope="module")
def world(audience: Any, messages: Any, campaigns: Any) -> World:
    return World(audience, messages, campaigns, org=uuid.uuid4().int % 10**12 + 1)


# --- the database, before and after ----------------------------------------------------------


def snapshot() -> dict[str, tuple[int, str]]:
    """Per table: row count and a checksum of every row (tables are small here)."""
    out = {}
    for model in ALL_MODELS:
        rows = sorted(repr(row) for row in model.select().tuples())
        digest = hashlib.sha256("\n".join(rows).encode("utf-8", "surrogatepass")).hexdigest()
        out[model._meta.table_name] = (len(rows), digest)
    release_connection()
    return out


# --- calling any RPC -------------------------------------------------------------------------

Invoke = Callable[[list[Message]], grpc.StatusCode]


def _path(method: d.MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def _code(call: Callable[[], Any]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def caller(channel: grpc.Channel, method: d.MethodDescriptor) -> Invoke:
    """A function sending a list of request messages to `method`, returning the status."""
    codec = {
        "request_serializer": lambda m: m.SerializeToString(),
        "response_deserializer": fs.message_class(method.output_type).FromString,
    }
    if method.client_streaming:
        stream_unary = channel.stream_unary(_path(method), **codec)
        return lambda reqs: _code(lambda: stream_unary(iter(reqs), timeout=UNARY_TIMEOUT))
    if method.server_streaming:
        unary_stream = channel.unary_stream(_path(method), **codec)
        return lambda reqs: _read_stream(unary_stream(reqs[0], timeout=STREAM_TIMEOUT))
    unary = channel.unary_unary(_path(method), **codec)
    return lambda reqs: _code(lambda: unary(reqs[0], timeout=UNARY_TIMEOUT))


def _read_stream(responses: Iterator[Any]) -> grpc.StatusCode:
    """Read the stream until it ends or the deadline cuts it (which is fine here)."""
    code = _code(lambda: list(responses))
    return grpc.StatusCode.OK if code == grpc.StatusCode.DEADLINE_EXCEEDED else code


def requests(method: d.MethodDescriptor) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Drafts of what the client sends: one message, or a stream of 0 to 3."""
    one = fs.any_drafts(method.input_type)
    if method.client_streaming:
        return st.lists(one, max_size=3)
    return st.lists(one, min_size=1, max_size=1)


def check_call(
    invoke: Invoke, method: d.MethodDescriptor, world: World, drafts: list[dict[str, Any]]
) -> None:
    """The two properties, for one call."""
    ids = world.ensure()
    built = [fs.to_message(method.input_type, draft, ids.__getitem__) for draft in drafts]
    before = snapshot()
    code = invoke(built)
    assert code not in FORBIDDEN, f"{method.name} answered {code.name} to {built!r:.2000}"
    if code == grpc.StatusCode.OK:
        return
    after = snapshot()
    changed = {table for table in before if before[table] != after[table]}
    # ImportUsers commits each message's users as they arrive (a million-row import is not
    # one transaction), so a stream refused at a later message keeps the earlier users.
    allowed = STREAM_COMMITTED if method.client_streaming and len(built) > 1 else set()
    assert changed <= allowed, f"{method.name} failed with {code.name} but wrote {changed}"


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_every_rpc_answers_deliberately_and_fails_cleanly(
    method: d.MethodDescriptor, channel: grpc.Channel, world: World
) -> None:
    invoke = caller(channel, method)

    @FUZZ
    @given(drafts=requests(method))
    def run(drafts: list[dict[str, Any]]) -> None:
        check_call(invoke, method, world, drafts)

    run()


def _method(name: str) -> d.MethodDescriptor:
    return next(m for m in METHODS if m.name == name)


ORG, CAMPAIGN = fs.Ref("organization"), fs.Ref("campaign")
EDITION, USER = fs.Ref("edition"), fs.Ref("user")
# Inputs the fuzzer (or reading what it hit) found answered INTERNAL, kept as regressions.
# NUL failed on PostgreSQL only (its driver refuses it in any query); the rest on both.
FOUND: list[tuple[str, list[dict[str, Any]]]] = [
    (
        "ImportUsers",
        [
            {
                "organization_id": ORG,
                "users": [
                    {"external_id": "u1", "attributes": fs.StructDraft({"vip": float("inf")})}
                ],
            }
        ],
    ),
    (
        "ImportUsers",
        [
            {
                "organization_id": ORG,
                "users": [
                    {"external_id": "u1", "attributes": fs.StructDraft({"a": [float("nan")]})}
                ],
            }
        ],
    ),
    (
        "ImportUsers",
        [
            {
                "organization_id": ORG,
                "users": [{"external_id": "u1", "attributes": fs.StructDraft({"k\x00": "v"})}],
            }
        ],
    ),
    (
        "ImportUsers",
        [{"organization_id": ORG, "users": [{"external_id": "u1", "first_name": "A\x00"}]}],
    ),
    ("CreateCampaign", [{"request_id": "\x00"}]),
    ("CancelCampaign", [{"id": CAMPAIGN, "request_id": "\x00"}]),
    ("SendCampaignNow", [{"id": CAMPAIGN, "request_id": "\x00"}]),
    (
        "CreateSegment",
        [{"segment": {"organization_id": ORG, "name": "\x00", "expression": "true"}}],
    ),
    ("PreviewSegment", [{"organization_id": ORG, "expression": "user.first_name == '\\x00'"}]),
    (
        "CreateEmailMessage",
        [
            {
                "email_message": {
                    "organization_id": ORG,
                    "edition_id": EDITION,
                    "type": 1,
                    "subject": "Hi",
                    "from_email": "news@festival.example",
                    "html_body": "<p>\x00</p>",
                }
            }
        ],
    ),
    (
        "RecordDeliveryEvents",
        [
            {
                "events": [
                    {
                        "type": 1,
                        "campaign_id": fs.Ref("sent_campaign"),
                        "user_id": USER,
                        "url": "\x00",
                    }
                ]
            }
        ],
    ),
    ("PreviewSmsMessage", [{"body": "{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}"}]),
]


@pytest.mark.parametrize(
    ("name", "drafts"), FOUND, ids=[f"{n}-{i}" for i, (n, _) in enumerate(FOUND)]
)
def test_found_inputs_are_answered_deliberately(
    name: str, drafts: list[dict[str, Any]], channel: grpc.Channel, world: World
) -> None:
    method = _method(name)
    check_call(caller(channel, method), method, world, drafts)
