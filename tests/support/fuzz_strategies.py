"""Hypothesis strategies for arbitrary (often hostile) protobuf requests, built from descriptors.

`drafts(descriptor)` draws a *draft*: a dict of field name to value, nested for message fields,
a list for repeated ones. Id fields may hold a `Ref` ("the id of the test's campaign") instead
of a number, since the objects they name exist only once the test runs; `to_message` turns a
draft into a message, resolving each Ref. Nothing here is specific to one RPC: a new RPC or
field is covered as soon as it is in the descriptors.

What is drawn, per field type:
- strings: weird unicode (controls, NUL, RTL marks, astral, combining), huge strings (to
  ~100 KB), and realistic values for fields whose name says what they hold;
- integers: the type's extremes, negatives, small values and Refs for ids;
- doubles: inf, nan, -0.0, huge and tiny; enums: defined values and unknown ones (999, -1);
- Timestamp: in range, beyond year 9999, before year 1, negative or too large nanos;
- FieldMask: the sibling message's field names, mixed with nonsense paths;
- Struct: nested JSON-like values with nan, inf, huge numbers, odd keys.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor as d
from google.protobuf import message_factory
from google.protobuf.message import Message
from hypothesis import strategies as st

INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)
UINT64 = (0, 2**64 - 1)
UINT32 = (0, 2**32 - 1)
MAX_DEPTH = 3  # nested message levels drawn before fields are left unset
HUGE = 100_000  # characters in the largest drawn string

# Field name -> kind of object its id names (None: decided by the enclosing message's name).
ID_KINDS = {
    "organization_id": "organization",
    "edition_id": "edition",
    "edition_ids": "edition",
    "segment_id": "segment",
    "email_message_id": "email_message",
    "campaign_id": "campaign",
    "user_id": "user",
    "id": None,
}
# Checked in order: "EmailMessage" before "Message"-less names.
_KIND_BY_MESSAGE = (
    ("EmailMessage", "email_message"),
    ("Recipient", "campaign"),
    ("Campaign", "campaign"),
    ("Edition", "edition"),
    ("Segment", "segment"),
    ("User", "user"),
)
KINDS = ("organization", "edition", "segment", "email_message", "campaign", "sent_campaign", "user")
# A campaign id names a draft campaign or, as often, one already sent that has a ledger.
ALIASES = {"campaign": ("campaign", "sent_campaign")}


@dataclass(frozen=True)
class Ref:
    """Stands for the id of the test's object of `kind`, resolved when the message is built."""

    kind: str


@dataclass(frozen=True)
class StructDraft:
    """A google.protobuf.Struct's content, kept apart so `to_message` can `update()` it."""

    value: dict[str, Any]


# --- strings ---------------------------------------------------------------------------------

WEIRD_CHARS = st.characters(
    codec="utf-8",  # no lone surrogates: a protobuf string cannot hold them
    categories=("L", "M", "N", "P", "S", "Z", "Cc", "Cf", "Co"),
)
NASTY = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\r\n",
    "\u202e\u0631\u062a",  # RTL override and Arabic
    "\ufeff",
    "\U0001f600" * 3,
    "e\u0301" * 5,
    "\u0000\u001f\u007f\u0085\u2028\u2029",
    "%s%n%x",
    "'; DROP TABLE campaigns; --",
    "../../etc/passwd",
    "{{ 7 * 7 }}",
    "{% for i in range(10) %}x{% endfor %}",
    "${jndi:ldap://x}",
    "\\",
    "\U0010ffff",
    "٤٥",  # Arabic-Indic digits
    "+٤٥",
]


