"""Page-number pagination shared by every List RPC: validation, counting and neighbours."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import peewee as pw

from server.config import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from server.core.errors import OutOfRange
from server.core.validation import Violations

T = TypeVar("T")
M = TypeVar("M", bound=pw.Model)


@dataclass(frozen=True)
class PageRequest:
    page: int = 0
    page_size: int = 0

    def resolved(self, violations: Violations) -> tuple[int, int]:
        """(page, page_size) with defaults applied; bad values are added to `violations`."""
        violations.check(self.page >= 0, "page", "must be 1 or more (0 means 1)")
        violations.check(
            0 <= self.page_size <= MAX_PAGE_SIZE,
            "page_size",
            f"must be between 1 and {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})",
        )
        return max(self.page, 1), self.page_size or DEFAULT_PAGE_SIZE


@dataclass(frozen=True)
class Page(Generic[T]):
    count: int
    page: int
    next_page: int
    previous_page: int
    results: list[T]


def paginate(
    query: pw.ModelSelect[M], page: int, page_size: int, counted: pw.ModelSelect[M] | None = None
) -> Page[M]:
    """One page of an already ordered query; a page past the end is OutOfRange.

    `counted`: the same rows without what only the page needs (joins for display), so the
    count can be answered from an index alone."""
    count = (counted if counted is not None else query).count(clear_limit=True)
    last_page = max(1, -(-count // page_size))
    if page > last_page:
        raise OutOfRange("page", f"page {page} is past the last page ({last_page})")
    results = list(query.paginate(page, page_size))
    return Page(
        count=count,
        page=page,
        next_page=page + 1 if page < last_page else 0,
        previous_page=page - 1 if page > 1 else 0,
        results=results,
    )
