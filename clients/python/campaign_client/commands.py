"""What each campaignctl command does, given a connected client and the parsed arguments.

Each returns the exit code; failures of the call itself are raised (CampaignClientError) and
turned into exit codes by campaign_client.cli. UsageError is a mistake on the command line
that only shows once the command runs (a time that cannot be read, nothing to update...).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from rich.console import Console

from campaign_client import importer, render, watch
from campaign_client.client import CampaignClient
from campaign_client.when import TimeError, parse_when
from campaigns.v1 import campaign_pb2

FAILED = campaign_pb2.CAMPAIGN_STATUS_FAILED
EXIT_OK, EXIT_ERROR, EXIT_INVALID = 0, 1, 4


class UsageError(Exception):
    """A command-line mistake found while running the command (exit code 2)."""


def channel_value(text: str) -> int:
    name = text.strip().upper().removeprefix("CHANNEL_")
    try:
        return campaign_pb2.Channel.Value(f"CHANNEL_{name}")
    except ValueError:
        raise argparse.ArgumentTypeError(f"unknown channel {text!r}: use sms or email") from None


def status_value(text: str) -> int:
    name = text.strip().upper().removeprefix("CAMPAIGN_STATUS_")
    try:
        return campaign_pb2.CampaignStatus.Value(f"CAMPAIGN_STATUS_{name}")
    except ValueError:
        names = ", ".join(render.status_name(v) for v in range(1, 8))
        raise argparse.ArgumentTypeError(f"unknown status {text!r}: use one of {names}") from None


def when(text: str, timezone: str) -> dt.datetime:
    try:
        return parse_when(text, timezone)
    except TimeError as error:
        raise UsageError(str(error)) from None


def _show(
    out: Console, args: argparse.Namespace, campaign: campaign_pb2.Campaign, line: bool = False
) -> int:
    if args.json:
        render.print_json(out, campaign)
    elif line:
        out.print(render.one_line(campaign), markup=False)
    else:
        out.print(render.campaign_detail(campaign))
    return EXIT_OK


def create(client: CampaignClient, args: argparse.Namespace, out: Console) -> int:
    scheduled = None
    if args.scheduled_at:
        scheduled = when(args.scheduled_at, client.get_edition(args.edition).timezone)
    campaign = client.create_campaign(
        organization_id=args.org,
        edition_id=args.edition,
        segment_id=args.segment,
        name=args.name,
        channel=args.channel or 0,
        email_message_id=args.email_message or 0,
        sms_body=args.sms_body or "",
        scheduled_at=scheduled,
        request_id=args.request_id,
    )
    if args.quiet:
        out.print(str(campaign.id))
        return EXIT_OK
    return _show(out, args, campaign)


def list_(client: CampaignClient, args: argparse.Namespace, out: Console) -> int:
    response = client.list_campaigns(
        organization_id=args.org or 0,
        edition_id=args.edition or 0,
        channel=args.channel or 0,
        status=args.status or 0,
        search=args.search or "",
        ordering=args.ordering or "",
        page=args.page or 0,
        page_size=args.page_size or 0,
    )
    if args.json:
        render.print_json(out, response)
        return EXIT_OK
    if response.results:
        out.print(render.campaign_table(response))
    out.print(render.page_footer(response, args.page or 1), markup=False)
    return EXIT_OK


def get(client: CampaignClient, args: argparse.Namespace, out: Console) -> int:
    return _show(out, args, client.get_campaign(args.id))


def update(client: CampaignClient, args: argparse.Namespace, out: Console) -> int:
    fields = {
        "name": args.name,
        "segment_id": args.segment,
        "channel": args.channel,
        "email_message_id": args.email_message,
        "sms_body": args.sms_body,
    }
    scheduled = None
    if args.scheduled_at:
        scheduled = when(args.scheduled_at, client.get_campaign(args.id).timezone)
    if scheduled is None and all(value is None for value in fields.values()):
        raise UsageError(
            "nothing to update: give at least one of --name, --segment, "
            "--channel, --email-message, --sms-body, --scheduled-at"
        )
    campaign = client.update_campaign(
        args.id, etag=args.etag or "", scheduled_at=scheduled, **fields
    )
    return _show(out, args, campaign)


def delete(client: CampaignClient, args: argparse.Namespace, out: Console) -> int:
    client.delete_campaign(args.id)
    if not args.json:
        out.print(f"campaign {args.id} deleted")
    return EXIT_OK


def schedule(client: CampaignClient, args: argparse.Namespace, out: Console) -> int:
    scheduled = None
    if args.when:
        scheduled = when(" ".join(args.when), client.get_campaign(args.id).timezone)
    campaign = client.schedule_campaign(args.id, scheduled, request_id=args.request_id)
    return _show(out, args, campaign, line=True)


def send_now(client: CampaignClient, args: argparse.Namespace, out: Console) -> int:
    return _show(
        out, args, client.send_campaign_now(args.id, request_id=args.request_id), line=True
    )


def cancel(client: CampaignClient, args: argparse.Namespace, out: Console) -> int:
    return _show(out, args, client.cancel_campaign(args.id, request_id=args.request_id), line=True)


def stats(client: CampaignClient, args: argparse.Namespace, out: Console) -> int:
    figures = client.get_campaign_stats(args.id)
    if args.json:
        render.print_json(out, figures)
    else:
        out.print(render.stats_detail(figures))
    return EXIT_OK


def watch_(client: CampaignClient, args: argparse.Namespace, out: Console) -> int:
    campaign = client.get_campaign(args.id)
    updates = client.watch_campaign_stats(args.id)
    meter = watch.Meter()
    if args.json:  # one JSON line per update on stdout, for scripts
        final = watch.follow_json(updates, out)
    else:
        err = render.console(stderr=True)
        live = err.is_terminal and not args.plain
        final = watch.follow(updates, f"campaign {campaign.id}", err, live, meter)
    if final is None:
        print(f"campaignctl: the watch of campaign {args.id} ended early", file=sys.stderr)
        return EXIT_ERROR
    if not args.json:
        out.print(watch.summary(args.id, final, meter), markup=False)
    if final.status == FAILED:
        reason = client.get_campaign(args.id).error_message or "no reason given"
        print(f"campaignctl: campaign {args.id} failed: {reason}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def import_users(client: CampaignClient, args: argparse.Namespace, out: Console) -> int:
    path = Path(args.file)
    err = render.console(stderr=True)
    live = err.is_terminal and not args.plain
    result = importer.import_file(
        client, path, args.org, args.edition or 0, args.batch_size, err, live
    )
    if args.json:
        render.print_json(out, result.response)
    else:
        out.print(importer.summary(path, result), markup=False)
        table = importer.rejection_table(result, args.show_rejections)
        if table is not None:
            out.print(table)
    if result.rejected:
        print(f"campaignctl: {result.rejected} row(s) of {path} rejected", file=sys.stderr)
        return EXIT_INVALID if args.strict else EXIT_OK
    return EXIT_OK
