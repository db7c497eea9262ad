"""How the server lets callers in: the port's transport (TLS, mutual TLS or plaintext) and
the bearer-token registry. Both refuse unsafe configurations before anything listens."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import grpc

from server.config import Settings
from server.security.bearer_tokens import AuthConfigError, TokenRegistry


class SecurityConfigError(Exception):
    """The settings would serve without protection nobody asked to go without."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_registry(settings: Settings) -> TokenRegistry:
    """The configured tokens; none at all is only allowed in dev mode."""
    if settings.auth_tokens_file:
        try:
            return TokenRegistry.load(settings.auth_tokens_file)
        except AuthConfigError as exc:
            raise SecurityConfigError(str(exc)) from exc
    if not settings.dev_mode:
        raise SecurityConfigError(
            "no bearer tokens configured: set AUTH_TOKENS_FILE"
            " (see `python -m server.security.bearer_tokens`), "
            "or DEV_MODE=1 to accept calls without a token"
        )
    return TokenRegistry({})


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SecurityConfigError(f"cannot read the {what} {path}: {exc}") from exc


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings, or None for plaintext where that is allowed."""
    if settings.tls_cert_file or settings.tls_key_file:
        if not (settings.tls_cert_file and settings.tls_key_file):
            raise SecurityConfigError("GRPC_TLS_CERT and GRPC_TLS_KEY must be set together")
        pair = (_read(settings.tls_key_file, "TLS key"), _read(settings.tls_cert_file, "TLS cert"))
        client_ca = (
            _read(settings.tls_client_ca_file, "client CA") if settings.tls_client_ca_file else None
        )
        return grpc.ssl_server_credentials(
            [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
        )
    if settings.tls_client_ca_file:
        raise SecurityConfigError("GRPC_TLS_CLIENT_CA needs GRPC_TLS_CERT and GRPC_TLS_KEY")
    if not (is_loopback(settings.host) or settings.allow_insecure):
        raise SecurityConfigError(
            f"refusing plaintext gRPC on {settings.host}: set GRPC_TLS_CERT and GRPC_TLS_KEY, "
            "listen on 127.0.0.1, or set GRPC_ALLOW_INSECURE=1 if a proxy terminates TLS"
        )
    return None


def listen(
    server: grpc.Server, settings: Settings, credentials: grpc.ServerCredentials | None
) -> int:
    """Add the port to `server` with `credentials` (None: plaintext); the bound port."""
    address = f"{settings.host}:{settings.port}"
    if credentials is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, credentials)
