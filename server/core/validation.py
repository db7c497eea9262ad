"""Collect every field violation of a request before refusing it, so callers fix all at once."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from server.core.errors import FieldViolation, InvalidArgument

# PostgreSQL text cannot hold NUL (its driver refuses such a query outright) and no field of
# this API has a use for it: refused everywhere, so both databases answer alike.
NUL_MESSAGE = "must not contain NUL (U+0000) characters"


def has_nul(value: str) -> bool:
    return "\x00" in value


class Violations:
    """A list of bad fields; `raise_if_any` turns it into one InvalidArgument."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def check(self, ok: bool, field: str, description: str) -> bool:
        if not ok:
            self.add(field, description)
        return ok

    def text(self, value: str, field: str, *, max_length: int, required: bool = False) -> None:
        if required and not value.strip():
            self.add(field, "is required and must not be blank")
        elif len(value) > max_length:
            self.add(field, f"must be at most {max_length} characters, got {len(value)}")
        else:
            self.no_nul(value, field)

    def no_nul(self, value: str, field: str) -> None:
        self.check(not has_nul(value), field, NUL_MESSAGE)

    def positive_id(self, value: int, field: str, *, required: bool = True) -> None:
        if value < 0 or (required and value == 0):
            self.add(
                field, "is required and must be a positive id" if required else "must be positive"
            )

    def update_mask(self, mask: Collection[str], editable: Sequence[str]) -> None:
        """A field mask must name at least one field, and only editable ones."""
        self.check(bool(mask), "update_mask", "is required: name the fields to change")
        for path in mask:
            self.check(
                path in editable,
                "update_mask",
                f"cannot update {path!r}; editable: {', '.join(editable)}",
            )

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(list(self.items))


def invalid(field: str, description: str) -> InvalidArgument:
    """A single-field InvalidArgument, for checks that stop at the first problem."""
    return InvalidArgument([FieldViolation(field, description)])
