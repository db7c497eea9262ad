"""The two ways of freezing a segment into the ledger agree: the set-based INSERT ... SELECT
for exact segments and the CEL-in-Python path, over users with every kind of odd address,
consent and unsubscribe state, for both channels; and a re-run adds nothing."""

from __future__ import annotations

import random
from typing import Any

import pytest

from jobs.pipeline import freeze
from server.audience.segments import engine as se
from server.core.status import Status
from server.store.db import release_connection
from server.store.models import Campaign, Delivery, Edition
from tests.audience.test_segment_engine import _insert, _user

pytestmark = pytest.mark.usefixtures("app")  # the session server opens the database


def _campaign(org: int, edition: Edition, channel: str) -> Campaign:
    return Campaign.create(
        organization_id=org,
        edition=edition,
        segment_id=1,
        name="f",
        channel=channel,
        sms_body="hi",
        status=Status.CALCULATING,
    )


def _ledger(campaign_id: int) -> set[tuple[Any, ...]]:
    rows = (
        Delivery.select(Delivery.user_id, Delivery.address, Delivery.status, Delivery.skip_reason)
        .where(Delivery.campaign == campaign_id)
        .tuples()
    )
    return set(rows)


@pytest.mark.parametrize("channel", ["email", "sms"])
@pytest.mark.parametrize(
    "expression",
    [
        "true",
        'user.language == "en" && !user.sms_unsubscribed',
        'user.attributes.ticket_type == "vip"',
    ],
)
def test_sql_and_python_freezes_write_the_same_ledger(
    org_id: int, channel: str, expression: str
) -> None:
    rnd = random.Random(7)
    users = [_user(rnd, i) for i in range(300)]
    for user in users[:40]:  # addresses the skip rules must call invalid
        user.update(email="no-at-sign", phone="4512345678")
    _insert(org_id, users)
    edition = Edition.create(organization_id=org_id, name="e", timezone="UTC")
    compiled = se.compile_segment(expression)
    assert compiled.exact
    in_sql, in_python = _campaign(org_id, edition, channel), _campaign(org_id, edition, channel)
    matched = freeze.freeze_in_sql(in_sql, compiled, None)
    assert matched == freeze.freeze_in_python(in_python, compiled, None)
    frozen = _ledger(in_sql.id)
    assert frozen == _ledger(in_python.id) and len(frozen) == matched
    statuses = {(status, reason) for _, _, status, reason in frozen}
    assert len(statuses) >= 4, statuses  # pending and several skip reasons were exercised
    assert freeze.freeze_in_sql(in_sql, compiled, None) == matched  # a re-run adds nothing
    assert _ledger(in_sql.id) == frozen
    release_connection()


def test_sql_freeze_stops_when_the_campaign_is_no_longer_calculating(org_id: int) -> None:
    _insert(org_id, [_user(random.Random(1), i) for i in range(10)])
    edition = Edition.create(organization_id=org_id, name="e", timezone="UTC")
    campaign = _campaign(org_id, edition, "email")
    Campaign.update(status=Status.CANCELLED).where(Campaign.id == campaign.id).execute()
    assert freeze.freeze_in_sql(campaign, se.compile_segment("true"), None) is None
    assert _ledger(campaign.id) == set()
    release_connection()