def huge_strings() -> st.SearchStrategy[str]:
    """Long strings made by repeating a short seed: cheap to draw, up to ~100 KB."""
    return st.tuples(st.text(WEIRD_CHARS, min_size=1, max_size=4), st.integers(1_000, HUGE)).map(
        lambda pair: (pair[0] * (pair[1] // len(pair[0]) + 1))[: pair[1]]
    )


def weird_strings() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(NASTY),
        st.text(WEIRD_CHARS, max_size=40),
        huge_strings(),
    )


CEL = [
    "true",
    "user.email_consent",
    "user.attributes.vip == true",
    "user.language == 'da' && user.sms_consent",
    "'vip' in user.attributes.tags",
    "user.attributes.tickets > 0",
    "size(user.first_name) > 2",
    "user.attributes.tags.exists(t, t == 'x')",
    "1 / 0 == 1",
    "user.",
    "((((",
    "'a' + 1",
    "user.attributes['k'] == 'v'",
    "9223372036854775807 + 1 > 0",
    "[1,2,3].map(a, [1,2,3].map(b, [1,2,3].map(c, a + b + c)))",
    "'\\x00' == user.first_name",
    "user.attributes.s.matches('(a+)+$')",
]
TEMPLATES = [
    "Hi {{ user.first_name }}",
    "<p>Hello {{ user.first_name|e }}</p><a href='{{ unsubscribe_url }}'>Stop</a>",
    "{{ ''.__class__.__mro__ }}",
    "{{ user.__class__ }}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}",
    "{% for i in range(10**9) %}x{% endfor %}",
    "{{ 'x' * 10**9 }}",
    "{{ 9**9**9 }}",
    "{{ 1 / 0 }}",
    "{% if %}",
    "{{ user.attributes.tickets + 'a' }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ range.__self__ }}",
    "{% extends 'base.html' %}",
]
EMAILS = ["news@festival.example", "a@b", "not-an-email", "x@[127.0.0.1]", "é@ø.dk", "<a@b.c>"]
PHONES = ["+4512345678", "12345678", "+1 (202) 555-0143", "+999999999999999999", "phone"]
TIMEZONES = ["Europe/Copenhagen", "UTC", "America/New_York", "Europe", "../etc/passwd", "Nope/X"]
DATES = ["2027-06-01", "2027-06-30", "2027-13-45", "0001-01-01", "9999-12-31", "yesterday"]

# Realistic values for fields whose name says what they hold, so calls get past validation.
# Field name -> values that pass validation (with the objects of the test's world), for the
# realistic drafts that must get past validation to reach deeper code.
VALID_STRINGS: dict[str, list[str]] = {
    "expression": CEL[:8],
    "sms_body": [*TEMPLATES[:2], ""],  # "" for email campaigns
    "body": TEMPLATES[:2],
    "subject": ["Hi {{ user.first_name }}", "News"],
    "html_body": TEMPLATES[:2],
    "text_body": ["Hello {{ user.first_name }}", ""],
    "from_email": EMAILS[:1],
    "reply_to": [*EMAILS[:1], ""],
    "email": ["ada@festival.example", "bo@festival.example"],
    "phone": ["+4520123456", "+4540123456", ""],
    "timezone": TIMEZONES[:3],
    "start_date": ["2027-06-01", ""],
    "end_date": ["2027-06-30", ""],
    "default_country_code": ["+45", "+1", ""],
    "default_language": ["da", "en"],
    "language": ["da", "en"],
    "ordering": ["name", "-created", "scheduled_at", "-total_recipients"],
    "name": ["Summer", "Early birds"],
    "external_id": ["u1", "u2", "u3"],
    "first_name": ["Ada", "Bo"],
    "last_name": ["Lovelace", ""],
    "request_id": ["r-1", "r-2", ""],
    "search": ["Early", ""],
    "url": ["https://festival.example/x"],
    "event_id": ["e-1", "e-2", ""],
    "provider_message_id": ["<m@campaigns.local>", ""],
    "etag": [""],
}
STRING_HINTS: dict[str, list[str]] = {
    "expression": CEL,
    "sms_body": TEMPLATES,
    "body": TEMPLATES,
    "subject": TEMPLATES,
    "html_body": TEMPLATES,
    "text_body": TEMPLATES,
    "from_email": EMAILS,
    "reply_to": EMAILS,
    "email": EMAILS,
    "phone": PHONES,
    "timezone": TIMEZONES,
    "start_date": DATES,
    "end_date": DATES,
    "default_country_code": ["+45", "+1", "", "+", "+999999", "45"],
    "default_language": ["da", "en", ""],
    "language": ["da", "en", ""],
    "ordering": ["name", "-created", "scheduled_at", "-total_recipients", "bogus", "--name"],
    "name": ["Summer", "  ", "Early birds"],
    "external_id": ["u1", "u2", "u3"],
    "first_name": ["Ada", "Bo"],
    "request_id": ["r-1", "r-2"],
    "search": ["Early", "%", "_"],
    "url": ["https://festival.example/x", "javascript:alert(1)"],
    "event_id": ["e-1", "e-2"],
    "provider_message_id": ["<m@campaigns.local>", "m@campaigns.local"],
}


def string_values(name: str) -> st.SearchStrategy[str]:
    hints = STRING_HINTS.get(name)
    if hints is None:
        return weird_strings()
    # Mostly realistic values, so the fuzzer reaches the code behind validation.
    return st.one_of(st.sampled_from(hints), st.sampled_from(hints), weird_strings())


# --- numbers ---------------------------------------------------------------------------------


def int_values(bounds: tuple[int, int]) -> st.SearchStrategy[int]:
    low, high = bounds
    edges = sorted({low, high, 0, 1, min(high, 2**31), max(low, -1), min(high, 2**53 + 1)})
    return st.one_of(
        st.sampled_from([e for e in edges if low <= e <= high]),
        st.integers(max(low, 0), min(high, 1000)),
        st.integers(low, high),
    )


def double_values() -> st.SearchStrategy[float]:
    return st.one_of(
        st.sampled_from([math.inf, -math.inf, math.nan, -0.0, 1e308, -1e308, 5e-324, 2.0**53]),
        st.floats(allow_nan=True, allow_infinity=True),
    )


def _id_kind(field: d.FieldDescriptor) -> str | None:
    if field.name not in ID_KINDS:
        return None
    kind = ID_KINDS[field.name]
    if kind is not None:
        return kind
    owner = field.containing_type.name
    return next((k for fragment, k in _KIND_BY_MESSAGE if fragment in owner), None)


_SCALAR_BOUNDS = {
    d.FieldDescriptor.TYPE_INT64: INT64,
    d.FieldDescriptor.TYPE_SINT64: INT64,
    d.FieldDescriptor.TYPE_SFIXED64: INT64,
    d.FieldDescriptor.TYPE_INT32: INT32,
    d.FieldDescriptor.TYPE_SINT32: INT32,
    d.FieldDescriptor.TYPE_SFIXED32: INT32,
    d.FieldDescriptor.TYPE_UINT64: UINT64,
    d.FieldDescriptor.TYPE_FIXED64: UINT64,
    d.FieldDescriptor.TYPE_UINT32: UINT32,
    d.FieldDescriptor.TYPE_FIXED32: UINT32,
}


def _integer(field: d.FieldDescriptor) -> st.SearchStrategy[Any]:
    values: st.SearchStrategy[Any] = int_values(_SCALAR_BOUNDS[field.type])
    kind = _id_kind(field)
    if kind is not None:
        # Half the time the id of a real object, so calls go deep, not only fail lookups.
        own = st.sampled_from([Ref(k) for k in ALIASES.get(kind, (kind,))])
        values = st.one_of(own, st.sampled_from([Ref(k) for k in KINDS]), values)
    return values


# --- well-known types ------------------------------------------------------------------------

MAX_TIMESTAMP = 253_402_300_799  # 9999-12-31T23:59:59Z
MIN_TIMESTAMP = -62_135_596_800  # 0001-01-01T00:00:00Z


def timestamps() -> st.SearchStrategy[dict[str, int]]:
    seconds = st.one_of(
        st.integers(MIN_TIMESTAMP, MAX_TIMESTAMP),
        st.integers(1_700_000_000, 2_200_000_000),  # around now: schedulable times
        st.sampled_from([MAX_TIMESTAMP + 1, MIN_TIMESTAMP - 1, INT64[0], INT64[1], 0, -1]),
    )
    nanos = st.one_of(st.just(0), st.integers(0, 999_999_999), int_values(INT32))
    return st.fixed_dictionaries({"seconds": seconds, "nanos": nanos})


def field_masks(owner: d.Descriptor) -> st.SearchStrategy[dict[str, list[str]]]:
    """Paths from the request's other message fields' names, plus nonsense."""
    names = sorted(
        {f.name for field in owner.fields if field.message_type for f in field.message_type.fields}
        | {f.name for f in owner.fields}
    )
    path = st.one_of(
        st.sampled_from(names), st.sampled_from(["", "a.b", "*", "name.x", "NAME"]), weird_strings()
    )
    return st.fixed_dictionaries({"paths": st.lists(path, max_size=4)})


def json_values() -> st.SearchStrategy[Any]:
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        double_values(),
        st.integers(-(2**60), 2**60).map(float),
        weird_strings(),
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.text(WEIRD_CHARS, max_size=8), inner)
        ),
        max_leaves=12,
    )


