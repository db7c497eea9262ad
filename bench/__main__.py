"""`make bench`: every benchmark in one run, printing the figures BENCHMARKS.md reports.

`python -m bench latency delivery` (`make bench BENCH="latency delivery"`) runs only the named
ones (module names under bench/), at the same sizes.

BENCH_SCALE (default 1.0) scales the sizes down for a quick look, e.g. BENCH_SCALE=0.1 (the
load test's duration too, never below 10 s). At full scale it takes about an hour and a half
on 2 cores: issue 7's sizes (a million users, recipients and imports; 100,000 campaigns),
and some 40 minutes more for issue 20's (bursts, the hang test, cancel, faults).
Needs PostgreSQL at 127.0.0.1:5432 and Postfix's smtp-sink (apt-get install postfix; the load
test falls back to aiosmtpd without it).
"""

from __future__ import annotations

import os
import subprocess
import sys

SCALE = float(os.environ.get("BENCH_SCALE") or 1.0)


def n(value: int) -> str:
    return str(max(1000, int(value * SCALE)))


def seconds(value: float) -> str:
    return str(max(10, round(value * SCALE)))


RUNS = [
    ["bench.segment_eval", "--users", n(1_000_000), "--database", "sqlite"],
    ["bench.segment_eval", "--users", n(1_000_000), "--database", "postgres"],
    ["bench.import_users", "--users", n(100_000), "--database", "sqlite"],
    ["bench.import_users", "--users", n(1_000_000), "--database", "postgres"],
    *(
        [
            *("bench.delivery", "--recipients", n(1_000_000), "--channel", channel),
            *("--database", "postgres", "--workers", "1", "2"),
        ]
        for channel in ("email", "sms")
    ),
    ["bench.send_job", "--recipients", n(50_000), "--database", "postgres"],
    ["bench.rpc", "--database", "postgres", "--campaigns", n(100_000)],
    ["bench.grpc_floor"],
    [
        *("bench.latency", "--recipients", n(20_000), "--cap", f"100:{n(2_000)}"),
        *("--cap", f"200:{n(2_000)}", "--json", "var/bench-latency.json"),
    ],
    *(
        ["bench.load", "--seconds", seconds(60), "--recipients", n(30_000), "--database", db]
        for db in ("sqlite", "postgres")
    ),
    # Sending engine v2 (issue 20): bursts, hangs, cancel, costly segments, ambiguity.
    ["bench.burst", "--campaigns", n(1000), "--workers", "2", "--json", "var/bench-burst.json"],
    [
        *("bench.hang", "--campaigns", n(900), "--workers", "2", "--busy", "2"),
        *("--sweep-interval", "0.05", "--json", "var/bench-hang.json"),
    ],
    [
        *("bench.cancel", "--recipients", n(20_000), "--delay-ms", "100", "--at", "0.4"),
        *("--json", "var/bench-cancel.json"),
    ],
    ["bench.costly", "--users", n(2000), "--workers", "1", "--json", "var/bench-costly.json"],
    *(
        [
            *("bench.ambiguity", "--fault", fault, "--recipients", n(20_000), "--delay-ms", "100"),
            *("--json", f"var/bench-ambiguity-{fault}.json"),
        ]
        for fault in ("kill", "cut")
    ),
]


def selected(names: list[str]) -> list[list[str]]:
    """The runs whose module is named (`latency` or `bench.latency`); all when none is."""
    wanted = {name.removeprefix("bench.") for name in names}
    return [run for run in RUNS if not wanted or run[0].removeprefix("bench.") in wanted]


def main() -> int:
    runs = selected(sys.argv[1:])
    if not runs:
        sys.exit(f"no such benchmark: {' '.join(sys.argv[1:])}")
    failed = 0
    for run in runs:
        print(f"\n$ python -m {' '.join(run)}", flush=True)
        failed += subprocess.call([sys.executable, "-m", *run]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
