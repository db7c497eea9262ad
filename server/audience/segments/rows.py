"""What CEL sees of a user: raw driver rows (columns in USER_FIELDS order) as `UserRow`s, and
as the context `{"user": {...}}` holding only the fields and attribute keys an expression
reads (converting a whole user to CEL values costs more than evaluating the expression).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from operator import itemgetter
from typing import Any, NamedTuple

from server.audience.segments.pushdown import Reads
from server.store.models import USER_FIELDS, USER_FLAGS


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
Context = dict[str, dict[str, Any]]
Row = tuple[Any, ...]  # as the driver returns it, columns in USER_FIELDS order
_raw_decode = json.JSONDecoder().raw_decode


def _json(value: Any) -> Any:
    """JSON text (SQLite) as Python; psycopg2 has already decoded PostgreSQL's JSONB."""
    if not isinstance(value, str):
        return value
    try:
        return _raw_decode(value)[0]  # json.loads' checks are spent: the text came from dumps
    except ValueError:
        return json.loads(value)


def sqlite_row(raw: Row) -> UserRow:
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


def context_builder(needs: Reads | None, sqlite: bool) -> Callable[[Row], Context]:
    """From a raw row to the CEL context, holding only what the expression reads."""
    names = USER_FIELDS if needs is None else sorted(needs.fields)
    keys = None if needs is None else needs.attribute_keys
    getters = [(name, _getter(name, sqlite, keys)) for name in names]
    return lambda raw: {"user": {name: get(raw) for name, get in getters}}
