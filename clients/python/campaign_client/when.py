"""Reading the times a person types: "2027-06-01 10:00" in the edition's timezone, or ISO 8601
with an offset ("2027-06-01T08:00:00Z", "2027-06-01T10:00+02:00"). A local time that does not
exist (clocks moving forward) or exists twice (clocks going back) is refused, not guessed."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class TimeError(ValueError):
    """The text is not a usable time; the message says what to type instead."""


def zone(name: str) -> dt.tzinfo:
    try:
        return ZoneInfo(name) if name else dt.UTC
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise TimeError(f"unknown timezone {name!r}") from error


def localize(naive: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """`naive` as a wall-clock time in `tz`; TimeError when it is skipped or repeated there."""
    first, second = naive.replace(tzinfo=tz, fold=0), naive.replace(tzinfo=tz, fold=1)
    if first.utcoffset() == second.utcoffset():
        return first
    back = first.astimezone(dt.UTC).astimezone(tz).replace(tzinfo=None)
    shown = naive.strftime("%Y-%m-%d %H:%M")
    if back != naive:
        raise TimeError(f"{shown} does not exist in {tz} (the clocks move forward then)")
    offsets = " or ".join(_offset(v) for v in (first, second))
    raise TimeError(
        f"{shown} happens twice in {tz} (the clocks go back then): add the offset, {offsets}"
    )


def _offset(value: dt.datetime) -> str:
    text = value.isoformat(timespec="minutes")
    return text.replace("T", " ")


def parse_when(text: str, timezone: str) -> dt.datetime:
    """An aware datetime from `text`; a time without offset is read in `timezone`."""
    cleaned = " ".join(text.split())
    try:
        value = dt.datetime.fromisoformat(cleaned)
    except ValueError:
        raise TimeError(
            f"cannot read {text!r} as a time: give 'YYYY-MM-DD HH:MM' (read in {timezone or 'UTC'})"
            " or ISO 8601 with an offset, e.g. 2027-06-01T08:00:00Z"
        ) from None
    if value.tzinfo is None:
        value = localize(value, zone(timezone))
    return value


def show(value: dt.datetime, timezone: str) -> str:
    """`value` as a person in `timezone` reads it, e.g. "2027-06-01 10:00 CEST"."""
    return value.astimezone(zone(timezone)).strftime("%Y-%m-%d %H:%M %Z")
