"""Real parts for the delivery-events tests: the tracking app as a `python -m server.http.tracking`
gunicorn subprocess on a free port, the worker environment that makes emails link to it, an
HTML parser for the links of a received email, Twilio request signing, and ledger readers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx

from campaigns.v1 import audience_service_pb2 as apb
from campaigns.v1 import campaign_pb2
from campaigns.v1 import campaign_service_pb2 as cpb
from campaigns.v1 import delivery_service_pb2 as dpb
from server.delivery import webhooks
from server.store.db import release_connection
from server.store.models import DeliveryEvent, Suppression
from tests.delivery_fixtures import Received, free_port, stop_process, wait_until

TRACKING_SECRET = "tracking-tests-secret-0b7c"
TWILIO_TOKEN = "twilio-tests-token-9f21"  # the account's auth token: API and webhooks alike


@dataclass
class TrackingServer:
    base_url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return "tracking log (tail):\n" + self.log.read_text(errors="replace")[-6000:]

    def env(self) -> dict[str, str]:
        """What the worker must share with this app so its links and signatures match."""
        return {
            "PUBLIC_BASE_URL": self.base_url,
            "TRACKING_SECRET": TRACKING_SECRET,
            "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        }

    def url(self, path: str) -> str:
        return self.base_url + path


@contextmanager
def start_tracking(
    *, database_url: str, repo_root: Path, log_dir: Path, workers: int = 2
) -> Iterator[TrackingServer]:
    """gunicorn serving the tracking app; ready once /healthz answers. The database must be
    migrated already (the `app` fixture does it)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = log_dir / "tracking.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "TRACKING_HOST": "127.0.0.1",
        "TRACKING_PORT": str(port),
        "TRACKING_WORKERS": str(workers),
        "PUBLIC_BASE_URL": base,
        "TRACKING_SECRET": TRACKING_SECRET,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
    }
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server.http.tracking"],
            cwd=repo_root,
            env=env,
            stdout=sink,
            stderr=sink,
        )
    server = TrackingServer(base, proc, log)

    def healthy() -> bool:
        try:
            return httpx.get(server.url("/healthz"), timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        assert wait_until(lambda: proc.poll() is not None or healthy(), 20, 0.1), server.output()
        assert proc.poll() is None, server.output()
        yield server
    finally:
        stop_process(proc)


# --- reading what was received ---------------------------------------------------------------


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and values.get("href"):
            self.hrefs.append(values["href"] or "")
        if tag == "img" and values.get("src"):
            self.images.append(values["src"] or "")


@dataclass
class EmailLinks:
    hrefs: list[str]  # every <a href>, in order, HTML entities decoded
    pixel: str
    unsubscribe: str  # the List-Unsubscribe header's URL


def email_links(received: Received) -> EmailLinks:
    html_part = received.message.get_body(("html",))
    assert html_part is not None
    parser = _Links()
    parser.feed(html_part.get_content())
    (pixel,) = [src for src in parser.images if "/o/" in src]
    header = str(received.message["List-Unsubscribe"])
    assert header.startswith("<") and header.endswith(">"), header
    return EmailLinks(parser.hrefs, pixel, header[1:-1])


def by_recipient(received: list[Received]) -> dict[str, Received]:
    return {r.rcpt_tos[0].lower(): r for r in received}


# --- Twilio ----------------------------------------------------------------------------------


def twilio_post(
    client: httpx.Client,
    server: TrackingServer,
    path: str,
    params: dict[str, str],
    token: str | None = TWILIO_TOKEN,
) -> httpx.Response:
    """POST a webhook as Twilio does; `token=None` sends no signature at all."""
    headers = {}
    if token is not None:
        headers["X-Twilio-Signature"] = webhooks.signature(token, server.url(path), params)
    return client.post(server.url(path), data=params, headers=headers)


# --- database and RPC readers ----------------------------------------------------------------


def event_count(**where: Any) -> int:
    """DeliveryEvent rows, all or those matching `where` (field=value)."""
    try:
        query = DeliveryEvent.select()
        for name, value in where.items():
            query = query.where(getattr(DeliveryEvent, name) == value)
        return int(query.count())
    finally:
        release_connection()


def suppressions(organization_id: int) -> dict[tuple[str, str], str]:
    """(channel, address) -> reason for an organization."""
    try:
        rows = Suppression.select().where(Suppression.organization_id == organization_id)
        return {(r.channel, r.address): r.reason for r in rows}
    finally:
        release_connection()


def stats(campaigns: Any, campaign_id: int) -> campaign_pb2.CampaignStats:
    return campaigns.GetCampaignStats(cpb.GetCampaignStatsRequest(id=campaign_id)).stats


def get_user(audience: Any, user_id: int) -> Any:
    return audience.GetUser(apb.GetUserRequest(id=user_id)).user


def record(delivery: Any, *events: dpb.DeliveryEvent) -> dpb.RecordDeliveryEventsResponse:
    return delivery.RecordDeliveryEvents(dpb.RecordDeliveryEventsRequest(events=list(events)))


def event(kind: str, **fields: Any) -> dpb.DeliveryEvent:
    """A DeliveryEvent of type `kind` ("delivered", "bounced_hard"...)."""
    return dpb.DeliveryEvent(
        type=dpb.DeliveryEventType.Value(f"DELIVERY_EVENT_TYPE_{kind.upper()}"), **fields
    )
