"""Message templates: Jinja2 in a sandbox, autoescaped for HTML, forgiving of missing data.

A template that does not compile is the caller's mistake (InvalidArgument with the line).
A variable a user lacks renders empty (ChainableUndefined), so personal data never crashes a
send; other runtime errors become RenderError, which a send records against that recipient.

Templates come from callers: they compile in `server.content.sandbox`, which bounds a
render's time and size and refuses what would read files.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import html2text
import jinja2

from server import config
from server.content.sandbox import ENVS, bounded_ast, bounded_render
from server.core.validation import NUL_MESSAGE, has_nul, invalid
from server.store.models import USER_TEXT_FIELDS


class RenderError(Exception):
    """A template failed at render time for one recipient."""


@lru_cache(maxsize=512)
def _compile(source: str, html: bool) -> jinja2.Template:
    env = ENVS[html]
    return env.from_string(bounded_ast(env, source))


def compile_template(source: str, field: str, *, html: bool = False) -> jinja2.Template:
    """The compiled template, or InvalidArgument naming `field` and the line at fault."""
    if len(source) > config.MAX_TEMPLATE_LENGTH:
        raise invalid(field, f"must be at most {config.MAX_TEMPLATE_LENGTH} characters")
    if has_nul(source):
        raise invalid(field, NUL_MESSAGE)
    try:
        return _compile(source, html)
    except jinja2.TemplateSyntaxError as exc:
        raise invalid(field, f"line {exc.lineno}: {exc.message}") from None
    except RecursionError:  # Jinja's parser recurses per nesting level (`{{{{{{...`)
        raise invalid(field, "nests too deeply to compile") from None


def render(template: jinja2.Template, context: dict[str, Any]) -> str:
    try:
        return bounded_render(template, context)
    except jinja2.TemplateError as exc:
        raise RenderError(str(exc)) from exc
    # RecursionError: a macro or recursive loop without end; MemoryError: a value too big.
    except (
        ArithmeticError,
        TypeError,
        ValueError,
        LookupError,
        RecursionError,
        MemoryError,
    ) as exc:
        raise RenderError(f"{type(exc).__name__}: {exc}") from exc


def html_to_text(html: str) -> str:
    """A readable plain-text alternative for an HTML body (links kept inline)."""
    converter = html2text.HTML2Text()
    converter.body_width = 0
    converter.ignore_images = True
    return converter.handle(html).strip() + "\n"


_JINJA = re.compile(r"{{.*?}}|{%.*?%}|{#.*?#}", re.DOTALL)


@lru_cache(maxsize=256)
def text_template_from_html(html_source: str) -> jinja2.Template | None:
    """A plain-text template derived from an HTML template, once: its Jinja tags are swapped
    for inert placeholders, the HTML converted, and the tags put back. None when the result
    does not hold every tag in order or does not compile (convert per recipient then)."""
    tags = _JINJA.findall(html_source)
    placeholders = [f"jinjatag{n}x" for n in range(len(tags))]
    counter = iter(placeholders)
    text = html_to_text(_JINJA.sub(lambda _m: next(counter), html_source))
    positions = [text.find(p) for p in placeholders]
    if any(pos < 0 for pos in positions) or positions != sorted(positions):
        return None
    for placeholder, tag in zip(placeholders, tags, strict=True):
        text = text.replace(placeholder, tag, 1)
    try:
        return _compile(text, False)
    except jinja2.TemplateSyntaxError:
        return None


def context(user: Any | None, edition: Any | None, unsubscribe_url: str) -> dict[str, Any]:
    """What every template renders with: `user`, `edition` and `unsubscribe_url`."""
    return {
        "user": _user_context(user),
        "edition": _edition_context(edition),
        "unsubscribe_url": unsubscribe_url,
    }


def _user_context(user: Any | None) -> dict[str, Any]:
    """What templates see as `user`: its public fields and attributes."""
    if user is None:
        return {}
    fields = {name: getattr(user, name) for name in ("id", *USER_TEXT_FIELDS)}
    return fields | {"attributes": user.attributes or {}}


def _edition_context(edition: Any | None) -> dict[str, Any]:
    if edition is None:
        return {}
    fields = ("id", "name", "timezone", "default_language", "start_date", "end_date")
    return {name: getattr(edition, name) for name in fields}
