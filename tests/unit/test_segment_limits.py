"""Shapes of segment expressions refused before compiling (server.audience.segments.limits):
the costly shapes the workers' calculations and PreviewSegment would otherwise meet."""

from __future__ import annotations

import pytest

from server.audience.segments.limits import shape_problem


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("user.attributes.tags.exists(t, t.matches('^vip'))", "matches() inside a macro"),
        ("[1, 2].all(x, 'a'.matches('a') || x > 1)", "matches() inside a macro"),
        ("user.first_name.matches('\\\\w{1,100}x')", "at most 32 counted repetitions"),
        ("user.phone.matches('\\\\d{20}\\\\d{20}')", "got 40"),
        ("user.a.map(x, x).exists(y, y.exists(z, true))", "inside another macro"),
    ],
)
def test_costly_shapes_are_refused(expression: str, problem: str) -> None:
    found = shape_problem(expression)
    assert found is not None and problem in found, found


@pytest.mark.parametrize(
    "expression",
    [
        "user.first_name.matches('^A[a-z]{2,10}$')",
        "user.attributes.tags.exists(t, t == 'vip') && user.email.matches('@example\\\\.com$')",
        "user.phone.matches('^\\\\+45\\\\d{8}$')",
    ],
)
def test_ordinary_expressions_pass(expression: str) -> None:
    assert shape_problem(expression) is None
