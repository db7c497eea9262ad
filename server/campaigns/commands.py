"""Campaign use cases: create, update, delete, and the caller-driven moves (schedule, send now,
cancel). Status changes go through `server.campaigns.transitions`; reads are in
`server.campaigns.queries`."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TypeVar

import peewee as pw

from server.audience.editions import edition_of
from server.campaigns import transitions
from server.campaigns.idempotency import run_once
from server.campaigns.ports import Dispatcher
from server.config import MAX_NAME_LENGTH, MAX_SMS_BODY_LENGTH
from server.content.templates import compile_template
from server.core import masks
from server.core.channels import Channel
from server.core.errors import Aborted, FailedPrecondition, InvalidArgument
from server.core.status import Action, Status
from server.core.validation import Violations, invalid
from server.security import tenancy
from server.store import ledger
from server.store.db import locked, write_transaction
from server.store.models import (
    Campaign,
    Delivery,
    EmailMessage,
    Segment,
    SkipReason,
    utcnow,
)

log = logging.getLogger(__name__)

CHANNELS = tuple(Channel)
EDITABLE_FIELDS = ("name", "segment_id", "channel", "email_message_id", "sms_body", "scheduled_at")
REFERENCES = ("segment_id", "email_message_id", "sms_body")
M = TypeVar("M", bound=pw.Model)


@dataclass(frozen=True)
class CampaignInput:
    """Campaign fields as a caller gave them; `channel` is "email", "sms" or None."""

    organization_id: int = 0
    edition_id: int = 0
    segment_id: int = 0
    name: str = ""
    channel: str | None = None
    email_message_id: int = 0
    sms_body: str = ""
    scheduled_at: dt.datetime | None = None


def _check_fields(v: Violations, data: CampaignInput, *, check_time: bool = True) -> None:
    """Check the values; `check_time` False skips the "in the future" rule for a stored time
    the caller is not changing (a draft's unused time may have passed)."""
    v.text(data.name, "name", max_length=MAX_NAME_LENGTH, required=True)
    v.positive_id(data.segment_id, "segment_id")
    v.check(data.channel in CHANNELS, "channel", "is required: CHANNEL_EMAIL or CHANNEL_SMS")
    v.positive_id(data.email_message_id, "email_message_id", required=False)
    v.text(data.sms_body, "sms_body", max_length=MAX_SMS_BODY_LENGTH)
    if data.channel == Channel.EMAIL and data.sms_body:
        v.add("sms_body", "only SMS campaigns have an sms_body")
    if data.channel == Channel.SMS and data.email_message_id:
        v.add("email_message_id", "only email campaigns have an email message")
    if check_time and data.scheduled_at is not None and data.scheduled_at <= utcnow():
        v.add("scheduled_at", "must be in the future")


def _shared(query: pw.ModelSelect[M]) -> pw.ModelSelect[M]:
    """On PostgreSQL, share-lock the rows read until the transaction ends: a concurrent delete
    (or type change) of a referenced row, which locks it FOR UPDATE before checking whether
    a campaign uses it, then waits for this campaign and sees it. SQLite's write transactions
    already run one at a time."""
    return locked(query, "FOR SHARE")


def _check_references(v: Violations, data: CampaignInput, changed: Collection[str]) -> None:
    """The segment and email message named must exist in the campaign's organization, and an
    SMS body must be a template that compiles. Only `changed` fields are looked up."""
    org = data.organization_id
    if (
        "segment_id" in changed
        and data.segment_id > 0
        and not _shared(
            Segment.select().where(
                (Segment.id == data.segment_id) & (Segment.organization_id == org)
            )
        ).exists()
    ):
        v.add("segment_id", f"segment {data.segment_id} does not exist in organization {org}")
    if "email_message_id" in changed and data.email_message_id > 0:
        message = _shared(
            EmailMessage.select().where(
                (EmailMessage.id == data.email_message_id) & (EmailMessage.organization_id == org)
            )
        ).get_or_none()
        if message is None:
            v.add(
                "email_message_id",
                f"email message {data.email_message_id} does not exist in organization {org}",
            )
        elif message.type != "campaign":
            v.add(
                "email_message_id",
                f"email message {message.id} is {message.type}: "
                "only campaign messages can be sent by campaigns",
            )
    if "sms_body" in changed and data.sms_body:
        try:
            compile_template(data.sms_body, "sms_body")
        except InvalidArgument as exc:
            v.items.extend(exc.violations)


def create_campaign(data: CampaignInput, request_id: str = "", fingerprint: str = "") -> Campaign:
    def create() -> Campaign:
        # Validated here, not before run_once: a retry gets the first answer even once its
        # scheduled_at has passed.
        tenancy.check_may_act(data.organization_id)
        v = Violations()
        v.positive_id(data.organization_id, "organization_id")
        v.positive_id(data.edition_id, "edition_id")
        _check_fields(v, data)
        v.raise_if_any()
        edition = edition_of(data.edition_id, data.organization_id)
        _check_references(v, data, REFERENCES)
        v.raise_if_any()
        return Campaign.create(
            organization_id=data.organization_id,
            edition=edition,
            segment_id=data.segment_id,
            name=data.name.strip(),
            channel=data.channel,
            email_message_id=data.email_message_id or None,
            sms_body=data.sms_body,
            scheduled_at=data.scheduled_at,
            status=Status.DRAFT,
        )

    campaign, _ = run_once("CreateCampaign", request_id, fingerprint, create)
    return campaign


def update_campaign(
    campaign_id: int,
    data: CampaignInput,
    mask: Collection[str],
    etag: str,
    dispatcher: Dispatcher,
) -> Campaign:
    masks.require_editable(mask, EDITABLE_FIELDS)
    with write_transaction():
        current = transitions.get(campaign_id)
        if etag and etag != etag_of(current):
            raise Aborted(
                f"campaign {campaign_id} has changed (etag {etag_of(current)})",
                reason="ETAG_MISMATCH",
            )
        transitions.require(current, Action.EDIT)
        merged = _merge(current, data, mask)
        fields = Violations()
        _check_fields(fields, merged, check_time="scheduled_at" in mask)
        if current.status == Status.SCHEDULED and merged.scheduled_at is None:
            fields.add("scheduled_at", "a scheduled campaign needs a time; cancel it instead")
        if not fields.items:
            _check_references(fields, merged, mask)
        v = Violations()
        for item in fields.items:  # paths in the request: the values live under `campaign`
            v.add(f"campaign.{item.field}", item.description)
        v.raise_if_any()
        changes = {name: getattr(merged, name) for name in mask}
        if "name" in changes:
            changes["name"] = changes["name"].strip()
        if "email_message_id" in changes:
            changes["email_message_id"] = changes["email_message_id"] or None
        if not transitions.compare_and_set_version(current, **changes):
            raise Aborted(
                f"campaign {campaign_id} changed meanwhile; try again", reason="CONCURRENT_CHANGE"
            )
        updated = transitions.get(campaign_id)
    if "scheduled_at" in mask and updated.status == Status.SCHEDULED and updated.scheduled_at:
        _dispatch(dispatcher.kickoff_at, updated.id, updated.scheduled_at)
    return updated


def _merge(current: Campaign, data: CampaignInput, mask: Collection[str]) -> CampaignInput:
    base = CampaignInput(
        organization_id=current.organization_id,
        edition_id=current.edition_id,
        segment_id=current.segment_id,
        name=current.name,
        channel=current.channel,
        email_message_id=current.email_message_id or 0,
        sms_body=current.sms_body,
        scheduled_at=current.scheduled_at,
    )
    return masks.merge(base, data, mask)


def etag(campaign_id: int, version: int) -> str:
    return f'W/"{campaign_id}-{version}"'


def etag_of(campaign: Campaign) -> str:
    return etag(campaign.id, campaign.version)


def delete_campaign(campaign_id: int) -> None:
    with write_transaction():
        campaign = transitions.get(campaign_id)
        transitions.require(campaign, Action.DELETE)
        Delivery.delete().where(Delivery.campaign == campaign_id).execute()
        deleted = (
            Campaign.delete()
            .where((Campaign.id == campaign_id) & (Campaign.version == campaign.version))
            .execute()
        )
        if deleted != 1:
            raise Aborted(
                f"campaign {campaign_id} changed meanwhile; try again", reason="CONCURRENT_CHANGE"
            )


def _require_content(campaign: Campaign) -> None:
    if campaign.channel == Channel.EMAIL and not campaign.email_message_id:
        missing = "email_message_id"
    elif campaign.channel == Channel.SMS and not campaign.sms_body.strip():
        missing = "sms_body"
    else:
        return
    raise FailedPrecondition(
        f"campaign {campaign.id} has no {missing}: set it with UpdateCampaign first",
        subject=f"campaigns/{campaign.id}",
        type_="CONTENT",
        reason="CONTENT_MISSING",
    )


def schedule_campaign(
    campaign_id: int,
    when: dt.datetime | None,
    request_id: str,
    fingerprint: str,
    dispatcher: Dispatcher,
) -> Campaign:
    def schedule() -> Campaign:
        if when is not None and when <= utcnow():  # inside: a retry is replayed, not re-checked
            raise invalid("scheduled_at", "must be in the future")
        campaign = transitions.get(campaign_id)
        transitions.require(campaign, Action.SCHEDULE)
        at = when or campaign.scheduled_at
        if at is None:
            raise invalid("scheduled_at", "is required: the campaign has no time to send yet")
        if at <= utcnow():
            raise invalid("scheduled_at", "the campaign's stored time has passed; give a new one")
        _require_content(campaign)
        return transitions.apply(campaign_id, Action.SCHEDULE, scheduled_at=at)

    campaign, ran = run_once("ScheduleCampaign", request_id, fingerprint, schedule)
    if ran:
        _dispatch(dispatcher.kickoff_at, campaign.id, campaign.scheduled_at)
    return campaign


def send_campaign_now(
    campaign_id: int, request_id: str, fingerprint: str, dispatcher: Dispatcher
) -> Campaign:
    def send() -> Campaign:
        campaign = transitions.get(campaign_id)
        transitions.require(campaign, Action.SEND_NOW)
        _require_content(campaign)
        return transitions.apply(campaign_id, Action.SEND_NOW, heartbeat_at=utcnow())

    campaign, ran = run_once("SendCampaignNow", request_id, fingerprint, send)
    if ran:
        _dispatch(dispatcher.start_now, campaign.id)
    return campaign


def cancel_campaign(campaign_id: int, request_id: str, fingerprint: str) -> Campaign:
    def cancel() -> Campaign:
        campaign = transitions.apply(campaign_id, Action.CANCEL, completed_at=utcnow())
        # Recipients not yet sent end skipped; rows a send job holds right now are closed
        # the same way by that job when it notices (within about a second).
        ledger.skip_pending(campaign_id, SkipReason.CANCELLED)
        return campaign

    campaign, _ = run_once("CancelCampaign", request_id, fingerprint, cancel)
    return campaign


def _dispatch(handoff: Callable[..., None], *args: object) -> None:
    """Hand off after commit. The database already holds the truth, so a Redis outage here
    is logged, not raised: the periodic sweep kicks off whatever is due."""
    try:
        handoff(*args)
    except Exception:
        log.warning(
            "hand-off to the job queue failed; the sweep will pick it up",
            exc_info=True,
            extra={"campaign_id": args[0]},
        )
