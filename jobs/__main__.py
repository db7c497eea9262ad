"""`python -m jobs`: an RQ worker with the scheduler on, plus the due-campaign sweep.

The process outlives Redis outages. RQ's worker retries Redis only while it waits for a job;
an error anywhere else (maintenance, a job's bookkeeping, its own shutdown) makes it quit.
So this loop waits until Redis answers again and starts a fresh worker, saying so in the
log, rather than exiting: the database holds the campaigns, and the sweep re-enqueues
whatever Redis lost. SIGTERM / SIGINT stop it as they stop RQ (warm, then cold).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Any

import redis
from redis.client import Pipeline
from rq import Queue, Worker

from jobs import context
from jobs.pipeline import sweep
from server import logs
from server.config import WorkerSettings
from server.store.migrations import migrate

log = logging.getLogger("jobs.worker")


class CampaignWorker(Worker):
    """RQ's forking worker that knows whether it was asked to stop (a signal) or gave up on
    an error, and registers itself again when a restarted Redis has forgotten it."""

    asked_to_stop = False

    def __init__(self, *args: Any, stopping: threading.Event, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stopping = stopping

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()
        if self.stopping.is_set():
            # A signal came between our handler and RQ's: honour it at the loop's first check.
            self.asked_to_stop = self._stop_requested = True

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.asked_to_stop = True
        super().request_stop(signum, frame)

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        # A worker that rode out an outage inside its dequeue loop would otherwise go on
        # unlisted (no `rq info`, no readiness checks) in a Redis that lost everything.
        if (
            pipeline is None
            and self.birth_date is not None
            and not self.connection.exists(self.key)
        ):
            log.warning("Redis lost this worker's registration; registering again")
            self.register_birth()
        super().heartbeat(timeout, pipeline)


def _new_worker(queue: Queue, config: WorkerSettings, stopping: threading.Event) -> CampaignWorker:
    worker = CampaignWorker(
        [queue],
        stopping=stopping,
        connection=queue.connection,
        worker_ttl=config.worker_ttl,
        maintenance_interval=config.maintenance_interval,
        job_monitoring_interval=config.job_monitoring_interval,
    )
    # RQ doubles its pause between reconnects up to 60 s; cap it so a returned Redis is
    # noticed within seconds.
    worker.max_connection_wait_time = config.redis_retry_seconds
    return worker


def _run(worker: CampaignWorker) -> bool:
    """Run RQ's work loop; True when it ended because a signal asked it to."""
    try:
        worker.work(with_scheduler=True)
    except redis.exceptions.RedisError:
        log.warning("RQ worker stopped on a Redis error", exc_info=True)
    _await_orphan(worker.horse_pid)
    return worker.asked_to_stop


def _await_orphan(pid: int) -> None:
    """A worker that quit mid-job leaves its job process running (it holds its rows' leases
    and records its sends without Redis): let it finish, and reap it when it does."""
    if not pid:
        return
    log.warning(
        "a job is still running after the worker quit; letting it finish", extra={"pid": pid}
    )

    def reap() -> None:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            return  # RQ reaped it already

    threading.Thread(target=reap, name=f"reap-{pid}", daemon=True).start()


def _stop_on_signals(stopping: threading.Event) -> None:
    """Our handlers for the moments no RQ worker runs (RQ installs its own in work())."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _wait_for_redis(
    connection: redis.Redis, url: str, retry: float, stopping: threading.Event
) -> bool:
    """Block until Redis answers a PING; False if asked to stop first."""
    started, warned = time.monotonic(), False
    while not stopping.is_set():
        try:
            connection.ping()
        except redis.exceptions.RedisError as exc:
            if not warned:
                log.warning(
                    "cannot reach Redis; retrying until it answers (check REDIS_URL)",
                    extra={"redis": url, "error": str(exc), "retry_seconds": retry},
                )
                warned = True
            stopping.wait(retry)
            continue
        if warned:
            log.warning(
                "Redis answers again; starting a fresh RQ worker",
                extra={"redis": url, "down_seconds": round(time.monotonic() - started, 1)},
            )
        return True
    return False


def main() -> None:
    logs.setup()
    settings = context.settings()
    config = WorkerSettings.from_env()
    connection = context.redis_connection()
    stopping = threading.Event()
    _stop_on_signals(stopping)
    if not _wait_for_redis(connection, settings.redis_url, config.redis_retry_seconds, stopping):
        return
    context.ensure_database()
    migrate()
    queue = context.queue(connection)
    sweeping = threading.Event()
    threading.Thread(
        target=sweep.run_forever, args=(queue, sweeping), name="sweep", daemon=True
    ).start()
    try:
        while not stopping.is_set():
            log.info(
                "worker starting",
                extra={
                    "queue": queue.name,
                    "redis": settings.redis_url,
                    "worker_ttl": config.worker_ttl,
                },
            )
            if _run(_new_worker(queue, config, stopping)):
                return
            _stop_on_signals(stopping)
            log.warning("RQ worker quit without being asked to; restarting it once Redis answers")
            # Not straight away: a worker that quits on something other than Redis would
            # otherwise spin.
            stopping.wait(config.redis_retry_seconds)
            _wait_for_redis(connection, settings.redis_url, config.redis_retry_seconds, stopping)
    finally:
        sweeping.set()


if __name__ == "__main__":
    main()
