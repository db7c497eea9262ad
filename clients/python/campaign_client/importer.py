"""`campaignctl import-users FILE.csv`: stream a CSV into ImportUsers with a progress bar (on a
terminal), then a summary of what was created, updated and rejected, and why."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from campaign_client.client import CampaignClient
from campaign_client.csvusers import Rejection, count_rows, read_users
from campaign_client.render import plain
from campaigns.v1 import audience_service_pb2 as apb


@dataclass
class ImportResult:
    """The server's summary plus every rejected row, by row number."""

    response: apb.ImportUsersResponse
    rejections: list[Rejection]

    @property
    def rejected(self) -> int:
        local = len(self.rejections) - len(self.response.rejections)
        return int(self.response.rejected) + local


def import_file(
    client: CampaignClient,
    path: Path,
    organization_id: int,
    edition_id: int,
    batch_size: int,
    console: Console,
    live: bool,
) -> ImportResult:
    """Send every readable row of `path`; show progress on `console` when `live`."""
    total = count_rows(path)
    rejected: list[Rejection] = []
    rows: list[int] = []
    users = read_users(path, rejected, rows)
    progress = Progress(
        TextColumn("[bold]importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=console,
        disable=not live,
    )
    with progress:
        task = progress.add_task("import", total=total)
        local = len(rejected)

        def advance(sent: int) -> None:
            nonlocal local
            progress.advance(task, sent + len(rejected) - local)
            local = len(rejected)

        response = client.import_users(
            organization_id, users, edition_id=edition_id, batch_size=batch_size, on_batch=advance
        )
        progress.update(task, completed=total)
    server_side = [
        Rejection(
            rows[r.index] if r.index < len(rows) else r.index + 1, r.external_id, r.field, r.reason
        )
        for r in response.rejections
    ]
    return ImportResult(response, sorted(rejected + server_side, key=lambda r: r.row))


def summary(path: Path, result: ImportResult) -> str:
    r = result.response
    return (
        f"imported {path.name}: {r.created} created, {r.updated} updated, "
        f"{result.rejected} rejected"
    )


def rejection_table(result: ImportResult, limit: int) -> Table | None:
    """The first `limit` rejected rows; None when there are none."""
    if not result.rejections or limit <= 0:
        return None
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for name in ("ROW", "EXTERNAL_ID", "FIELD", "REASON"):
        table.add_column(name, justify="right" if name == "ROW" else "left")
    for item in result.rejections[:limit]:
        table.add_row(*plain(item.row, item.external_id or "-", item.field or "-", item.reason))
    more = result.rejected - min(limit, len(result.rejections))
    if more > 0:
        table.caption = f"... and {more} more"
    return table
