"""The gRPC port's transport and the server's refusals: TLS and mutual TLS with certificates
the test makes itself (openssl), and a server that will not start unprotected by accident
(plaintext off loopback, no tokens outside dev mode, half a TLS configuration)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from campaigns.v1 import campaign_service_pb2 as cpb
from campaigns.v1 import campaign_service_pb2_grpc as cgrpc
from server.config import Settings
from server.security.transport import SecurityConfigError, server_credentials
from tests.support.processes import free_port
from tests.support.server_process import run_to_exit, running_server, server_env

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="openssl is needed to make test certificates"
)


def make_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """(certificate, key) files for `name`, self-signed, valid for 127.0.0.1 and localhost."""
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
    return cert, key


def code_of(call: Callable[[], Any]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def get_missing_campaign(channel: grpc.Channel) -> grpc.StatusCode:
    """A real call that reaches the servicer: NOT_FOUND proves the transport let it in."""
    stub = cgrpc.CampaignServiceStub(channel)
    return code_of(lambda: stub.GetCampaign(cpb.GetCampaignRequest(id=987654321), timeout=5))


def test_tls_port_serves_tls_clients_only(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    cert, key = make_certificate(tmp_path, "server")
    port = free_port()
    env = server_env(
        database_url, redis_url, port, DEV_MODE="1", GRPC_TLS_CERT=str(cert), GRPC_TLS_KEY=str(key)
    )
    tls = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    with (
        grpc.secure_channel(f"127.0.0.1:{port}", tls) as channel,
        running_server(env, channel, tmp_path / "server.log"),
    ):
        assert get_missing_campaign(channel) == grpc.StatusCode.NOT_FOUND
        with grpc.insecure_channel(f"127.0.0.1:{port}") as plain:
            assert get_missing_campaign(plain) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    cert, key = make_certificate(tmp_path, "server")
    client_cert, client_key = make_certificate(tmp_path, "client")
    stranger_cert, stranger_key = make_certificate(tmp_path, "stranger")
    port = free_port()
    env = server_env(
        database_url,
        redis_url,
        port,
        DEV_MODE="1",
        GRPC_TLS_CERT=str(cert),
        GRPC_TLS_KEY=str(key),
        GRPC_TLS_CLIENT_CA=str(client_cert),
    )

    def credentials(chain: Path | None, private: Path | None) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=cert.read_bytes(),
            certificate_chain=chain.read_bytes() if chain else None,
            private_key=private.read_bytes() if private else None,
        )

    target = f"127.0.0.1:{port}"
    with (
        grpc.secure_channel(target, credentials(client_cert, client_key)) as channel,
        running_server(env, channel, tmp_path / "server.log"),
    ):
        assert get_missing_campaign(channel) == grpc.StatusCode.NOT_FOUND
        for chain, private in ((None, None), (stranger_cert, stranger_key)):
            with grpc.secure_channel(target, credentials(chain, private)) as refused:
                assert get_missing_campaign(refused) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"DEV_MODE": "1", "GRPC_HOST": "0.0.0.0"}, "refusing plaintext gRPC on 0.0.0.0"),
        ({}, "no bearer tokens configured"),
        ({"DEV_MODE": "1", "GRPC_TLS_CERT": "/nonexistent.crt"}, "must be set together"),
        ({"DEV_MODE": "1", "GRPC_TLS_CLIENT_CA": "/nonexistent.crt"}, "needs GRPC_TLS_CERT"),
        ({"AUTH_TOKENS_FILE": "/nonexistent/tokens.json"}, "cannot read tokens"),
    ],
)
def test_unsafe_or_broken_settings_stop_the_server_with_a_message(
    database_url: str, redis_url: str, extra: dict[str, str], message: str
) -> None:
    result = run_to_exit(server_env(database_url, redis_url, free_port(), **extra))
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_plaintext_off_loopback_only_when_explicitly_allowed() -> None:
    assert server_credentials(Settings(host="127.0.0.1")) is None
    assert server_credentials(Settings(host="::1")) is None
    with pytest.raises(SecurityConfigError):
        server_credentials(Settings(host="10.1.2.3"))
    assert server_credentials(Settings(host="0.0.0.0", allow_insecure=True)) is None


def test_malformed_tokens_file_is_refused(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text('{"tokens": [{"name": "x", "sha256": "short", "organizations": [1]}]}')
    result = run_to_exit(
        server_env(database_url, redis_url, free_port(), AUTH_TOKENS_FILE=str(tokens))
    )
    assert result.returncode != 0 and "not a SHA-256 hex digest" in result.stderr
