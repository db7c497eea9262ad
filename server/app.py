"""Assemble the gRPC server: servicers, interceptors, health, reflection, limits."""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from campaigns.v1 import (
    audience_service_pb2,
    audience_service_pb2_grpc,
    campaign_service_pb2,
    campaign_service_pb2_grpc,
    delivery_service_pb2,
    delivery_service_pb2_grpc,
    email_message_service_pb2,
    email_message_service_pb2_grpc,
)
from jobs.context import queue, redis_connection
from jobs.enqueue import RQDispatcher
from server.campaigns.stats import read_stats
from server.campaigns.watch import StatsHub
from server.config import Settings
from server.rpc.auth import AuthInterceptor
from server.rpc.health import HealthReporter
from server.rpc.interceptors import ServiceInterceptor
from server.rpc.servicers.audience import AudienceServicer
from server.rpc.servicers.campaigns import CampaignServicer
from server.rpc.servicers.delivery import DeliveryServicer
from server.rpc.servicers.email_messages import EmailMessageServicer
from server.security.transport import listen, server_credentials, token_registry
from server.store.db import open_database, ping
from server.store.migrations import migrate

log = logging.getLogger(__name__)

SERVICES = [
    campaign_service_pb2.DESCRIPTOR.services_by_name["CampaignService"].full_name,
    audience_service_pb2.DESCRIPTOR.services_by_name["AudienceService"].full_name,
    email_message_service_pb2.DESCRIPTOR.services_by_name["EmailMessageService"].full_name,
    delivery_service_pb2.DESCRIPTOR.services_by_name["DeliveryService"].full_name,
]


@dataclass
class App:
    """A running server and the background parts that live and die with it."""

    server: grpc.Server
    port: int
    hub: StatsHub
    health: HealthReporter

    def stop(self, grace: float = 5.0) -> None:
        self.health.stop()
        self.hub.stop()  # ends every watch stream so shutdown is not held by them
        self.server.stop(grace).wait()


def _options(settings: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]


def build(settings: Settings) -> App:
    """Open the database, migrate it, and start serving on settings.host:settings.port.

    SecurityConfigError before anything is opened when the settings would serve unprotected."""
    tokens = token_registry(settings)
    credentials = server_credentials(settings)
    open_database(settings.database_url, settings.db_pool_size)
    migrate()
    redis = redis_connection(settings.redis_url)
    dispatcher = RQDispatcher(queue(redis, settings.queue_name))
    hub = StatsHub(read_stats, settings.watch_interval, settings.max_watchers)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.server_threads, thread_name_prefix="rpc"),
        # The first is outermost: request id and error map wrap the token check.
        interceptors=[ServiceInterceptor(), AuthInterceptor(tokens, settings.dev_mode)],
        options=_options(settings),
    )
    campaign_service_pb2_grpc.add_CampaignServiceServicer_to_server(
        CampaignServicer(dispatcher, hub), server
    )
    audience_service_pb2_grpc.add_AudienceServiceServicer_to_server(AudienceServicer(), server)
    email_message_service_pb2_grpc.add_EmailMessageServiceServicer_to_server(
        EmailMessageServicer(), server
    )
    delivery_service_pb2_grpc.add_DeliveryServiceServicer_to_server(DeliveryServicer(), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [
            *SERVICES,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    reporter = HealthReporter(
        health_servicer,
        SERVICES,
        {"database": ping, "redis": lambda: redis.ping()},
        interval=settings.health_interval,
    )
    port = listen(server, settings, credentials)
    server.start()
    hub.start()
    reporter.start()
    log.info(
        "serving",
        extra={
            "port": port,
            "database": settings.database_url.split("@")[-1],
            "tls": bool(settings.tls_cert_file),
            "mtls": bool(settings.tls_client_ca_file),
            "tokens": len(tokens),
            "dev_mode": settings.dev_mode,
        },
    )
    return App(server=server, port=port, hub=hub, health=reporter)
