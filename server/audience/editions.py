"""Edition use cases: an edition carries the timezone campaign times are shown in."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Collection
from dataclasses import dataclass, fields

from server.config import MAX_NAME_LENGTH
from server.core import masks
from server.core.errors import NotFound
from server.core.validation import Violations, invalid
from server.security import tenancy
from server.store.db import write_transaction
from server.store.models import Edition, utcnow
from server.store.pagination import Page, PageRequest, paginate

EDITABLE_FIELDS = (
    "name",
    "timezone",
    "default_country_code",
    "default_language",
    "start_date",
    "end_date",
)


@dataclass(frozen=True)
class EditionInput:
    organization_id: int = 0
    name: str = ""
    timezone: str = ""
    default_country_code: str = ""
    default_language: str = ""
    start_date: str = ""
    end_date: str = ""


def valid_timezone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe" is a dir
        return False
    return True


def _date(v: Violations, value: str, field: str) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        v.add(field, f"must be an ISO 8601 date (YYYY-MM-DD), got {value[:40]!r}")
        return None


def _check(v: Violations, data: EditionInput) -> dict[str, object]:
    # Field paths are relative to the request: both Create and Update nest the edition.
    v.text(data.name, "edition.name", max_length=MAX_NAME_LENGTH, required=True)
    v.check(
        valid_timezone(data.timezone),
        "edition.timezone",
        "must be an IANA timezone name such as Europe/Copenhagen",
    )
    code = data.default_country_code
    digits = code[1:]
    v.check(
        not code
        or (code.startswith("+") and digits.isascii() and digits.isdigit() and len(code) <= 5),
        "edition.default_country_code",
        "must be a calling code such as +45, or empty",
    )
    v.text(data.default_language, "edition.default_language", max_length=35)
    start = _date(v, data.start_date, "edition.start_date")
    end = _date(v, data.end_date, "edition.end_date")
    if start and end and end < start:
        v.add("edition.end_date", "must not be before start_date")
    values = {f.name: getattr(data, f.name) for f in fields(data)}
    values.update(name=data.name.strip(), start_date=start, end_date=end)
    return values


def edition_of(edition_id: int, organization_id: int) -> Edition:
    """The edition, which must belong to the organization: InvalidArgument on `edition_id`
    otherwise (the same answer for "missing" and "someone else's")."""
    edition = Edition.get_or_none(
        (Edition.id == edition_id) & (Edition.organization_id == organization_id)
    )
    if edition is None:
        raise invalid(
            "edition_id", f"edition {edition_id} does not exist in organization {organization_id}"
        )
    return edition


def get_edition(edition_id: int) -> Edition:
    edition = Edition.get_or_none(Edition.id == edition_id)
    if edition is None:
        raise NotFound("edition", edition_id)
    tenancy.check_owner(edition.organization_id, "edition", edition_id)
    return edition


def create_edition(data: EditionInput) -> Edition:
    tenancy.check_may_act(data.organization_id)
    v = Violations()
    v.positive_id(data.organization_id, "edition.organization_id")
    values = _check(v, data)
    v.raise_if_any()
    return Edition.create(**values)


def list_editions(organization_id: int, page: PageRequest) -> Page[Edition]:
    v = Violations()
    number, size = page.resolved(v)
    v.raise_if_any()
    query = tenancy.scoped(Edition.select(), Edition.organization_id).order_by(
        Edition.created.desc(), Edition.id.desc()
    )
    if organization_id:
        query = query.where(Edition.organization_id == organization_id)
    return paginate(query, number, size)


def update_edition(edition_id: int, data: EditionInput, mask: Collection[str]) -> Edition:
    masks.require_editable(mask, EDITABLE_FIELDS)
    with write_transaction():
        edition = get_edition(edition_id)
        current = EditionInput(
            organization_id=edition.organization_id,
            name=edition.name,
            timezone=edition.timezone,
            default_country_code=edition.default_country_code,
            default_language=edition.default_language,
            start_date=edition.start_date.isoformat() if edition.start_date else "",
            end_date=edition.end_date.isoformat() if edition.end_date else "",
        )
        v = Violations()
        values = _check(v, masks.merge(current, data, mask))
        v.raise_if_any()
        changes = {p: values[p] for p in mask}
        Edition.update(modified=utcnow(), **changes).where(Edition.id == edition_id).execute()
        return get_edition(edition_id)
