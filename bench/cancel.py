"""Cancel against a slow relay (issue 20): how many messages start after CancelCampaign has
returned, how late the last one starts, and whether every row of the campaign reaches a
final state.

    python -m bench.cancel --recipients 20000 --delay-ms 100 --at 0.4 --workers 2 \\
        [--json out.json] [--keep-logs DIR]

Set-up: one email campaign of `--recipients` (`bench/seeding.py`), `--workers` `python -m
jobs` workers with the default settings (`bench/fleet.py`), and the SMTP sink in its own
process, answering the end of DATA after `--delay-ms` and recording each message: when its
MAIL FROM arrived, when its data was complete, when it was answered
(`bench/latency_smtp.py --record`). SendCampaignNow, then CancelCampaign once the sink has
accepted `--at` of the recipients. Reported: messages whose MAIL FROM arrived after
CancelCampaign returned (the issue's "messages that started after the cancel"), the latest
of them in seconds after it, the same for messages answered after it; then, once no row is
pending, claimed or sending (or `--settle-timeout` passes), the ledger by status, the
campaign's stats and how long the rows took to settle.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench import observe
from bench.fleet import Fleet, running_fleet, wait_for
from bench.latency_sink import SinkProcess
from bench.seeding import setup_campaign
from bench.stack import sink_env
from campaigns.v1 import campaign_pb2
from campaigns.v1 import campaign_service_pb2 as cpb


def after(times: list[float], moment: float) -> dict[str, Any]:
    """How many of `times` came after `moment`, the latest, and how many more than 1 s."""
    late = [t - moment for t in times if t > moment]
    return {
        "count": len(late),
        "latest_s": round(max(late, default=0.0), 3),
        "over_1s": sum(1 for d in late if d > 1.0),
    }


def cancel_when(sink: SinkProcess, fleet: Fleet, campaign_id: int, target: int) -> dict[str, Any]:
    """Wait until the sink has accepted `target` messages, then cancel; the moments."""
    deadline = time.monotonic() + 600
    while sink.stats()["accepted"] < target and time.monotonic() < deadline:
        time.sleep(0.02)
    asked = time.time()
    fleet.campaigns.CancelCampaign(cpb.CancelCampaignRequest(id=campaign_id))
    returned = time.time()
    return {"asked": asked, "returned": returned, "accepted_at_cancel": sink.stats()["accepted"]}


def stats(fleet: Fleet, campaign_id: int) -> dict[str, Any]:
    got = fleet.campaigns.GetCampaignStats(cpb.GetCampaignStatsRequest(id=campaign_id)).stats
    fields = ("total_recipients", "sent", "failed", "pending", "skipped", "ambiguous")
    return {"status": campaign_pb2.CampaignStatus.Name(got.status)} | {
        name: getattr(got, name) for name in fields
    }


def figures(messages: list[list[Any]], moments: dict[str, Any]) -> dict[str, Any]:
    returned = moments["returned"]
    received = observe.per_address(messages, 1)
    return {
        "cancel_rpc_s": round(returned - moments["asked"], 3),
        "accepted_at_cancel": moments["accepted_at_cancel"],
        "started_after_cancel": after([m[0] for m in messages], returned),
        # Negative: the last message began that long before CancelCampaign returned.
        "last_start_vs_return_s": round(max((m[0] for m in messages), default=0) - returned, 3),
        "answered_after_cancel": after([m[2] for m in messages], returned),
        "messages_started": len(messages),
        "messages_answered": sum(1 for m in messages if m[2]),
        "addresses_received_twice": sum(1 for n in received.values() if n > 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    sink_args = ["--delay-ms", str(args.delay_ms), "--record"]
    with (
        SinkProcess("bench.latency_smtp", sink_args) as sink,
        running_fleet(sink_env("email", sink.port), args.workers) as fleet,
    ):
        campaign_id = setup_campaign(fleet.channel, "email", args.recipients)
        time.sleep(1.0)  # workers up
        sink.reset()
        sent_at = time.time()
        fleet.campaigns.SendCampaignNow(cpb.SendCampaignNowRequest(id=campaign_id))
        moments = cancel_when(sink, fleet, campaign_id, int(args.at * args.recipients))
        settled = wait_for(lambda: observe.settled([campaign_id]), args.settle_timeout, 0.25)
        settle_s = time.time() - moments["returned"]
        time.sleep(2 * args.delay_ms / 1000 + 1.0)  # the last answers
        result = figures(sink.messages(), moments)
        result["send_now_to_cancel_s"] = round(moments["asked"] - sent_at, 2)
        result |= {"rows_settled": settled, "settle_s": round(settle_s, 2)}
        result["ledger"] = dict(observe.ledger_counts([campaign_id]))
        result["stats"] = stats(fleet, campaign_id)
        result["workers_killed_on_stop"] = fleet.stop()
        summary = observe.log_summary(fleet.log_records())
        summary.pop("per_campaign")
        if args.keep_logs:
            fleet.save_logs(args.keep_logs)
    return result | {"logs": summary}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--delay-ms", type=float, default=100.0)
    parser.add_argument("--at", type=float, default=0.4, help="share accepted before cancel")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--settle-timeout", type=float, default=180.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep-logs", type=Path, help="copy the workers' logs here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    observe.emit({"args": vars(args)} | run(args), args.json)


if __name__ == "__main__":
    main()
