"""Raw client loops, the yardstick next to the pipeline: plain `smtplib.sendmail` (one
transaction at a time per connection, no pipelining) and plain `httpx` form POSTs, over 1 or
more connections, each on its own thread, for a fixed time.

    python -m bench.latency_raw --smtp-port 2525 --connections 1 10 --seconds 5
    python -m bench.latency_raw --twilio-port 8080 --connections 1 10

Runs against any SMTP server or Twilio-compatible endpoint (that is how the sinks themselves
were compared, BENCHMARKS.md "Sending engine v2: latency").
"""

from __future__ import annotations

import argparse
import itertools
import smtplib
import threading
import time
from collections.abc import Callable, Iterator

import httpx

SENDER = "news@festival.example"
EMAIL = (
    b"From: news@festival.example\r\nTo: x@example.com\r\nSubject: Hi\r\n\r\n" + b"Hello\r\n" * 40
)
TWILIO_SID = "AC1"
TWILIO_FROM = "+4512345678"


def _threads(connections: int, loop: Callable[[], None]) -> float:
    """Run `loop` on `connections` threads; seconds until the last one ended."""
    threads = [threading.Thread(target=loop) for _ in range(connections)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def _numbers(limit: int | None) -> Iterator[int]:
    """Shared by the threads: `next` on an itertools counter is atomic under the GIL."""
    return iter(range(limit)) if limit else itertools.count()


def smtp_loop(
    port: int, connections: int, seconds: float, limit: int | None = None
) -> dict[str, float]:
    """`sendmail` in a loop on each connection until `seconds` pass or `limit` messages."""
    numbers = _numbers(limit)
    sent: list[int] = []
    deadline = time.monotonic() + seconds

    def loop() -> None:
        count = 0
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            for i in numbers:
                smtp.sendmail(SENDER, [f"user{i}@example.com"], EMAIL)
                count += 1
                if time.monotonic() > deadline:
                    break
        sent.append(count)

    elapsed = _threads(connections, loop)
    return {"messages": sum(sent), "seconds": elapsed, "rate": sum(sent) / elapsed}


def twilio_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"


def sms_loop(
    port: int, connections: int, seconds: float, limit: int | None = None
) -> dict[str, float]:
    """Form POSTs as the Twilio provider makes them, `connections` requests in flight."""
    numbers = _numbers(limit)
    sent: list[int] = []
    deadline = time.monotonic() + seconds
    url = twilio_url(port)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    client = httpx.Client(auth=(TWILIO_SID, "token"), limits=limits, timeout=30)

    def loop() -> None:
        count = 0
        for i in numbers:
            body = {"To": f"+4520{i:06d}", "From": TWILIO_FROM, "Body": "Hi Ann, the line-up!"}
            response = client.post(url, data=body)
            assert response.status_code == 201, response.text
            count += 1
            if time.monotonic() > deadline:
                break
        sent.append(count)

    with client:
        elapsed = _threads(connections, loop)
    return {"messages": sum(sent), "seconds": elapsed, "rate": sum(sent) / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--smtp-port", type=int)
    target.add_argument("--twilio-port", type=int)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    for connections in args.connections:
        if args.smtp_port:
            result = smtp_loop(args.smtp_port, connections, args.seconds)
        else:
            result = sms_loop(args.twilio_port, connections, args.seconds)
        print(
            f"{connections} connection(s): {result['messages']:,.0f} messages in "
            f"{result['seconds']:.1f} s = {result['rate']:,.0f} msg/s",
            flush=True,
        )


if __name__ == "__main__":
    main()