def structs() -> st.SearchStrategy[StructDraft]:
    keys = st.one_of(st.sampled_from(["vip", "tickets", "tags", ""]), st.text(WEIRD_CHARS))
    return st.dictionaries(keys, json_values(), max_size=5).map(StructDraft)


# --- realistic values ------------------------------------------------------------------------


def _realistic_scalar(field: d.FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    if t in _SCALAR_BOUNDS:
        kind = _id_kind(field)
        if kind is not None:
            return st.sampled_from([Ref(k) for k in ALIASES.get(kind, (kind,))])
        return st.integers(0, 20)  # pages, page sizes, sample sizes
    if t == d.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == d.FieldDescriptor.TYPE_STRING:
        valid = VALID_STRINGS.get(field.name)
        return st.sampled_from(valid) if valid else st.text("abcdefgh xyz", max_size=12)
    if t == d.FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values if v.number]
        return st.sampled_from(known or [0])
    if t in (d.FieldDescriptor.TYPE_DOUBLE, d.FieldDescriptor.TYPE_FLOAT):
        return st.floats(0, 100)
    return st.binary(max_size=8)


def _realistic_message(
    message: d.Descriptor, owner: d.Descriptor, depth: int, mutate: bool
) -> st.SearchStrategy[Any] | None:
    name = message.full_name
    if name == "google.protobuf.Timestamp":  # a day ago to a month ahead
        now = int(time.time())
        return st.fixed_dictionaries({"seconds": st.integers(now - 86_400, now + 30 * 86_400)})
    if name == "google.protobuf.FieldMask":
        nested = [f.message_type for f in owner.fields if f.message_type is not None]
        names = sorted({f.name for m in nested for f in m.fields} or {"name"})
        return st.fixed_dictionaries(
            {"paths": st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)}
        )
    if name == "google.protobuf.Struct":
        attributes = st.fixed_dictionaries(
            {
                "vip": st.booleans(),
                "tickets": st.integers(0, 5),
                "tags": st.lists(st.sampled_from(["x", "y", "early-bird"]), max_size=3),
            }
        )
        return attributes.map(StructDraft)
    if depth >= MAX_DEPTH:
        return None
    return drafts(message, depth + 1, mode="mixed" if mutate else "realistic")


