"""Protobuf enums as the domain's strings, read off the enum descriptors by the naming rule:
the value `PREFIX_SOME_NAME` is the domain's "some_name", where `PREFIX_UNSPECIFIED` is the
enum's zero value (CHANNEL_EMAIL <-> "email", DELIVERY_EVENT_TYPE_BOUNCED_HARD <->
"bounced_hard"). tests/unit/test_enums.py checks every domain value has its enum value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from server.core.validation import invalid

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

V = TypeVar("V", bound=int)
_ZERO = "UNSPECIFIED"


class EnumNames(Generic[V]):
    """One protobuf enum: `to_pb` (domain string -> value), `from_pb` (value -> string), and
    its zero value, `unspecified`, which names nothing."""

    def __init__(self, enum: _EnumTypeWrapper[V], domain: Callable[[str], str] = str) -> None:
        """`domain` makes the domain's value of a name (e.g. a StrEnum's member)."""
        items = enum.items()
        zero = next(name for name, number in items if number == 0)
        prefix = zero.removesuffix(_ZERO)
        if prefix == zero or not all(name.startswith(prefix) for name, _ in items):
            raise ValueError(f"{enum.DESCRIPTOR.full_name}: values are not {prefix}<NAME>")
        self.unspecified: V = enum.Value(zero)
        self.to_pb: dict[str, V] = {
            domain(name.removeprefix(prefix).lower()): number
            for name, number in items
            if number != 0
        }
        self.from_pb: dict[int, str] = {number: name for name, number in self.to_pb.items()}

    def parse(self, value: int, field: str, what: str) -> str | None:
        """The domain string for a request's value; None for the zero value, InvalidArgument
        on `field` for a number the enum does not have."""
        if value == self.unspecified:
            return None
        name = self.from_pb.get(value)
        if name is None:
            raise invalid(field, f"unknown {what} {value}")
        return name
