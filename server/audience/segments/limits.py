"""Shapes of segment expressions refused before they are compiled: NUL, brackets nested too
deep, too many comprehension macros, one macro inside another, `matches()` inside a macro,
and `matches()` patterns with large counted repetitions. CEL has no loops, but its macros walk
lists and map/filter rebuild their result at every step, and `matches()` compiles its pattern
on every call (a pattern such as `\\w{1,100}\\w{1,100}x` is slow to compile: its counted
repetitions expand), so these shapes are what can make one evaluation take seconds or minutes. The
sandbox (`server.audience.segments.sandbox`) bounds what is left by time, in PreviewSegment and
in the workers' calculations alike."""

from __future__ import annotations

import re

from server.audience.segments.pushdown import Token, tokenize
from server.config import MAX_COMPREHENSIONS, MAX_EXPRESSION_NESTING, MAX_PATTERN_REPEAT
from server.core.validation import NUL_MESSAGE, has_nul

_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_OPENING, _CLOSING = "([{", ")]}"


def _nesting(tokens: list[Token]) -> int:
    depth = deepest = 0
    for kind, text in tokens:
        if kind == "op" and text in _OPENING:
            depth += 1
            deepest = max(deepest, depth)
        elif kind == "op" and text in _CLOSING:
            depth -= 1
    return deepest


def _comprehension_problem(tokens: list[Token]) -> str | None:
    """Comprehension macros (`x.map(v, ...)`, `x.exists(v, ...)`...) cost their list's length
    times their body, and map/filter rebuild their result at every step: a few, never one
    inside another, keeps one evaluation to milliseconds."""
    count = 0
    open_macros: list[int] = []  # bracket depth at which each enclosing macro call opened
    depth = 0
    for index, (kind, text) in enumerate(tokens):
        if kind == "op" and text in _OPENING:
            depth += 1
        elif kind == "op" and text in _CLOSING:
            depth -= 1
            while open_macros and open_macros[-1] > depth:
                open_macros.pop()
        is_call = (
            kind == "ident"
            and tokens[index - 1 : index] == [("op", ".")]
            and tokens[index + 1 : index + 2] == [("op", "(")]
        )
        if is_call and text == "matches" and open_macros:
            return "matches() inside a macro's arguments is not allowed (it compiles per item)"
        if not (is_call and text in _MACROS):
            continue
        if open_macros:
            return f"{text}() inside another macro's arguments is not allowed"
        count += 1
        open_macros.append(depth + 1)
    if count > MAX_COMPREHENSIONS:
        return f"at most {MAX_COMPREHENSIONS} all/exists/exists_one/map/filter macros, got {count}"
    return None


_REPEAT = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


def _pattern_problem(tokens: list[Token]) -> str | None:
    """A `matches()` pattern whose counted repetitions ({m,n}) are large: the automaton grows
    with the count (and with Unicode classes such as \\w), and it is built on every call."""
    for index, (kind, text) in enumerate(tokens):
        if not (kind == "ident" and text == "matches" and tokens[index + 1 : index + 2]):
            continue
        pattern = tokens[index + 2 : index + 3]
        if not pattern or pattern[0][0] != "str":
            continue
        # Each {m,n} (or {m}) adds its largest count: their total bounds the automaton.
        total = sum(int(m[2] or m[1]) for m in _REPEAT.finditer(pattern[0][1]))
        if total > MAX_PATTERN_REPEAT:
            return (
                f"a matches() pattern may use at most {MAX_PATTERN_REPEAT} counted repetitions"
                f" in all ({{m,n}} counts add up), got {total}"
            )
    return None


_ROUGH = re.compile(r"[A-Za-z_][A-Za-z_0-9]*|[()\[\]{}.]")


def _rough_tokens(expression: str) -> list[Token]:
    """Identifiers, dots and brackets, strings ignored: for what `tokenize` cannot lex (which
    CEL most likely refuses too). It can only over-count, never let a costly shape through."""
    return [
        ("ident" if match[0].isalpha() or match[0] == "_" else "op", match)
        for match in _ROUGH.findall(expression)
    ]


def shape_problem(expression: str) -> str | None:
    """Why an expression of this size or shape is refused before it is compiled, if it is."""
    if has_nul(expression):
        return NUL_MESSAGE
    tokens = tokenize(expression) or _rough_tokens(expression)
    if _nesting(tokens) > MAX_EXPRESSION_NESTING:
        return f"nests brackets more than {MAX_EXPRESSION_NESTING} deep"
    return _comprehension_problem(tokens) or _pattern_problem(tokens)
