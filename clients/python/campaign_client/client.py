"""CampaignClient: the campaigns.v1 API with deadlines, safe retries, auth and TLS settings,
and errors turned into CampaignClientError subclasses (see campaign_client.errors).

    with CampaignClient("campaigns.internal:443", token="...") as client:
        campaign = client.create_campaign(organization_id=1, edition_id=2, segment_id=3,
                                          name="Early birds", channel=CHANNEL_SMS,
                                          sms_body="Tickets are out!")
        client.send_campaign_now(campaign.id)
        for update in client.watch_campaign_stats(campaign.id):
            print(update.stats.sent, "/", update.stats.total_recipients)

What is retried: UNAVAILABLE only, with exponential backoff, for reads and for the mutating
calls that carry a request_id (Create, Schedule, SendNow, Cancel: the client makes one up when
the caller gives none, so a retry is never applied twice). Update, Delete and ImportUsers are
never retried.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2

from campaign_client.errors import CampaignClientError, UnavailableError, from_rpc_error
from campaign_client.retry import RetryPolicy, call_unary
from campaigns.v1 import audience_service_pb2 as apb
from campaigns.v1 import (
    audience_service_pb2_grpc,
    campaign_pb2,
    campaign_service_pb2_grpc,
    delivery_service_pb2_grpc,
    edition_pb2,
    email_message_service_pb2_grpc,
    user_pb2,
)
from campaigns.v1 import campaign_service_pb2 as cpb

Response = TypeVar("Response")
DEFAULT_TIMEOUT = 10.0
USER_AGENT = "campaign-client-python/0.1"


def new_request_id() -> str:
    """A fresh idempotency key."""
    return uuid.uuid4().hex


def timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    """A Timestamp from an aware datetime (naive ones are refused: their zone is unknown)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{value.isoformat()} has no timezone; give an aware datetime")
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value.astimezone(dt.UTC))
    return out


