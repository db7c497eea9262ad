"""Run a mutating call at most once per `request_id`; retries get the first result back.

The key is written in the same transaction as the change it guards, so either both land or
neither does. Two concurrent calls with one key: the loser's transaction rolls back on the
unique index and it returns the winner's stored result. Keys are per token: two callers that
happen to pick the same `request_id` never see each other's answers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable

import peewee as pw

from server.config import MAX_REQUEST_ID_LENGTH
from server.core.errors import CampaignServiceError
from server.core.validation import NUL_MESSAGE, has_nul, invalid
from server.security import tenancy
from server.store.db import write_transaction
from server.store.models import Campaign, Edition, IdempotencyKey

_DATETIME_FIELDS = [
    name for name, f in Campaign._meta.fields.items() if isinstance(f, pw.DateTimeField)
]


def _snapshot(campaign: Campaign) -> str:
    data = {name: getattr(campaign, name) for name in Campaign._meta.fields if name != "edition"}
    data["edition_id"] = campaign.edition_id
    data["timezone"] = campaign.edition.timezone
    return json.dumps(data, default=lambda v: v.isoformat())


def _restore(text: str) -> Campaign:
    data = json.loads(text)
    edition = Edition(id=data.pop("edition_id"), timezone=data.pop("timezone"))
    for name in _DATETIME_FIELDS:
        if data.get(name):
            data[name] = dt.datetime.fromisoformat(data[name])
    return Campaign(edition=edition, **data)


def _replay(method: str, key: str, fingerprint: str) -> Campaign | None:
    row = IdempotencyKey.get_or_none(
        (IdempotencyKey.method == method) & (IdempotencyKey.key == key)
    )
    if row is None:
        return None
    if row.fingerprint != fingerprint:
        raise invalid("request_id", "was already used for a different request")
    return _restore(row.result)


def _namespace(method: str) -> str:
    """The method, qualified by the caller's token (a short digest: the column is narrow)."""
    principal = tenancy.principal()
    if not principal:
        return method
    return f"{method}:{hashlib.sha256(principal.encode()).hexdigest()[:16]}"


def run_once(
    method: str, key: str, fingerprint: str, call: Callable[[], Campaign]
) -> tuple[Campaign, bool]:
    """Run `call` in a write transaction unless `key` was seen; returns (result, ran)."""
    method = _namespace(method)
    if len(key) > MAX_REQUEST_ID_LENGTH:
        raise invalid("request_id", f"must be at most {MAX_REQUEST_ID_LENGTH} characters")
    if has_nul(key):
        raise invalid("request_id", NUL_MESSAGE)
    if not key:
        with write_transaction():
            return call(), True
    try:
        with write_transaction():
            earlier = _replay(method, key, fingerprint)
            if earlier is not None:
                return earlier, False
            result = call()
            IdempotencyKey.create(
                method=method,
                key=key,
                fingerprint=fingerprint,
                campaign_id=result.id,
                result=_snapshot(result),
            )
            return result, True
    except (pw.IntegrityError, CampaignServiceError):
        # A concurrent call with the same key may have won; if so, answer as it did.
        earlier = _replay(method, key, fingerprint)
        if earlier is None:
            raise
        return earlier, False
