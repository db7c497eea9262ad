"""EmailMessageService over a real channel: CRUD with a BadRequest per bad field, and previews
of email (Jinja2, autoescaped HTML, text derived from HTML) and SMS (encoding, parts) content
as a user imported through ImportUsers would get it."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from campaigns.v1 import audience_service_pb2 as apb
from campaigns.v1 import edition_pb2, email_message_pb2, user_pb2
from campaigns.v1 import email_message_service_pb2 as epb
from tests.support.helpers import details, make_email_message, violated_fields

CAMPAIGN = email_message_pb2.EMAIL_MESSAGE_TYPE_CAMPAIGN
TRANSACTIONAL = email_message_pb2.EMAIL_MESSAGE_TYPE_TRANSACTIONAL
GSM7, UCS2 = epb.SMS_ENCODING_GSM7, epb.SMS_ENCODING_UCS2
MISSING_ID = 9_000_000_000_000


def _edition(audience: Any, org_id: int) -> edition_pb2.Edition:
    edition = edition_pb2.Edition(organization_id=org_id, name="Roskilde 2027", timezone="UTC")
    return audience.CreateEdition(apb.CreateEditionRequest(edition=edition)).edition


def _user_id(audience: Any, org_id: int, **fields: Any) -> int:
    """Import one user and return its id."""
    attributes = fields.pop("attributes", {})
    user = user_pb2.User(external_id="u-1", **fields)
    user.attributes.update(attributes)
    result = audience.ImportUsers(
        iter([apb.ImportUsersRequest(organization_id=org_id, users=[user])])
    )
    assert result.rejected == 0, result.rejections
    listed = audience.ListUsers(apb.ListUsersRequest(organization_id=org_id)).results
    return next(u.id for u in listed if u.external_id == "u-1")


def _fails(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value


def _update(
    messages: Any, message_id: int, paths: list[str], **fields: Any
) -> email_message_pb2.EmailMessage:
    request = epb.UpdateEmailMessageRequest(
        id=message_id,
        email_message=email_message_pb2.EmailMessage(**fields),
        update_mask=field_mask_pb2.FieldMask(paths=paths),
    )
    return messages.UpdateEmailMessage(request).email_message


def _get(messages: Any, message_id: int) -> email_message_pb2.EmailMessage:
    return messages.GetEmailMessage(epb.GetEmailMessageRequest(id=message_id)).email_message


def test_create_get_update_delete(audience, messages, org_id):
    edition = _edition(audience, org_id)
    created = make_email_message(
        messages,
        edition,
        from_email="Tickets@Festival.EXAMPLE",
        reply_to="help@festival.example",
        text_body="Hi",
    )
    assert created.id > 0 and created.type == CAMPAIGN
    assert (created.organization_id, created.edition_id) == (org_id, edition.id)
    assert created.from_email == "Tickets@festival.example"  # domain normalised
    assert created.HasField("created") and created.HasField("modified")
    assert _get(messages, created.id) == created

    updated = _update(
        messages,
        created.id,
        ["subject", "type", "reply_to"],
        subject="Tickets, {{ user.first_name }}",
        type=TRANSACTIONAL,
        from_name="Ignored",
        reply_to="",
    )
    assert (updated.subject, updated.type, updated.reply_to) == (
        "Tickets, {{ user.first_name }}",
        TRANSACTIONAL,
        "",
    )
    assert (updated.from_name, updated.html_body, updated.text_body) == (
        created.from_name,
        created.html_body,
        "Hi",
    )
    assert updated.created == created.created
    assert _get(messages, created.id) == updated

    error = _fails(_update, messages, created.id, ["text_body", "html_body"])
    assert violated_fields(error) == {"html_body"}  # would leave no body at all
    error = _fails(_update, messages, created.id, ["organization_id"], organization_id=1)
    assert violated_fields(error) == {"update_mask"}
    assert _get(messages, created.id) == updated

    messages.DeleteEmailMessage(epb.DeleteEmailMessageRequest(id=created.id))
    for call, request in (
        (messages.GetEmailMessage, epb.GetEmailMessageRequest(id=created.id)),
        (messages.DeleteEmailMessage, epb.DeleteEmailMessageRequest(id=created.id)),
        (
            messages.UpdateEmailMessage,
            epb.UpdateEmailMessageRequest(
                id=created.id,
                update_mask=field_mask_pb2.FieldMask(paths=["subject"]),
                email_message={"subject": "x"},
            ),
        ),
    ):
        error = _fails(call, request)
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert details(error)["ResourceInfo"].resource_name == f"email_messages/{created.id}"


def test_list_filters_newest_first(audience, messages, org_id):
    first, second = _edition(audience, org_id), _edition(audience, org_id)
    a = make_email_message(messages, first).id
    b = make_email_message(messages, first, type=TRANSACTIONAL).id
    c = make_email_message(messages, second).id
    make_email_message(messages, _edition(audience, org_id + 1))

    def listed(**fields: Any) -> list[int]:
        request = epb.ListEmailMessagesRequest(organization_id=org_id, **fields)
        return [m.id for m in messages.ListEmailMessages(request).results]

    assert listed() == [c, b, a]
    assert listed(edition_id=first.id) == [b, a]
    assert listed(type=CAMPAIGN) == [c, a]
    assert listed(type=TRANSACTIONAL, edition_id=first.id) == [b]
    paged = messages.ListEmailMessages(
        epb.ListEmailMessagesRequest(organization_id=org_id, page=2, page_size=2)
    )
    assert ([m.id for m in paged.results], paged.count, paged.previous_page) == ([a], 3, 1)
    error = _fails(listed, type=7)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == {"type"}


@pytest.mark.parametrize(
    ("fields", "bad", "says"),
    [
        ({"type": email_message_pb2.EMAIL_MESSAGE_TYPE_UNSPECIFIED}, "type", "required"),
        ({"type": 99}, "type", "unknown"),
        ({"subject": ""}, "subject", "required"),
        ({"subject": "  "}, "subject", "required"),
        ({"subject": "Hello\nBcc: all@example.org"}, "subject", "one line"),
        ({"subject": "x" * 999}, "subject", "998"),
        ({"from_email": ""}, "from_email", "required"),
        ({"from_email": "news"}, "from_email", "@"),
        ({"reply_to": "help@"}, "reply_to", "@"),
        ({"html_body": "", "text_body": " "}, "html_body", "html_body or a text_body"),
        ({"subject": "Hi {{ user.first_name "}, "subject", "line 1"),
        (
            {"html_body": "<p>\n{% if user.first_name %}\nHi\n{% endfor %}</p>"},
            "html_body",
            "line 4",
        ),
        ({"text_body": "Hi\n{{ user. }}"}, "text_body", "line 2"),
    ],
)
def test_create_rejects_bad_field(audience, messages, org_id, fields, bad, says):
    edition = _edition(audience, org_id)
    error = _fails(make_email_message, messages, edition, **fields)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    (violation,) = details(error)["BadRequest"].field_violations
    assert violation.field == bad
    assert says in violation.description


def test_edition_of_another_organization_is_refused(audience, messages, org_id):
    foreign = _edition(audience, org_id + 1)
    error = _fails(make_email_message, messages, foreign, organization_id=org_id)
    assert violated_fields(error) == {"edition_id"}


def test_preview_personalises_and_escapes(audience, messages, org_id):
    edition = _edition(audience, org_id)
    user_id = _user_id(
        audience,
        org_id,
        email="Ann@Example.org",
        first_name="<b>Ann</b>",
        attributes={"ticket_type": "vip"},
    )
    message = make_email_message(
        messages,
        edition,
        subject="Hi {{ user.first_name }}, {{ user.attributes.nickname }}!",
        from_name="Festival",
        from_email="news@festival.example",
        reply_to="help@festival.example",
        html_body="<p>Hello {{ user.first_name }}{{ user.attributes.nickname }}, your "
        "{{ user.attributes.ticket_type }} ticket{{ user.attributes.a.b.c }}.</p>"
        '<a href="{{ unsubscribe_url }}">Stop</a>',
    )
    got = messages.PreviewEmailMessage(
        epb.PreviewEmailMessageRequest(id=message.id, user_id=user_id)
    )
    assert got.subject == "Hi <b>Ann</b>, !"  # a subject is text: not escaped
    assert "<p>Hello &lt;b&gt;Ann&lt;/b&gt;, your vip ticket.</p>" in got.html_body
    assert "<b>" not in got.html_body
    assert got.text_body.startswith("Hello <b>Ann</b>, your vip ticket.")  # derived from HTML
    assert "Stop" in got.text_body and "unsubscribe" in got.text_body
    assert got.sender == "Festival <news@festival.example>"
    assert got.reply_to == "help@festival.example"
    assert got.to == "Ann@example.org"


def test_preview_renders_the_text_body_when_given(audience, messages, org_id):
    edition = _edition(audience, org_id)
    user_id = _user_id(audience, org_id, email="ann@example.org", first_name="Ann")
    message = make_email_message(
        messages,
        edition,
        from_name="Grøn Koncert",
        text_body="Dear {{ user.first_name }} <3\n{{ edition.name }}",
    )
    got = messages.PreviewEmailMessage(
        epb.PreviewEmailMessageRequest(id=message.id, user_id=user_id)
    )
    assert got.text_body == "Dear Ann <3\nRoskilde 2027"  # text is never escaped
    assert got.subject == "Hi Ann"
    assert got.sender == "Grøn Koncert <news@festival.example>"
    assert got.reply_to == ""


def test_preview_refuses_other_organizations_and_missing_ids(audience, messages, org_id):
    message = make_email_message(messages, _edition(audience, org_id))
    stranger = _user_id(audience, org_id + 1, email="x@example.org")
    error = _fails(
        messages.PreviewEmailMessage,
        epb.PreviewEmailMessageRequest(id=message.id, user_id=stranger),
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == {"user_id"}
    for request in (
        epb.PreviewEmailMessageRequest(id=message.id, user_id=MISSING_ID),
        epb.PreviewEmailMessageRequest(id=MISSING_ID, user_id=stranger),
    ):
        assert _fails(messages.PreviewEmailMessage, request).code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("body", "encoding", "segments", "length"),
    [
        ("Tickets are out!", GSM7, 1, 16),
        ("a" * 160, GSM7, 1, 160),
        ("a" * 161, GSM7, 2, 161),
        ("a" * 306, GSM7, 2, 306),
        ("a" * 307, GSM7, 3, 307),
        ("Price: 10€", GSM7, 1, 11),  # the euro sign is an escape sequence: two septets
        ("a" * 158 + "€", GSM7, 1, 160),
        ("a" * 159 + "€", GSM7, 2, 161),
        ("{[~]}|^\\", GSM7, 1, 16),
        ("Æbleskiver på Ærø, ÉÑÜ §¿¡", GSM7, 1, 26),
        ("Łódź", UCS2, 1, 4),
        ("a" * 69 + "ł", UCS2, 1, 70),
        ("a" * 70 + "ł", UCS2, 2, 71),
        ("a" * 133 + "ł", UCS2, 2, 134),
        ("a" * 134 + "ł", UCS2, 3, 135),
        ("See you there 🎸", UCS2, 1, 16),  # an emoji is two UTF-16 units
        ("a" * 68 + "🎸", UCS2, 1, 70),
        ("a" * 69 + "🎸", UCS2, 2, 71),
        ("ç", UCS2, 1, 1),  # only the capital Ç is in the GSM-7 alphabet
    ],
)
def test_preview_sms_counts_parts(messages, body, encoding, segments, length):
    got = messages.PreviewSmsMessage(epb.PreviewSmsMessageRequest(body=body))
    assert (got.text, got.encoding, got.segments, got.length) == (body, encoding, segments, length)


def test_preview_sms_renders_for_a_user(audience, messages, org_id):
    edition = _edition(audience, org_id)
    user_id = _user_id(audience, org_id, first_name="Åse", attributes={"seat": 12})
    body = "Hi {{ user.first_name }}, seat {{ user.attributes.seat }}{{ user.attributes.x }}"
    request = epb.PreviewSmsMessageRequest(
        body=body + " at {{ edition.name }}", user_id=user_id, edition_id=edition.id
    )
    got = messages.PreviewSmsMessage(request)
    assert got.text == "Hi Åse, seat 12 at Roskilde 2027"
    assert (got.encoding, got.segments, got.length) == (GSM7, 1, len(got.text))
    anonymous = messages.PreviewSmsMessage(epb.PreviewSmsMessageRequest(body=body))
    assert anonymous.text == "Hi , seat "
    raw = messages.PreviewSmsMessage(
        epb.PreviewSmsMessageRequest(
            body="{{ user.first_name }}", user_id=_user_id(audience, org_id + 1, first_name="<b>")
        )
    )
    assert raw.text == "<b>"  # SMS is not HTML: no escaping


def test_preview_sms_rejects_bad_templates_and_editions(messages):
    error = _fails(messages.PreviewSmsMessage, epb.PreviewSmsMessageRequest(body="Hi\n{% if %}"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    (violation,) = details(error)["BadRequest"].field_violations
    assert (violation.field, "line 2" in violation.description) == ("body", True)
    error = _fails(
        messages.PreviewSmsMessage, epb.PreviewSmsMessageRequest(body="Hi", edition_id=MISSING_ID)
    )
    assert violated_fields(error) == {"edition_id"}
    error = _fails(
        messages.PreviewSmsMessage, epb.PreviewSmsMessageRequest(body="Hi", user_id=MISSING_ID)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
