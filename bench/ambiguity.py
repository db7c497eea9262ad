"""Ambiguous rows after faults (issue 20): rows a fault leaves `ambiguous` ("may have been
delivered", never sent again), and how many of them the relay really received.

    python -m bench.ambiguity --fault kill --recipients 20000 --kills 4 [--delay-ms 100]
    python -m bench.ambiguity --fault cut --recipients 20000 --outage 10 [--delay-ms 100]

Set-up: one email campaign of `--recipients` (`bench/seeding.py`, PostgreSQL), `--workers`
`python -m jobs` workers with the default settings (`bench/fleet.py`), the SMTP sink in its
own process answering the end of DATA after `--delay-ms` and recording every message: MAIL
FROM, data complete, answered 250 (`bench/latency_smtp.py --record`).

- `kill`: at 1/(k+1), 2/(k+1)... of the recipients accepted, a worker that has a job process
  is killed with SIGKILL together with everything below it (job, scheduler and sweep
  processes: `Fleet.kill_hard`, as tests/faults/test_faults_worker.py does), and a fresh
  worker started; `--kills` times.
- `cut`: the workers reach PostgreSQL through a TCP proxy (tests/support/tcpproxy.py; the
  server in this process does not); at `--at` of the recipients accepted every connection is
  reset and new ones are refused for `--outage` seconds, then let through again.

Then the benchmark waits for the campaign to end with every row settled. Reported: the ledger
by status, and for the ambiguous rows how many of their messages the sink had received
whole (data complete: a relay has the message; whether it also answered 250 before the
connection died is shown apart), only begun (MAIL FROM, no complete data) or never seen;
rows `sent` that the sink never accepted, and recipients who received a message twice.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bench import observe
from bench.fleet import Fleet, running_fleet, wait_for
from bench.latency_sink import SinkProcess
from bench.seeding import setup_campaign
from bench.segment_eval import ADMIN_URL
from bench.stack import sink_env
from campaigns.v1 import campaign_service_pb2 as cpb
from tests.support.tcpproxy import TcpProxy

FINAL = ("sent", "failed", "cancelled")


def via(proxy: TcpProxy, url: str) -> str:
    """`url` with its host and port replaced by the proxy's."""
    parsed = urlparse(url)
    user, _, _ = parsed.netloc.rpartition("@")
    host = f"127.0.0.1:{proxy.port}"
    return parsed._replace(netloc=f"{user}@{host}" if user else host).geturl()


def wait_accepted(sink: SinkProcess, target: int, fleet: Fleet | None = None) -> int:
    """Until the sink has accepted `target` messages (and, given a fleet, some worker has a
    job process at work); what it had accepted then."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        accepted = int(sink.stats()["accepted"])
        if accepted >= target and (fleet is None or _busy_worker(fleet)):
            return accepted
        time.sleep(0.01)
    raise TimeoutError(f"the sink never reached {target} messages")


def _busy_worker(fleet: Fleet) -> Any:
    return next((p for p in fleet.workers if observe.job_processes(p.pid)), None)


def kill_faults(args: argparse.Namespace, fleet: Fleet, sink: SinkProcess) -> dict[str, Any]:
    kills = []
    for n in range(1, args.kills + 1):
        accepted = wait_accepted(sink, args.recipients * n // (args.kills + 1), fleet)
        victim = _busy_worker(fleet)
        horses = observe.job_processes(victim.pid)
        pids = fleet.kill_hard(victim)
        kills.append({"at": time.time(), "accepted": accepted, "pids": pids, "horses": horses})
        fleet.start_worker()
    return {"kills": kills}


def cut_fault(args: argparse.Namespace, proxy: TcpProxy, sink: SinkProcess) -> dict[str, Any]:
    accepted = wait_accepted(sink, int(args.recipients * args.at))
    down = time.time()
    proxy.cut()
    proxy.refuse(True)
    time.sleep(args.outage)
    during = int(sink.stats()["accepted"]) - accepted
    proxy.refuse(False)
    return {"cut_at_accepted": accepted, "accepted_while_down": during, "down_at": down}


def ended(campaign_id: int) -> bool:
    status = observe.campaign(campaign_id)["status"]
    return status in FINAL and observe.settled([campaign_id])


def reached(messages: list[list[Any]], campaign_id: int) -> dict[str, Any]:
    """The ambiguous rows against what the sink saw of their messages."""
    rows = observe.rows_with_status(campaign_id, "ambiguous")
    ambiguous = set(rows.values())
    begun, whole, answered = (observe.per_address(messages, step) for step in (0, 1, 2))
    sent = observe.addresses_with_status(campaign_id, "sent")
    unseen = [i for i, a in rows.items() if not begun[a]]
    return {
        "ambiguous": len(ambiguous),
        "ambiguous_received_whole": sum(1 for a in ambiguous if whole[a]),
        "ambiguous_received_and_answered_250": sum(1 for a in ambiguous if answered[a]),
        "ambiguous_only_begun": sum(1 for a in ambiguous if begun[a] and not whole[a]),
        "ambiguous_never_seen": len(unseen),
        "sent_not_accepted_by_sink": sum(1 for a in sent if not answered[a]),
        "received_twice": sum(1 for n in whole.values() if n > 1),
        "messages_at_sink": {"begun": len(messages), "whole": sum(whole.values())},
        "ambiguous_id_runs": [list(r) for r in observe.id_runs(rows)],
        "never_seen_id_runs": [list(r) for r in observe.id_runs(unseen)],
    }


def outage_lines(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The workers' log lines about the database being unreachable, with their extras."""
    keep = ("ts", "msg", "in_flight", "unrecorded", "error")
    return [
        {k: r[k] for k in keep if k in r}
        for r in records
        if "database" in str(r.get("msg", "")) and r.get("level") in ("warning", "error")
    ]


