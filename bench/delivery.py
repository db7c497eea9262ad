"""End-to-end delivery benchmark: SendCampaignNow to `sent` through real RQ workers, next to a
plain client loop against the same sink, in one run.

    python -m bench.delivery --recipients 100000 --channel email --database postgres --workers 1 2

Email goes to Postfix's smtp-sink, SMS to a local Twilio-compatible endpoint. Reports users/s
for calculating and for sending, wall time, peak memory per worker process, and the ratio of
the pipeline's sending rate to the raw loop's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import smtplib
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import psycopg2

from bench.segment_eval import ADMIN_URL
from bench.sinks import start_smtp_sink, start_twilio_sink
from campaigns.v1 import audience_service_pb2 as apb
from campaigns.v1 import (
    audience_service_pb2_grpc,
    campaign_pb2,
    campaign_service_pb2_grpc,
    edition_pb2,
    email_message_pb2,
    email_message_service_pb2_grpc,
    segment_pb2,
)
from campaigns.v1 import campaign_service_pb2 as cpb
from campaigns.v1 import email_message_service_pb2 as epb
from scripts import localredis
from server.app import build
from server.config import Settings
from server.store.db import database, is_postgres
from server.store.models import User, utcnow

ORG = 4242
RAW_MESSAGES = 20_000


@contextlib.contextmanager
def fresh_database(kind: str, directory: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'bench.db'}"
        return
    name = f"delivery_bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        if database.obj is not None:  # None when set-up failed before opening it
            database.close_all()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


_COPY_COLUMNS = (
    "organization_id, external_id, email, phone, first_name, last_name, language, attributes,"
    " email_consent, sms_consent, email_unsubscribed, sms_unsubscribed, created, modified"
)


def _copy_users(count: int) -> None:
    """PostgreSQL: COPY, a million users in seconds instead of minutes."""
    now = utcnow().isoformat()
    for start in range(0, count, 100_000):
        buffer = io.StringIO()
        for i in range(start, min(count, start + 100_000)):
            buffer.write(
                f"{ORG}\tb{i}\tuser{i}@example.com\t+4520{i:06d}\tAnn{i}\tJensen\t\t"
                f'{{"ticket_type": "vip"}}\tt\tt\tf\tf\t{now}\t{now}\n'
            )
        buffer.seek(0)
        with database.atomic():
            database.cursor().copy_expert(f"COPY users ({_COPY_COLUMNS}) FROM STDIN", buffer)


def load_users(count: int, edition_id: int) -> None:
    """Bulk-load recipients straight into the table: set-up, not what is measured."""
    if is_postgres():
        _copy_users(count)
        database.close()
        return
    now = utcnow()
    for start in range(0, count, 10_000):
        rows = [
            {
                "organization_id": ORG,
                "external_id": f"b{i}",
                "email": f"user{i}@example.com",
                "phone": f"+4520{i:06d}",
                "first_name": f"Ann{i}",
                "last_name": "Jensen",
                "attributes": {"ticket_type": "vip"},
                "email_consent": True,
                "sms_consent": True,
                "created": now,
                "modified": now,
            }
            for i in range(start, min(count, start + 10_000))
        ]
        with database.atomic():
            User.insert_many(rows).execute()
    database.close()


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    """Children (RQ's forked job processes) via /proc, without spawning `ps`."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            kids += [int(k) for k in task.read_text().split()]
    return kids + [g for k in kids for g in _descendants(k)]


def _setup_campaign(channel: grpc.Channel, kind: str, users: int) -> int:
    audience = audience_service_pb2_grpc.AudienceServiceStub(channel)
    messages = email_message_service_pb2_grpc.EmailMessageServiceStub(channel)
    campaigns = campaign_service_pb2_grpc.CampaignServiceStub(channel)
    edition = audience.CreateEdition(
        apb.CreateEditionRequest(
            edition=edition_pb2.Edition(
                organization_id=ORG, name="Bench", timezone="Europe/Copenhagen"
            )
        )
    ).edition
    load_users(users, edition.id)
    segment = audience.CreateSegment(
        apb.CreateSegmentRequest(
            segment=segment_pb2.Segment(
                organization_id=ORG, name="vip", expression='user.attributes.ticket_type == "vip"'
            )
        )
    ).segment
    fields = {
        "organization_id": ORG,
        "edition_id": edition.id,
        "segment_id": segment.id,
        "name": "bench",
    }
    if kind == "email":
        message = messages.CreateEmailMessage(
            epb.CreateEmailMessageRequest(
                email_message=email_message_pb2.EmailMessage(
                    organization_id=ORG,
                    edition_id=edition.id,
                    type=email_message_pb2.EMAIL_MESSAGE_TYPE_CAMPAIGN,
                    subject="Hi {{ user.first_name }}, the line-up is out",
                    from_name="Festival",
                    from_email="news@festival.example",
                    html_body="<html><body><h1>Hello {{ user.first_name }}</h1><p>The line-up is "
                    "out. <a href='https://festival.example/lineup'>See it</a></p>"
                    "</body></html>",
                )
            )
        ).email_message
        fields |= {"channel": campaign_pb2.CHANNEL_EMAIL, "email_message_id": message.id}
    else:
        fields |= {
            "channel": campaign_pb2.CHANNEL_SMS,
            "sms_body": "Hi {{ user.first_name }}, the line-up is out!",
        }
    return int(campaigns.CreateCampaign(cpb.CreateCampaignRequest(**fields)).campaign.id)


def run_pipeline(
    args: argparse.Namespace, workers: int, sink_env: dict[str, str]
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, fresh_database(args.database, Path(tmp)) as url:
        redis_proc, redis_url = localredis.start(Path(tmp) / "redis")
        app = build(
            Settings(database_url=url, redis_url=redis_url, host="127.0.0.1", port=0, dev_mode=True)
        )
        env = {
            **os.environ,
            **sink_env,
            "DATABASE_URL": url,
            "REDIS_URL": redis_url,
            "CAMPAIGNS_QUEUE": "campaigns",
            "PARALLEL_SEND_JOBS": str(max(2, workers * 2)),
        }
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "jobs"],
                env=env,
                stderr=open(Path(tmp) / f"worker{n}.log", "w"),  # noqa: SIM115
            )
            for n in range(workers)
        ]
        try:
            with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
                campaign_id = _setup_campaign(channel, args.channel, args.recipients)
                return _measure(channel, campaign_id, procs)
        finally:
            for p in procs:
                p.terminate()
                p.wait(30)
            app.stop(1)
            localredis.stop(redis_proc)


