"""The ports campaign use cases need from the outside, owned here and implemented elsewhere.

`Dispatcher` is the only way `server` reaches the job system: `jobs.enqueue.RQDispatcher`
implements it, and `server/app.py` (the composition root) hands one to the servicer.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

__all__ = ["Dispatcher"]


class Dispatcher(Protocol):
    """Hands a campaign to the job system once the database says it should move."""

    def kickoff_at(self, campaign_id: int, when: dt.datetime) -> None:
        """Run the campaign's kickoff at `when` (naive UTC), not before."""
        ...

    def start_now(self, campaign_id: int) -> None:
        """Start the campaign's calculation now."""
        ...
