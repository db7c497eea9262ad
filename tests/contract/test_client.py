"""CampaignClient against the real in-process server: the convenience calls, rich errors as
Python exceptions, retries only when safe (a lost response to a call with a request_id, a
server that is gone), deadlines, watch and import streams; and TLS + bearer token against a
small TLS server that records what it was sent."""

from __future__ import annotations

import datetime as dt
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from campaign_client import (
    AbortedError,
    CampaignClient,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    RetryPolicy,
    UnavailableError,
)
from campaigns.v1 import campaign_pb2, user_pb2
from campaigns.v1 import campaign_service_pb2 as cpb
from tests.support.helpers import DEFAULT_SEGMENTS

SMS = campaign_pb2.CHANNEL_SMS
FAST = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05)


@pytest.fixture
def client(address: str) -> Iterator[CampaignClient]:
    with CampaignClient(address, insecure=True, retry=FAST) as c:
        yield c


def create(client: CampaignClient, edition: Any, **fields: Any) -> campaign_pb2.Campaign:
    values: dict[str, Any] = {
        "organization_id": edition.organization_id,
        "edition_id": edition.id,
        "segment_id": DEFAULT_SEGMENTS[edition.id],
        "name": "Early birds",
        "channel": SMS,
        "sms_body": "Tickets are out!",
    }
    return client.create_campaign(**{**values, **fields})


def test_create_get_list_update(client, edition):
    created = create(client, edition)
    assert created.status == campaign_pb2.CAMPAIGN_STATUS_DRAFT
    assert client.get_campaign(created.id) == created
    page = client.list_campaigns(organization_id=edition.organization_id)
    assert [c.id for c in page.results] == [created.id]
    updated = client.update_campaign(created.id, name="Final", sms_body="Go!", etag=created.etag)
    assert (updated.name, updated.sms_body, updated.segment_id) == (
        "Final",
        "Go!",
        created.segment_id,
    )
    with pytest.raises(AbortedError):  # the etag is stale now
        client.update_campaign(created.id, name="Again", etag=created.etag)


def test_iter_campaigns_reads_every_page(client, edition):
    ids = {create(client, edition, name=f"c{i}").id for i in range(3)}
    found = client.iter_campaigns(organization_id=edition.organization_id, page_size=2)
    assert {c.id for c in found} == ids


def test_invalid_argument_carries_field_violations(client, edition):
    with pytest.raises(InvalidArgumentError) as caught:
        create(client, edition, name="", channel=0)
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {"name", "channel"} <= {v.field for v in error.field_violations}
    assert error.domain == "campaigns.v1" and error.reason
    assert "name:" in str(error)


def test_not_found_names_the_resource(client):
    with pytest.raises(NotFoundError) as caught:
        client.get_campaign(9_000_000_000_000)
    assert caught.value.resource_type == "campaign"
    assert caught.value.resource_name.endswith("9000000000000")


def test_failed_precondition_names_the_status(client, edition):
    campaign = create(client, edition)
    client.cancel_campaign(campaign.id)
    with pytest.raises(FailedPreconditionError) as caught:
        client.send_campaign_now(campaign.id)
    (violation,) = caught.value.violations
    assert "cancelled" in (violation.subject + violation.description).lower()


