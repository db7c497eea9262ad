"""A burst of campaigns due at the same second (issue 20): how soon the last one starts, and
how many RQ jobs each one costs.

    python -m bench.burst --campaigns 1000 --per-campaign 1 --orgs 50 --workers 2 \\
        [--lead 10] [--json out.json] [--keep-logs DIR]

Set-up (not measured): `--campaigns` campaigns of `--per-campaign` recipients each, spread over
`--orgs` organizations (`bench/tenants.py`), and `--workers` `python -m jobs` workers with the
default settings (`bench/fleet.py`) sending to the SMTP sink (`bench/latency_smtp.py
--record`, no delay) in its own process. Then every campaign is scheduled (ScheduleCampaign)
for one whole second `--lead` seconds ahead, and the benchmark waits until every campaign
has ended. Reported: for each campaign the time from that second to the sink's 250 for its
first message: the last one (what the issue asks), the first, the spread between them and
percentiles; and the RQ jobs completed (the workers' "Successfully completed <call> job"
log lines) per campaign, by function, with a histogram: once every campaign has ended (with
the jobs still queued then), and again once the queue has drained.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import observe
from bench.fleet import Fleet, running_fleet, wait_for
from bench.latency_sink import SinkProcess
from bench.stack import sink_env
from bench.tenants import Tenant, create_all, many, schedule


def schedule_all(fleet: Fleet, tenants: list[Tenant], lead: float) -> tuple[dt.datetime, float]:
    """Every campaign scheduled for the same whole second; (that second, seconds to spare
    when the last ScheduleCampaign returned)."""
    now = dt.datetime.now(dt.UTC)
    when = (now + dt.timedelta(seconds=lead)).replace(microsecond=0)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda t: schedule(fleet, t.campaign_id, when), tenants))
    return when, when.timestamp() - time.time()


def starts(messages: list[list[Any]], tenants: list[Tenant], when: float) -> dict[str, Any]:
    """Seconds from `when` to each campaign's first accepted message."""
    owner = {a: t.campaign_id for t in tenants for a in t.addresses}
    first = observe.first_accepted(messages, owner)
    delays = [first[t.campaign_id] - when for t in tenants if t.campaign_id in first]
    received = observe.per_address(messages, 2)
    return {
        "campaigns_with_a_message": len(delays),
        "first_start_s": round(min(delays, default=0.0), 2),
        "last_start_s": round(max(delays, default=0.0), 2),
        "spread_s": round(max(delays, default=0.0) - min(delays, default=0.0), 2),
        "p50_s": round(observe.percentile(delays, 0.5), 2),
        "p90_s": round(observe.percentile(delays, 0.9), 2),
        "messages_accepted": sum(received.values()),
        "addresses_received_twice": sum(1 for n in received.values() if n > 1),
        "last_message_s": round(max((m[2] for m in messages), default=when) - when, 2),
    }


def jobs(fleet: Fleet, tenants: list[Tenant]) -> dict[str, Any]:
    summary = observe.log_summary(fleet.log_records())
    ids = [t.campaign_id for t in tenants]
    histogram = observe.jobs_per_campaign(summary.pop("per_campaign"), ids)
    return summary | {
        "jobs_per_campaign": round(summary["jobs"] / len(ids), 2),
        "campaigns_by_job_count": dict(sorted(histogram.items())),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    with (
        SinkProcess("bench.latency_smtp", ["--record"]) as sink,
        running_fleet(sink_env("email", sink.port), args.workers) as fleet,
    ):
        tenants = many(args.orgs, args.campaigns, args.per_campaign)
        started = time.monotonic()
        create_all(fleet, tenants)
        setup_s = time.monotonic() - started
        sink.reset()
        when, spare = schedule_all(fleet, tenants, args.lead)
        ids = [t.campaign_id for t in tenants]
        ended = wait_for(
            lambda: sum(observe.campaign_counts(ids)[s] for s in ("sent", "failed")) == len(ids),
            args.timeout,
            0.5,
        )
        time.sleep(1.0)  # let the sink answer the last message
        result = {"set_up_s": round(setup_s, 1), "scheduling_spare_s": round(spare, 2)}
        result |= starts(sink.messages(), tenants, when.timestamp())
        result["all_ended"] = ended
        first, last = observe.started_range(ids)
        result["calculated_s_first_last"] = [round(t - when.timestamp(), 2) for t in (first, last)]
        result["campaigns"] = dict(observe.campaign_counts(ids))
        result["ledger"] = dict(observe.ledger_counts(ids))
        result["at_the_end"] = jobs(fleet, tenants) | {"still_queued": fleet.queued()}
        # Jobs left in the queue once every campaign has ended still run: count them too.
        result["queue_drained"] = wait_for(lambda: fleet.queued() == 0, args.drain_timeout, 1.0)
        result["drained_s"] = round(time.time() - when.timestamp(), 1)
        result["workers_killed_on_stop"] = fleet.stop()
        result |= jobs(fleet, tenants)
        if args.keep_logs:
            fleet.save_logs(args.keep_logs)
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaigns", type=int, default=1000)
    parser.add_argument("--per-campaign", type=int, default=1, help="recipients per campaign")
    parser.add_argument("--orgs", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lead", type=float, default=10.0, help="seconds ahead to schedule")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--drain-timeout", type=float, default=600.0, help="for leftover jobs")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep-logs", type=Path, help="copy the workers' logs here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    observe.emit({"args": vars(args)} | run(args), args.json)


if __name__ == "__main__":
    main()
