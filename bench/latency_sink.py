"""What the latency-injecting sinks share: their counters, a control socket, the serving loop,
and `SinkProcess`, which runs a sink in its own process (its CPU is not the client's).

A sink process prints one JSON line when it listens (`{"port": P, "control": C}`), answers
`stats` / `reset` lines on its control port with one JSON line each (`reset` answers the
counters it cleared), and prints its final counters as one JSON line on SIGTERM or SIGINT.
A sink started with `--record` also keeps one record per message, answered by `messages`
(`{"messages": [[mail_at, data_at, replied_at, "rcpt,..."], ...]}`, time.time() values, 0.0
for a step the message never reached): when its MAIL FROM arrived, when its data was complete,
when it was answered 250 (a connection lost before the reply leaves 0.0).
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Counters:
    """Messages accepted and connections, since the last reset (open ones carry over)."""

    accepted: int = 0
    refused: int = 0  # connections turned away beyond the limit
    connections: int = 0  # connections served
    open: int = 0
    peak_open: int = 0
    first_at: float = 0.0  # time.time() of the first and last accepted message
    last_at: float = 0.0
    cpu_at_reset: float = field(default_factory=time.process_time)
    records: list[list[Any]] | None = None  # one per message, with --record (see the module)

    def opened(self) -> None:
        self.connections += 1
        self.open += 1
        self.peak_open = max(self.peak_open, self.open)

    def closed(self) -> None:
        self.open -= 1

    def accept(self) -> None:
        now = time.time()
        if not self.accepted:
            self.first_at = now
        self.last_at = now
        self.accepted += 1

    def snapshot(self) -> dict[str, Any]:
        span = self.last_at - self.first_at
        cpu = time.process_time() - self.cpu_at_reset
        return {
            "accepted": self.accepted,
            "refused": self.refused,
            "connections": self.connections,
            "open": self.open,
            "peak_open": self.peak_open,
            "first_at": self.first_at,
            "last_at": self.last_at,
            # n messages span n - 1 intervals
            "rate": (self.accepted - 1) / span if span > 0 else 0.0,
            "cpu_s": round(cpu, 3),
            "cpu_us_per_message": round(cpu / self.accepted * 1e6, 1) if self.accepted else 0.0,
        }

    def record(self) -> list[Any] | None:
        """A new message's record (its MAIL FROM arrived now), or None when not recording."""
        if self.records is None:
            return None
        entry: list[Any] = [time.time(), 0.0, 0.0, ""]
        self.records.append(entry)
        return entry

    def reset(self) -> dict[str, Any]:
        before = self.snapshot()
        recording = [] if self.records is not None else None
        self.__dict__.update(vars(Counters(open=self.open, peak_open=self.open)))
        self.records = recording
        return before


async def _control(counters: Counters, reader: asyncio.StreamReader, writer: Any) -> None:
    while line := (await reader.readline()).strip():
        if line == b"reset":
            answer = counters.reset()
        elif line == b"stats":
            answer = counters.snapshot()
        elif line == b"messages":
            answer = {"messages": counters.records or []}
        else:
            answer = {"error": f"unknown command {line.decode(errors='replace')}"}
        writer.write(json.dumps(answer).encode() + b"\n")
        await writer.drain()
    writer.close()


async def serve(factory: Callable[[], asyncio.Protocol], counters: Counters, port: int) -> None:
    """Serve until SIGTERM / SIGINT, then print the final counters."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, "127.0.0.1", port, backlog=4096)
    control = await asyncio.start_server(lambda r, w: _control(counters, r, w), "127.0.0.1", 0)
    ports = {
        "port": server.sockets[0].getsockname()[1],
        "control": control.sockets[0].getsockname()[1],
    }
    print(json.dumps(ports), flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()
    control.close()
    print(json.dumps(counters.snapshot()), flush=True)


class SinkProcess:
    """A sink module (`python -m MODULE ARGS`) in a child process, asked over its control
    socket."""

    def __init__(self, module: str, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        if not first:
            self.proc.wait(5)
            sys.exit(f"{module} exited at start (status {self.proc.returncode})")
        ports = json.loads(first)
        self.port: int = ports["port"]
        self.control = socket.create_connection(("127.0.0.1", ports["control"]), timeout=10)
        self.answers = self.control.makefile("r")

    def ask(self, command: str) -> dict[str, Any]:
        self.control.sendall(command.encode() + b"\n")
        answer: dict[str, Any] = json.loads(self.answers.readline())
        return answer

    def stats(self) -> dict[str, Any]:
        return self.ask("stats")

    def reset(self) -> dict[str, Any]:
        return self.ask("reset")

    def messages(self) -> list[list[Any]]:
        """Every message's record since the last reset (a sink started with --record)."""
        records: list[list[Any]] = self.ask("messages")["messages"]
        return records

    def stop(self) -> dict[str, Any]:
        """Terminate the sink; its final counters."""
        self.answers.close()
        self.control.close()
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        lines = out.strip().splitlines()
        return json.loads(lines[-1]) if lines else {}

    def __enter__(self) -> SinkProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.stop()
