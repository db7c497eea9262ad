"""`campaignctl watch`: follow WatchCampaignStats until the campaign ends, with a live progress
bar (on a terminal) or one line per change (otherwise, or with --plain), then a summary.

Progress counts recipients in a final state (sent, failed, ambiguous) against the campaign's
total recipients; the rate is measured over the last RATE_WINDOW seconds and the ETA follows
from it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn

from campaign_client.render import as_json_line, status_name
from campaigns.v1 import campaign_pb2
from campaigns.v1 import campaign_service_pb2 as cpb

RATE_WINDOW = 10.0  # seconds of history the rate is measured over


def done_of(stats: campaign_pb2.CampaignStats) -> int:
    """Recipients that will not change any more."""
    return stats.sent + stats.failed + stats.ambiguous


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-:--"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class Meter:
    """Messages per second over a sliding window, and the time left at that rate."""

    samples: deque[tuple[float, int]] = field(default_factory=deque)
    started: float = field(default_factory=time.monotonic)

    def add(self, done: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > RATE_WINDOW:
            self.samples.popleft()

    def rate(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else None

    def eta(self, remaining: int) -> float | None:
        rate = self.rate()
        if remaining <= 0:
            return 0.0
        return remaining / rate if rate else None

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def _figures(stats: campaign_pb2.CampaignStats, meter: Meter) -> dict[str, Any]:
    rate = meter.rate()
    total = stats.total_recipients
    return {
        "status": status_name(stats.status),
        "rate": f"{rate:.1f} msg/s" if rate is not None else "- msg/s",
        "eta": "ETA " + duration(meter.eta(total - done_of(stats))) if total else "ETA -:--",
        "failed": f"failed {stats.failed}",
    }


def plain_line(stats: campaign_pb2.CampaignStats, meter: Meter) -> str:
    total, done = stats.total_recipients, done_of(stats)
    share = f"{done * 100 / total:5.1f}%" if total else "    -"
    f = _figures(stats, meter)
    return (
        f"{time.strftime('%H:%M:%S')} {f['status']:<11} {done}/{total} {share} "
        f"{f['failed']} {f['rate']} {f['eta']}"
    )


def summary(campaign_id: int, stats: campaign_pb2.CampaignStats, meter: Meter) -> str:
    elapsed = meter.elapsed()
    done = done_of(stats)
    rate = f", {done / elapsed:.1f} msg/s" if elapsed > 0 and done else ""
    return (
        f"campaign {campaign_id} {status_name(stats.status)}: {stats.sent} sent, "
        f"{stats.failed} failed, {stats.skipped} skipped of {stats.total_recipients} "
        f"recipients (watched {duration(elapsed)}{rate})"
    )


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[eta]}"),
        TextColumn("{task.fields[status]}"),
        TextColumn("{task.fields[failed]}"),
        console=console,
        transient=False,
        refresh_per_second=8,
    )


def follow(
    updates: Iterable[cpb.WatchCampaignStatsResponse],
    label: str,
    console: Console,
    live: bool,
    meter: Meter,
) -> campaign_pb2.CampaignStats | None:
    """Show every update; returns the final figures (None when the stream ended without)."""
    if not live:
        return _follow_plain(updates, console, meter)
    with _progress(console) as progress:
        task = progress.add_task(label, total=None, **_figures(campaign_pb2.CampaignStats(), meter))
        return _follow_live(updates, progress, task, meter)


def _follow_live(
    updates: Iterable[cpb.WatchCampaignStatsResponse],
    progress: Progress,
    task: TaskID,
    meter: Meter,
) -> campaign_pb2.CampaignStats | None:
    for update in updates:
        stats = update.stats
        meter.add(done_of(stats))
        progress.update(
            task,
            total=stats.total_recipients or None,
            completed=done_of(stats),
            **_figures(stats, meter),
        )
        if update.final:
            return stats
    return None


def _follow_plain(
    updates: Iterable[cpb.WatchCampaignStatsResponse], console: Console, meter: Meter
) -> campaign_pb2.CampaignStats | None:
    for update in updates:
        meter.add(done_of(update.stats))
        console.print(plain_line(update.stats, meter))
        if update.final:
            return update.stats
    return None


def follow_json(
    updates: Iterable[cpb.WatchCampaignStatsResponse], out: Console
) -> campaign_pb2.CampaignStats | None:
    """Each update as one line of JSON; returns the final figures."""
    for update in updates:
        out.print(as_json_line(update), markup=False, soft_wrap=True)
        if update.final:
            return update.stats
    return None