def make_channel(
    target: str,
    *,
    insecure: bool = False,
    root_certificates: bytes | None = None,
    certificate_chain: bytes | None = None,
    private_key: bytes | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A plaintext channel when `insecure`, else TLS (system roots unless root_certificates;
    certificate_chain and private_key for mutual TLS)."""
    opts = [("grpc.primary_user_agent", USER_AGENT), *options]
    if insecure:
        return grpc.insecure_channel(target, options=opts)
    credentials = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
    return grpc.secure_channel(target, credentials, options=opts)


class CampaignClient:
    """A client of the campaign service at `target` ("host:port"), or over a given channel.

    timeout: the default deadline of a unary call, in seconds, over all its attempts (None:
    none). Streams have no default deadline. token: sent as `authorization: Bearer <token>`.
    """

    def __init__(
        self,
        target: str | grpc.Channel,
        *,
        insecure: bool = False,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
        token: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if isinstance(target, str):
            self.channel = make_channel(
                target,
                insecure=insecure,
                root_certificates=root_certificates,
                certificate_chain=certificate_chain,
                private_key=private_key,
                options=options,
            )
            self._owns_channel = True
        else:
            self.channel, self._owns_channel = target, False
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self.campaigns = campaign_service_pb2_grpc.CampaignServiceStub(self.channel)
        self.audience = audience_service_pb2_grpc.AudienceServiceStub(self.channel)
        self.messages = email_message_service_pb2_grpc.EmailMessageServiceStub(self.channel)
        self.delivery = delivery_service_pb2_grpc.DeliveryServiceStub(self.channel)

    def close(self) -> None:
        if self._owns_channel:
            self.channel.close()

    def __enter__(self) -> CampaignClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(
        self,
        method: Callable[..., Response],
        request: Any,
        *,
        safe: bool = False,
        timeout: float | None = None,
    ) -> Response:
        """Call any unary stub method (e.g. `client.audience.CreateEdition`) with this client's
        deadline, metadata and error mapping; retried on UNAVAILABLE only when `safe`."""
        return call_unary(
            method,
            request,
            timeout=self.timeout if timeout is None else timeout,
            metadata=self.metadata,
            safe=safe,
            policy=self.retry,
        )

    # --- campaigns ---------------------------------------------------------------------------

    def list_campaigns(
        self,
        *,
        organization_id: int = 0,
        edition_id: int = 0,
        channel: int = 0,
        status: int = 0,
        search: str = "",
        ordering: str = "",
        page: int = 0,
        page_size: int = 0,
    ) -> cpb.ListCampaignsResponse:
        """One page of campaigns matching the filters (0 / "" means any)."""
        request = cpb.ListCampaignsRequest(
            organization_id=organization_id,
            edition_id=edition_id,
            channel=campaign_pb2.Channel.ValueType(channel),
            status=campaign_pb2.CampaignStatus.ValueType(status),
            search=search,
            ordering=ordering,
            page=page,
            page_size=page_size,
        )
        return self.call(self.campaigns.ListCampaigns, request, safe=True)

    def iter_campaigns(self, **filters: Any) -> Iterator[campaign_pb2.Campaign]:
        """Every campaign matching the filters of list_campaigns, page after page."""
        page = 1
        while page:
            response = self.list_campaigns(**{**filters, "page": page})
            yield from response.results
            page = response.next_page

    def create_campaign(
        self,
        *,
        organization_id: int,
        edition_id: int,
        segment_id: int,
        name: str,
        channel: int,
        email_message_id: int = 0,
        sms_body: str = "",
        scheduled_at: dt.datetime | None = None,
        request_id: str | None = None,
    ) -> campaign_pb2.Campaign:
        """A new draft campaign (retried safely: a request_id is made up when none is given)."""
        request = cpb.CreateCampaignRequest(
            organization_id=organization_id,
            edition_id=edition_id,
            segment_id=segment_id,
            name=name,
            channel=campaign_pb2.Channel.ValueType(channel),
            email_message_id=email_message_id,
            sms_body=sms_body,
            request_id=request_id or new_request_id(),
        )
        if scheduled_at is not None:
            request.scheduled_at.CopyFrom(timestamp(scheduled_at))
        return self.call(self.campaigns.CreateCampaign, request, safe=True).campaign

    def get_campaign(self, campaign_id: int) -> campaign_pb2.Campaign:
        request = cpb.GetCampaignRequest(id=campaign_id)
        return self.call(self.campaigns.GetCampaign, request, safe=True).campaign

    def update_campaign(
        self,
        campaign_id: int,
        *,
        etag: str = "",
        name: str | None = None,
        segment_id: int | None = None,
        channel: int | None = None,
        email_message_id: int | None = None,
        sms_body: str | None = None,
        scheduled_at: dt.datetime | None = None,
    ) -> campaign_pb2.Campaign:
        """Change the fields given (not None); only if the etag still matches, when given.
        Never retried."""
        values: dict[str, Any] = {
            "name": name,
            "segment_id": segment_id,
            "channel": channel,
            "email_message_id": email_message_id,
            "sms_body": sms_body,
        }
        given = {key: value for key, value in values.items() if value is not None}
        campaign = campaign_pb2.Campaign(**given)
        paths = list(given)
        if scheduled_at is not None:
            campaign.scheduled_at.CopyFrom(timestamp(scheduled_at))
            paths.append("scheduled_at")
        if not paths:
            raise ValueError("update_campaign needs at least one field to change")
        request = cpb.UpdateCampaignRequest(
            id=campaign_id,
            campaign=campaign,
            etag=etag,
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        )
        return self.call(self.campaigns.UpdateCampaign, request).campaign

    def delete_campaign(self, campaign_id: int) -> None:
        """Remove a campaign. Never retried (a repeat would report NOT_FOUND)."""
        self.call(self.campaigns.DeleteCampaign, cpb.DeleteCampaignRequest(id=campaign_id))

    def cancel_campaign(
        self, campaign_id: int, *, request_id: str | None = None
    ) -> campaign_pb2.Campaign:
        request = cpb.CancelCampaignRequest(
            id=campaign_id, request_id=request_id or new_request_id()
        )
        return self.call(self.campaigns.CancelCampaign, request, safe=True).campaign

    def schedule_campaign(
        self, campaign_id: int, scheduled_at: dt.datetime | None, *, request_id: str | None = None
    ) -> campaign_pb2.Campaign:
        """Send at `scheduled_at` (an aware datetime); None keeps the time the campaign has."""
        request = cpb.ScheduleCampaignRequest(
            id=campaign_id, request_id=request_id or new_request_id()
        )
        if scheduled_at is not None:
            request.scheduled_at.CopyFrom(timestamp(scheduled_at))
        return self.call(self.campaigns.ScheduleCampaign, request, safe=True).campaign

    def send_campaign_now(
        self, campaign_id: int, *, request_id: str | None = None
    ) -> campaign_pb2.Campaign:
        request = cpb.SendCampaignNowRequest(
            id=campaign_id, request_id=request_id or new_request_id()
        )
        return self.call(self.campaigns.SendCampaignNow, request, safe=True).campaign

    def get_campaign_stats(self, campaign_id: int) -> campaign_pb2.CampaignStats:
        request = cpb.GetCampaignStatsRequest(id=campaign_id)
        return self.call(self.campaigns.GetCampaignStats, request, safe=True).stats

    def watch_campaign_stats(
        self, campaign_id: int, *, timeout: float | None = None
    ) -> Iterator[cpb.WatchCampaignStatsResponse]:
        """The campaign's figures as they change, ending after the `final` one. A dropped
        stream (UNAVAILABLE) is reopened with backoff; it starts again with a fresh snapshot."""
        request = cpb.WatchCampaignStatsRequest(id=campaign_id)
        failures = 0
        while True:
            call = self.campaigns.WatchCampaignStats(
                request, timeout=timeout, metadata=self.metadata
            )
            try:
                for update in call:
                    failures = 0
                    yield update
                    if update.final:
                        return
                return
            except grpc.RpcError as rpc_error:
                failures += 1
                error = from_rpc_error(rpc_error)
                error.attempts = failures
                delay = self._stream_backoff(error, failures)
                if delay is None:
                    raise error from rpc_error
                time.sleep(delay)
            finally:
                call.cancel()

    def _stream_backoff(self, error: CampaignClientError, failures: int) -> float | None:
        """Seconds to wait before reopening a failed stream; None: give up."""
        if not isinstance(error, UnavailableError) or failures >= self.retry.max_attempts:
            return None
        return self.retry.backoff(failures, error.retry_delay)

    # --- audience ----------------------------------------------------------------------------

    def get_edition(self, edition_id: int) -> edition_pb2.Edition:
        request = apb.GetEditionRequest(id=edition_id)
        return self.call(self.audience.GetEdition, request, safe=True).edition

    def import_users(
        self,
        organization_id: int,
        users: Iterable[user_pb2.User],
        *,
        edition_id: int = 0,
        batch_size: int = 500,
        on_batch: Callable[[int], None] | None = None,
        timeout: float | None = None,
    ) -> apb.ImportUsersResponse:
        """Stream `users` to ImportUsers in batches (upserts by external_id); `on_batch(n)` is
        called as each batch of n users is handed over. Never retried."""
        batches = _batches(organization_id, edition_id, users, batch_size, on_batch)
        try:
            return self.audience.ImportUsers(batches, timeout=timeout, metadata=self.metadata)
        except grpc.RpcError as rpc_error:
            raise from_rpc_error(rpc_error) from rpc_error


def _batches(
    organization_id: int,
    edition_id: int,
    users: Iterable[user_pb2.User],
    size: int,
    on_batch: Callable[[int], None] | None,
) -> Iterator[apb.ImportUsersRequest]:
    batch: list[user_pb2.User] = []

    def flush() -> apb.ImportUsersRequest:
        request = apb.ImportUsersRequest(
            organization_id=organization_id, edition_id=edition_id, users=batch
        )
        if on_batch is not None:
            on_batch(len(batch))
        return request

    sent = False
    for user in users:
        batch.append(user)
        if len(batch) >= size:
            yield flush()
            batch, sent = [], True
    if batch or not sent:  # the first message names the organization, even with no users
        yield flush()
