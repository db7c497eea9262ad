"""Segment evaluation: compile a CEL expression, pre-filter users in SQL, confirm each in CEL.

`compile_segment` checks and compiles an expression and works out which of its top-level `&&`
clauses the database can pre-filter on (`server.audience.segments.pushdown`). `iter_matches`
then walks an organization's live users in id order (keyset pages, so memory stays flat over
millions), lets SQL drop the users the pushed clauses rule out, and evaluates the expression
in CEL for every remaining candidate: a user matches only when the expression evaluates to
exactly `true`. An evaluation error (a missing key, a type mismatch) means "no match", never a
failure.

CEL sees `{"user": {...}}` holding only the fields (and attribute keys) the expression reads
(`server.audience.segments.rows`): converting a whole user to CEL values is the costly part.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import cel
import peewee as pw

from server.audience.segments.limits import shape_problem
from server.audience.segments.matching import matching
from server.audience.segments.pushdown import (
    Clause,
    Reads,
    clauses,
    reads,
    to_sql,
)
from server.audience.segments.pushdown import exact as is_exact
from server.audience.segments.rows import Context, Row, UserRow, context_builder, sqlite_row
from server.config import MAX_EXPRESSION_LENGTH
from server.core.validation import invalid
from server.store.db import database, decodes_natively
from server.store.models import USER_FIELDS, User, UserEdition

DEFAULT_BATCH_SIZE = 5000
_POSITION = re.compile(r"<input>:(\d+):(\d+): ([^\n]*)")
_COLUMNS = tuple(getattr(User, name) for name in USER_FIELDS)


@dataclass(frozen=True)
class CompiledSegment:
    """A compiled expression and the clauses of it that run in SQL."""

    expression: str
    program: Any  # cel.Program
    clauses: tuple[Clause, ...] = ()
    pushed_down: list[str] = field(default_factory=list)
    reads: Reads | None = None  # None: hand CEL the whole user
    exact: bool = False  # the pushed clauses decide alone: no CEL needed (pushdown.exact)


class Problem(NamedTuple):
    """The first thing wrong with an expression, and where (lines and columns count from 1)."""

    message: str
    line: int = 1
    column: int = 1
    from_cel: bool = False  # CEL's parser refused it (not a length or shape limit of ours)

    def located(self) -> str:
        return f"line {self.line}, column {self.column}: {self.message}"


def _position(message: str, expression: str) -> Problem:
    """The first `<input>:LINE:COL: message` of a CEL parser error (after the echoed input)."""
    echo = f"Failed to parse expression '{expression}': "
    found = _POSITION.search(message, len(echo) if message.startswith(echo) else 0)
    if found is None:
        return Problem((message.strip().splitlines() or ["syntax error"])[0], from_cel=True)
    return Problem(found.group(3).strip(), int(found.group(1)), int(found.group(2)), True)


def _too_long(expression: str) -> Problem | None:
    if len(expression) <= MAX_EXPRESSION_LENGTH:
        return None
    head = expression[:MAX_EXPRESSION_LENGTH]
    line = head.count("\n") + 1
    column = len(head) - (head.rfind("\n") + 1) + 1
    message = f"must be at most {MAX_EXPRESSION_LENGTH} characters, got {len(expression)}"
    return Problem(message, line, column)


def _program(expression: str) -> tuple[Any, Problem | None]:
    """The CEL program, or the first problem with the expression."""
    too_long = _too_long(expression)
    if too_long is not None:
        return None, too_long
    shape = shape_problem(expression)
    if shape is not None:
        return None, Problem(shape)
    try:
        return cel.compile(expression), None
    except ValueError as exc:
        return None, _position(str(exc), expression)


def check_expression(expression: str) -> CompiledSegment | Problem:
    """The compiled expression, or its first problem: compiled once either way."""
    program, problem = _program(expression)
    if problem is not None:
        return problem
    pushed = tuple(clauses(expression))
    return CompiledSegment(
        expression,
        program,
        pushed,
        [c.describe() for c in pushed],
        reads(expression),
        is_exact(expression),
    )


def parse_error(expression: str) -> tuple[str, int, int] | None:
    """(message, line, column) of the first problem with an expression, or None if it compiles.
    Lines and columns count from 1."""
    problem = _program(expression)[1]
    return None if problem is None else (problem.message, problem.line, problem.column)


def compile_segment(expression: str) -> CompiledSegment:
    """Compile an expression; InvalidArgument on `expression` if it is too long or malformed."""
    checked = check_expression(expression)
    if isinstance(checked, Problem):
        raise invalid("expression", checked.located() if checked.from_cel else checked.message)
    return checked


def candidates(
    compiled: CompiledSegment, organization_id: int, edition_id: int | None
) -> pw.Select:
    """Candidates: live users of the organization (and edition) passing the pushed clauses."""
    where: list[pw.Node] = [User.organization_id == organization_id, User.erased_at.is_null()]
    if edition_id is not None:
        member = UserEdition.select(UserEdition.user).where(
            (UserEdition.user == User.id) & (UserEdition.edition == edition_id)
        )
        where.append(pw.fn.EXISTS(member))
    where.extend(to_sql(clause) for clause in compiled.clauses)
    return User.select(*_COLUMNS).where(*where).order_by(User.id)


def _pages(query: pw.Select, batch_size: int, organization_id: int) -> Iterator[list[Row]]:
    """Raw driver rows in id order, by windows of `batch_size` consecutive ids
    (last < id <= last + batch_size). Windows rather than ORDER BY id LIMIT n: just after a big
    import PostgreSQL's statistics do not know the rows yet, and with LIMIT it may pick a plan
    that sorts every remaining row for every page (quadratic over a million users)."""
    for window in id_windows(organization_id, batch_size):
        rows = database.execute(query.where(window)).fetchall()
        if rows:
            yield rows


def id_windows(organization_id: int, size: int) -> Iterator[pw.Expression]:
    """Conditions `last < User.id <= last + size` covering the organization's users."""
    bounds = User.select(pw.fn.MIN(User.id), pw.fn.MAX(User.id)).where(
        User.organization_id == organization_id
    )
    low, high = database.execute(bounds).fetchone()
    if low is None:
        return
    last = int(low) - 1
    while last < int(high):
        yield (User.id > last) & (User.id <= last + size)
        last += size


