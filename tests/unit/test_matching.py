"""`server.audience.segments.matching`: a user matches only when the expression is exactly
`true`; other values and evaluation errors are no match."""

from __future__ import annotations

import cel

from server.audience.segments.matching import matching


def test_only_exactly_true_matches() -> None:
    program = cel.compile("user.value")
    contexts = [{"user": {"value": v}} for v in (True, 1, "true", False, None, [True])]
    assert matching(program, contexts) == [0]


def test_an_evaluation_error_is_no_match() -> None:
    program = cel.compile("user.attributes.n > 1")
    contexts = [
        {"user": {"attributes": {"n": 2}}},
        {"user": {"attributes": {}}},  # missing key
        {"user": {"attributes": {"n": "x"}}},  # type mismatch
        {"user": {"attributes": {"n": 5}}},
    ]
    assert matching(program, contexts) == [0, 3]
