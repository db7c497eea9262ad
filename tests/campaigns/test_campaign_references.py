"""What a campaign refers to: its segment, its email message and its SMS template.

CreateCampaign and UpdateCampaign accept only a segment and an email message of the campaign's
own organization, only an email message of type campaign (not transactional), and only an
sms_body that compiles as a template. A bad reference is INVALID_ARGUMENT with a BadRequest
naming the field ("campaign.<field>" for UpdateCampaign), and nothing is written. In turn, a
segment or email message a draft campaign uses cannot be deleted until the campaign is, nor
can such an email message become transactional; and a campaign racing such a change either
sees it or is seen by it, never neither.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from campaigns.v1 import audience_service_pb2 as apb
from campaigns.v1 import campaign_pb2 as c
from campaigns.v1 import campaign_service_pb2 as cpb
from campaigns.v1 import edition_pb2, email_message_pb2
from campaigns.v1 import email_message_service_pb2 as epb
from tests.support.helpers import (
    DEFAULT_SEGMENTS,
    details,
    make_campaign,
    make_edition,
    make_email_message,
    make_segment,
    violated_fields,
)

MISSING_ID = 10**15
BAD_TEMPLATE = "Hi {{ user.first_name "
GOOD_TEMPLATE = "Hi {{ user.first_name | default('there') }}, see you at {{ edition.name }}!"
TRANSACTIONAL = email_message_pb2.EMAIL_MESSAGE_TYPE_TRANSACTIONAL
EMAIL = {"channel": c.CHANNEL_EMAIL, "sms_body": ""}


@dataclass(frozen=True)
class World:
    """An edition of the test's organization, and one of another organization."""

    audience: Any
    messages: Any
    edition: edition_pb2.Edition
    foreign: edition_pb2.Edition

    def segment(self, edition: edition_pb2.Edition | None = None) -> int:
        return make_segment(self.audience, edition or self.edition, name="Another").id

    def message(self, edition: edition_pb2.Edition | None = None, **fields: Any) -> int:
        return make_email_message(self.messages, edition or self.edition, **fields).id


@pytest.fixture
def world(audience, messages, org_id) -> World:
    return World(
        audience, messages, make_edition(audience, org_id), make_edition(audience, org_id + 1)
    )


def count(campaigns: Any, org_id: int) -> int:
    return campaigns.ListCampaigns(cpb.ListCampaignsRequest(organization_id=org_id)).count


def get(campaigns: Any, cid: int) -> c.Campaign:
    return campaigns.GetCampaign(cpb.GetCampaignRequest(id=cid)).campaign


def update(campaigns: Any, cid: int, paths: list[str], **values: Any) -> c.Campaign:
    return campaigns.UpdateCampaign(
        cpb.UpdateCampaignRequest(
            id=cid,
            campaign=c.Campaign(**values),
            update_mask={"paths": paths},
        )
    ).campaign


# Each bad reference: (case, the field at fault).
BAD = [
    ("nonexistent segment", "segment_id"),
    ("segment of another organization", "segment_id"),
    ("nonexistent email message", "email_message_id"),
    ("email message of another organization", "email_message_id"),
    ("transactional email message", "email_message_id"),
    ("sms_body that does not compile", "sms_body"),
]
BAD_IDS = [case for case, _ in BAD]
CONTENT = [b for b in BAD if b[1] != "segment_id"]


def bad_value(world: World, case: str) -> Any:
    """The value of the field at fault in `case`."""
    return {
        "nonexistent segment": lambda: MISSING_ID,
        "segment of another organization": lambda: world.segment(world.foreign),
        "nonexistent email message": lambda: MISSING_ID,
        "email message of another organization": lambda: world.message(world.foreign),
        "transactional email message": lambda: world.message(type=TRANSACTIONAL),
        "sms_body that does not compile": lambda: BAD_TEMPLATE,
    }[case]()


