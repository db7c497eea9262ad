"""The one clock of the service: naive UTC, as every datetime column holds it."""

from __future__ import annotations

import datetime as dt

__all__ = ["utcnow"]


def utcnow() -> dt.datetime:
    """Naive UTC: every datetime column holds UTC without a zone."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