def test_schedule_takes_aware_times_only(client, edition):
    campaign = create(client, edition)
    when = dt.datetime(2031, 6, 1, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    scheduled = client.schedule_campaign(campaign.id, when)
    assert scheduled.scheduled_at.ToDatetime(dt.UTC) == when
    with pytest.raises(ValueError, match="no timezone"):
        client.schedule_campaign(campaign.id, dt.datetime(2031, 6, 1, 10, 0))


def test_a_deadline_ends_a_watch_that_would_go_on(client, edition):
    campaign = create(client, edition)  # a draft: its watch would never end by itself
    seen = []
    with pytest.raises(DeadlineExceededError):
        for update in client.watch_campaign_stats(campaign.id, timeout=0.5):
            seen.append(update)
    assert len(seen) == 1 and not seen[0].final


# --- retries ---------------------------------------------------------------------------------


class LostResponse(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """What a caller sees when the server did the work but the answer never arrived."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "connection reset (simulated)"

    def trailing_metadata(self) -> tuple[()]:
        return ()

    def initial_metadata(self) -> tuple[()]:
        return ()


class LoseFirstResponse(grpc.UnaryUnaryClientInterceptor):
    """Passes calls of `method` to the server but loses the first response; records requests."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.requests: list[Any] = []

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        if not details.method.endswith("/" + self.method):
            return continuation(details, request)
        self.requests.append(request)
        outcome = continuation(details, request)
        outcome.result()  # the server has done the work...
        if len(self.requests) == 1:
            raise LostResponse()  # ...but the caller never hears of it
        return outcome


def lossy_client(channel: grpc.Channel, method: str) -> tuple[CampaignClient, LoseFirstResponse]:
    interceptor = LoseFirstResponse(method)
    return CampaignClient(grpc.intercept_channel(channel, interceptor), retry=FAST), interceptor


def test_a_lost_create_is_retried_with_the_same_request_id(channel, edition):
    client, lossy = lossy_client(channel, "CreateCampaign")
    created = create(client, edition)
    first, second = lossy.requests
    assert first.request_id and first.request_id == second.request_id
    page = client.list_campaigns(organization_id=edition.organization_id)
    assert [c.id for c in page.results] == [created.id]  # created once


def test_update_is_never_retried(channel, edition):
    client, lossy = lossy_client(channel, "UpdateCampaign")
    campaign = create(client, edition)
    with pytest.raises(UnavailableError) as caught:
        client.update_campaign(campaign.id, name="Renamed")
    assert caught.value.attempts == 1 and len(lossy.requests) == 1


@pytest.fixture
def gone_address() -> str:
    """The address of a server that was stopped."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    server.stop(None).wait()
    return f"127.0.0.1:{port}"


def test_a_stopped_server_is_unavailable_after_bounded_retries(gone_address):
    with CampaignClient(gone_address, insecure=True, retry=FAST, timeout=5) as client:
        started = time.monotonic()
        for safe_call in (lambda: client.get_campaign(1), lambda: client.cancel_campaign(1)):
            with pytest.raises(UnavailableError) as caught:
                safe_call()
            assert caught.value.attempts == FAST.max_attempts
        with pytest.raises(UnavailableError) as caught:
            client.delete_campaign(1)  # not safe to repeat: one attempt
        assert caught.value.attempts == 1
        assert time.monotonic() - started < 3


# --- streams ---------------------------------------------------------------------------------


def test_watch_follows_a_campaign_until_it_ends(client, edition):
    campaign = create(client, edition)
    updates: queue.Queue[Any] = queue.Queue()

    def read() -> None:
        for update in client.watch_campaign_stats(campaign.id, timeout=30):
            updates.put(update)
        updates.put(None)

    threading.Thread(target=read, daemon=True).start()
    first = updates.get(timeout=10)
    assert first.stats.status == campaign_pb2.CAMPAIGN_STATUS_DRAFT and not first.final
    client.cancel_campaign(campaign.id)
    seen = [first]
    while seen[-1] is not None:
        seen.append(updates.get(timeout=10))
    assert seen[-2].final and seen[-2].stats.status == campaign_pb2.CAMPAIGN_STATUS_CANCELLED


def test_watch_of_an_unknown_campaign_is_not_found(client):
    with pytest.raises(NotFoundError):
        list(client.watch_campaign_stats(9_000_000_000_000, timeout=10))


def test_import_users_streams_batches(client, edition):
    users = [
        user_pb2.User(external_id=f"u{i}", email=f"u{i}@example.com", email_consent=True)
        for i in range(5)
    ]
    users.append(user_pb2.User(external_id="bad", email="not-an-email"))
    batches: list[int] = []
    result = client.import_users(
        edition.organization_id, users, edition_id=edition.id, batch_size=2, on_batch=batches.append
    )
    assert batches == [2, 2, 2]
    assert (result.created, result.updated, result.rejected) == (5, 0, 1)
    assert (result.rejections[0].index, result.rejections[0].field) == (5, "email")


# --- TLS and the bearer token ----------------------------------------------------------------


def self_signed(directory: Path, name: str) -> tuple[bytes, bytes]:
    """(certificate, key) PEM for `name`, valid for localhost and 127.0.0.1."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert.read_bytes(), key.read_bytes()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, dict[str, bytes], list[dict[str, str]]]]:
    """A mutual-TLS server whose GetCampaign records the metadata it is sent."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    server_cert, server_key = self_signed(tmp_path, "localhost")
    client_cert, client_key = self_signed(tmp_path, "client")
    seen: list[dict[str, str]] = []

    def get_campaign(request: cpb.GetCampaignRequest, context: Any) -> cpb.GetCampaignResponse:
        seen.append(dict(context.invocation_metadata()))
        return cpb.GetCampaignResponse(campaign=campaign_pb2.Campaign(id=request.id))

    handler = grpc.method_handlers_generic_handler(
        "campaigns.v1.CampaignService",
        {
            "GetCampaign": grpc.unary_unary_rpc_method_handler(
                get_campaign,
                request_deserializer=cpb.GetCampaignRequest.FromString,
                response_serializer=cpb.GetCampaignResponse.SerializeToString,
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    credentials = grpc.ssl_server_credentials(
        [(server_key, server_cert)], root_certificates=client_cert, require_client_auth=True
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield (
        f"localhost:{port}",
        {
            "root_certificates": server_cert,
            "certificate_chain": client_cert,
            "private_key": client_key,
        },
        seen,
    )
    server.stop(None)


def test_mutual_tls_and_bearer_token(tls_server):
    target, certificates, seen = tls_server
    with CampaignClient(target, token="s3cret", retry=FAST, **certificates) as client:
        assert client.get_campaign(7).id == 7
    assert seen[0]["authorization"] == "Bearer s3cret"
    assert seen[0]["user-agent"].startswith("campaign-client-python/")
    # Without the client certificate the server refuses the connection.
    with (
        CampaignClient(
            target, root_certificates=certificates["root_certificates"], retry=FAST, timeout=3
        ) as client,
        pytest.raises(UnavailableError),
    ):
        client.get_campaign(7)
