"""`server.core.masks`: an update mask names editable fields only, and the merge takes exactly
the named fields from the request."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from server.core import masks
from server.core.errors import InvalidArgument


@dataclass(frozen=True)
class Thing:
    name: str = ""
    size: int = 0
    colour: str = ""


def test_merge_takes_only_the_named_fields() -> None:
    stored, request = Thing("old", 1, "red"), Thing("new", 0, "")
    assert masks.merge(stored, request, ["name", "size"]) == Thing("new", 0, "red")
    assert masks.merge(stored, request, []) == stored


@pytest.mark.parametrize(
    ("mask", "problem"),
    [
        ([], "is required: name the fields to change"),
        (["name", "id"], "cannot update 'id'; editable: name, size"),
    ],
)
def test_the_mask_must_name_editable_fields(mask: list[str], problem: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        masks.require_editable(mask, ("name", "size"))
    assert [(v.field, v.description) for v in refused.value.violations] == [
        ("update_mask", problem)
    ]
    masks.require_editable(["size"], ("name", "size"))
