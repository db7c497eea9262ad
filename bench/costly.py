"""A costly segment next to another organization's small campaign (issue 20): how long the
small one waits, and what becomes of the costly one.

    python -m bench.costly --users 2000 --terms 12 --workers 1 [--json out.json]

Set-up: organization A with `--users` users and a segment that passes validation but costs
about 0.1 s per user in CEL: `user.email_consent && (` then `--terms` clauses
`'aaa...'.matches('\\\\w{1,N}x')` (a 60-character string, N from 32 down) joined by `||`,
then `)`; each `matches()` compiles its pattern again on every call. Organization B: 3 users
and a plain segment. One `python -m jobs` worker with the default settings (each batch of a
calculation evaluated in a forked child under CALCULATE_EVAL_SECONDS, 5 s), the SMTP sink
(`bench/latency_smtp.py --record`, no delay) in its own process. SendCampaignNow for A, then
at once for B. Reported: one evaluation's cost measured in this process, whether validation
let the expression through, how long B waited (its SendCampaignNow to the sink's 250 for its
first message) and took to `sent`, A's final status, `error_message` and time to it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench import observe
from bench.fleet import Fleet, running_fleet, wait_for
from bench.latency_sink import SinkProcess
from bench.stack import sink_env
from bench.tenants import Tenant, address, copy_users, create_campaign, edition_and_message
from bench.tenants import send_now as send
from campaigns.v1 import audience_service_pb2 as apb
from server.audience.segments import engine

ORG_A, ORG_B = 8101, 8102


def costly_expression(terms: int) -> str:
    clauses = " || ".join(
        f"'{'a' * 60}'.matches('\\\\w{{1,{n}}}x')" for n in range(32, 32 - terms, -1)
    )
    return f"user.email_consent && ({clauses})"


def evaluation_s(expression: str, runs: int = 5) -> float:
    """One user's evaluation of `expression`, here (CEL in this process)."""
    program = engine.compile_segment(expression).program
    started = time.perf_counter()
    for _ in range(runs):
        program.execute({"user": {"email_consent": True}})
    return (time.perf_counter() - started) / runs


def tenants(users: int) -> tuple[Tenant, Tenant]:
    a = Tenant(ORG_A, "costly", [address(ORG_A, "costly", n) for n in range(users)])
    b = Tenant(ORG_B, "small", [address(ORG_B, "small", n) for n in range(3)])
    copy_users([a, b])
    return a, b


def create(fleet: Fleet, a: Tenant, b: Tenant, expression: str) -> dict[str, Any]:
    """Both campaigns; what validation said of A's expression."""
    check = fleet.audience.ValidateSegmentExpression(
        apb.ValidateSegmentExpressionRequest(expression=expression)
    )
    create_campaign(fleet, a, *edition_and_message(fleet, ORG_A), expression)
    create_campaign(fleet, b, *edition_and_message(fleet, ORG_B), "user.email_consent")
    return {"validation": {"valid": check.valid, "pushed_down": list(check.pushed_down)}}


def ended(a: Tenant, b: Tenant) -> bool:
    counts = observe.campaign_counts([a.campaign_id, b.campaign_id])
    return counts["sent"] + counts["failed"] + counts["cancelled"] == 2


def outcome(
    messages: list[list[Any]], a: Tenant, b: Tenant, moments: dict[str, float]
) -> dict[str, Any]:
    owner = {x: t.campaign_id for t in (a, b) for x in t.addresses}
    first = observe.first_accepted(messages, owner)
    row_a, row_b = observe.campaign(a.campaign_id), observe.campaign(b.campaign_id)
    done_a, done_b = (r["completed_at"] for r in (row_a, row_b))
    return {
        "b_wait_s": round(first.get(b.campaign_id, 0.0) - moments["b"], 2),
        "b_status": row_b["status"],
        "b_sent_s": round(observe.epoch(done_b) - moments["b"], 2) if done_b else None,
        "a_status": row_a["status"],
        "a_error_message": row_a["error_message"],
        "a_end_s": round(observe.epoch(done_a) - moments["a"], 2) if done_a else None,
        "a_messages_at_sink": sum(observe.per_address(messages, 2)[x] for x in a.addresses),
        "ledger_a": dict(observe.ledger_counts([a.campaign_id])),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    expression = costly_expression(args.terms)
    result: dict[str, Any] = {"expression_chars": len(expression)}
    result["evaluation_s"] = round(evaluation_s(expression), 4)
    with (
        SinkProcess("bench.latency_smtp", ["--record"]) as sink,
        running_fleet(sink_env("email", sink.port), args.workers) as fleet,
    ):
        a, b = tenants(args.users)
        result |= create(fleet, a, b, expression)
        time.sleep(1.0)  # workers up
        moments = {"a": time.time()}
        send(fleet, a.campaign_id)
        moments["b"] = time.time()
        send(fleet, b.campaign_id)
        result["both_ended"] = wait_for(lambda: ended(a, b), args.timeout, 0.1)
        time.sleep(0.5)
        result |= outcome(sink.messages(), a, b, moments)
        result["workers_killed_on_stop"] = fleet.stop()
        summary = observe.log_summary(fleet.log_records())
        summary.pop("per_campaign")
    return result | {"logs": summary}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000, help="organization A's users")
    parser.add_argument("--terms", type=int, default=12, help="matches() clauses (<= 32)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--json", type=Path)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    observe.emit({"args": vars(args)} | run(args), args.json)


if __name__ == "__main__":
    main()
