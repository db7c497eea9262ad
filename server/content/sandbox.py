"""The bounded Jinja2 environment every message template compiles in (`server.content.templates`).

Templates come from callers, so beyond the sandbox (no attribute of Python internals, no
mutation) a render is bounded in time and size (limits in `server.config`):
- every loop step, call, attribute read, intercepted operator and output chunk counts against
  a deadline (MAX_RENDER_SECONDS); loops are wrapped at compile time so even an empty nested
  loop is counted;
- what could build a huge value in one step is checked before it runs: `*` and `**`, string
  concatenation (`~`, `+`), `range`, and filters taking a width or count (`center`, `indent`,
  `batch`, `replace`, `join`, `format`...); the output is cut off at MAX_RENDERED_LENGTH;
- `namespace` (the only way to grow a value across loop steps) and `lipsum` are not offered,
  and `include`, `import` and `extends` are refused: templates read no files.
"""

from __future__ import annotations

import operator
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from functools import partial
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.runtime import markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from server import config

_GUARD_ITER = "_bounded_iter"
_GUARD_CONCAT = "_bounded_concat"
_CHECK_EVERY = 128  # steps between two looks at the clock


class RenderLimitExceeded(jinja2.TemplateError):
    """A render ran past its time or size budget."""


# --- the budget of the render running on this thread -----------------------------------------


class _Budget(threading.local):
    """The deadline of the render running on this thread (None: none running) and its steps."""

    deadline: float | None = None
    steps = 0


_budget = _Budget()


def _step() -> None:
    """Count one step of the current render; past its deadline, stop it."""
    budget = _budget
    if budget.deadline is None:  # not inside render(): compile-time folding, or other use
        return
    budget.steps += 1
    if budget.steps % _CHECK_EVERY == 0 and time.monotonic() > budget.deadline:
        raise RenderLimitExceeded(f"took longer than {config.MAX_RENDER_SECONDS} s")


def _check_size(size: int, what: str) -> None:
    if size > config.MAX_RENDERED_LENGTH:
        raise RenderLimitExceeded(
            f"{what} would be {size} long; the limit is {config.MAX_RENDERED_LENGTH}"
        )


def _length(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes | list | tuple) else 0


def _bounded_iter(iterable: Any) -> Iterator[Any]:
    """Every `for` loop iterates through this: each item is a step."""
    for item in iterable:
        _step()
        yield item


def _bounded_concat(join: Callable[[Iterable[Any]], str], *parts: Any) -> str:
    """`a ~ b`: the joined length is checked before joining (as Jinja joins: escaping the
    other parts when one is markup)."""
    _check_size(sum(len(str(part)) for part in parts), "a concatenation")
    return join(parts)


def _bounded_range(*args: int) -> range:
    items = range(*args)
    _check_size(len(items), "range()")
    return items


def _power(base: Any, exponent: Any) -> Any:
    # Refused before computing: 9**9**9 would hold the CPU for hours.
    ints = isinstance(base, int) and isinstance(exponent, int)
    if ints and abs(base) > 1 and exponent > 0 and exponent * abs(base).bit_length() > 4096:
        raise RenderLimitExceeded("a power that large is not computed")
    return operator.pow(base, exponent)


def _multiply(left: Any, right: Any) -> Any:
    count = right if isinstance(right, int) else left if isinstance(left, int) else 1
    _check_size(max(_length(left), _length(right)) * max(count, 0), "a repetition")
    return operator.mul(left, right)


def _add(left: Any, right: Any) -> Any:
    _check_size(_length(left) + _length(right), "a concatenation")
    return operator.add(left, right)


# --- filters that take a size from the template ----------------------------------------------

_WIDE_FORMAT = re.compile(r"%[-+ #0]*(?:\d{5,}|\*)|\.\d{5,}")


# Filters whose arguments after the value are widths or counts: checked before they run.
_SIZED_FILTERS = frozenset({"batch", "center", "indent", "slice", "truncate", "wordwrap", "urlize"})


