"""Standard health checking: NOT_SERVING while the database or Redis cannot be reached."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from grpc_health.v1 import health, health_pb2

log = logging.getLogger(__name__)

Probe = Callable[[], object]


class HealthReporter:
    """Runs the probes every `interval` seconds and sets every service's status from them."""

    def __init__(
        self,
        servicer: health.HealthServicer,
        services: Iterable[str],
        probes: dict[str, Probe],
        interval: float = 2.0,
    ) -> None:
        self.servicer = servicer
        self.services = ["", *services]
        self.probes = probes
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)
        self._serving: bool | None = None

    def check(self) -> bool:
        failing = []
        for name, probe in self.probes.items():
            try:
                probe()
            except Exception as exc:
                failing.append(f"{name}: {exc}")
        serving = not failing
        if serving != self._serving:
            log.log(
                logging.INFO if serving else logging.WARNING,
                "health changed",
                extra={"serving": serving, "failing": failing},
            )
            self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else (health_pb2.HealthCheckResponse.NOT_SERVING)
        )
        for service in self.services:
            self.servicer.set(service, status)
        return serving

    def start(self) -> None:
        self.check()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        for service in self.services:
            self.servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()
