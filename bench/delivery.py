"""End-to-end delivery benchmark: SendCampaignNow to `sent` through real RQ workers, next to a
plain client loop against the same sink, in one run.

    python -m bench.delivery --recipients 100000 --channel email --database postgres --workers 1 2

Email goes to Postfix's smtp-sink, SMS to a local Twilio-compatible endpoint. Reports users/s
for calculating and for sending, wall time, peak memory per worker process, and the ratio of
the pipeline's sending rate to the raw loop's.
"""

from __future__ import annotations

import argparse
import smtplib
import time
from pathlib import Path
from typing import Any

import httpx

from bench.sinks import start_smtp_sink, start_twilio_sink
from bench.stack import running_stack, send_and_wait, sink_env

RAW_MESSAGES = 20_000


def run_pipeline(args: argparse.Namespace, workers: int, env: dict[str, str]) -> dict[str, Any]:
    with running_stack(args.database, args.channel, args.recipients, workers, env) as stack:
        return send_and_wait(stack)


def raw_email_rate(port: int) -> float:
    data = (
        b"From: news@festival.example\r\nTo: x@example.com\r\nSubject: Hi\r\n\r\n"
        + b"Hello\r\n" * 40
    )
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        start = time.perf_counter()
        for i in range(RAW_MESSAGES):
            smtp.sendmail("news@festival.example", [f"user{i}@example.com"], data)
        return RAW_MESSAGES / (time.perf_counter() - start)


def raw_email_pipelined_rate(port: int) -> float:
    """The same loop speaking PIPELINING as the provider does: MAIL, RCPT and DATA in one
    write, then the payload (smtplib's `sendmail` waits for each reply in turn)."""
    data = (
        b"From: news@festival.example\r\nTo: x@example.com\r\nSubject: Hi\r\n\r\n"
        + b"Hello\r\n" * 40
        + b".\r\n"
    )
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.ehlo()
        start = time.perf_counter()
        for i in range(RAW_MESSAGES):
            smtp.send(
                f"MAIL FROM:<news@festival.example>\r\nRCPT TO:<user{i}@example.com>\r\nDATA\r\n"
            )
            codes = [smtp.getreply()[0] for _ in range(3)]
            smtp.send(data)
            codes.append(smtp.getreply()[0])
            assert codes == [250, 250, 354, 250], codes
        return RAW_MESSAGES / (time.perf_counter() - start)


def raw_sms_rate(port: int) -> float:
    url = f"http://127.0.0.1:{port}/2010-04-01/Accounts/AC1/Messages.json"
    with httpx.Client(auth=("AC1", "token")) as client:
        start = time.perf_counter()
        for i in range(RAW_MESSAGES // 4):
            client.post(
                url,
                data={
                    "To": f"+4520{i:06d}",
                    "From": "+4512345678",
                    "Body": "Hi Ann, the line-up is out!",
                },
            )
        return (RAW_MESSAGES // 4) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--channel", choices=("email", "sms"), default="email")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    if args.channel == "email":
        sink, port = start_smtp_sink()
        raw_rate = raw_email_rate
    else:
        sink, port = start_twilio_sink()
        raw_rate = raw_sms_rate
    env = sink_env(args.channel, port)
    try:
        for workers in args.workers:
            # Measured next to each run: on a shared machine the sink's speed drifts.
            raw = raw_rate(port)
            piped = raw_email_pipelined_rate(port) if args.channel == "email" else raw
            print(f"raw {args.channel} loop: {raw:,.0f} msg/s (pipelined {piped:,.0f})")
            r = run_pipeline(args, workers, env)
            rate = r["recipients"] / r["sending_s"]
            load = " / ".join(Path("/proc/loadavg").read_text().split()[:3])  # a shared machine
            print(
                f"| {args.channel} | {args.database} | {workers} | {int(r['recipients']):,} | "
                f"{args.recipients / r['calculating_s']:,.0f} | {rate:,.0f} | "
                f"{r['wall_s']:.1f} | {r['peak_mb']:.0f} | {raw:,.0f} | {rate / raw:.2f} | "
                f"{piped:,.0f} | {rate / piped:.2f} | {load} |",
                flush=True,
            )
    finally:
        sink.terminate()


if __name__ == "__main__":
    main()
