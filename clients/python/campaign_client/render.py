"""How campaignctl shows things: readable tables on a terminal, JSON with --json."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from campaign_client.when import show
from campaigns.v1 import campaign_pb2
from campaigns.v1 import campaign_service_pb2 as cpb

WIDE = 160  # columns for tables when stdout is not a terminal (pipes, files)


def console(stderr: bool = False) -> Console:
    out = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not out.is_terminal:
        out = Console(stderr=stderr, highlight=False, width=WIDE, no_color=True)
    return out


def plain(*values: Any) -> list[Text]:
    """Cells shown as they are: a name like "[red]" is text, not rich markup."""
    return [Text(str(value)) for value in values]


def as_json(message: Message) -> str:
    return json_format.MessageToJson(message, preserving_proto_field_name=True, indent=2)


def print_json(out: Console, message: Message) -> None:
    """JSON as is: no markup, no highlighting, never wrapped."""
    out.print(as_json(message), markup=False, highlight=False, soft_wrap=True)


def as_json_line(message: Message) -> str:
    """One message as compact JSON on one line (for streams: one line per message)."""
    return json.dumps(
        json_format.MessageToDict(message, preserving_proto_field_name=True), separators=(",", ":")
    )


def channel_name(value: int) -> str:
    name = campaign_pb2.Channel.Name(campaign_pb2.Channel.ValueType(value))
    return name.removeprefix("CHANNEL_").lower()


def status_name(value: int) -> str:
    name = campaign_pb2.CampaignStatus.Name(campaign_pb2.CampaignStatus.ValueType(value))
    return name.removeprefix("CAMPAIGN_STATUS_").lower()


def when(stamp: Timestamp, timezone: str, present: bool) -> str:
    """A timestamp in the edition's timezone; "-" when unset."""
    if not present:
        return "-"
    return show(stamp.ToDatetime(dt.UTC), timezone)


def campaign_table(response: cpb.ListCampaignsResponse) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for name in ("ID", "NAME", "CHANNEL", "STATUS", "SCHEDULED", "RECIPIENTS", "SENT", "FAILED"):
        numeric = name in ("ID", "RECIPIENTS", "SENT", "FAILED")
        table.add_column(name, justify="right" if numeric else "left", no_wrap=name != "NAME")
    for c in response.results:
        table.add_row(
            *plain(
                c.id,
                c.name,
                channel_name(c.channel),
                status_name(c.status),
                when(c.scheduled_at, c.timezone, c.HasField("scheduled_at")),
                c.total_recipients,
                c.sent_count,
                c.failed_count,
            )
        )
    return table


def page_footer(response: cpb.ListCampaignsResponse, page: int) -> str:
    shown = len(response.results)
    text = f"{shown} of {response.count} campaign{'s' if response.count != 1 else ''}"
    if response.next_page or response.previous_page:
        text += f" (page {page or 1}" + (
            f"; next: --page {response.next_page})" if response.next_page else ")"
        )
    return text


def _pairs(rows: list[tuple[str, Any]]) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(*plain(key, value))
    return table


def campaign_detail(c: campaign_pb2.Campaign) -> Table:
    tz = c.timezone
    content = (
        f"email message {c.email_message_id}"
        if c.channel == campaign_pb2.CHANNEL_EMAIL
        else c.sms_body or "-"
    )
    return _pairs(
        [
            ("id", c.id),
            ("name", c.name),
            ("status", status_name(c.status)),
            ("channel", channel_name(c.channel)),
            ("content", content),
            ("organization", c.organization_id),
            ("edition", c.edition_id),
            ("segment", c.segment_id),
            ("timezone", tz or "-"),
            ("scheduled", when(c.scheduled_at, tz, c.HasField("scheduled_at"))),
            ("recipients", c.total_recipients),
            ("sent", c.sent_count),
            ("failed", c.failed_count),
            ("started", when(c.started_at, tz, c.HasField("started_at"))),
            ("completed", when(c.completed_at, tz, c.HasField("completed_at"))),
            ("created", when(c.created, tz, c.HasField("created"))),
            ("modified", when(c.modified, tz, c.HasField("modified"))),
            ("error", c.error_message or "-"),
            ("etag", c.etag),
        ]
    )


def stats_detail(s: campaign_pb2.CampaignStats) -> Table:
    def pct(value: float) -> str:
        return f"{value * 100:.1f}%"

    return _pairs(
        [
            ("campaign", s.campaign_id),
            ("status", status_name(s.status)),
            ("recipients", s.total_recipients),
            ("pending", s.pending),
            ("sent", s.sent),
            ("failed", s.failed),
            ("skipped", s.skipped),
            ("ambiguous", s.ambiguous),
            ("delivered", f"{s.delivered} ({pct(s.delivery_rate)})"),
            ("opened", f"{s.opened} ({pct(s.open_rate)}, {s.opens_total} opens)"),
            ("clicked", f"{s.clicked} ({pct(s.click_rate)}, {s.clicks_total} clicks)"),
            ("bounced", s.bounced),
            ("unsubscribed", f"{s.unsubscribed} ({pct(s.unsubscribe_rate)})"),
        ]
    )


def one_line(c: campaign_pb2.Campaign) -> str:
    """ "campaign 42 (Early birds): scheduled for 2027-06-01 10:00 CEST"."""
    text = f"campaign {c.id} ({c.name}): {status_name(c.status)}"
    if c.status == campaign_pb2.CAMPAIGN_STATUS_SCHEDULED and c.HasField("scheduled_at"):
        text += f" for {when(c.scheduled_at, c.timezone, True)}"
    return text
