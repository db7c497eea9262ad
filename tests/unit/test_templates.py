"""Template compilation refuses what cannot compile with the caller's field named, never an
internal error: found by the RPC fuzzer (a body of a thousand `{` overflowed Jinja's parser)."""

from __future__ import annotations

import pytest

from server.content.templates import compile_template
from server.core.errors import InvalidArgument


@pytest.mark.parametrize("source", ["{" * 1000, "{{" * 600, "{%" * 400])
def test_deeply_nested_sources_are_invalid_arguments(source: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        compile_template(source, "sms_body")
    assert "sms_body" in str(caught.value)


def test_an_ordinary_template_compiles() -> None:
    assert (
        compile_template("Hi {{ user.first_name }}!", "sms_body").render(user={"first_name": "Ana"})
        == "Hi Ana!"
    )
