"""`python -m server`: serve the campaign API until SIGTERM or Ctrl-C, then drain."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

import peewee

from server import logs
from server.app import build
from server.config import Settings
from server.security.transport import SecurityConfigError
from server.store.db import DatabaseURLError

GRACE_SECONDS = 10.0


def main() -> None:
    logs.setup()
    settings = Settings.from_env()
    try:
        app = build(settings)
    except SecurityConfigError as exc:
        sys.exit(f"error: {exc}")
    except DatabaseURLError as exc:
        sys.exit(f"error: DATABASE_URL: {exc}")
    except peewee.OperationalError as exc:
        sys.exit(f"error: cannot open the database {settings.database_url!r}: {exc}")
    except RuntimeError as exc:  # grpc: the port could not be bound
        sys.exit(f"error: cannot listen on {settings.host}:{settings.port}: {exc}")
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stopping.wait()
    app.stop(GRACE_SECONDS)


if __name__ == "__main__":
    main()
