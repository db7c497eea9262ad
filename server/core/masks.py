"""Updates by field mask: the mask must name editable fields only, and the update is the stored
value with just the fields the mask names taken from the request (AIP-134). The use cases check
the mask before reading anything, then merge inside their transaction."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import Any, ClassVar, Protocol, TypeVar

from server.core.validation import Violations


class _Dataclass(Protocol):  # what dataclasses.replace accepts
    __dataclass_fields__: ClassVar[dict[str, Any]]


D = TypeVar("D", bound=_Dataclass)


def require_editable(mask: Collection[str], editable: Sequence[str]) -> None:
    """InvalidArgument unless `mask` names at least one field, and only `editable` ones."""
    v = Violations()
    v.update_mask(mask, editable)
    v.raise_if_any()


def merge(current: D, data: D, mask: Collection[str]) -> D:
    """`current` with the fields `mask` names taken from `data` (both the same dataclass)."""
    changes: dict[str, Any] = {name: getattr(data, name) for name in mask}
    return replace(current, **changes)
