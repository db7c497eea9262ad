"""A Twilio-compatible Messages endpoint that answers each request after D ms.

    python -m bench.latency_http --delay-ms 200 [--max-connections 0] [--port 0]

`POST /2010-04-01/Accounts/{sid}/Messages.json` (a form, as `jobs/sending/providers/twilio.py`
sends it) gets `201 Created` with `{"sid": "SM...", "status": "queued"}` after the delay, on a
timer of the event loop, so every connection waits concurrently; anything else gets a 404
straight away. A connection opened beyond --max-connections gets 429 Too Many Requests
(Retry-After: 1, Twilio's error 20429) for its request, then is closed. HTTP/1.1 with
keep-alive (requests on one connection answered in order), bodies by Content-Length only (the
provider never sends chunked ones). A small asyncio protocol: neither aiohttp nor uvloop is
installed, and `http.server` (`bench/sinks.py`) spends a thread per connection. Counters and
the control socket: `bench/latency_sink.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from typing import Any

from bench.latency_sink import Counters, serve

MESSAGES = re.compile(rb"POST /2010-04-01/Accounts/[^/ ]+/Messages\.json(?:\?\S*)? HTTP/1\.[01]")
MAX_HEAD = 16384
TOO_MANY = {"code": 20429, "message": "Too Many Requests", "status": 429}


def response(status: bytes, body: dict[str, Any], keep_alive: bool) -> bytes:
    data = json.dumps(body).encode()
    connection = b"keep-alive" if keep_alive else b"close"
    return (
        b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Connection: %s\r\n\r\n%s" % (status, len(data), connection, data)
    )


class Request:
    """The parts of a request head the sink acts on."""

    def __init__(self, head: bytes) -> None:
        line, _, headers = head.partition(b"\r\n")
        self.messages = MESSAGES.fullmatch(line) is not None
        fields = {}
        for header in headers.split(b"\r\n"):
            name, _, value = header.partition(b":")
            fields[name.strip().lower()] = value.strip().lower()
        self.length = int(fields.get(b"content-length", b"0") or 0)
        self.chunked = b"chunked" in fields.get(b"transfer-encoding", b"")
        connection = fields.get(b"connection", b"")
        self.keep_alive = (
            connection != b"close" if line.endswith(b"1.1") else connection == b"keep-alive"
        )


class HttpSession(asyncio.Protocol):
    """One connection: a request at a time, the Messages ones answered after `delay`."""

    def __init__(self, counters: Counters, delay: float, limit: int) -> None:
        self.counters, self.delay, self.limit = counters, delay, limit
        self.buffer = bytearray()
        self.timer: asyncio.TimerHandle | None = None
        self.counted = False
        self.over_limit = False
        self.closing = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self.limit and self.counters.open >= self.limit:
            self.counters.refused += 1  # its requests get a 429; not counted as open
            self.over_limit = True
            return
        self.counted = True
        self.counters.opened()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.counted:
            self.counters.closed()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._advance([])

    def _advance(self, out: list[bytes]) -> None:
        while self.timer is None and not self.closing:
            request = self._next_request()
            if request is None:
                break
            self.closing = not request.keep_alive or self.over_limit
            if self.over_limit:
                out.append(response(b"429 Too Many Requests\r\nRetry-After: 1", TOO_MANY, False))
            elif not request.messages or request.chunked:
                not_found = {"code": 20404, "message": "The requested resource was not found"}
                out.append(response(b"404 Not Found", not_found, request.keep_alive))
            elif self.delay > 0:
                self.timer = asyncio.get_running_loop().call_later(
                    self.delay, self._answer, request.keep_alive
                )
            else:
                out.append(self._created(request.keep_alive))
        if out:
            self.transport.write(b"".join(out))
        if self.closing and self.timer is None:
            self.transport.close()

    def _next_request(self) -> Request | None:
        """The next complete request (head and body), taken off the buffer."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD:
                self.closing = True
            return None
        request = Request(bytes(self.buffer[:end]))
        total = end + 4 + request.length
        if len(self.buffer) < total:
            return None
        del self.buffer[:total]
        return request

    def _created(self, keep_alive: bool) -> bytes:
        self.counters.accept()
        sid = {"sid": f"SM{self.counters.accepted:032x}", "status": "queued"}
        return response(b"201 Created", sid, keep_alive)

    def _answer(self, keep_alive: bool) -> None:
        self.timer = None
        self._advance([self._created(keep_alive)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument(
        "--max-connections", type=int, default=0, help="beyond it: 429 and close (0: no limit)"
    )
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    counters = Counters()
    delay = args.delay_ms / 1000

    def session() -> HttpSession:
        return HttpSession(counters, delay, args.max_connections)

    asyncio.run(serve(session, counters, args.port))


if __name__ == "__main__":
    main()
