"""Standard health checking and server reflection, seen by real clients: the grpc.health.v1
stub, the grpcio-reflection client, and the grpcurl binary. Health follows Redis: a second
server in this process, on a private Redis, turns NOT_SERVING when that Redis stops and
SERVING again when it is back."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from campaigns.v1 import edition_pb2
from scripts import localredis
from server.app import build
from server.config import Settings
from tests.support.helpers import make_segment

CAMPAIGN_SERVICE = "campaigns.v1.CampaignService"
AUDIENCE_SERVICE = "campaigns.v1.AudienceService"
RPCS = {
    "ListCampaigns",
    "CreateCampaign",
    "GetCampaign",
    "UpdateCampaign",
    "DeleteCampaign",
    "CancelCampaign",
    "ScheduleCampaign",
    "SendCampaignNow",
    "GetCampaignStats",
    "WatchCampaignStats",
}
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
GRPCURL = Path(sys.executable).parent / "grpcurl"


def check(channel: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def wait_for(predicate: Callable[[], bool], timeout: float) -> float:
    """Seconds until `predicate` held; fails the test after `timeout`."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"not within {timeout} s"
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.mark.parametrize("service", ["", CAMPAIGN_SERVICE, AUDIENCE_SERVICE])
def test_health_reports_serving(channel, service):
    assert check(channel, service) == SERVING


def test_health_of_an_unknown_service_is_not_found(channel):
    with pytest.raises(grpc.RpcError) as info:
        check(channel, "campaigns.v1.NoSuchService")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_services_and_describes_every_rpc(channel):
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    assert {
        CAMPAIGN_SERVICE,
        AUDIENCE_SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services

    pool = descriptor_pool.DescriptorPool(database)
    service = pool.FindServiceByName(CAMPAIGN_SERVICE)
    assert set(service.methods_by_name) == RPCS
    proto = descriptor_pb2.ServiceDescriptorProto()
    service.CopyToProto(proto)
    streaming = {m.name for m in proto.method if m.server_streaming}
    assert streaming == {"WatchCampaignStats"}
    assert not any(m.client_streaming for m in proto.method)

    watch = pool.FindMethodByName(f"{CAMPAIGN_SERVICE}.WatchCampaignStats")
    assert watch.input_type.full_name == "campaigns.v1.WatchCampaignStatsRequest"
    assert watch.output_type.full_name == "campaigns.v1.WatchCampaignStatsResponse"
    stats = watch.output_type.fields_by_name["stats"].message_type
    assert stats.full_name == "campaigns.v1.CampaignStats"
    assert {"delivery_rate", "open_rate", "click_rate", "unsubscribe_rate"} <= set(
        stats.fields_by_name
    )
    create = pool.FindMethodByName(f"{CAMPAIGN_SERVICE}.CreateCampaign")
    assert create.output_type.fields_by_name["campaign"].message_type.full_name == (
        "campaigns.v1.Campaign"
    )


def grpcurl(
    address: str, *args: str, data: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [str(GRPCURL), "-plaintext", "-max-time", "20"]
    if data is not None:
        command += ["-d", json.dumps(data)]
    return subprocess.run([*command, address, *args], capture_output=True, text=True, timeout=30)


def grpcurl_json(address: str, method: str, data: dict[str, Any]) -> dict[str, Any]:
    """grpcurl's JSON answer; it prints proto field names (snake_case) and int64 as strings."""
    done = grpcurl(address, method, data=data)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_grpcurl_lists_the_services(address):
    done = grpcurl(address, "list")
    assert done.returncode == 0, done.stderr
    listed = set(done.stdout.split())
    assert {CAMPAIGN_SERVICE, AUDIENCE_SERVICE, "grpc.health.v1.Health"} <= listed

    methods = grpcurl(address, "list", CAMPAIGN_SERVICE)
    assert methods.returncode == 0, methods.stderr
    assert set(methods.stdout.split()) == {f"{CAMPAIGN_SERVICE}.{rpc}" for rpc in RPCS}


def test_grpcurl_creates_and_reads_a_campaign(address, audience, org_id):
    edition = grpcurl_json(
        address,
        f"{AUDIENCE_SERVICE}/CreateEdition",
        {
            "edition": {
                "organization_id": str(org_id),
                "name": "Via grpcurl",
                "timezone": "America/New_York",
                "default_country_code": "+1",
            },
        },
    )["edition"]
    assert edition["name"] == "Via grpcurl"
    assert edition["organization_id"] == str(org_id)  # int64 travels as a JSON string
    segment = make_segment(
        audience, edition_pb2.Edition(id=int(edition["id"]), organization_id=org_id)
    )

    created = grpcurl_json(
        address,
        f"{CAMPAIGN_SERVICE}/CreateCampaign",
        {
            "organization_id": org_id,
            "edition_id": edition["id"],
            "segment_id": segment.id,
            "name": "Launch",
            "channel": "CHANNEL_SMS",
            "sms_body": "Doors open at 18:00",
            "scheduled_at": "2040-01-15T17:30:00Z",
        },
    )["campaign"]
    assert created["status"] == "CAMPAIGN_STATUS_DRAFT"
    assert created["channel"] == "CHANNEL_SMS"
    assert created["timezone"] == "America/New_York"
    assert created["scheduled_at"] == "2040-01-15T17:30:00Z"
    assert created["scheduled_at_local"] == "2040-01-15T12:30:00-05:00"

    got = grpcurl_json(address, f"{CAMPAIGN_SERVICE}/GetCampaign", {"id": created["id"]})
    assert got["campaign"] == created


def test_grpcurl_shows_invalid_argument(address, org_id):
    done = grpcurl(
        address,
        f"{AUDIENCE_SERVICE}/CreateEdition",
        data={
            "edition": {"organization_id": str(org_id), "name": "x", "timezone": "Mars/Base"},
        },
    )
    assert done.returncode != 0
    assert "InvalidArgument" in done.stdout + done.stderr
    assert "edition.timezone" in done.stdout + done.stderr


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A Redis only the second server uses, so stopping it disturbs nothing else."""
    proc, url = localredis.start(tmp_path / "redis")
    state = {"proc": proc, "url": url, "port": int(url.rsplit(":", 1)[1].split("/")[0])}
    yield state
    localredis.stop(state["proc"])


@pytest.mark.fault
def test_health_follows_redis(settings: Settings, private_redis, tmp_path):
    second = build(dataclasses.replace(settings, redis_url=private_redis["url"]))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{second.port}") as channel:
            assert check(channel) == SERVING
            assert check(channel, CAMPAIGN_SERVICE) == SERVING

            localredis.stop(private_redis["proc"])
            took = wait_for(lambda: check(channel) == NOT_SERVING, 6.0)
            print(f"NOT_SERVING after {took:.1f} s")
            assert check(channel, CAMPAIGN_SERVICE) == NOT_SERVING

            private_redis["proc"], _ = localredis.start(
                tmp_path / "redis-again", port=private_redis["port"]
            )
            took = wait_for(lambda: check(channel, CAMPAIGN_SERVICE) == SERVING, 6.0)
            print(f"SERVING again after {took:.1f} s")
            assert check(channel) == SERVING
    finally:
        second.stop(1.0)
