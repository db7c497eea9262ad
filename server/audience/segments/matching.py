"""What a segment match is: the expression evaluates to exactly `true` for the user.

One loop for both places that evaluate: `engine.evaluate_here` in the worker's own process,
and the preview sandbox's child process, which imports nothing heavier than this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def matching(program: Any, contexts: Sequence[Any]) -> list[int]:
    """Indices of the contexts for which `program` (a compiled `cel.Program`) returns exactly
    True. An evaluation error (a missing key, a type mismatch, an overflow) means "no match",
    never a failure: one user's odd data must not stop a segment."""
    execute = program.execute
    matched = []
    for index, context in enumerate(contexts):
        try:
            if execute(context) is True:
                matched.append(index)
        except Exception:
            continue
    return matched