def _guarded_filter(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """`original` with its size arguments checked first and its result's length after."""
    skip = 2 if getattr(original, "jinja_pass_arg", None) is not None else 1  # context, value

    def guarded(*args: Any, **kwargs: Any) -> Any:
        _step()
        if name in _SIZED_FILTERS:
            for value in (*args[skip:], *kwargs.values()):
                if isinstance(value, int):
                    _check_size(abs(value), f"the {name} filter's argument")
        result = original(*args, **kwargs)
        if isinstance(result, str | list):
            _check_size(len(result), f"the {name} filter's result")
        return result

    # Keeps jinja's markers (pass_context, pass_eval_context) on the wrapper.
    guarded.__dict__.update(getattr(original, "__dict__", {}))
    return guarded


def _replace_guard(original: Callable[..., Any]) -> Callable[..., Any]:
    def replace(eval_ctx: Any, value: Any, old: Any, new: Any, count: Any = None) -> Any:
        text, old_text, new_text = str(value), str(old), str(new)
        hits = text.count(old_text) if old_text else len(text) + 1
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        _check_size(len(text) + hits * (len(new_text) - len(old_text)), "a replace result")
        return original(eval_ctx, value, old, new, count)

    replace.__dict__.update(getattr(original, "__dict__", {}))
    return replace


def _join_guard(original: Callable[..., Any]) -> Callable[..., Any]:
    def join(eval_ctx: Any, value: Any, d: Any = "", attribute: Any = None) -> Any:
        items = list(value) if isinstance(value, Iterable) else value
        if isinstance(items, list):
            size = sum(len(str(i)) for i in items) + len(str(d)) * max(len(items) - 1, 0)
            _check_size(size, "a join result")
        return original(eval_ctx, items, d, attribute)

    join.__dict__.update(getattr(original, "__dict__", {}))
    return join


def _format_guard(original: Callable[..., Any]) -> Callable[..., Any]:
    def format_(value: Any, *args: Any, **kwargs: Any) -> Any:
        if _WIDE_FORMAT.search(str(value)):
            raise RenderLimitExceeded("format widths and precisions are limited to 4 digits")
        return original(value, *args, **kwargs)

    format_.__dict__.update(getattr(original, "__dict__", {}))
    return format_


_SPECIAL_FILTERS = {"replace": _replace_guard, "join": _join_guard, "format": _format_guard}


def _guard(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    special = _SPECIAL_FILTERS.get(name)
    return special(original) if special else _guarded_filter(name, original)


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with every step counted against the render's budget."""

    intercepted_binops = frozenset({"*", "**", "+"})

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(autoescape=autoescape, undefined=jinja2.ChainableUndefined)
        self.binop_table = {**self.binop_table, "*": _multiply, "**": _power, "+": _add}
        for name in ("namespace", "lipsum"):
            self.globals.pop(name, None)
        concat = partial(_bounded_concat, markup_join if autoescape else str_join)
        self.globals.update(
            range=_bounded_range, **{_GUARD_ITER: _bounded_iter, _GUARD_CONCAT: concat}
        )
        self.filters = {name: _guard(name, original) for name, original in self.filters.items()}

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        """A template's globals as one flat dict, not Jinja's ChainMap over the environment's:
        every render copies them into its context, and walking a ChainMap is a large part of
        a short render. Nothing changes these globals once the environment is built."""
        return {**self.globals, **(d or {})}

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _step()
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _step()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _step()
        return super().getitem(obj, argument)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _step()
        return super().call_binop(context, operator, left, right)


ENVS = {True: BoundedEnvironment(autoescape=True), False: BoundedEnvironment(autoescape=False)}
_FORBIDDEN_NODES = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)


class _Bound(NodeTransformer):
    """Routes each loop's iterable and each `~` through the guards above."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _call(_GUARD_ITER, [node.iter], node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _call(_GUARD_CONCAT, node.nodes, node.lineno)


def _call(name: str, args: list[Any], lineno: int) -> nodes.Call:
    return nodes.Call(nodes.Name(name, "load"), args, [], None, None, lineno=lineno)


def bounded_ast(env: jinja2.Environment, source: str) -> nodes.Template:
    """The parsed template, guarded; SyntaxError for what would read another file."""
    ast = env.parse(source)
    node = next(iter(ast.find_all(_FORBIDDEN_NODES)), None)
    if node is not None:
        raise jinja2.TemplateSyntaxError(
            f"{type(node).__name__.lower()} is not allowed: templates cannot read other files",
            node.lineno,
        )
    bounded = _Bound().visit(ast)
    bounded.set_environment(env)
    return bounded


def bounded_render(template: jinja2.Template, context: dict[str, Any]) -> str:
    """Template.render, chunk by chunk, stopping at the size limit (time: see _step)."""
    limit = config.MAX_RENDERED_LENGTH
    _budget.deadline = time.monotonic() + config.MAX_RENDER_SECONDS
    _budget.steps = 0
    try:
        chunks: list[str] = []
        size = 0
        # generate() raises a template's errors as render() does (with template line numbers).
        for chunk in template.generate(context):
            size += len(chunk)
            if size > limit:
                _check_size(size, "the rendered text")
            chunks.append(chunk)
        return "".join(chunks)
    finally:
        _budget.deadline = None