def _realistic_field(
    field: d.FieldDescriptor, owner: d.Descriptor, depth: int, mutate: bool
) -> st.SearchStrategy[Any]:
    if field.message_type is not None:
        single = _realistic_message(field.message_type, owner, depth, mutate)
    else:
        single = _realistic_scalar(field)
    if single is None:
        return st.none()
    if field.is_repeated:
        return st.lists(single, min_size=1, max_size=3)
    return single


def _mostly_realistic(
    field: d.FieldDescriptor, owner: d.Descriptor, depth: int
) -> st.SearchStrategy[Any]:
    """Realistic, but one time in eight hostile: a valid request with one bad field."""
    good = _realistic_field(field, owner, depth, mutate=True)
    bad = _field(field, owner, depth)
    return st.integers(0, 7).flatmap(lambda pick: bad if pick == 0 else good)


# --- messages --------------------------------------------------------------------------------


def _single(
    field: d.FieldDescriptor, owner: d.Descriptor, depth: int
) -> st.SearchStrategy[Any] | None:
    t = field.type
    if t in _SCALAR_BOUNDS:
        return _integer(field)
    if t in (d.FieldDescriptor.TYPE_DOUBLE, d.FieldDescriptor.TYPE_FLOAT):
        return double_values()
    if t == d.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == d.FieldDescriptor.TYPE_STRING:
        return string_values(field.name)
    if t == d.FieldDescriptor.TYPE_BYTES:
        invalid_utf8 = st.sampled_from([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x00"])
        return st.one_of(invalid_utf8, st.binary(max_size=64), huge_strings().map(str.encode))
    if t == d.FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.sampled_from([999, -1, 2**31 - 1]))
    return _message_field(field.message_type, owner, depth)


def _message_field(
    message: d.Descriptor, owner: d.Descriptor, depth: int
) -> st.SearchStrategy[Any] | None:
    name = message.full_name
    if name == "google.protobuf.Timestamp":
        return timestamps()
    if name == "google.protobuf.FieldMask":
        return field_masks(owner)
    if name == "google.protobuf.Struct":
        return structs()
    if depth >= MAX_DEPTH:
        return None
    return drafts(message, depth + 1)


def _field(field: d.FieldDescriptor, owner: d.Descriptor, depth: int) -> st.SearchStrategy[Any]:
    single = _single(field, owner, depth)
    if single is None:
        return st.none()
    if field.is_repeated:
        return st.lists(single, max_size=4)
    return single


def drafts(
    message: d.Descriptor, depth: int = 0, mode: str = "hostile"
) -> st.SearchStrategy[dict[str, Any]]:
    """A draft of `message`. "hostile": each field set (or not) to anything; "realistic":
    every field set to a value that passes validation; "mixed": realistic with, here and
    there, one hostile field."""
    if mode == "hostile":
        return st.fixed_dictionaries(
            {}, optional={field.name: _field(field, message, depth) for field in message.fields}
        )
    if mode == "realistic":
        return st.fixed_dictionaries(
            {f.name: _realistic_field(f, message, depth, mutate=False) for f in message.fields}
        )
    return st.fixed_dictionaries(
        {f.name: _mostly_realistic(f, message, depth) for f in message.fields}
    )


def any_drafts(message: d.Descriptor) -> st.SearchStrategy[dict[str, Any]]:
    """Hostile, realistic or mixed drafts, a third each."""
    return st.one_of(*(drafts(message, mode=mode) for mode in ("hostile", "realistic", "mixed")))


# --- drafts to messages ----------------------------------------------------------------------

Resolver = Callable[[str], int]


def _resolve(value: Any, resolve: Resolver) -> Any:
    if isinstance(value, Ref):
        return resolve(value.kind)
    if isinstance(value, list):
        return [_resolve(v, resolve) for v in value]
    return value


def message_class(message: d.Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(message)


def fill(target: Message, draft: dict[str, Any], resolve: Resolver) -> None:
    """Set `draft`'s fields on `target` (a None value leaves the field unset)."""
    fields = target.DESCRIPTOR.fields_by_name
    for name, raw in draft.items():
        if raw is None:
            continue
        value = _resolve(raw, resolve)
        field = fields[name]
        if isinstance(value, StructDraft):
            getattr(target, name).update(value.value)
        elif field.message_type is not None and field.is_repeated:
            for item in value:
                fill(getattr(target, name).add(), item, resolve)
        elif field.message_type is not None:
            fill(getattr(target, name), value, resolve)
            getattr(target, name).SetInParent()  # an empty draft still means "set"
        elif field.is_repeated:
            getattr(target, name).extend(value)
        else:
            setattr(target, name, value)


def to_message(message: d.Descriptor, draft: dict[str, Any], resolve: Resolver) -> Message:
    out = message_class(message)()
    fill(out, draft, resolve)
    return out
