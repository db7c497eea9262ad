"""The load test's callers: valid requests for every RPC, grouped in short scenarios that make
and clean up their own throwaway resources, plus the WatchCampaignStats watchers.

Everything here runs in spawned pool processes (see `bench.load`); each process has one channel
and many threads, and returns what it measured: per RPC the latencies and status codes.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2

from campaigns.v1 import audience_service_pb2 as apb
from campaigns.v1 import audience_service_pb2_grpc as agrpc
from campaigns.v1 import campaign_pb2 as cp
from campaigns.v1 import campaign_service_pb2 as cpb
from campaigns.v1 import campaign_service_pb2_grpc as cgrpc
from campaigns.v1 import delivery_service_pb2 as dpb
from campaigns.v1 import delivery_service_pb2_grpc as dgrpc
from campaigns.v1 import edition_pb2, email_message_pb2, segment_pb2, user_pb2
from campaigns.v1 import email_message_service_pb2 as epb
from campaigns.v1 import email_message_service_pb2_grpc as egrpc

CALL_TIMEOUT = 30.0  # a hung call shows up as DEADLINE_EXCEEDED, which counts as unexpected
SEND_NOW_EVERY = 5.0  # seconds between SendCampaignNow per process: each one is a worker job
ORDERINGS = ("-created", "name", "-total_recipients", "scheduled_at", "-modified")
SEARCHES = ("load", "main", "warm", "renamed")
STATUSES = (cp.CAMPAIGN_STATUS_DRAFT, cp.CAMPAIGN_STATUS_SENDING, cp.CAMPAIGN_STATUS_SENT)
RECIPIENTS = (dpb.RECIPIENT_STATUS_UNSPECIFIED, dpb.RECIPIENT_STATUS_SENT)
EVENTS = (
    dpb.DELIVERY_EVENT_TYPE_DELIVERED,
    dpb.DELIVERY_EVENT_TYPE_OPENED,
    dpb.DELIVERY_EVENT_TYPE_CLICKED,
)
LINEUP = "https://festival.example/lineup"
HTML = f"<p>Hello {{{{ user.first_name }}}}</p><a href='{LINEUP}'>Line-up</a>"
Measured = dict[str, tuple[list[float], Counter[str]]]


@dataclass(frozen=True)
class World:
    """The seeded organization the callers work in (ids made by `bench.load.seed`)."""

    target: str
    token: str
    org: int
    edition_id: int = 0
    segment_id: int = 0  # the main campaign's audience
    empty_segment_id: int = 0  # matches nobody: for SendCampaignNow on throwaway campaigns
    message_id: int = 0
    campaign_id: int = 0  # the campaign sending during the load
    warm_campaign_id: int = 0  # sent before the load: its deliveries take the events
    warm_user_ids: tuple[int, ...] = ()

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


class Failed(Exception):
    """A call did not return OK; the rest of its scenario is skipped."""


@dataclass
class Recorder:
    """Latency and status code of every call made by this process."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    data: Measured = field(default_factory=dict)

    def add(self, name: str, seconds: float, code: str) -> None:
        with self.lock:
            latencies, codes = self.data.setdefault(name, ([], Counter()))
            latencies.append(seconds)
            codes[code] += 1

    def flag(self, name: str, code: str) -> None:
        """Count a problem inside an OK reply (rejected items) without counting a call."""
        with self.lock:
            self.data.setdefault(name, ([], Counter()))[1][code] += 1


def all_methods() -> list[str]:
    """Every RPC of every campaigns.v1 service, from the descriptors."""
    names = [
        method.name
        for module in (cpb, apb, epb, dpb)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]
    assert len(names) == len(set(names)), "method names must be unique across services"
    return names


def _rid() -> str:
    return uuid.uuid4().hex


def _mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def _in_a_day() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromSeconds(int(time.time()) + 86_400)
    return stamp


def users(prefix: str, count: int, **attributes: str) -> list[user_pb2.User]:
    out = []
    for i in range(count):
        u = user_pb2.User(
            external_id=f"{prefix}{i}",
            email=f"{prefix}{i}@example.com",
            first_name=f"Ann{i}",
            last_name="Jensen",
            email_consent=True,
        )
        u.attributes.update(attributes)
        out.append(u)
    return out


def import_stream(
    org: int, edition_id: int, batches: list[list[user_pb2.User]]
) -> Iterator[apb.ImportUsersRequest]:
    for batch in batches:
        yield apb.ImportUsersRequest(organization_id=org, edition_id=edition_id, users=batch)


