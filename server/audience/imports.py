"""ImportUsers: a stream of user rows upserted by (organization, external_id), each row checked
(emails with email-validator, phones to E.164 with phonenumbers and the edition's country),
refused rows reported with their index and field, and an earlier unsubscribe never undone."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from server.audience.addresses import normalise_email, normalise_phone, region_for
from server.audience.editions import edition_of
from server.config import MAX_ATTRIBUTES_BYTES
from server.core.validation import NUL_MESSAGE, Violations, has_nul, invalid
from server.security import tenancy
from server.store import users as user_rows
from server.store.db import write_transaction
from server.store.models import USER_TEXT_FIELDS, Edition, utcnow
from server.store.users import ATTRIBUTES_JSON, IMPORTED

log = logging.getLogger(__name__)

CHUNK = 1000
MAX_REJECTIONS = 1000
_TEXT_LIMITS = {"external_id": 255, "first_name": 255, "last_name": 255, "language": 35}


@dataclass(frozen=True)
class UserInput:
    external_id: str = ""
    email: str = ""
    phone: str = ""
    first_name: str = ""
    last_name: str = ""
    language: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    email_consent: bool = False
    sms_consent: bool = False
    email_unsubscribed: bool = False
    sms_unsubscribed: bool = False
    edition_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Rejection:
    index: int
    external_id: str
    field: str
    reason: str


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    rejected: int = 0
    rejections: list[Rejection] = field(default_factory=list)

    def reject(self, rejection: Rejection) -> None:
        self.rejected += 1
        if len(self.rejections) < MAX_REJECTIONS:
            self.rejections.append(rejection)


def _unstorable(value: Any) -> str | None:
    """What JSON (and PostgreSQL's JSONB) cannot hold: NaN, infinities, NUL characters."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"numbers must be finite, got {value}"
    if isinstance(value, str) and has_nul(value):
        return NUL_MESSAGE
    if isinstance(value, dict):
        items = [*value, *value.values()]
    elif isinstance(value, list):
        items = value
    else:
        return None
    return next((p for p in map(_unstorable, items) if p is not None), None)


def _attributes_json(attributes: dict[str, Any]) -> tuple[str, str | None]:
    """The attributes as compact JSON, or ("", problem) when they cannot be stored."""
    if not attributes:
        return "{}", None
    try:
        # One C-speed pass both serialises and proves the common case clean: it refuses
        # non-finite numbers, and a NUL can only come out as the escape \u0000.
        text = json.dumps(attributes, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (ValueError, TypeError):
        text = ""
    if not text or "\\u0000" in text:  # a problem, or maybe one: the walk names it
        problem = _unstorable(attributes)
        if problem is not None:
            return "", problem
        text = json.dumps(attributes, separators=(",", ":"), ensure_ascii=False)
    # Bounded because segments (CEL) and templates (Jinja2) iterate over them per user.
    size = len(text.encode())
    if size > MAX_ATTRIBUTES_BYTES:
        return "", f"must be at most {MAX_ATTRIBUTES_BYTES} bytes as JSON, got {size}"
    return text, None


def _clean(row: UserInput, region: str | None) -> tuple[dict[str, Any], tuple[str, str] | None]:
    """The row as columns, or (field, reason) for its first problem."""
    if not row.external_id.strip():
        return {}, ("external_id", "is required")
    for name, limit in _TEXT_LIMITS.items():
        if len(getattr(row, name)) > limit:
            return {}, (name, f"must be at most {limit} characters")
    for name in USER_TEXT_FIELDS:
        if has_nul(getattr(row, name)):
            return {}, (name, NUL_MESSAGE)
    attributes_json, problem = _attributes_json(row.attributes)
    if problem is not None:
        return {}, ("attributes", problem)
    values = {name: getattr(row, name) for name in IMPORTED}
    values[ATTRIBUTES_JSON] = attributes_json
    values["external_id"] = row.external_id.strip()
    try:
        values["email"] = normalise_email(row.email.strip()) if row.email.strip() else ""
    except ValueError as exc:
        return {}, ("email", str(exc))
    try:
        values["phone"] = normalise_phone(row.phone.strip(), region) if row.phone.strip() else ""
    except ValueError as exc:
        return {}, ("phone", str(exc))
    values["email_unsubscribed"] = row.email_unsubscribed
    values["sms_unsubscribed"] = row.sms_unsubscribed
    return values, None


def _unique_chunks(pending: list[Any], size: int) -> Iterator[list[Any]]:
    """Chunks of at most `size` rows with no external_id twice: a repeat starts a new chunk, so
    it is upserted after the first exactly as if it came in a later batch (counted as updated,
    unsubscribes and editions kept) rather than silently replacing it."""
    chunk: list[Any] = []
    keys: set[str] = set()
    for item in pending:
        key = item[0]["external_id"]
        if len(chunk) == size or key in keys:
            yield chunk
            chunk, keys = [], set()
        chunk.append(item)
        keys.add(key)
    if chunk:
        yield chunk


class Importer:
    """One ImportUsers stream: validates rows, upserts them in chunks, counts the outcome."""

    def __init__(self, organization_id: int, edition_id: int = 0) -> None:
        tenancy.check_may_act(organization_id)
        v = Violations()
        v.positive_id(organization_id, "organization_id")
        v.positive_id(edition_id, "edition_id", required=False)
        v.raise_if_any()
        self.organization_id = organization_id
        self.edition = edition_of(edition_id, organization_id) if edition_id else None
        self.region = region_for(self.edition)
        self.result = ImportResult()
        self.index = 0
        self._known_editions: dict[int, bool] = {}
        self.started = time.monotonic()

    def add(self, rows: Iterable[UserInput]) -> None:
        pending: list[tuple[dict[str, Any], tuple[int, ...]]] = []
        for row in rows:
            values, problem = _clean(row, self.region)
            bad_edition = next((e for e in row.edition_ids if not self._edition_ok(e)), None)
            if problem is None and bad_edition is not None:
                problem = ("edition_ids", f"edition {bad_edition} is not in this organization")
            if problem is not None:
                self.result.reject(Rejection(self.index, row.external_id, *problem))
            else:
                pending.append((values, row.edition_ids))
            self.index += 1
        for chunk in _unique_chunks(pending, CHUNK):
            self._upsert(chunk)

    def _edition_ok(self, edition_id: int) -> bool:
        if edition_id not in self._known_editions:
            self._known_editions[edition_id] = (
                Edition.select()
                .where(
                    (Edition.id == edition_id) & (Edition.organization_id == self.organization_id)
                )
                .exists()
            )
        return self._known_editions[edition_id]

    def _upsert(self, chunk: list[tuple[dict[str, Any], tuple[int, ...]]]) -> None:
        by_key = {values["external_id"]: (values, editions) for values, editions in chunk}
        base = (self.edition.id,) if self.edition else ()
        with write_transaction():
            ids, created = user_rows.upsert(
                self.organization_id, [values for values, _ in by_key.values()], utcnow()
            )
            user_rows.add_memberships(
                {(ids[key], e) for key, (_, extra) in by_key.items() for e in (*base, *extra)}
            )
        self.result.created += created
        self.result.updated += len(by_key) - created

    def log_progress(self) -> None:
        rate = self.index / max(time.monotonic() - self.started, 1e-6)
        log.info(
            "import progress",
            extra={
                "rows": self.index,
                # not "created": that name is a LogRecord attribute, and logging refuses it
                "users_created": self.result.created,
                "users_updated": self.result.updated,
                "rejected": self.result.rejected,
                "rows_per_s": round(rate),
            },
        )


def import_users(batches: Iterator[tuple[int, int, list[UserInput]]]) -> ImportResult:
    """Consume (organization_id, edition_id, rows) batches; the first fixes org and edition."""
    importer: Importer | None = None
    for organization_id, edition_id, rows in batches:
        if importer is None:
            importer = Importer(organization_id, edition_id)
        elif organization_id not in (0, importer.organization_id):
            raise invalid("organization_id", "must not change within one import stream")
        elif edition_id not in (0, importer.edition.id if importer.edition else 0):
            raise invalid("edition_id", "must not change within one import stream")
        importer.add(rows)
        if importer.index and importer.index % 100_000 < len(rows):
            importer.log_progress()
    if importer is None:
        raise invalid("organization_id", "the stream was empty: send at least one message")
    importer.log_progress()
    return importer.result
