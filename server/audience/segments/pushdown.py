"""Static analysis of segment expressions: the SQL pushdown, and which user fields are read.

Pushdown: a CEL expression `c1 && c2 && ... && cn` is true only when every `ci` is true, so any
clause recognised here becomes a NECESSARY condition in SQL: the pre-filter may keep users the
expression rejects (CEL re-evaluates every candidate) but never drops one it accepts. Anything
not recognised, and any expression whose top level holds `||` or `?:`, is simply not pushed.

Only string and boolean equality and string list membership are pushed: CEL's int/double
equality (1 == 1.0, no bool/int coercion) differs from SQL and JSON, so numbers stay in CEL.

Reads: converting a Python dict to CEL values dominates evaluation time, so `reads` works out
which `user.<field>` (and which `user.attributes.<key>`) an expression can see; the engine then
hands CEL only those. Any other use of `user` (indexing, `in user`, a method on the map, a
shadowing comprehension variable) falls back to the whole user.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import cel
import peewee as pw

from server.store.models import USER_FIELDS, USER_FLAGS, USER_TEXT_FIELDS, User
from server.store.segments import attribute_condition

_RESERVED = {
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
}

# As the CEL grammar lexes them: raw strings take no escapes, triple-quoted ones may span lines
# (and are tried before single-quoted ones).
_RAW = r"""(?:[rR][bB]?|[bB][rR])(?:'''[\s\S]*?'''|\"\"\"[\s\S]*?\"\"\"|'[^'\n\r]*'|"[^"\n\r]*")"""
_COOKED = (
    r"""[bB]?(?:'''(?:\\[\s\S]|[^\\])*?'''|\"\"\"(?:\\[\s\S]|[^\\])*?\"\"\""""
    r"""|'(?:\\.|[^\\'\n\r])*'|"(?:\\.|[^\\"\n\r])*")"""
)
_TOKEN = re.compile(
    rf"(?P<skip>\s+|//[^\n]*)|(?P<str>{_RAW}|{_COOKED})|(?P<ident>[_a-zA-Z][_a-zA-Z0-9]*)"
    r"|(?P<num>[0-9][_a-zA-Z0-9.]*)|(?P<op>&&|\|\||==|!=|<=|>=|[<>!?:+\-*/%.,()\[\]{}])"
)
_OPEN, _CLOSE = "([{", ")]}"

Token = tuple[str, str]  # (kind, text): kind is str, ident, num or op


@dataclass(frozen=True)
class Clause:
    """One pushed-down condition on a column, or on a path under user.attributes."""

    kind: str  # "eq" (target == value) or "in" (value in target)
    column: str  # "attributes" or one of USER_TEXT_FIELDS / USER_FLAGS
    path: tuple[str, ...]
    value: str | bool

    def describe(self) -> str:
        target = ".".join(("user", self.column, *self.path))
        value = json.dumps(self.value, ensure_ascii=False)
        return f"{value} in {target}" if self.kind == "in" else f"{target} == {value}"


def tokenize(expression: str) -> list[Token] | None:
    """CEL tokens without whitespace and comments; None for anything this lexer does not know."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(expression):
        match = _TOKEN.match(expression, pos)
        if match is None:
            return None
        pos = match.end()
        kind = match.lastgroup or ""
        if kind != "skip":
            tokens.append((kind, match.group()))
    return tokens


@dataclass(frozen=True)
class Reads:
    """The user fields an expression reads, and the attribute keys (None: the whole map)."""

    fields: frozenset[str]
    attribute_keys: frozenset[str] | None


def _selected(tokens: list[Token], index: int) -> str | None:
    """The name in `<tokens[index]> . name` unless it is called as a method: `.name(`."""
    after = tokens[index + 1 : index + 4]
    if len(after) < 2 or after[0] != ("op", ".") or after[1][0] != "ident":
        return None
    return None if after[2:] == [("op", "(")] else after[1][1]


def reads(expression: str) -> Reads | None:
    """What of `user` the expression reads; None when it may read all of it."""
    tokens = tokenize(expression)
    if tokens is None:
        return None
    fields: set[str] = set()
    keys: set[str] | None = set()
    for index, token in enumerate(tokens):
        if token != ("ident", "user"):
            continue
        name = _selected(tokens, index)
        if name not in USER_FIELDS or (index and tokens[index - 1] == ("op", ".")):
            return None  # `user[...]`, `x in user`, `.user` or a comprehension's own `user`
        fields.add(str(name))
        if name == "attributes":
            key = _selected(tokens, index + 2)
            if key is None:
                keys = None  # the map itself is used: size(), in, [...]
            elif keys is not None:
                keys.add(key)
    return Reads(frozenset(fields), None if keys is None else frozenset(keys))


def _top_level(tokens: list[Token]) -> list[list[Token]] | None:
    """Split at depth-0 `&&`; None when the top level is a disjunction or conditional."""
    parts: list[list[Token]] = [[]]
    depth = 0
    for kind, text in tokens:
        if kind == "op" and text in _OPEN:
            depth += 1
        elif kind == "op" and text in _CLOSE:
            depth -= 1
        elif depth == 0 and kind == "op" and text in ("||", "?", ":"):
            return None
        if depth == 0 and (kind, text) == ("op", "&&"):
            parts.append([])
        else:
            parts[-1].append((kind, text))
    return parts if depth == 0 else None


def _wrapped(tokens: list[Token]) -> bool:
    """True when the whole list is one parenthesised group: `( ... )`."""
    if len(tokens) < 2 or tokens[0] != ("op", "(") or tokens[-1] != ("op", ")"):
        return False
    depth = 0
    for index, (kind, text) in enumerate(tokens):
        depth += (kind == "op" and text in _OPEN) - (kind == "op" and text in _CLOSE)
        if depth == 0:
            return index == len(tokens) - 1
    return False


def conjuncts(tokens: list[Token]) -> list[list[Token]]:
    """The top-level `&&` operands, with redundant parentheses opened up recursively."""
    out: list[list[Token]] = []
    for part in _top_level(tokens) or []:
        if _wrapped(part):
            out.extend(conjuncts(part[1:-1]))
        else:
            out.append(part)
    return out


def _path(tokens: list[Token]) -> tuple[str, tuple[str, ...]] | None:
    """`user.<column>` or `user.attributes.<a>.<b>...` as (column, path)."""
    if len(tokens) < 3 or len(tokens) % 2 == 0 or tokens[0] != ("ident", "user"):
        return None
    names = [text for kind, text in tokens[2::2] if kind == "ident" and text not in _RESERVED]
    if len(names) != len(tokens) // 2 or any(t != ("op", ".") for t in tokens[1::2]):
        return None
    if names[0] == "attributes" and len(names) > 1:
        return "attributes", tuple(names[1:])
    if names[0] in USER_TEXT_FIELDS + USER_FLAGS and len(names) == 1:
        return names[0], ()
    return None


def _literal(token: Token) -> str | bool | None:
    """The value of a string or bool literal token, decoded by CEL itself; None otherwise."""
    kind, text = token
    if kind == "ident" and text in ("true", "false"):
        return text == "true"
    if kind != "str" or text[0] in "bB" or text[:2].lower() in ("rb", "br"):
        return None
    try:
        value = cel.evaluate(text)
    except Exception:
        return None
    # A NUL (written \x00 in the expression) cannot be a PostgreSQL query parameter: CEL's.
    return value if isinstance(value, str) and "\x00" not in value else None


def _clause(
    column: str, path: tuple[str, ...], value: str | bool, kind: str = "eq"
) -> Clause | None:
    is_bool = isinstance(value, bool)
    if column in USER_TEXT_FIELDS and (is_bool or kind != "eq"):
        return None
    if column in USER_FLAGS and not is_bool:
        return None
    if kind == "in" and is_bool:
        return None
    return Clause(kind, column, path, value)


def recognise(tokens: list[Token]) -> Clause | None:
    """One conjunct as a Clause, or None when it is not a supported form."""
    negated = tokens[:1] == [("op", "!")]
    target = _path(tokens[1:] if negated else tokens)
    if target is not None:
        return _clause(*target, not negated)
    for op in ("==", "in"):
        ops = [i for i, (kind, text) in enumerate(tokens) if text == op and kind in ("op", "ident")]
        if len(ops) != 1:
            continue
        left, right = tokens[: ops[0]], tokens[ops[0] + 1 :]
        if op == "in" and len(left) == 1 and (target := _path(right)) is not None:
            value = _literal(left[0])
            return _clause(*target, value, "in") if isinstance(value, str) else None
        for side, other in ((left, right), (right, left)):
            if op == "==" and len(other) == 1 and (target := _path(side)) is not None:
                value = _literal(other[0])
                return None if value is None else _clause(*target, value)
    return None


def clauses(expression: str) -> list[Clause]:
    """Every recognised top-level conjunct of an expression (which must already compile)."""
    tokens = tokenize(expression)
    if tokens is None:
        return []
    found = (recognise(part) for part in conjuncts(tokens))
    return [clause for clause in found if clause is not None]


def exact(expression: str) -> bool:
    """True when the pushed clauses ARE the expression: every top-level conjunct is a pushed
    equality (or the literal `true`), so SQL alone decides membership and CEL need not run.

    Equalities only: string and bool equality means the same in CEL and in SQL on a column,
    in JSONB containment (`{"a": ["x"]} @> {"a": "x"}` is false below the top level) and in
    SQLite's json_extract / json_type; a missing key or another type is an error in CEL and
    no match, and false in SQL. `in` is not exact: PostgreSQL's `?` also matches a string."""
    tokens = tokenize(expression)
    return tokens is not None and _exact(tokens)


def _exact(tokens: list[Token]) -> bool:
    # Not `conjuncts`: it drops a parenthesised disjunction (fine for a necessary condition,
    # fatal here), so every part must itself be exact.
    parts = _top_level(tokens)
    if parts is None:
        return False
    for part in parts:
        if _wrapped(part):
            if not _exact(part[1:-1]):
                return False
        elif part != [("ident", "true")]:
            clause = recognise(part)
            if clause is None or clause.kind != "eq":
                return False
    return True


def to_sql(clause: Clause) -> pw.Node:
    """The clause as a peewee condition on User for the open database."""
    if clause.column != "attributes":
        return getattr(User, clause.column) == clause.value
    return attribute_condition(clause.kind, clause.path, clause.value)
