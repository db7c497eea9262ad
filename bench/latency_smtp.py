"""An SMTP sink that answers the end of DATA after D ms, as a relay over a network would.

    python -m bench.latency_smtp --delay-ms 20 [--max-connections 50] [--port 0] [--record]

ESMTP with PIPELINING, 8BITMIME, SMTPUTF8 and SIZE; messages are discarded. Only the reply to
the end of DATA waits (a timer on the event loop: other connections go on meanwhile); replies
on a connection stay in order, so commands pipelined behind the end of DATA are answered
after it. Beyond --max-connections open connections a new one is greeted with "421 4.7.0 too
many connections" and closed. A hand-written asyncio protocol rather than aiosmtpd: its
per-message cost bounds what the benchmark can measure (BENCHMARKS.md, "Sending engine v2:
latency"). Counters and the control socket: `bench/latency_sink.py`; with --record, one record
per message (MAIL FROM, data complete, 250 sent, recipients). Commands pipelined behind an end
of DATA are read after its reply, but a client waits for that reply before its next MAIL, so
a MAIL FROM is recorded when it arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bench.latency_sink import Counters, serve

GREETING = b"220 latency-sink ESMTP\r\n"
TOO_MANY = b"421 4.7.0 too many connections\r\n"
EHLO = (
    b"250-latency-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
    b"250-SIZE 104857600\r\n250 ENHANCEDSTATUSCODES\r\n"
)
OK = b"250 2.0.0 Ok\r\n"
REPLIES = {
    b"HELO": b"250 latency-sink\r\n",
    b"EHLO": EHLO,
    b"RSET": OK,
    b"NOOP": OK,
    b"QUIT": b"221 2.0.0 Bye\r\n",
}
UNKNOWN = b"502 5.5.2 Error: command not recognized\r\n"
END_OF_DATA = b"\r\n.\r\n"
MAX_LINE = 4096


class SmtpSession(asyncio.Protocol):
    """One connection: commands answered as they arrive, the end of DATA after `delay`."""

    def __init__(self, counters: Counters, delay: float, limit: int) -> None:
        self.counters, self.delay, self.limit = counters, delay, limit
        self.buffer = bytearray()
        self.in_data = False
        self.scan = 0  # where to look for the end of DATA next
        self.rcpts = 0
        self.mail = False
        self.timer: asyncio.TimerHandle | None = None
        self.counted = False
        self.closing = False
        self.current: list[Any] | None = None  # this message's record (--record)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self.limit and self.counters.open >= self.limit:
            self.counters.refused += 1
            transport.write(TOO_MANY)
            transport.close()
            return
        self.counted = True
        self.counters.opened()
        transport.write(GREETING)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.counted:
            self.counters.closed()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._advance([])

    def _advance(self, out: list[bytes]) -> None:
        """Answer every complete command in the buffer, until one must wait."""
        while self.timer is None and not self.closing:
            if self.in_data:
                if not self._end_of_data(out):
                    break
                continue
            end = self.buffer.find(b"\n")
            if end < 0:
                if len(self.buffer) > MAX_LINE:
                    out.append(b"500 5.5.0 line too long\r\n")
                    self.buffer.clear()
                break
            line = bytes(self.buffer[:end]).rstrip(b"\r")
            del self.buffer[: end + 1]
            out.append(self._command(line))
        if out:
            self.transport.write(b"".join(out))
        if self.closing:
            self.transport.close()

    def _command(self, line: bytes) -> bytes:
        verb = line[:4].upper()
        if verb == b"MAIL":
            self.mail, self.rcpts = True, 0
            self.current = self.counters.record()
            return b"250 2.1.0 Ok\r\n"
        if verb == b"RCPT":
            if not self.mail:
                return b"503 5.5.1 Error: need MAIL command\r\n"
            self.rcpts += 1
            if self.current is not None:
                self._note_rcpt(line)
            return b"250 2.1.5 Ok\r\n"
        if verb == b"DATA":
            if not self.rcpts:
                return b"503 5.5.1 Error: need RCPT command\r\n"
            self.in_data = True
            return b"354 End data with <CR><LF>.<CR><LF>\r\n"
        self.closing = verb == b"QUIT"
        if verb in (b"RSET", b"HELO", b"EHLO"):
            self.mail, self.rcpts = False, 0
        return REPLIES.get(verb, UNKNOWN)

    def _note_rcpt(self, line: bytes) -> None:
        assert self.current is not None
        address = line.partition(b"<")[2].partition(b">")[0].decode(errors="replace").lower()
        self.current[3] = f"{self.current[3]},{address}" if self.current[3] else address

    def _end_of_data(self, out: list[bytes]) -> bool:
        """Consume the message if it is complete; True when its reply went into `out`."""
        if self.buffer.startswith(b".\r\n"):
            end = 3
        else:
            found = self.buffer.find(END_OF_DATA, self.scan)
            if found < 0:
                self.scan = max(0, len(self.buffer) - len(END_OF_DATA))
                return False
            end = found + len(END_OF_DATA)
        del self.buffer[:end]
        self.in_data, self.scan, self.mail, self.rcpts = False, 0, False, 0
        if self.current is not None:
            self.current[1] = time.time()
        if self.delay > 0:
            self.timer = asyncio.get_running_loop().call_later(self.delay, self._accepted)
            return False
        out.append(self._queued())
        return True

    def _queued(self) -> bytes:
        self.counters.accept()
        if self.current is not None:
            self.current[2], self.current = time.time(), None
        return b"250 2.0.0 Ok: queued as %d\r\n" % self.counters.accepted

    def _accepted(self) -> None:
        self.timer = None
        self._advance([self._queued()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--max-connections", type=int, default=0, help="0: no limit")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", action="store_true", help="a record per message")
    args = parser.parse_args()
    counters = Counters(records=[] if args.record else None)
    delay = args.delay_ms / 1000

    def session() -> SmtpSession:
        return SmtpSession(counters, delay, args.max_connections)

    asyncio.run(serve(session, counters, args.port))


if __name__ == "__main__":
    main()