def _measure(
    channel: grpc.Channel, campaign_id: int, procs: list[subprocess.Popen[str]]
) -> dict[str, float]:
    campaigns = campaign_service_pb2_grpc.CampaignServiceStub(channel)
    time.sleep(1.0)  # workers up
    peak = {p.pid: 0 for p in procs}
    t0 = time.time()
    campaigns.SendCampaignNow(cpb.SendCampaignNowRequest(id=campaign_id))
    while True:
        c = campaigns.GetCampaign(cpb.GetCampaignRequest(id=campaign_id)).campaign
        for p in procs:
            rss = _rss_kb(p.pid) + sum(_rss_kb(k) for k in _descendants(p.pid))
            peak[p.pid] = max(peak[p.pid], rss)
        if c.status in (campaign_pb2.CAMPAIGN_STATUS_SENT, campaign_pb2.CAMPAIGN_STATUS_FAILED):
            break
        time.sleep(0.5)
    started = c.started_at.ToDatetime().timestamp()
    completed = c.completed_at.ToDatetime().timestamp()
    return {
        "recipients": c.sent_count,
        "failed": c.failed_count,
        "calculating_s": started - t0,
        "sending_s": completed - started,
        "wall_s": completed - t0,
        "peak_mb": max(peak.values()) / 1024,
    }


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
        env = {"EMAIL_PROVIDER": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port)}
        raw_rate = raw_email_rate
    else:
        sink, port = start_twilio_sink()
        env = {
            "SMS_PROVIDER": "twilio",
            "TWILIO_BASE_URL": f"http://127.0.0.1:{port}",
            "TWILIO_ACCOUNT_SID": "AC1",
            "TWILIO_AUTH_TOKEN": "token",
            "TWILIO_FROM": "+4512345678",
        }
        raw_rate = raw_sms_rate
    try:
        for workers in args.workers:
            # Measured next to each run: on a shared machine the sink's speed drifts.
            raw = raw_rate(port)
            piped = raw_email_pipelined_rate(port) if args.channel == "email" else raw
            print(f"raw {args.channel} loop: {raw:,.0f} msg/s (pipelined {piped:,.0f})")
            r = run_pipeline(args, workers, env)
            rate = r["recipients"] / r["sending_s"]
            print(
                f"| {args.channel} | {args.database} | {workers} | {int(r['recipients']):,} | "
                f"{args.recipients / r['calculating_s']:,.0f} | {rate:,.0f} | "
                f"{r['wall_s']:.1f} | {r['peak_mb']:.0f} | {raw:,.0f} | {rate / raw:.2f} | "
                f"{piped:,.0f} | {rate / piped:.2f} |",
                flush=True,
            )
    finally:
        sink.terminate()


if __name__ == "__main__":
    main()