def campaign_run(
    args: argparse.Namespace, fleet: Fleet, sink: SinkProcess, proxy: TcpProxy | None
) -> dict[str, Any]:
    campaign_id = setup_campaign(fleet.channel, "email", args.recipients)
    time.sleep(1.0)  # workers up
    sink.reset()
    started = time.time()
    fleet.campaigns.SendCampaignNow(cpb.SendCampaignNowRequest(id=campaign_id))
    result = kill_faults(args, fleet, sink) if proxy is None else cut_fault(args, proxy, sink)
    fault_end = time.time()
    result["ended"] = wait_for(lambda: ended(campaign_id), args.timeout, 0.5)
    result["end_s_after_fault"] = round(time.time() - fault_end, 1)
    result["wall_s"] = round(time.time() - started, 1)
    time.sleep(2 * args.delay_ms / 1000 + 0.5)
    result["status"] = observe.campaign(campaign_id)["status"]
    result["ledger"] = dict(observe.ledger_counts([campaign_id]))
    return result | reached(sink.messages(), campaign_id)


def run(args: argparse.Namespace) -> dict[str, Any]:
    sink_args = ["--delay-ms", str(args.delay_ms), "--record"]
    target = urlparse(ADMIN_URL)
    with (
        TcpProxy((target.hostname or "127.0.0.1", target.port or 5432)) as proxy,
        SinkProcess("bench.latency_smtp", sink_args) as sink,
        running_fleet(
            sink_env("email", sink.port),
            args.workers,
            worker_url=(lambda url: via(proxy, url)) if args.fault == "cut" else lambda url: url,
        ) as fleet,
    ):
        result = campaign_run(args, fleet, sink, proxy if args.fault == "cut" else None)
        result["workers_killed_on_stop"] = fleet.stop()
        records = list(fleet.log_records())
        summary = observe.log_summary(records)
        summary.pop("per_campaign")
        summary["database_lines"] = outage_lines(records)
        if args.keep_logs:
            fleet.save_logs(args.keep_logs)
    return result | {"logs": summary}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fault", choices=("kill", "cut"), required=True)
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--delay-ms", type=float, default=100.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--at", type=float, default=0.4, help="cut: share accepted before it")
    parser.add_argument("--outage", type=float, default=10.0, help="cut: seconds refused")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep-logs", type=Path, help="copy the workers' logs here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    observe.emit({"args": vars(args)} | run(args), args.json)


if __name__ == "__main__":
    main()
