"""Campaign reads for the API: GetCampaign and ListCampaigns, answered as plain rows.

The reads return dicts, not models: building a Campaign and its Edition per row was most of a
100-row ListCampaigns page's CPU (BENCHMARKS.md, "Where the time went" 10), and a dict of the
columns the answer needs costs far less. The changes in `server.campaigns.commands` still work
on models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import peewee as pw

from server.config import MAX_SEARCH_LENGTH
from server.core.errors import NotFound
from server.core.validation import Violations
from server.security import tenancy
from server.store.db import CachedSelect
from server.store.models import Campaign, Edition
from server.store.pagination import Page, PageRequest, paginate

ORDERINGS: dict[str, pw.Field] = {
    "created": Campaign.created,
    "modified": Campaign.modified,
    "name": Campaign.name,
    "scheduled_at": Campaign.scheduled_at,
    "total_recipients": Campaign.total_recipients,
}
DEFAULT_ORDERING = "-created"

# A campaign as the API shows it: its columns by field name, the edition's id as
# "edition_id", and the edition's "timezone" (campaign times are shown in it).
CampaignRow = dict[str, Any]
ROW_FIELDS = tuple(  # the edition's id is selected under its own name below
    f.name for f in Campaign._meta.sorted_fields if f.name not in ("edition", "heartbeat_at")
)
ROW_COLUMNS: tuple[pw.Node, ...] = (
    *(Campaign._meta.fields[name] for name in ROW_FIELDS),
    Campaign.edition.alias("edition_id"),
    Edition.timezone,
)


def _rows() -> pw.ModelSelect[Campaign]:
    return Campaign.select(*ROW_COLUMNS).join(Edition).dicts()


_BY_ID = CachedSelect(lambda campaign_id: _rows().where(Campaign.id == campaign_id).limit(1))


@dataclass(frozen=True)
class CampaignFilter:
    channel: str | None = None
    edition_id: int = 0
    organization_id: int = 0
    status: str | None = None
    search: str = ""


def get_campaign(campaign_id: int) -> CampaignRow:
    """The campaign; NotFound also when the caller may not see its organization."""
    row: CampaignRow | None = next(iter(_BY_ID.rows(campaign_id)), None)
    if row is None:
        raise NotFound("campaign", campaign_id)
    tenancy.check_owner(row["organization_id"], "campaign", campaign_id)
    return row


def list_campaigns(flt: CampaignFilter, ordering: str, page: PageRequest) -> Page[CampaignRow]:
    v = Violations()
    key = (ordering or DEFAULT_ORDERING).removeprefix("-")
    v.check(
        key in ORDERINGS, "ordering", f"must be one of {', '.join(ORDERINGS)}, optionally with '-'"
    )
    v.text(flt.search, "search", max_length=MAX_SEARCH_LENGTH)
    number, size = page.resolved(v)
    v.raise_if_any()
    query = tenancy.scoped(_rows(), Campaign.organization_id)
    counted = tenancy.scoped(Campaign.select(Campaign.id), Campaign.organization_id)
    for cond in _filters(flt):
        query = query.where(cond)
        counted = counted.where(cond)
    descending = (ordering or DEFAULT_ORDERING).startswith("-")
    field = ORDERINGS[key]
    # NULLS LAST only where NULLs exist: on a NOT NULL column it would stop PostgreSQL from
    # reading the (key, id) index backwards for a descending order.
    nulls = {"nulls": "LAST"} if field.null else {}
    if descending:
        query = query.order_by(field.desc(**nulls), Campaign.id.desc())
    else:
        query = query.order_by(field.asc(**nulls), Campaign.id.asc())
    # The query yields dicts (.dicts() in _rows); peewee's stubs know rows as models only.
    return cast(Page[CampaignRow], paginate(query, number, size, counted))


def _filters(flt: CampaignFilter) -> list[pw.Expression]:
    conds = []
    if flt.channel:
        conds.append(Campaign.channel == flt.channel)
    if flt.status:
        conds.append(Campaign.status == flt.status)
    if flt.edition_id:
        conds.append(Campaign.edition == flt.edition_id)
    if flt.organization_id:
        conds.append(Campaign.organization_id == flt.organization_id)
    if flt.search.strip():
        # LOWER on both sides: SQLite's LIKE folds ASCII only, PostgreSQL's ILIKE folds all.
        conds.append(pw.fn.LOWER(Campaign.name).contains(flt.search.strip().lower()))
    return conds
