"""Settings of the server and the workers: every default lives here, read from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_DATABASE_URL = "sqlite:///var/campaigns.db"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PORT = 50051
DEFAULT_QUEUE = "campaigns"

# Listing
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

# Validation limits
MAX_NAME_LENGTH = 255
MAX_SMS_BODY_LENGTH = 1600  # ten concatenated GSM-7 parts, a common provider ceiling
MAX_SEARCH_LENGTH = 255
MAX_REQUEST_ID_LENGTH = 128

# Streams: each open watcher holds one server thread for its whole life.
DEFAULT_MAX_WATCHERS = 256
DEFAULT_WATCH_INTERVAL = 0.25  # seconds between polls of a watched campaign

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


@dataclass(frozen=True)
class Settings:
    """What one server or worker process runs with."""

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    queue_name: str = DEFAULT_QUEUE
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    max_watchers: int = DEFAULT_MAX_WATCHERS
    watch_interval: float = DEFAULT_WATCH_INTERVAL
    # Unary calls get their own threads on top of one per watcher.
    unary_threads: int = 32
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    db_pool_size: int = 20

    @property
    def server_threads(self) -> int:
        return self.max_watchers + self.unary_threads

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            database_url=env.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            redis_url=env.get("REDIS_URL") or DEFAULT_REDIS_URL,
            queue_name=env.get("CAMPAIGNS_QUEUE") or DEFAULT_QUEUE,
            host=env.get("GRPC_HOST") or "0.0.0.0",
            port=_env_int("GRPC_PORT", DEFAULT_PORT),
            max_watchers=_env_int("MAX_WATCHERS", DEFAULT_MAX_WATCHERS),
            watch_interval=_env_float("WATCH_INTERVAL", DEFAULT_WATCH_INTERVAL),
            unary_threads=_env_int("GRPC_THREADS", 32),
            max_message_bytes=_env_int("GRPC_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES),
            db_pool_size=_env_int("DB_POOL_SIZE", 20),
        )