class Caller:
    """One closed-loop caller: runs scenarios until `until`, recording every call."""

    def __init__(self, world: World, channel: grpc.Channel, rec: Recorder, seed: int) -> None:
        self.w, self.rec, self.rnd = world, rec, random.Random(seed)
        self.c = cgrpc.CampaignServiceStub(channel)
        self.a = agrpc.AudienceServiceStub(channel)
        self.e = egrpc.EmailMessageServiceStub(channel)
        self.d = dgrpc.DeliveryServiceStub(channel)

    def call(self, stub: Any, name: str, request: Any) -> Any:
        start, code = time.perf_counter(), "OK"
        try:
            return getattr(stub, name)(request, metadata=self.w.metadata, timeout=CALL_TIMEOUT)
        except grpc.RpcError as exc:
            code = exc.code().name
            raise Failed(name) from exc
        finally:
            self.rec.add(name, time.perf_counter() - start, code)

    def run(self, until: float, send_now: Callable[[], bool]) -> None:
        scenarios = (
            self.reads,
            self.campaign_cycle,
            self.segment_cycle,
            self.message_cycle,
            self.edition_cycle,
            self.events,
        )
        while time.time() < until:  # reads weigh most; SendCampaignNow is paced per process
            scenario = (
                self.send_now
                if send_now()
                else self.rnd.choices(scenarios, weights=(6, 3, 1, 2, 1, 2))[0]
            )
            with contextlib.suppress(Failed):
                scenario()

    def reads(self) -> None:
        w, rnd = self.w, self.rnd
        self.call(self.c, "GetCampaign", cpb.GetCampaignRequest(id=w.campaign_id))
        self.call(self.c, "GetCampaignStats", cpb.GetCampaignStatsRequest(id=w.campaign_id))
        self.call(self.c, "ListCampaigns", self._list_campaigns())
        self.call(
            self.d,
            "ListCampaignRecipients",
            dpb.ListCampaignRecipientsRequest(
                campaign_id=w.campaign_id, status=rnd.choice(RECIPIENTS), page_size=50
            ),
        )

    def _list_campaigns(self) -> cpb.ListCampaignsRequest:
        req = cpb.ListCampaignsRequest(
            organization_id=self.w.org, page_size=20, ordering=self.rnd.choice(ORDERINGS)
        )
        kind = self.rnd.randrange(4)
        if kind == 0:
            req.status = self.rnd.choice(STATUSES)
        elif kind == 1:
            req.search = self.rnd.choice(SEARCHES)
        elif kind == 2:
            req.channel, req.edition_id = cp.CHANNEL_EMAIL, self.w.edition_id
        return req

    def campaign_cycle(self) -> None:
        """Create, read, rename, schedule, cancel and delete a throwaway email campaign."""
        w = self.w
        made = self.call(
            self.c,
            "CreateCampaign",
            cpb.CreateCampaignRequest(
                organization_id=w.org,
                edition_id=w.edition_id,
                segment_id=w.segment_id,
                name=f"load {_rid()[:8]}",
                channel=cp.CHANNEL_EMAIL,
                email_message_id=w.message_id,
                request_id=_rid(),
            ),
        ).campaign
        self.call(self.c, "GetCampaign", cpb.GetCampaignRequest(id=made.id))
        self.call(
            self.c,
            "UpdateCampaign",
            cpb.UpdateCampaignRequest(
                id=made.id,
                campaign=cp.Campaign(name="load renamed"),
                update_mask=_mask("name"),
                etag=made.etag,
            ),
        )
        self.call(
            self.c,
            "ScheduleCampaign",
            cpb.ScheduleCampaignRequest(id=made.id, scheduled_at=_in_a_day(), request_id=_rid()),
        )
        self.call(
            self.c, "CancelCampaign", cpb.CancelCampaignRequest(id=made.id, request_id=_rid())
        )
        self.call(self.c, "DeleteCampaign", cpb.DeleteCampaignRequest(id=made.id))

    def send_now(self) -> None:
        """An SMS campaign to nobody, sent now: the worker calculates it and finishes it."""
        w = self.w
        made = self.call(
            self.c,
            "CreateCampaign",
            cpb.CreateCampaignRequest(
                organization_id=w.org,
                edition_id=w.edition_id,
                segment_id=w.empty_segment_id,
                name="load send-now",
                channel=cp.CHANNEL_SMS,
                sms_body="Hi {{ user.first_name }}",
                request_id=_rid(),
            ),
        ).campaign
        self.call(
            self.c, "SendCampaignNow", cpb.SendCampaignNowRequest(id=made.id, request_id=_rid())
        )

    def segment_cycle(self) -> None:
        w, expression = self.w, 'user.attributes.tier == "gold" && user.email_consent'
        self.call(
            self.a,
            "ValidateSegmentExpression",
            apb.ValidateSegmentExpressionRequest(expression=expression),
        )
        made = self.call(
            self.a,
            "CreateSegment",
            apb.CreateSegmentRequest(
                segment=segment_pb2.Segment(
                    organization_id=w.org,
                    edition_id=w.edition_id,
                    name="load",
                    expression=expression,
                )
            ),
        ).segment
        self.call(self.a, "GetSegment", apb.GetSegmentRequest(id=made.id))
        self.call(
            self.a,
            "UpdateSegment",
            apb.UpdateSegmentRequest(
                id=made.id,
                segment=segment_pb2.Segment(name="load 2", expression="user.sms_consent"),
                update_mask=_mask("name", "expression"),
            ),
        )
        self.call(
            self.a, "PreviewSegment", apb.PreviewSegmentRequest(segment_id=made.id, sample_size=5)
        )
        self.call(
            self.a,
            "ListSegments",
            apb.ListSegmentsRequest(organization_id=w.org, edition_id=w.edition_id),
        )
        self.call(self.a, "DeleteSegment", apb.DeleteSegmentRequest(id=made.id))

    def message_cycle(self) -> None:
        w, user_id = self.w, self.rnd.choice(self.w.warm_user_ids)
        made = self.call(
            self.e,
            "CreateEmailMessage",
            epb.CreateEmailMessageRequest(
                email_message=email_message_pb2.EmailMessage(
                    organization_id=w.org,
                    edition_id=w.edition_id,
                    subject="Hi {{ user.first_name }}",
                    type=email_message_pb2.EMAIL_MESSAGE_TYPE_CAMPAIGN,
                    from_name="Festival",
                    from_email="news@festival.example",
                    html_body=HTML,
                )
            ),
        ).email_message
        self.call(self.e, "GetEmailMessage", epb.GetEmailMessageRequest(id=made.id))
        self.call(
            self.e,
            "UpdateEmailMessage",
            epb.UpdateEmailMessageRequest(
                id=made.id,
                email_message=email_message_pb2.EmailMessage(subject="Line-up is out"),
                update_mask=_mask("subject"),
            ),
        )
        self.call(
            self.e,
            "PreviewEmailMessage",
            epb.PreviewEmailMessageRequest(id=made.id, user_id=user_id),
        )
        self.call(
            self.e,
            "PreviewSmsMessage",
            epb.PreviewSmsMessageRequest(
                body="Hi {{ user.first_name }}, tickets!", user_id=user_id, edition_id=w.edition_id
            ),
        )
        self.call(
            self.e,
            "ListEmailMessages",
            epb.ListEmailMessagesRequest(
                organization_id=w.org, type=email_message_pb2.EMAIL_MESSAGE_TYPE_CAMPAIGN
            ),
        )
        self.call(self.e, "DeleteEmailMessage", epb.DeleteEmailMessageRequest(id=made.id))

    def edition_cycle(self) -> None:
        """A throwaway edition with a few imported users; one user is read and erased."""
        org = self.w.org
        made = self.call(
            self.a,
            "CreateEdition",
            apb.CreateEditionRequest(
                edition=edition_pb2.Edition(organization_id=org, name="load", timezone="UTC")
            ),
        ).edition
        self.call(self.a, "GetEdition", apb.GetEditionRequest(id=made.id))
        self.call(
            self.a,
            "UpdateEdition",
            apb.UpdateEditionRequest(
                id=made.id, edition=edition_pb2.Edition(name="load 2"), update_mask=_mask("name")
            ),
        )
        batches = [users(f"e{made.id}b{b}u", 5, tier="none") for b in range(2)]
        self.call(self.a, "ImportUsers", import_stream(org, made.id, batches))
        listed = self.call(
            self.a,
            "ListUsers",
            apb.ListUsersRequest(
                organization_id=org, edition_id=made.id, email_consent=True, page_size=10
            ),
        )
        victim = self.rnd.choice(listed.results).id
        self.call(self.a, "GetUser", apb.GetUserRequest(id=victim))
        self.call(self.a, "DeleteUser", apb.DeleteUserRequest(id=victim))
        self.call(self.a, "ListEditions", apb.ListEditionsRequest(organization_id=org))

    def events(self) -> None:
        w = self.w
        events = [
            dpb.DeliveryEvent(
                event_id=_rid(),
                type=self.rnd.choice(EVENTS),
                campaign_id=w.warm_campaign_id,
                url=LINEUP,
                user_id=self.rnd.choice(w.warm_user_ids),
            )
            for _ in range(5)
        ]
        reply = self.call(
            self.d, "RecordDeliveryEvents", dpb.RecordDeliveryEventsRequest(events=events)
        )
        if reply.rejected:
            self.rec.flag("RecordDeliveryEvents", "REJECTED_EVENTS")


def _gate(every: float) -> Callable[[], bool]:
    """True at most once per `every` seconds in this process."""
    lock, last = threading.Lock(), [time.monotonic()]

    def ready() -> bool:
        with lock:
            if time.monotonic() - last[0] < every:
                return False
            last[0] = time.monotonic()
            return True

    return ready


def caller_task(world: World, threads: int, start_at: float, until: float) -> Measured:
    """In a pool process: `threads` callers from start_at to until."""
    rec, gate = Recorder(), _gate(SEND_NOW_EVERY)
    with grpc.insecure_channel(world.target) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)

        def loop(seed: int) -> None:
            time.sleep(max(0.0, start_at - time.time()))
            Caller(world, channel, rec, seed).run(until, gate)

        run_threads(loop, [random.randrange(1 << 30) for _ in range(threads)])
    return rec.data


def run_threads(target: Callable[[int], None], args: list[int]) -> None:
    ts = [threading.Thread(target=target, args=(a,)) for a in args]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