def evaluate_here(compiled: CompiledSegment, contexts: list[Context]) -> list[int]:
    """`matching` in this process: for workers, whose job runs in a child under a timeout."""
    return matching(compiled.program, contexts)


# (compiled segment, contexts) -> indices of the contexts that match
Evaluate = Callable[[CompiledSegment, list[Context]], list[int]]


def _scan(
    compiled: CompiledSegment,
    organization_id: int,
    edition_id: int | None,
    batch_size: int,
    evaluate: Evaluate,
) -> Iterator[tuple[list[UserRow], int]]:
    """(matches, candidates evaluated) per page."""
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    sqlite = not decodes_natively()
    make_row: Callable[[Row], UserRow] = sqlite_row if sqlite else UserRow._make
    context = context_builder(compiled.reads, sqlite)
    query = candidates(compiled, organization_id, edition_id)
    for rows in _pages(query, batch_size, organization_id):
        if compiled.exact:  # SQL has decided: every candidate matches, none evaluated
            yield [make_row(raw) for raw in rows], 0
        else:
            hits = evaluate(compiled, [context(raw) for raw in rows])
            yield [make_row(rows[i]) for i in hits], len(rows)


def iter_matches(
    compiled: CompiledSegment,
    organization_id: int,
    edition_id: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    evaluate: Evaluate = evaluate_here,
) -> Iterator[list[UserRow]]:
    """The matching users in id order, in non-empty batches of at most `batch_size`."""
    for matched, _ in _scan(compiled, organization_id, edition_id, batch_size, evaluate):
        if matched:
            yield matched


def count_matches(
    compiled: CompiledSegment,
    organization_id: int,
    edition_id: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    evaluate: Evaluate = evaluate_here,
) -> tuple[int, int]:
    """(users matching, candidates evaluated in CEL after the SQL pre-filter)."""
    count = evaluated = 0
    for matched, seen in _scan(compiled, organization_id, edition_id, batch_size, evaluate):
        count += len(matched)
        evaluated += seen
    return count, evaluated


def sample(
    compiled: CompiledSegment,
    organization_id: int,
    edition_id: int | None = None,
    n: int = 10,
    batch_size: int = 1000,
    evaluate: Evaluate = evaluate_here,
) -> list[UserRow]:
    """The first `n` matching users by id (smaller pages: it usually stops after the first)."""
    out: list[UserRow] = []
    if n <= 0:
        return out
    for matched in iter_matches(compiled, organization_id, edition_id, batch_size, evaluate):
        out.extend(matched[: n - len(out)])
        if len(out) >= n:
            break
    return out
