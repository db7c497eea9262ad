"""`python -m jobs`: an RQ worker with the scheduler on, plus the due-campaign sweep in a
process of its own (`python -m jobs sweep` runs the sweep alone).

No thread may be alive when RQ forks a job process: a fork while a thread holds a lock (the
logging handler's, redis-py's pool lock, the database driver's mutex) leaves the child a lock
that nobody will ever release, and the job hangs until its timeout. So the sweep is a child
process (started with fork+exec, which runs no Python in between), RQ's pub/sub listener
thread (remote commands such as kill-horse) is not started, and a job left running by a
worker that quit is awaited before the next worker starts. A hook before every fork logs an
error naming any thread still alive, so a regression shows in the log.

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
import subprocess
import sys
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

PARENT_ENV = "CAMPAIGNS_SWEEP_PARENT"  # the worker's pid, for the sweep it starts


class CampaignWorker(Worker):
    """RQ's forking worker that knows whether it was asked to stop (a signal) or gave up on
    an error, and registers itself again when a restarted Redis has forgotten it."""

    asked_to_stop = False

    def __init__(
        self, *args: Any, stopping: threading.Event, sweeper: Sweeper | None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.stopping = stopping
        self.sweeper = sweeper

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()
        if self.stopping.is_set():
            # A signal came between our handler and RQ's: honour it at the loop's first check.
            self.asked_to_stop = self._stop_requested = True

    def subscribe(self) -> None:
        """RQ listens for remote commands on a pub/sub thread: no thread may live in a
        process that forks (see the module's docstring). Signals still stop the worker."""

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
        if pipeline is None and self.sweeper is not None:
            self.sweeper.ensure()
        super().heartbeat(timeout, pipeline)


def _new_worker(
    queue: Queue, config: WorkerSettings, stopping: threading.Event, sweeper: Sweeper | None
) -> CampaignWorker:
    worker = CampaignWorker(
        [queue],
        stopping=stopping,
        sweeper=sweeper,
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
    and records its sends without Redis): let it finish before a fresh worker starts (here,
    not on a thread: the next worker forks)."""
    if not pid:
        return
    log.warning(
        "a job is still running after the worker quit; letting it finish", extra={"pid": pid}
    )
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        return  # RQ reaped it already


def _no_thread_at_fork() -> None:
    """Before every fork in the worker process: say so loudly if a thread is alive."""
    others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    if others:
        log.error("forking with threads alive: the child may hang", extra={"threads": others})


class Sweeper:
    """The sweep's own process (`python -m jobs sweep`), started again when it dies."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def ensure(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        if self.proc is not None:
            log.warning(
                "the sweep process exited; starting another",
                extra={"returncode": self.proc.returncode},
            )
        env = {**os.environ, PARENT_ENV: str(os.getpid())}
        self.proc = subprocess.Popen([sys.executable, "-m", "jobs", "sweep"], env=env)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


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


def _refuse_bad_settings() -> None:
    """Stop before anything starts when a delivery setting cannot work: all of them at once."""
    try:
        problems = context.delivery_settings().problems()
    except ValueError as exc:  # a number that does not parse
        problems = [str(exc)]
    if problems:
        sys.exit("invalid worker settings:\n  - " + "\n  - ".join(problems))


def sweep_main() -> None:
    """`python -m jobs sweep`: the sweep alone, until SIGTERM / SIGINT, or until the worker
    that started it is gone (CAMPAIGNS_SWEEP_PARENT)."""
    logs.setup()
    stopping = threading.Event()
    _stop_on_signals(stopping)
    parent = int(os.environ.get(PARENT_ENV) or 0)
    connection = context.redis_connection()
    retry = WorkerSettings.from_env().redis_retry_seconds
    if not _wait_for_redis(connection, context.settings().redis_url, retry, stopping):
        return
    context.ensure_database()
    log.info("sweep starting", extra={"interval": sweep.SWEEP_INTERVAL, "parent": parent})
    sweep.run_forever(
        context.queue(connection),
        lambda: not stopping.is_set() and (not parent or os.getppid() == parent),
        stopping,
    )


def main() -> None:
    if sys.argv[1:] == ["sweep"]:
        sweep_main()
        return
    if sys.argv[1:]:
        sys.exit("usage: python -m jobs [sweep]")
    logs.setup()
    _refuse_bad_settings()
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
    os.register_at_fork(before=_no_thread_at_fork)
    sweeper = Sweeper()
    sweeper.ensure()
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
            if _run(_new_worker(queue, config, stopping, sweeper)):
                return
            _stop_on_signals(stopping)
            log.warning("RQ worker quit without being asked to; restarting it once Redis answers")
            # Not straight away: a worker that quits on something other than Redis would
            # otherwise spin.
            stopping.wait(config.redis_retry_seconds)
            _wait_for_redis(connection, settings.redis_url, config.redis_retry_seconds, stopping)
    finally:
        sweeper.stop()


if __name__ == "__main__":
    main()
