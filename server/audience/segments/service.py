"""Segment use cases: CRUD, expression validation and previews over the current users."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace

from server.audience.editions import edition_of
from server.audience.segments import engine, sandbox
from server.config import MAX_NAME_LENGTH
from server.core import masks
from server.core.errors import FailedPrecondition, NotFound
from server.core.status import ACTIVE, Status
from server.core.validation import Violations, invalid
from server.security import tenancy
from server.store.db import locked, write_transaction
from server.store.models import Campaign, Segment, User, utcnow
from server.store.pagination import Page, PageRequest, paginate

EDITABLE_FIELDS = ("name", "expression", "edition_id")
MAX_SAMPLE = 100


@dataclass(frozen=True)
class SegmentInput:
    organization_id: int = 0
    edition_id: int = 0
    name: str = ""
    expression: str = ""


@dataclass(frozen=True)
class Preview:
    count: int
    evaluated: int
    sample: list[User]


def _check(v: Violations, data: SegmentInput) -> engine.CompiledSegment | None:
    """Check the fields; the compiled expression, when it compiles."""
    v.text(data.name, "name", max_length=MAX_NAME_LENGTH, required=True)
    v.positive_id(data.edition_id, "edition_id", required=False)
    if not data.expression.strip():
        v.add("expression", "is required")
        return None
    checked = engine.check_expression(data.expression)
    if isinstance(checked, engine.Problem):
        v.add("expression", checked.located())
        return None
    return checked


def validate_expression(expression: str) -> engine.CompiledSegment | engine.Problem:
    """ValidateSegmentExpression: the compiled expression (what SQL pre-filters on), or its
    first problem and where it is."""
    return engine.check_expression(expression)


def get_segment(segment_id: int, *, lock: bool = False) -> Segment:
    """`lock`: on PostgreSQL, hold the row FOR UPDATE until the transaction ends."""
    query = Segment.select().where(Segment.id == segment_id)
    segment = (locked(query) if lock else query).get_or_none()
    if segment is None:
        raise NotFound("segment", segment_id)
    tenancy.check_owner(segment.organization_id, "segment", segment_id)
    return segment


def create_segment(data: SegmentInput) -> Segment:
    tenancy.check_may_act(data.organization_id)
    v = Violations()
    v.positive_id(data.organization_id, "segment.organization_id")
    _check(v, data)
    v.raise_if_any()
    with write_transaction():
        if data.edition_id:
            edition_of(data.edition_id, data.organization_id)
        return Segment.create(
            organization_id=data.organization_id,
            edition=data.edition_id or None,
            name=data.name.strip(),
            expression=data.expression,
        )


def list_segments(organization_id: int, edition_id: int, page: PageRequest) -> Page[Segment]:
    v = Violations()
    number, size = page.resolved(v)
    v.raise_if_any()
    query = tenancy.scoped(Segment.select(), Segment.organization_id).order_by(
        Segment.created.desc(), Segment.id.desc()
    )
    if organization_id:
        query = query.where(Segment.organization_id == organization_id)
    if edition_id:
        query = query.where(Segment.edition == edition_id)
    return paginate(query, number, size)


def update_segment(segment_id: int, data: SegmentInput, mask: Collection[str]) -> Segment:
    masks.require_editable(mask, EDITABLE_FIELDS)
    with write_transaction():
        segment = get_segment(segment_id)
        current = SegmentInput(
            segment.organization_id, segment.edition_id or 0, segment.name, segment.expression
        )
        merged = masks.merge(current, data, mask)
        v = Violations()
        _check(v, merged)
        v.raise_if_any()
        if merged.edition_id:
            edition_of(merged.edition_id, merged.organization_id)
        Segment.update(
            name=merged.name.strip(),
            expression=merged.expression,
            edition=merged.edition_id or None,
            modified=utcnow(),
        ).where(Segment.id == segment_id).execute()
        return get_segment(segment_id)


def delete_segment(segment_id: int) -> None:
    with write_transaction():
        # Locked first, so a CreateCampaign naming it meanwhile is either seen below or,
        # waiting for the lock, finds it gone (see `server.campaigns.commands._shared`).
        segment = get_segment(segment_id, lock=True)
        users = Campaign.select().where(
            (Campaign.segment_id == segment.id)
            & Campaign.status.in_([Status.DRAFT, Status.SCHEDULED, *ACTIVE])
        )
        if users.exists():
            raise FailedPrecondition(
                f"segment {segment_id} is used by a campaign that has not finished",
                subject=f"segments/{segment_id}",
                type_="IN_USE",
                reason="SEGMENT_IN_USE",
            )
        segment.delete_instance()


def preview(segment_id: int, data: SegmentInput, sample_size: int) -> Preview:
    """Evaluate a stored segment, or an unsaved expression, over the users as they are now."""
    if not 0 <= sample_size <= MAX_SAMPLE:
        raise invalid("sample_size", f"must be between 0 and {MAX_SAMPLE}")
    compiled = None
    if segment_id:
        segment = get_segment(segment_id)
        data = SegmentInput(
            segment.organization_id, segment.edition_id or 0, segment.name, segment.expression
        )
    else:
        tenancy.check_may_act(data.organization_id)
        v = Violations()
        v.positive_id(data.organization_id, "organization_id")
        compiled = _check(v, replace(data, name=data.name or "preview"))
        v.raise_if_any()
        if data.edition_id:  # someone else's edition is as unknown as a missing one
            edition_of(data.edition_id, data.organization_id)
    compiled = compiled or engine.compile_segment(data.expression)
    edition = data.edition_id or None
    # Evaluated in a child process under one deadline: the expression is the caller's own.
    evaluate = sandbox.Evaluator()
    count, evaluated = engine.count_matches(
        compiled, data.organization_id, edition, evaluate=evaluate
    )
    rows = engine.sample(
        compiled, data.organization_id, edition, sample_size or 10, evaluate=evaluate
    )
    users = list(User.select().where(User.id.in_([r.id for r in rows])).order_by(User.id))
    return Preview(count=count, evaluated=evaluated, sample=users)
