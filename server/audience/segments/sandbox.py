"""Evaluate caller-written CEL away from the server's threads: in a child process, with a
deadline and a memory cap.

The `cel` evaluator is native code that holds the GIL for the whole of one evaluation, and
its macros copy lists as they go: a 4 KB expression can keep one evaluation busy for minutes
(a `map` over a long list builds the result quadratically), stalling every thread of the
server. `limits.shape_problem` refuses the worst shapes outright, but the cost also depends on the
users' data, so PreviewSegment, the one place the server evaluates an expression a caller
just wrote, sends its candidates to a child process and waits at most the time left. A child
past the deadline is killed (and replaced on the next preview), and the call is answered
RESOURCE_EXHAUSTED. A worker's calculation evaluates under the same kind of budget, in a
forked child per batch (`budget.BatchEvaluator`).
"""

from __future__ import annotations

import atexit
import multiprocessing
import resource
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import cel

from server import config
from server.audience.segments.matching import matching
from server.core.errors import ResourceExhausted

MAX_WORKERS = 2  # previews evaluating at once; a third waits (within its deadline)
_PROGRAM_CACHE = 32  # compiled expressions a child keeps


class ExpressionTooCostly(ResourceExhausted):
    reason = "EXPRESSION_TOO_COSTLY"


def _serve(conn: Connection, memory_bytes: int) -> None:
    """The child: evaluate (expression, contexts) requests, answer the indices that match."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    programs: dict[str, Any] = {}
    while True:
        try:
            expression, contexts = conn.recv()
        except (EOFError, OSError):  # the server has gone
            return
        if expression not in programs:
            if len(programs) >= _PROGRAM_CACHE:
                programs.clear()
            programs[expression] = cel.compile(expression)
        conn.send(matching(programs[expression], contexts))


class _Worker:
    """One child process and the pipe to it."""

    def __init__(self) -> None:
        # spawn, not fork: the server's gRPC threads must not be forked mid-call.
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_serve,
            args=(child, config.PREVIEW_EVAL_MEMORY_BYTES),
            daemon=True,
            name="cel-sandbox",
        )
        self.process.start()
        child.close()

    def evaluate(self, expression: str, contexts: list[Any], timeout: float) -> list[int]:
        """The matching indices; TimeoutError past `timeout`, EOFError if the child died."""
        self.conn.send((expression, contexts))
        if not self.conn.poll(max(timeout, 0.0)):
            raise TimeoutError
        result: list[int] = self.conn.recv()
        return result

    def kill(self) -> None:
        self.process.kill()
        self.process.join(5)
        self.conn.close()


class _Pool:
    """Idle workers, reused; at most MAX_WORKERS busy at once."""

    def __init__(self) -> None:
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_WORKERS)

    def evaluate(
        self, expression: str, contexts: list[Any], deadline: float | None, limit: float
    ) -> list[int]:
        """Indices of the matching contexts, by `deadline`, or (None) within `limit` seconds
        of evaluation once a child is ready (starting one is not the expression's cost)."""
        wait = limit if deadline is None else max(deadline - time.monotonic(), 0.0)
        if not self._slots.acquire(timeout=wait):
            raise ExpressionTooCostly("too many segment previews at once; try again shortly")
        try:
            return self._evaluate(expression, contexts, deadline, limit)
        finally:
            self._slots.release()

    def _evaluate(
        self, expression: str, contexts: list[Any], deadline: float | None, limit: float
    ) -> list[int]:
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None or not worker.process.is_alive():
            worker = _Worker()
        left = limit if deadline is None else deadline - time.monotonic()
        try:
            result = worker.evaluate(expression, contexts, left)
        except TimeoutError:
            worker.kill()
            raise ExpressionTooCostly(
                f"the expression took longer than {limit} s to evaluate over these users;"
                " simplify it (fewer or smaller map/filter macros, simpler matches() patterns)"
            ) from None
        except (EOFError, OSError):  # killed by the memory cap, most likely
            worker.kill()
            raise ExpressionTooCostly(
                "the expression needed too much memory to evaluate over these users"
            ) from None
        with self._lock:
            self._idle.append(worker)
        return result

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()


_pool = _Pool()
atexit.register(_pool.close)


class Evaluator:
    """Evaluates batches of contexts in the sandbox against one deadline (one preview)."""

    def __init__(self, seconds: float | None = None) -> None:
        self.deadline = time.monotonic() + (
            config.PREVIEW_EVAL_SECONDS if seconds is None else seconds
        )

    def __call__(self, compiled: Any, contexts: list[Any]) -> list[int]:
        """engine.Evaluate: indices of the contexts `compiled.expression` matches."""
        if not contexts:
            return []
        return _pool.evaluate(
            compiled.expression, contexts, self.deadline, config.PREVIEW_EVAL_SECONDS
        )
