"""Users from a CSV file for `campaignctl import-users`.

Columns: external_id (required), email, phone, first_name, last_name, language, email_consent,
sms_consent; every other column becomes an attribute (segments see it as
`user.attributes.<column>`). Empty cells are left out. Consents read true/false, yes/no, y/n,
1/0 (empty: false). Attribute cells that look like numbers (42, -3.5) or true/false become
numbers or booleans; everything else, including "007", stays text.

A row this side can already tell is wrong (no external_id, an unreadable consent) is not sent;
it is reported with the server's rejections.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from campaigns.v1 import user_pb2

FIELDS = ("external_id", "email", "phone", "first_name", "last_name", "language")
CONSENTS = ("email_consent", "sms_consent")
TRUE = {"1", "true", "t", "yes", "y"}
FALSE = {"", "0", "false", "f", "no", "n"}
NUMBER = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?")


class CsvError(ValueError):
    """The file cannot be imported at all (unreadable, no external_id column...)."""


@dataclass(frozen=True)
class Rejection:
    """A row that was not imported: `row` counts data rows from 1 (the header is not a row)."""

    row: int
    external_id: str
    field: str
    reason: str


def attribute(text: str) -> Any:
    """A cell as an attribute value: number, boolean or text."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if NUMBER.fullmatch(text):
        return float(text) if "." in text else int(text)
    return text


def consent(text: str, column: str) -> bool:
    lowered = text.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise ValueError(f"{column} must be true or false, not {text!r}")


def to_user(row: dict[str, str | None]) -> user_pb2.User:
    """A User from one CSV row; ValueError (with the column as args[1]) when a cell is bad."""
    cells = {key.strip(): (value or "").strip() for key, value in row.items() if key}
    user = user_pb2.User()
    for name in FIELDS:
        setattr(user, name, cells.get(name, ""))
    if not user.external_id:
        raise ValueError("external_id is required", "external_id")
    for column in CONSENTS:
        try:
            setattr(user, column, consent(cells.get(column, ""), column))
        except ValueError as error:
            raise ValueError(str(error), column) from None
    extra = {
        k: attribute(v) for k, v in cells.items() if k not in FIELDS and k not in CONSENTS and v
    }
    if extra:
        user.attributes.update(extra)
    return user


def count_rows(path: Path) -> int:
    with _open(path) as handle:
        return sum(1 for _ in csv.DictReader(handle))


def _open(path: Path) -> Any:
    try:
        return path.open(newline="", encoding="utf-8-sig")
    except OSError as error:
        raise CsvError(f"cannot read {path}: {error.strerror}") from error


def read_users(path: Path, rejected: list[Rejection], rows: list[int]) -> Iterator[user_pb2.User]:
    """The users of `path`, in order. Rows refused here go to `rejected`; for each user
    yielded, its row number is appended to `rows` (the server reports rejections by position
    in the stream, which `rows` turns back into row numbers)."""
    with _open(path) as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "external_id" not in [f.strip() for f in reader.fieldnames]:
            raise CsvError(f"{path}: the header must name an external_id column")
        for number, row in enumerate(reader, start=1):
            try:
                user = to_user(row)
            except ValueError as error:
                column = error.args[1] if len(error.args) > 1 else ""
                rejected.append(
                    Rejection(
                        number, (row.get("external_id") or "").strip(), column, str(error.args[0])
                    )
                )
                continue
            rows.append(number)
            yield user
