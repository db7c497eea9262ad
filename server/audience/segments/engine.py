"""Segment evaluation: compile a CEL expression, pre-filter users in SQL, confirm each in CEL.

`compile_segment` checks and compiles an expression and works out which of its top-level `&&`
clauses the database can pre-filter on (`server.audience.segments.pushdown`). `iter_matches`
then walks an organization's live users in id order (keyset pages, so memory stays flat over
millions), lets SQL drop the users the pushed clauses rule out, and evaluates the expression
in CEL for every remaining candidate: a user matches only when the expression evaluates to
exactly `true`. An evaluation error (a missing key, a type mismatch) means "no match", never a
failure.

CEL sees `{"user": {...}}` holding only the fields (and attribute keys) the expression reads:
converting a whole user to CEL values costs several times more than evaluating it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, NamedTuple

import cel
import peewee as pw

from server.audience.segments.limits import shape_problem
from server.audience.segments.pushdown import (
    Clause,
    Reads,
    clauses,
    reads,
    to_sql,
)
from server.audience.segments.pushdown import exact as is_exact
from server.config import MAX_EXPRESSION_LENGTH
from server.core.validation import invalid
from server.store.db import database, decodes_natively
from server.store.models import USER_FIELDS, USER_FLAGS, User, UserEdition

DEFAULT_BATCH_SIZE = 5000
_POSITION = re.compile(r"<input>:(\d+):(\d+): ([^\n]*)")


class UserRow(NamedTuple):
    """The fields of a user a segment can see, as handed to CEL."""

    id: int
    external_id: str
    email: str
    phone: str
    first_name: str
    last_name: str
    language: str
    attributes: Any
    email_consent: bool
    sms_consent: bool
    email_unsubscribed: bool
    sms_unsubscribed: bool


assert UserRow._fields == USER_FIELDS
_COLUMNS = tuple(getattr(User, name) for name in USER_FIELDS)
Context = dict[str, dict[str, Any]]
Row = tuple[Any, ...]  # as the driver returns it, columns in USER_FIELDS order
_raw_decode = json.JSONDecoder().raw_decode


@dataclass(frozen=True)
class CompiledSegment:
    """A compiled expression and the clauses of it that run in SQL."""

    expression: str
    program: Any  # cel.Program
    clauses: tuple[Clause, ...] = ()
    pushed_down: list[str] = field(default_factory=list)
    reads: Reads | None = None  # None: hand CEL the whole user
    exact: bool = False  # the pushed clauses decide alone: no CEL needed (see analysis.exact)


def _position(message: str, expression: str) -> tuple[str, int, int]:
    """The first `<input>:LINE:COL: message` of a CEL parser error (after the echoed input)."""
    echo = f"Failed to parse expression '{expression}': "
    found = _POSITION.search(message, len(echo) if message.startswith(echo) else 0)
    if found is None:
        return (message.strip().splitlines() or ["syntax error"])[0], 1, 1
    return found.group(3).strip(), int(found.group(1)), int(found.group(2))


def _too_long(expression: str) -> tuple[str, int, int] | None:
    if len(expression) <= MAX_EXPRESSION_LENGTH:
        return None
    head = expression[:MAX_EXPRESSION_LENGTH]
    line = head.count("\n") + 1
    column = len(head) - (head.rfind("\n") + 1) + 1
    message = f"must be at most {MAX_EXPRESSION_LENGTH} characters, got {len(expression)}"
    return message, line, column


def parse_error(expression: str) -> tuple[str, int, int] | None:
    """(message, line, column) of the first problem with an expression, or None if it compiles.
    Lines and columns count from 1."""
    problem = _too_long(expression)
    if problem is not None:
        return problem
    shape = shape_problem(expression)
    if shape is not None:
        return shape, 1, 1
    try:
        cel.compile(expression)
    except ValueError as exc:
        return _position(str(exc), expression)
    return None


def compile_segment(expression: str) -> CompiledSegment:
    """Compile an expression; InvalidArgument on `expression` if it is too long or malformed."""
    too_long = _too_long(expression)
    if too_long is not None:
        raise invalid("expression", too_long[0])
    shape = shape_problem(expression)
    if shape is not None:
        raise invalid("expression", shape)
    try:
        program = cel.compile(expression)
    except ValueError as exc:
        message, line, column = _position(str(exc), expression)
        raise invalid("expression", f"line {line}, column {column}: {message}") from None
    pushed = tuple(clauses(expression))
    return CompiledSegment(
        expression,
        program,
        pushed,
        [c.describe() for c in pushed],
        reads(expression),
        is_exact(expression),
    )


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


def _json(value: Any) -> Any:
    """JSON text (SQLite) as Python; psycopg2 has already decoded PostgreSQL's JSONB."""
    if not isinstance(value, str):
        return value
    try:
        return _raw_decode(value)[0]  # a third of json.loads; the text came from json.dumps
    except ValueError:
        return json.loads(value)


def _sqlite_row(raw: Row) -> UserRow:
    """SQLite returns attributes as JSON text and booleans as 0/1."""
    flags = (raw[8] == 1, raw[9] == 1, raw[10] == 1, raw[11] == 1)
    return UserRow._make((*raw[:7], _json(raw[7]), *flags))


def _subset(attributes: Any, keys: frozenset[str] | None) -> Any:
    if keys is None or not isinstance(attributes, dict):
        return attributes
    return {key: attributes[key] for key in keys if key in attributes}


def _getter(name: str, sqlite: bool, keys: frozenset[str] | None) -> Callable[[Row], Any]:
    """Reads one field of a raw driver row as CEL should see it."""
    index = USER_FIELDS.index(name)
    if name == "attributes":
        return lambda raw: _subset(_json(raw[index]), keys)
    if sqlite and name in USER_FLAGS:
        return lambda raw: raw[index] == 1
    return itemgetter(index)


def _context_builder(needs: Reads | None, sqlite: bool) -> Callable[[Row], Context]:
    """From a raw row to the CEL context, holding only what the expression reads."""
    names = USER_FIELDS if needs is None else sorted(needs.fields)
    keys = None if needs is None else needs.attribute_keys
    getters = [(name, _getter(name, sqlite, keys)) for name in names]
    return lambda raw: {"user": {name: get(raw) for name, get in getters}}


def evaluate_here(compiled: CompiledSegment, contexts: list[Context]) -> list[int]:
    """Indices of the contexts for which the program returns exactly True; errors count as no
    match. In this process: for workers, whose job runs in a child under a timeout."""
    execute = compiled.program.execute
    matched = []
    for index, context in enumerate(contexts):
        try:
            if execute(context) is True:
                matched.append(index)
        except Exception:  # missing key, type mismatch, overflow: the user does not match
            continue
    return matched


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
    make_row: Callable[[Row], UserRow] = _sqlite_row if sqlite else UserRow._make
    context = _context_builder(compiled.reads, sqlite)
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
