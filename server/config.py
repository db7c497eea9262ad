"""Settings of the server and the workers: every default lives here, read from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_DATABASE_URL = "sqlite:///var/campaigns.db"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PORT = 50051
DEFAULT_HOST = "127.0.0.1"  # listening wider is a decision: set GRPC_HOST (and TLS)
DEFAULT_QUEUE = "campaigns"

# Listing
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

# Validation limits
MAX_NAME_LENGTH = 255
MAX_SMS_BODY_LENGTH = 1600  # ten concatenated GSM-7 parts, a common provider ceiling
MAX_SEARCH_LENGTH = 255
MAX_REQUEST_ID_LENGTH = 128

# Untrusted input: segment expressions (CEL), message templates (Jinja2) and user attributes.
# CEL runs native code holding the GIL, so a costly expression would stall every thread of
# the server: it is refused by shape first, and PreviewSegment evaluates in a child process.
MAX_EXPRESSION_LENGTH = 4000  # characters
MAX_EXPRESSION_NESTING = 32  # brackets, parentheses and braces open at once
MAX_COMPREHENSIONS = 4  # all/exists/exists_one/map/filter macros, and none inside another
PREVIEW_EVAL_SECONDS = 30.0  # CEL evaluation time one PreviewSegment may take
PREVIEW_EVAL_MEMORY_BYTES = 1024 * 1024 * 1024  # address space of the evaluating process
# A campaign's calculation in a worker evaluates in the same sandbox: each batch of users
# within CALCULATE_EVAL_SECONDS, all of them within CALCULATE_EVAL_BUDGET_SECONDS, or the
# campaign fails with its reason (and the worker moves on to other organizations' jobs).
CALCULATE_EVAL_SECONDS = float(os.environ.get("CALCULATE_EVAL_SECONDS") or 5.0)
CALCULATE_EVAL_BUDGET_SECONDS = float(os.environ.get("CALCULATE_EVAL_BUDGET_SECONDS") or 600.0)
MAX_PATTERN_REPEAT = 32  # the {m,n} counts of one matches() pattern, added up
MAX_TEMPLATE_LENGTH = 512 * 1024  # characters of template source
MAX_RENDERED_LENGTH = 2 * 1024 * 1024  # characters one render may produce
MAX_RENDER_SECONDS = 2.0  # one render, checked at every loop step, call and output chunk
MAX_TEMPLATE_RANGE = 10_000  # items range() may give a template
MAX_ATTRIBUTES_BYTES = 16 * 1024  # a user's attributes as compact JSON (UTF-8)

# Streams: each open watcher holds one server thread for its whole life.
DEFAULT_MAX_WATCHERS = 256
DEFAULT_WATCH_INTERVAL = 0.25  # seconds between polls of a watched campaign

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024

# Health: seconds between probes of the database and Redis (NOT_SERVING at most this late).
DEFAULT_HEALTH_INTERVAL = 2.0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    try:
        return int(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number") from None


def _env_bool(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


@dataclass(frozen=True)
class Settings:
    """What one server or worker process runs with."""

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    queue_name: str = DEFAULT_QUEUE
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_watchers: int = DEFAULT_MAX_WATCHERS
    watch_interval: float = DEFAULT_WATCH_INTERVAL
    # Unary calls get their own threads on top of one per watcher.
    unary_threads: int = 32
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    db_pool_size: int = 20
    health_interval: float = DEFAULT_HEALTH_INTERVAL
    # Security: tokens are required unless dev_mode; plaintext gRPC only on loopback unless
    # allow_insecure (e.g. behind a TLS-terminating proxy on a private network).
    dev_mode: bool = False
    auth_tokens_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""  # set: clients must present a certificate it signed (mTLS)
    allow_insecure: bool = False

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
            host=env.get("GRPC_HOST") or DEFAULT_HOST,
            port=_env_int("GRPC_PORT", DEFAULT_PORT),
            max_watchers=_env_int("MAX_WATCHERS", DEFAULT_MAX_WATCHERS),
            watch_interval=_env_float("WATCH_INTERVAL", DEFAULT_WATCH_INTERVAL),
            unary_threads=_env_int("GRPC_THREADS", 32),
            max_message_bytes=_env_int("GRPC_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES),
            db_pool_size=_env_int("DB_POOL_SIZE", 20),
            health_interval=_env_float("HEALTH_INTERVAL", DEFAULT_HEALTH_INTERVAL),
            dev_mode=_env_bool("DEV_MODE"),
            auth_tokens_file=env.get("AUTH_TOKENS_FILE", ""),
            tls_cert_file=env.get("GRPC_TLS_CERT", ""),
            tls_key_file=env.get("GRPC_TLS_KEY", ""),
            tls_client_ca_file=env.get("GRPC_TLS_CLIENT_CA", ""),
            allow_insecure=_env_bool("GRPC_ALLOW_INSECURE"),
        )


@dataclass(frozen=True)
class DeliverySettings:
    """How workers send: providers, batching, leases, retries and rates."""

    email_provider: str = "outbox"  # "smtp" or "outbox" (files under outbox_dir)
    sms_provider: str = "outbox"  # "twilio" or "outbox"
    outbox_dir: str = "var/outbox"
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_security: str = "none"  # "none", "starttls" or "tls"
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_timeout: float = 30.0
    # Messages in flight at once per send job (one worker runs one job at a time), each on a
    # connection of its own: throughput is connections / relay latency. A relay that answers
    # 421 past its own limit lowers ours for the job (jobs/sending/providers/smtp.py).
    smtp_max_connections: int = 128
    twilio_base_url: str = "https://api.twilio.com"
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_from: str = ""
    twilio_timeout: float = 15.0
    # Twilio-style API requests in flight at once per send job (pooled keep-alive connections).
    sms_max_in_flight: int = 128
    public_base_url: str = "http://127.0.0.1:8080"
    tracking_secret: str = "dev-only-secret-change-me"
    message_id_domain: str = "campaigns.local"
    email_rate: float = 0.0  # messages per second shared by all workers; 0 = unlimited
    sms_rate: float = 0.0
    # Rows taken into "sending" at once; a crash leaves at most two groups ambiguous.
    group_size: int = 50
    lease_seconds: int = 60
    max_attempts: int = 5
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    job_budget_seconds: float = 30.0  # a send job hands over to a fresh one after this long
    parallel_send_jobs: int = 4
    stale_seconds: int = 60  # no heartbeat for this long: the sweep resumes the campaign
    # Circuit breaker, one per provider endpoint, shared by every worker through Redis.
    circuit_failures: int = 10  # consecutive provider faults that open it
    # Keep below stale_seconds: a paused job refreshes the heartbeat only when it wakes.
    circuit_open_seconds: float = 30.0
    circuit_probe_seconds: float = 60.0  # a probe's lease: another may probe if it lapses

    def problems(self) -> list[str]:
        """Every setting that cannot work, each said once (a worker refuses to start on any)."""
        found = []
        if self.email_provider not in ("smtp", "outbox"):
            found.append(f"EMAIL_PROVIDER must be smtp or outbox, not {self.email_provider!r}")
        if self.sms_provider not in ("twilio", "outbox"):
            found.append(f"SMS_PROVIDER must be twilio or outbox, not {self.sms_provider!r}")
        if self.email_provider == "smtp":
            found += self._smtp_problems()
        if self.sms_provider == "twilio":
            missing = [
                name
                for name, value in (
                    ("TWILIO_ACCOUNT_SID", self.twilio_account_sid),
                    ("TWILIO_AUTH_TOKEN", self.twilio_auth_token),
                    ("TWILIO_FROM", self.twilio_from),
                )
                if not value
            ]
            if missing:
                found.append(f"SMS_PROVIDER=twilio needs {', '.join(missing)}")
            if not self.twilio_base_url.startswith(("https://", "http://")):
                found.append("TWILIO_BASE_URL must be an http(s) URL")
        for name, value in (
            ("SMTP_MAX_CONNECTIONS", self.smtp_max_connections),
            ("SMS_MAX_IN_FLIGHT", self.sms_max_in_flight),
            ("SEND_GROUP_SIZE", self.group_size),
            ("LEASE_SECONDS", self.lease_seconds),
            ("MAX_SEND_ATTEMPTS", self.max_attempts),
        ):
            if value < 1:
                found.append(f"{name} must be at least 1, not {value}")
        return found

    def _smtp_problems(self) -> list[str]:
        found = []
        if not self.smtp_host:
            found.append("EMAIL_PROVIDER=smtp needs SMTP_HOST")
        if not 0 < self.smtp_port < 65536:
            found.append(f"SMTP_PORT must be a TCP port, not {self.smtp_port}")
        if self.smtp_security not in ("none", "starttls", "tls"):
            found.append(f"SMTP_SECURITY must be none, starttls or tls, not {self.smtp_security!r}")
        if self.smtp_username and not self.smtp_password:
            found.append("SMTP_USERNAME is set but SMTP_PASSWORD is not")
        return found

    @classmethod
    def from_env(cls) -> DeliverySettings:
        env = os.environ
        smtp_host = env.get("SMTP_HOST", "")
        sid = env.get("TWILIO_ACCOUNT_SID", "")
        return cls(
            email_provider=env.get("EMAIL_PROVIDER") or ("smtp" if smtp_host else "outbox"),
            sms_provider=env.get("SMS_PROVIDER") or ("twilio" if sid else "outbox"),
            outbox_dir=env.get("OUTBOX_DIR") or "var/outbox",
            smtp_host=smtp_host,
            smtp_port=_env_int("SMTP_PORT", 25),
            smtp_security=env.get("SMTP_SECURITY") or "none",
            smtp_username=env.get("SMTP_USERNAME", ""),
            smtp_password=env.get("SMTP_PASSWORD", ""),
            twilio_base_url=env.get("TWILIO_BASE_URL") or "https://api.twilio.com",
            twilio_account_sid=sid,
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN", ""),
            twilio_from=env.get("TWILIO_FROM", ""),
            public_base_url=env.get("PUBLIC_BASE_URL") or "http://127.0.0.1:8080",
            tracking_secret=env.get("TRACKING_SECRET") or "dev-only-secret-change-me",
            message_id_domain=env.get("MESSAGE_ID_DOMAIN") or "campaigns.local",
            email_rate=_env_float("EMAIL_RATE_LIMIT", 0.0),
            sms_rate=_env_float("SMS_RATE_LIMIT", 0.0),
            group_size=_env_int("SEND_GROUP_SIZE", 50),
            lease_seconds=_env_int("LEASE_SECONDS", 60),
            max_attempts=_env_int("MAX_SEND_ATTEMPTS", 5),
            retry_base_seconds=_env_float("RETRY_BASE_SECONDS", 2.0),
            job_budget_seconds=_env_float("SEND_JOB_BUDGET_SECONDS", 30.0),
            parallel_send_jobs=_env_int("PARALLEL_SEND_JOBS", 4),
            stale_seconds=_env_int("STALE_SECONDS", 60),
            smtp_timeout=_env_float("SMTP_TIMEOUT", 30.0),
            # SMTP_CONNECTIONS: the name before SMTP_MAX_CONNECTIONS, still honoured.
            smtp_max_connections=max(
                1, _env_int("SMTP_MAX_CONNECTIONS", _env_int("SMTP_CONNECTIONS", 128))
            ),
            sms_max_in_flight=max(1, _env_int("SMS_MAX_IN_FLIGHT", 128)),
            twilio_timeout=_env_float("TWILIO_TIMEOUT", 15.0),
            circuit_failures=_env_int("CIRCUIT_FAILURES", 10),
            circuit_open_seconds=_env_float("CIRCUIT_OPEN_SECONDS", 30.0),
            circuit_probe_seconds=_env_float("CIRCUIT_PROBE_SECONDS", 60.0),
        )


# --- RQ worker liveness (jobs/__main__.py). RQ's defaults (a 420 s worker TTL, maintenance
# every 600 s, a 60 s cap on reconnect back-off) notice a dead worker or a returned Redis
# only after minutes. The ledger's leases and the sweep recover the campaigns themselves;
# these make RQ's own bookkeeping (abandoned jobs, the scheduler lock, reconnects) keep up.
@dataclass(frozen=True)
class WorkerSettings:
    """How `python -m jobs` runs RQ's worker; README "Configuration" says why these values."""

    worker_ttl: int = 20  # RQ_WORKER_TTL: registration lifetime; blocking dequeue = ttl - 15 s
    maintenance_interval: int = 10  # RQ_MAINTENANCE_INTERVAL: registry clean-up, lock take-over
    job_monitoring_interval: int = 5  # RQ_JOB_MONITORING_INTERVAL: heartbeat while a job runs
    redis_retry_seconds: float = 2.0  # REDIS_RETRY_SECONDS: longest pause between reconnects

    @classmethod
    def from_env(cls) -> WorkerSettings:
        return cls(
            worker_ttl=_env_int("RQ_WORKER_TTL", 20),
            maintenance_interval=_env_int("RQ_MAINTENANCE_INTERVAL", 10),
            job_monitoring_interval=_env_int("RQ_JOB_MONITORING_INTERVAL", 5),
            redis_retry_seconds=_env_float("REDIS_RETRY_SECONDS", 2.0),
        )