def assert_refused(error: grpc.RpcError, field: str, value: Any) -> None:
    """INVALID_ARGUMENT, with one field violation naming `field` and saying what is wrong."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = details(error)
    (violation,) = found["BadRequest"].field_violations
    assert violation.field == field
    if field.endswith("sms_body"):
        assert "line 1" in violation.description
    else:
        assert str(value) in violation.description
    info = found["ErrorInfo"]
    assert (info.reason, info.domain) == ("INVALID_ARGUMENT", "campaigns.v1")


@pytest.mark.parametrize(("case", "field"), BAD, ids=BAD_IDS)
def test_create_refuses_a_bad_reference_and_writes_nothing(campaigns, world, org_id, case, field):
    value = bad_value(world, case)
    fields = {**(EMAIL if field == "email_message_id" else {}), field: value}
    with pytest.raises(grpc.RpcError) as err:
        make_campaign(campaigns, world.edition, **fields)
    assert_refused(err.value, field, value)
    if case == "transactional email message":
        assert "transactional" in details(err.value)["BadRequest"].field_violations[0].description
    assert count(campaigns, org_id) == 0
    assert count(campaigns, org_id + 1) == 0


def test_create_reports_every_bad_reference_at_once(campaigns, world, org_id):
    with pytest.raises(grpc.RpcError) as err:
        make_campaign(
            campaigns, world.edition, segment_id=world.segment(world.foreign), sms_body=BAD_TEMPLATE
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(err.value) == {"segment_id", "sms_body"}
    with pytest.raises(grpc.RpcError) as err:
        make_campaign(
            campaigns,
            world.edition,
            segment_id=MISSING_ID,
            **EMAIL,
            email_message_id=world.message(type=TRANSACTIONAL),
        )
    assert violated_fields(err.value) == {"segment_id", "email_message_id"}
    assert count(campaigns, org_id) == 0


def test_create_accepts_valid_references(campaigns, world, org_id):
    segment, message = world.segment(), world.message()
    email = make_campaign(
        campaigns, world.edition, segment_id=segment, **EMAIL, email_message_id=message
    )
    sms = make_campaign(campaigns, world.edition, sms_body=GOOD_TEMPLATE)
    assert (email.segment_id, email.channel, email.email_message_id, email.sms_body) == (
        segment,
        c.CHANNEL_EMAIL,
        message,
        "",
    )
    assert (sms.segment_id, sms.channel, sms.email_message_id, sms.sms_body) == (
        DEFAULT_SEGMENTS[world.edition.id],
        c.CHANNEL_SMS,
        0,
        GOOD_TEMPLATE,
    )
    assert [get(campaigns, x.id) for x in (email, sms)] == [email, sms]
    assert count(campaigns, org_id) == 2


def start_for(world: World, campaigns: Any, field: str) -> c.Campaign:
    """A draft whose `field` is valid now: an email campaign for email_message_id."""
    if field == "email_message_id":
        return make_campaign(campaigns, world.edition, **EMAIL, email_message_id=world.message())
    return make_campaign(campaigns, world.edition)


@pytest.mark.parametrize(("case", "field"), BAD, ids=BAD_IDS)
def test_update_refuses_a_bad_reference_and_changes_nothing(campaigns, world, org_id, case, field):
    campaign = start_for(world, campaigns, field)
    before = get(campaigns, campaign.id)
    value = bad_value(world, case)
    with pytest.raises(grpc.RpcError) as err:
        update(campaigns, campaign.id, [field], **{field: value})
    assert_refused(err.value, f"campaign.{field}", value)
    assert get(campaigns, campaign.id) == before  # same etag: nothing was written
    assert count(campaigns, org_id) == 1


@pytest.mark.parametrize(("case", "field"), CONTENT, ids=[b[0] for b in CONTENT])
def test_switching_channel_checks_the_new_content(campaigns, world, case, field):
    if field == "email_message_id":  # SMS to email
        campaign = make_campaign(campaigns, world.edition)
        switch = {"channel": c.CHANNEL_EMAIL}
    else:  # email to SMS
        campaign = make_campaign(
            campaigns, world.edition, **EMAIL, email_message_id=world.message()
        )
        switch = {"channel": c.CHANNEL_SMS}
    before = get(campaigns, campaign.id)
    value = bad_value(world, case)
    with pytest.raises(grpc.RpcError) as err:
        update(
            campaigns,
            campaign.id,
            ["channel", "sms_body", "email_message_id"],
            **switch,
            **{field: value},
        )
    assert_refused(err.value, f"campaign.{field}", value)
    assert get(campaigns, campaign.id) == before


def test_update_accepts_valid_references(campaigns, world):
    sms = make_campaign(campaigns, world.edition)
    segment = world.segment()
    after = update(
        campaigns, sms.id, ["segment_id", "sms_body"], segment_id=segment, sms_body=GOOD_TEMPLATE
    )
    assert (after.segment_id, after.sms_body) == (segment, GOOD_TEMPLATE)
    first, second = world.message(), world.message(subject="Second")
    email = update(
        campaigns,
        sms.id,
        ["channel", "sms_body", "email_message_id"],
        channel=c.CHANNEL_EMAIL,
        email_message_id=first,
    )
    assert (email.channel, email.sms_body, email.email_message_id) == (c.CHANNEL_EMAIL, "", first)
    again = update(campaigns, sms.id, ["email_message_id"], email_message_id=second)
    assert again.email_message_id == second
    assert get(campaigns, sms.id) == again


def test_only_fields_in_the_mask_are_looked_up(campaigns, world):
    campaign = make_campaign(campaigns, world.edition)
    after = update(
        campaigns,
        campaign.id,
        ["name"],
        name="Renamed",
        segment_id=MISSING_ID,
        sms_body=BAD_TEMPLATE,
    )
    assert (after.name, after.segment_id, after.sms_body) == (
        "Renamed",
        campaign.segment_id,
        campaign.sms_body,
    )


def assert_in_use(error: grpc.RpcError, reason: str, subject: str) -> None:
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    found = details(error)
    assert found["ErrorInfo"].reason == reason
    (violation,) = found["PreconditionFailure"].violations
    assert (violation.type, violation.subject) == ("IN_USE", subject)


def delete_segment(audience: Any, segment_id: int) -> None:
    audience.DeleteSegment(apb.DeleteSegmentRequest(id=segment_id))


def delete_message(messages: Any, message_id: int) -> None:
    messages.DeleteEmailMessage(epb.DeleteEmailMessageRequest(id=message_id))


def test_segment_in_use_by_a_draft_is_kept_until_the_campaign_is_deleted(
    campaigns, audience, world, org_id
):
    segment = world.segment()
    campaign = make_campaign(campaigns, world.edition, segment_id=segment)
    with pytest.raises(grpc.RpcError) as err:
        delete_segment(audience, segment)
    assert_in_use(err.value, "SEGMENT_IN_USE", f"segments/{segment}")
    assert audience.GetSegment(apb.GetSegmentRequest(id=segment)).segment.id == segment
    assert get(campaigns, campaign.id) == campaign

    campaigns.DeleteCampaign(cpb.DeleteCampaignRequest(id=campaign.id))
    delete_segment(audience, segment)
    with pytest.raises(grpc.RpcError) as err:
        audience.GetSegment(apb.GetSegmentRequest(id=segment))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # Gone, it can no longer be named by a campaign.
    with pytest.raises(grpc.RpcError) as err:
        make_campaign(campaigns, world.edition, segment_id=segment)
    assert_refused(err.value, "segment_id", segment)
    assert count(campaigns, org_id) == 0


def test_email_message_in_use_by_a_draft_is_kept_until_the_campaign_is_deleted(
    campaigns, messages, world, org_id
):
    message = world.message()
    campaign = make_campaign(campaigns, world.edition, **EMAIL, email_message_id=message)
    with pytest.raises(grpc.RpcError) as err:
        delete_message(messages, message)
    assert_in_use(err.value, "EMAIL_MESSAGE_IN_USE", f"email_messages/{message}")
    got = messages.GetEmailMessage(epb.GetEmailMessageRequest(id=message)).email_message
    assert got.id == message
    assert get(campaigns, campaign.id) == campaign

    campaigns.DeleteCampaign(cpb.DeleteCampaignRequest(id=campaign.id))
    delete_message(messages, message)
    with pytest.raises(grpc.RpcError) as err:
        messages.GetEmailMessage(epb.GetEmailMessageRequest(id=message))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        make_campaign(campaigns, world.edition, **EMAIL, email_message_id=message)
    assert_refused(err.value, "email_message_id", message)
    assert count(campaigns, org_id) == 0


def test_references_left_by_an_update_are_free_to_delete(campaigns, audience, messages, world):
    old_segment, new_segment = world.segment(), world.segment()
    old_message, new_message = world.message(), world.message()
    campaign = make_campaign(
        campaigns, world.edition, segment_id=old_segment, **EMAIL, email_message_id=old_message
    )
    update(
        campaigns,
        campaign.id,
        ["segment_id", "email_message_id"],
        segment_id=new_segment,
        email_message_id=new_message,
    )
    delete_segment(audience, old_segment)
    delete_message(messages, old_message)
    with pytest.raises(grpc.RpcError) as err:
        delete_segment(audience, new_segment)
    assert_in_use(err.value, "SEGMENT_IN_USE", f"segments/{new_segment}")
    with pytest.raises(grpc.RpcError) as err:
        delete_message(messages, new_message)
    assert_in_use(err.value, "EMAIL_MESSAGE_IN_USE", f"email_messages/{new_message}")


def test_email_message_in_use_stays_a_campaign_message(campaigns, messages, world):
    message = world.message()
    campaign = make_campaign(campaigns, world.edition, **EMAIL, email_message_id=message)
    before = messages.GetEmailMessage(epb.GetEmailMessageRequest(id=message)).email_message

    def change(**fields: Any) -> email_message_pb2.EmailMessage:
        return messages.UpdateEmailMessage(
            epb.UpdateEmailMessageRequest(
                id=message,
                email_message=email_message_pb2.EmailMessage(**fields),
                update_mask={"paths": list(fields)},
            )
        ).email_message

    with pytest.raises(grpc.RpcError) as err:
        change(type=TRANSACTIONAL)
    assert_in_use(err.value, "EMAIL_MESSAGE_IN_USE", f"email_messages/{message}")
    assert messages.GetEmailMessage(epb.GetEmailMessageRequest(id=message)).email_message == (
        before
    )
    assert change(subject="New subject").subject == "New subject"  # other edits are fine
    campaigns.DeleteCampaign(cpb.DeleteCampaignRequest(id=campaign.id))
    assert change(type=TRANSACTIONAL).type == TRANSACTIONAL


def race(first: Callable[[], Any], second: Callable[[], Any]) -> tuple[Any, Any]:
    """Run both at the same moment; each gives its result or its status code."""
    gate = threading.Barrier(2)
    out: list[Any] = [None, None]

    def run(i: int, call: Callable[[], Any]) -> None:
        gate.wait()
        try:
            out[i] = call()
        except grpc.RpcError as err:
            out[i] = err.code()

    threads = [
        threading.Thread(target=run, args=(i, call)) for i, call in enumerate((first, second))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out[0], out[1]


ROUNDS = 25
CHANGES = ["delete segment", "delete email message", "make email message transactional"]


def contest(world: World, change: str) -> tuple[dict[str, Any], str, Callable[[], Any]]:
    """A fresh reference: the campaign fields naming it, the field a campaign made after
    `change` is refused on, and the call making `change`."""
    if change == "delete segment":
        segment = world.segment()
        return (
            {"segment_id": segment},
            "segment_id",
            lambda: world.audience.DeleteSegment(apb.DeleteSegmentRequest(id=segment)),
        )
    message = world.message()
    if change == "delete email message":
        request: Any = epb.DeleteEmailMessageRequest(id=message)
        act = world.messages.DeleteEmailMessage
    else:
        request = epb.UpdateEmailMessageRequest(
            id=message,
            email_message=email_message_pb2.EmailMessage(type=TRANSACTIONAL),
            update_mask={"paths": ["type"]},
        )
        act = world.messages.UpdateEmailMessage
    return {**EMAIL, "email_message_id": message}, "email_message_id", lambda: act(request)


@pytest.mark.parametrize("change", CHANGES)
def test_a_campaign_racing_a_change_to_its_reference_sees_it_or_is_seen(
    campaigns, world, org_id, change
):
    created = 0
    for _ in range(ROUNDS):
        fields, field, act = contest(world, change)
        create = functools.partial(make_campaign, campaigns, world.edition, **fields)
        campaign, changed = race(create, act)
        if isinstance(campaign, c.Campaign):  # first: the change must see the campaign
            created += 1
            assert changed == grpc.StatusCode.FAILED_PRECONDITION, (change, changed)
        else:  # second: the campaign must see the change
            assert campaign == grpc.StatusCode.INVALID_ARGUMENT, (change, campaign)
            assert not isinstance(changed, grpc.StatusCode), (change, changed)
            with pytest.raises(grpc.RpcError) as err:
                create()
            assert violated_fields(err.value) == {field}
    assert count(campaigns, org_id) == created
