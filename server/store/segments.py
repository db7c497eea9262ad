"""Segment conditions on user attributes in each dialect's JSON operators.

`server.audience.segments.pushdown` recognises the clauses of a CEL expression that SQL can
decide; this module writes them for the open database: JSONB containment and `jsonb_exists`
on PostgreSQL (both served by the GIN index), `json_extract` and `json_each` on SQLite.
"""

from __future__ import annotations

import json
from typing import Any

import peewee as pw

from server.store.db import is_postgres
from server.store.models import User

__all__ = ["attribute_condition"]


def attribute_condition(kind: str, path: tuple[str, ...], value: Any) -> pw.Node:
    """`attributes.<path> == value` (kind "eq") or `value in attributes.<path>` (kind "in",
    a list holding it or a map with it as a key), for the open database."""
    return _postgres(kind, path, value) if is_postgres() else _sqlite(kind, path, value)


def _nested(path: tuple[str, ...], value: Any) -> Any:
    for name in reversed(path):
        value = {name: value}
    return value


def _postgres(kind: str, path: tuple[str, ...], value: Any) -> pw.Node:
    if kind == "in":  # a list holding the string, or a map with it as a key
        located = pw.NodeList((User.attributes, pw.SQL("#>"), pw.Value(list(path), unpack=False)))
        return pw.fn.jsonb_exists(located, value)
    doc = json.dumps(_nested(path, value))
    return pw.NodeList((User.attributes, pw.SQL("@>"), pw.Cast(pw.Value(doc), "jsonb")))


def _sqlite(kind: str, path: tuple[str, ...], value: Any) -> pw.Node:
    where = "$." + ".".join(path)
    if kind == "in":
        return pw.NodeList(
            (
                pw.SQL("EXISTS (SELECT 1 FROM json_each("),
                User.attributes,
                pw.SQL(","),
                pw.Value(where),
                pw.SQL(") AS je WHERE je.value ="),
                pw.Value(value),
                pw.SQL("OR je.key ="),
                pw.Value(value),
                pw.SQL(")"),
            )
        )
    if isinstance(value, bool):
        return pw.fn.json_type(User.attributes, where) == ("true" if value else "false")
    return pw.fn.json_extract(User.attributes, where) == value
