"""Standard health checking: NOT_SERVING while the database or Redis cannot be reached.

Probes run every `interval` seconds (HEALTH_INTERVAL), each on its own daemon thread with a
deadline: a probe stuck on a dead network path counts as failing instead of freezing the
last status, and a stuck probe is waited on, never started twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from grpc_health.v1 import health, health_pb2

log = logging.getLogger(__name__)

Probe = Callable[[], object]
DEFAULT_PROBE_TIMEOUT = 5.0  # seconds a probe may take before it counts as failing


class HealthReporter:
    """Runs the probes every `interval` seconds and sets every service's status from them."""

    def __init__(
        self,
        servicer: health.HealthServicer,
        services: Iterable[str],
        probes: dict[str, Probe],
        interval: float = 2.0,
        probe_timeout: float = DEFAULT_PROBE_TIMEOUT,
    ) -> None:
        self.servicer = servicer
        self.services = ["", *services]
        self.probes = probes
        self.interval = interval
        self.probe_timeout = probe_timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)
        self._serving: bool | None = None
        self._pending: dict[str, Future[object]] = {}

    def check(self) -> bool:
        """Probe once and publish the result; True when every probe answered."""
        failing = [error for name in self.probes if (error := self._probe(name)) is not None]
        serving = not failing
        if serving != self._serving:
            log.log(
                logging.INFO if serving else logging.WARNING,
                "health changed",
                extra={"serving": serving, "failing": failing},
            )
            self._serving = serving
        if not self._stop.is_set():  # a late probe must not undo stop()
            self._publish(serving)
        return serving

    def start(self) -> None:
        self.check()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._publish(False)

    def _publish(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in self.services:
            self.servicer.set(service, status)

    def _probe(self, name: str) -> str | None:
        """None when the probe answered in time, else why it failed."""
        future = self._pending.get(name)
        if future is None or future.done():
            future = self._pending[name] = _in_thread(name, self.probes[name])
        try:
            future.result(timeout=self.probe_timeout)
        except FutureTimeout:
            return f"{name}: no answer within {self.probe_timeout:g} s"
        except Exception as exc:
            return f"{name}: {exc}"
        return None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()


def _in_thread(name: str, probe: Probe) -> Future[object]:
    """Run `probe` on a daemon thread (a hung one never holds up the process's exit)."""
    future: Future[object] = Future()

    def run() -> None:
        try:
            future.set_result(probe())
        except Exception as exc:
            future.set_exception(exc)

    threading.Thread(target=run, name=f"health-{name}", daemon=True).start()
    return future
