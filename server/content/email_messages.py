"""Email message use cases: CRUD with template checks, and previews for one user."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, fields
from email.headerregistry import Address

from server.audience.addresses import normalise_email
from server.audience.editions import edition_of
from server.audience.users import get_user
from server.content import templates
from server.core import masks
from server.core.errors import FailedPrecondition, InvalidArgument, NotFound
from server.core.sms import SmsCost, cost
from server.core.status import ACTIVE, Status
from server.core.validation import Violations, invalid
from server.security import tenancy
from server.store.db import locked, write_transaction
from server.store.models import Campaign, Edition, EmailMessage, User, utcnow
from server.store.pagination import Page, PageRequest, paginate

TYPES = ("campaign", "transactional")
EDITABLE_FIELDS = (
    "type",
    "subject",
    "from_name",
    "from_email",
    "reply_to",
    "html_body",
    "text_body",
)
PREVIEW_UNSUBSCRIBE_URL = "https://example.invalid/unsubscribe/preview"


@dataclass(frozen=True)
class EmailMessageInput:
    organization_id: int = 0
    edition_id: int = 0
    type: str | None = None
    subject: str = ""
    from_name: str = ""
    from_email: str = ""
    reply_to: str = ""
    html_body: str = ""
    text_body: str = ""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html_body: str
    text_body: str
    sender: str
    reply_to: str
    to: str


def _address(v: Violations, value: str, field: str, *, required: bool) -> str:
    if not value.strip():
        if required:
            v.add(field, "is required")
        return ""
    try:
        return normalise_email(value.strip())
    except ValueError as exc:
        v.add(field, str(exc))
        return value


def _check(v: Violations, data: EmailMessageInput) -> dict[str, object]:
    v.check(
        data.type in TYPES, "type", "is required: EMAIL_MESSAGE_TYPE_CAMPAIGN or _TRANSACTIONAL"
    )
    v.text(data.subject, "subject", max_length=998, required=True)
    v.text(data.from_name, "from_name", max_length=255)
    if any(ch in data.subject + data.from_name for ch in "\r\n"):
        v.add(
            "subject" if "\n" in data.subject or "\r" in data.subject else "from_name",
            "must be one line (no CR or LF)",
        )
    values = {f.name: getattr(data, f.name) for f in fields(data)}
    values["from_email"] = _address(v, data.from_email, "from_email", required=True)
    values["reply_to"] = _address(v, data.reply_to, "reply_to", required=False)
    v.check(
        bool(data.html_body.strip() or data.text_body.strip()),
        "html_body",
        "a message needs an html_body or a text_body",
    )
    for name, html in (("subject", False), ("html_body", True), ("text_body", False)):
        try:
            templates.compile_template(getattr(data, name), name, html=html)
        except InvalidArgument as exc:  # keep collecting the other fields' problems
            v.items.extend(exc.violations)
    return values


def get_email_message(message_id: int, *, lock: bool = False) -> EmailMessage:
    """`lock`: on PostgreSQL, hold the row FOR UPDATE until the transaction ends."""
    query = EmailMessage.select().where(EmailMessage.id == message_id)
    message = (locked(query) if lock else query).get_or_none()
    if message is None:
        raise NotFound("email_message", message_id)
    tenancy.check_owner(message.organization_id, "email_message", message_id)
    return message


def create_email_message(data: EmailMessageInput) -> EmailMessage:
    tenancy.check_may_act(data.organization_id)
    v = Violations()
    v.positive_id(data.organization_id, "email_message.organization_id")
    v.positive_id(data.edition_id, "email_message.edition_id")
    values = _check(v, data)
    v.raise_if_any()
    with write_transaction():
        edition_of(data.edition_id, data.organization_id)
        values["edition"] = values.pop("edition_id")
        return EmailMessage.create(**values)


def list_email_messages(
    organization_id: int, edition_id: int, type_: str | None, page: PageRequest
) -> Page[EmailMessage]:
    v = Violations()
    number, size = page.resolved(v)
    v.raise_if_any()
    query = tenancy.scoped(EmailMessage.select(), EmailMessage.organization_id).order_by(
        EmailMessage.created.desc(), EmailMessage.id.desc()
    )
    if organization_id:
        query = query.where(EmailMessage.organization_id == organization_id)
    if edition_id:
        query = query.where(EmailMessage.edition == edition_id)
    if type_:
        query = query.where(EmailMessage.type == type_)
    return paginate(query, number, size)


def update_email_message(
    message_id: int, data: EmailMessageInput, mask: Collection[str]
) -> EmailMessage:
    masks.require_editable(mask, EDITABLE_FIELDS)
    with write_transaction():
        message = get_email_message(message_id, lock=True)
        current = EmailMessageInput(**{f.name: getattr(message, f.name) for f in fields(data)})
        v = Violations()
        values = _check(v, masks.merge(current, data, mask))
        v.raise_if_any()
        if "type" in mask and values["type"] != "campaign" and _in_use(message.id):
            raise FailedPrecondition(
                f"email message {message_id} is used by a campaign that has not finished, "
                "which can only send a campaign message",
                subject=f"email_messages/{message_id}",
                type_="IN_USE",
                reason="EMAIL_MESSAGE_IN_USE",
            )
        changes = {p: values[p] for p in mask}
        EmailMessage.update(modified=utcnow(), **changes).where(
            EmailMessage.id == message_id
        ).execute()
        return get_email_message(message_id)


def _in_use(message_id: int) -> bool:
    """Whether a campaign that has not finished sends this message."""
    return (
        Campaign.select()
        .where(
            (Campaign.email_message_id == message_id)
            & Campaign.status.in_([Status.DRAFT, Status.SCHEDULED, *ACTIVE])
        )
        .exists()
    )


def delete_email_message(message_id: int) -> None:
    with write_transaction():
        # Locked first, so a CreateCampaign naming it meanwhile is either seen below or,
        # waiting for the lock, finds it gone (see `server.campaigns.commands._shared`).
        message = get_email_message(message_id, lock=True)
        if _in_use(message.id):
            raise FailedPrecondition(
                f"email message {message_id} is used by a campaign that has not finished",
                subject=f"email_messages/{message_id}",
                type_="IN_USE",
                reason="EMAIL_MESSAGE_IN_USE",
            )
        message.delete_instance()


def render_content(
    message: EmailMessage, user: User | None, edition: Edition | None, unsubscribe_url: str
) -> tuple[str, str, str]:
    """(subject, html, text) as `user` gets them. RenderError when a template fails."""
    context = templates.context(user, edition, unsubscribe_url)
    html = templates.render(
        templates.compile_template(message.html_body, "html_body", html=True), context
    )
    if message.text_body.strip():
        text = templates.render(templates.compile_template(message.text_body, "text_body"), context)
    else:
        derived = templates.text_template_from_html(message.html_body)
        # The text template derived once per message is the fast path; a template whose
        # tags html2text cannot carry through is converted per recipient instead.
        text = templates.render(derived, context) if derived else templates.html_to_text(html)
    subject = templates.render(templates.compile_template(message.subject, "subject"), context)
    return " ".join(subject.split()), html, text


def render_email(
    message: EmailMessage, user: User | None, edition: Edition | None, unsubscribe_url: str
) -> RenderedEmail:
    """The message as `user` gets it, with its envelope. RenderError as render_content."""
    subject, html, text = render_content(message, user, edition, unsubscribe_url)
    # Readable, like the subject: formataddr would RFC 2047-encode a non-ASCII name.
    sender = str(Address(display_name=message.from_name, addr_spec=message.from_email))
    return RenderedEmail(
        subject=subject,
        html_body=html,
        text_body=text,
        sender=sender,
        reply_to=message.reply_to,
        to=str(Address(addr_spec=user.email)) if user and user.email else "",
    )


def preview_email(message_id: int, user_id: int) -> RenderedEmail:
    message = get_email_message(message_id)
    user = get_user(user_id)
    if user.organization_id != message.organization_id:
        raise invalid("user_id", f"user {user_id} is not in the message's organization")
    try:
        return render_email(message, user, message.edition, PREVIEW_UNSUBSCRIBE_URL)
    except templates.RenderError as exc:
        raise invalid("html_body", f"fails to render for user {user_id}: {exc}") from None


def preview_sms(body: str, user_id: int, edition_id: int) -> tuple[str, SmsCost]:
    template = templates.compile_template(body, "body")
    user = get_user(user_id) if user_id else None
    edition = Edition.get_or_none(Edition.id == edition_id) if edition_id else None
    if edition is not None and not tenancy.allows(edition.organization_id):
        edition = None
    if edition_id and edition is None:
        raise invalid("edition_id", f"edition {edition_id} does not exist")
    try:
        text = templates.render(template, templates.context(user, edition, PREVIEW_UNSUBSCRIBE_URL))
    except templates.RenderError as exc:
        raise invalid("body", f"fails to render: {exc}") from None
    return text, cost(text)
