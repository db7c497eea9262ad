"""`python -m jobs`: an RQ worker with the scheduler on, plus the due-campaign sweep."""

from __future__ import annotations

import logging
import sys
import threading

import redis
from rq import Worker

from jobs import context, sweep
from server import logs
from server.migrations import migrate

log = logging.getLogger("jobs.worker")


def main() -> None:
    logs.setup()
    settings = context.settings()
    connection = context.redis_connection()
    try:
        connection.ping()
    except redis.exceptions.RedisError as exc:
        sys.exit(f"error: cannot reach Redis at {settings.redis_url} ({exc}); set REDIS_URL")
    context.ensure_database()
    migrate()
    queue = context.queue(connection)
    stop = threading.Event()
    threading.Thread(
        target=sweep.run_forever, args=(queue, stop), name="sweep", daemon=True
    ).start()
    log.info("worker starting", extra={"queue": queue.name, "redis": settings.redis_url})
    try:
        Worker([queue], connection=connection).work(with_scheduler=True)
    finally:
        stop.set()


if __name__ == "__main__":
    main()
