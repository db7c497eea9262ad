"""A worker's calculation evaluates its segment under a budget: each batch of users in a
forked child with a deadline and a memory cap, all batches within a total.

The `cel` evaluator is native code holding the GIL, so nothing in the evaluating process can
stop one evaluation that runs for minutes; a child can be killed. The server cannot fork
(its gRPC threads), so PreviewSegment keeps a pool of spawned children (`sandbox`); a worker's
job process has no thread while it calculates, so it forks one child per batch, which costs
a fraction of spawning one and needs no copying in: the child sees the batch it was forked
with and sends back only the indices that match. A batch past its deadline, a child past its
memory cap, or a campaign past its total budget raises ExpressionTooCostly, and the campaign
fails with that reason instead of holding the worker (and every organization behind it).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import resource
import select
import signal
import threading
import time
from typing import Any

from server import config
from server.audience.segments.matching import matching
from server.audience.segments.sandbox import ExpressionTooCostly

__all__ = ["BatchEvaluator"]


class BatchEvaluator:
    """`engine.Evaluate` for a calculation: each batch within `per_batch` seconds, all of them
    within `budget` seconds of evaluation."""

    def __init__(
        self,
        per_batch: float = config.CALCULATE_EVAL_SECONDS,
        budget: float = config.CALCULATE_EVAL_BUDGET_SECONDS,
    ) -> None:
        self.per_batch = per_batch
        self.left = budget
        self.budget = budget

    def __call__(self, compiled: Any, contexts: list[Any]) -> list[int]:
        """Indices of the contexts `compiled` matches."""
        if not contexts:
            return []
        if self.left <= 0:
            raise ExpressionTooCostly(
                f"evaluating the segment took more than {self.budget} s in all"
            )
        limit = min(self.per_batch, self.left)
        started = time.monotonic()
        try:
            return _in_child(compiled.program, contexts, limit)
        finally:
            self.left -= time.monotonic() - started


def _in_child(program: Any, contexts: list[Any], limit: float) -> list[int]:
    if threading.active_count() > 1:  # a fork would hand the child other threads' locks
        raise RuntimeError("BatchEvaluator needs a process without other threads")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: evaluate, answer, and leave without any clean-up of the parent's
        os.close(read)
        _child(program, contexts, write, limit)
    os.close(write)
    try:
        data = _read_until(read, time.monotonic() + limit)
    finally:
        os.close(read)
    if data is None:
        _kill(pid)
        raise ExpressionTooCostly(
            f"the expression took longer than {limit} s to evaluate over these users;"
            " simplify it (fewer or smaller map/filter macros, simpler matches() patterns)"
        )
    _, status = os.waitpid(pid, 0)
    if status != 0 or not data:
        raise ExpressionTooCostly(
            "the expression needed too much memory to evaluate over these users"
        )
    result: list[int] = pickle.loads(data)
    return result


def _child(program: Any, contexts: list[Any], write: int, limit: float) -> None:
    code = 1
    try:
        cap = config.PREVIEW_EVAL_MEMORY_BYTES
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        # Its own end too, should the parent be gone before it could kill it (a job timeout).
        seconds = int(limit) + 2
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))
        data = pickle.dumps(matching(program, contexts))
        view = memoryview(data)
        while view:
            view = view[os.write(write, view) :]
        code = 0
    finally:
        os._exit(code)


def _read_until(fd: int, deadline: float) -> bytes | None:
    """Everything the child writes, up to its end; None past the deadline."""
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
