"""The delivery ledger's invariants, checked once a campaign has ended: the one assertion every
fault test (a worker killed, Redis lost, a connection cut...) makes about its campaign.

    status = assert_ledger_invariants(campaigns, campaign.id, smtp.received,
                                      suppressed={"bounced@x.example"}, scheduled_at=when)

`received` is what the provider side recorded: the SmtpSink's `received` (only this
campaign's messages are counted, by their Message-ID) or a FakeTwilio's `received` (SMS carry
no campaign mark: pass only this campaign's). Returns the ledger's rows counted by status.

`email_campaign` makes the campaign these tests send: consenting users plus a couple whose
addresses are suppressed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from campaigns.v1 import campaign_pb2
from server.store.db import release_connection
from server.store.models import Delivery, DeliveryStatus, Suppression
from tests.fixtures.smtp import Received
from tests.fixtures.twilio import Sms
from tests.support.delivery import FINAL, assert_counters_match_ledger, get, import_users, user
from tests.support.helpers import make_campaign, make_edition, make_email_message, make_segment

# Where a recipient may end; pending, claimed or sending means someone still owes an answer.
FINAL_ROW_STATES = {
    DeliveryStatus.SENT,
    DeliveryStatus.FAILED,
    DeliveryStatus.SKIPPED,
    DeliveryStatus.AMBIGUOUS,
}


def _deliveries(campaign_id: int, received: Iterable[Received | Sms]) -> list[tuple[str, float]]:
    """(address, time received) of each message of the campaign, lower-cased."""
    prefix = f"<campaign-{campaign_id}.user-"
    out: list[tuple[str, float]] = []
    for item in list(received):  # a copy: the sink appends from its own thread
        if isinstance(item, Sms):
            out.append((item.to.lower(), item.at))
        elif str(item.message["Message-ID"]).startswith(prefix):
            out.extend((rcpt.lower(), item.at) for rcpt in item.rcpt_tos)
    return out


def _check_counts(rows: list[Delivery], per_address: Counter[str]) -> None:
    """Sent rows were received once; failed and skipped ones never; nobody outside the ledger
    got anything. Only an ambiguous row (its worker died mid-send) may have gone twice."""
    by_address: dict[str, list[Delivery]] = defaultdict(list)
    for row in rows:
        by_address[row.address.lower()].append(row)
    strangers = {a: n for a, n in per_address.items() if a not in by_address}
    assert not strangers, f"messages to addresses outside the ledger: {strangers}"
    wrong = {}
    for address, owners in by_address.items():
        statuses = Counter(r.status for r in owners)
        n = per_address[address]
        if statuses[DeliveryStatus.AMBIGUOUS]:
            ok = n >= statuses[DeliveryStatus.SENT]
        else:
            ok = n == statuses[DeliveryStatus.SENT] <= 1
        if not ok:
            wrong[address] = (dict(statuses), n)
    assert not wrong, f"address -> (ledger statuses, messages received): {wrong}"


def _check_schedule(
    campaigns: Any,
    campaign_id: int,
    rows: list[Delivery],
    deliveries: list[tuple[str, float]],
    scheduled_at: dt.datetime,
) -> None:
    """Nothing left, was recorded or began before `scheduled_at` (aware, or naive UTC)."""
    when = scheduled_at if scheduled_at.tzinfo else scheduled_at.replace(tzinfo=dt.UTC)
    early = [(a, at) for a, at in deliveries if at < when.timestamp()]
    assert not early, f"{len(early)} messages received before {when}: {early[:5]}"
    naive = when.astimezone(dt.UTC).replace(tzinfo=None)  # the ledger's timestamps
    early_rows = [r.id for r in rows if r.sent_at is not None and r.sent_at < naive]
    assert not early_rows, f"rows recorded sent before {when}: {early_rows[:5]}"
    campaign = get(campaigns, campaign_id)
    if campaign.HasField("started_at"):
        assert campaign.started_at.ToDatetime(dt.UTC) >= when, (campaign.started_at, when)


def assert_ledger_invariants(
    campaigns: Any,
    campaign_id: int,
    received: Iterable[Received | Sms],
    suppressed: Collection[str] = (),
    scheduled_at: dt.datetime | None = None,
) -> Counter[str]:
    """Assert, for an ended campaign: it is final; every row is final (sent, failed, skipped,
    ambiguous); no address got more than one message unless its row is ambiguous, each sent
    row exactly one, nobody else any; `suppressed` addresses got nothing and are skipped as
    suppressed; nothing before `scheduled_at` (when given); and the campaign's counters and
    stats equal the ledger. `campaigns` is a CampaignService stub."""
    campaign = get(campaigns, campaign_id)
    assert campaign.status in FINAL, (
        f"campaign {campaign_id} is {campaign_pb2.CampaignStatus.Name(campaign.status)}"
    )
    rows = assert_counters_match_ledger(campaigns, campaign_id)
    unfinished = Counter(r.status for r in rows if r.status not in FINAL_ROW_STATES)
    assert not unfinished, f"rows left unfinished: {dict(unfinished)}"
    deliveries = _deliveries(campaign_id, received)
    per_address = Counter(address for address, _ in deliveries)
    _check_counts(rows, per_address)
    for address in suppressed:
        key = address.lower()
        assert per_address[key] == 0, f"suppressed {address} was sent {per_address[key]}"
        marks = {(r.status, r.skip_reason) for r in rows if r.address.lower() == key}
        assert marks <= {(DeliveryStatus.SKIPPED, "suppressed")}, (address, marks)
    if scheduled_at is not None:
        _check_schedule(campaigns, campaign_id, rows, deliveries, scheduled_at)
    return Counter(str(r.status) for r in rows)


@dataclass(frozen=True)
class FaultCampaign:
    """An email campaign made by `email_campaign`: who should get it, who must not."""

    id: int
    addresses: list[str]  # eligible: each should end sent (or ambiguous)
    suppressed: list[str]  # in the segment, with consent, but suppressed: never sent


def email_campaign(
    campaigns: Any, audience: Any, messages: Any, org_id: int, count: int, suppressed: int = 2
) -> FaultCampaign:
    """A draft email campaign to `count` consenting users plus `suppressed` more whose
    addresses the organization has suppressed (a hard bounce on record)."""
    edition = make_edition(audience, org_id)
    segment = make_segment(audience, edition, "user.email_consent")
    message = make_email_message(messages, edition, text_body="Hello {{ user.first_name }}!\n")
    campaign = make_campaign(
        campaigns,
        edition,
        channel=campaign_pb2.CHANNEL_EMAIL,
        sms_body="",
        email_message_id=message.id,
        segment_id=segment.id,
    )
    tag = uuid.uuid4().hex[:8]
    addresses = [f"u{i:05d}.{tag}@mail.example.com" for i in range(count)]
    blocked = [f"bounced{i}.{tag}@mail.example.com" for i in range(suppressed)]
    import_users(
        audience,
        org_id,
        edition.id,
        [
            user(f"x-{address}", email=address, first_name=f"U{i}", email_consent=True)
            for i, address in enumerate(addresses + blocked)
        ],
    )
    try:
        for address in blocked:
            Suppression.create(
                organization_id=org_id, channel="email", address=address, reason="hard bounce"
            )
    finally:
        release_connection()
    return FaultCampaign(campaign.id, addresses, blocked)
