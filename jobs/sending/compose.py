"""Turn a ledger row and its user into the exact message that leaves: rendered, personalised,
with the headers bulk mail needs (RFC 5322, RFC 8058 one-click unsubscribe)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from jobs.sending import mime
from jobs.sending.mime import MimeTemplate
from jobs.sending.providers import OutgoingEmail, OutgoingSms
from server.config import DeliverySettings
from server.content import templates
from server.content.email_messages import render_content
from server.content.templates import RenderError
from server.core.channels import Channel
from server.delivery.link_tokens import LinkMaker, TokenSigner
from server.delivery.links import track

if TYPE_CHECKING:  # types only: this package runs no SQL
    from server.store.leases import Recipient
    from server.store.models import Campaign, Edition, EmailMessage


def message_id(campaign_id: int, user_id: int, domain: str) -> str:
    """The same for every attempt at one recipient, so a retry can be recognised."""
    return f"<campaign-{campaign_id}.user-{user_id}@{domain}>"


def _with_visible_unsubscribe(body_html: str, body_text: str, url: str) -> tuple[str, str]:
    """Bulk mail must show an unsubscribe link; add one when the template has none."""
    if url not in body_html:
        link = f'<p style="font-size:small"><a href="{html.escape(url)}">Unsubscribe</a></p>'
        body_html = (
            body_html.replace("</body>", link + "</body>")
            if "</body>" in body_html
            else body_html + link
        )
    if url not in body_text:
        body_text = body_text.rstrip("\n") + f"\n\nUnsubscribe: {url}\n"
    return body_html, body_text


class Composer:
    """Builds the messages of one campaign; templates are compiled once, per campaign."""

    def __init__(
        self,
        campaign: Campaign,
        edition: Edition,
        message: EmailMessage | None,
        settings: DeliverySettings,
    ) -> None:
        self.campaign = campaign
        self.edition = edition
        self.message = message
        self.settings = settings
        self.links = LinkMaker(settings.public_base_url, TokenSigner(settings.tracking_secret))
        self.mime = (
            MimeTemplate(mime.address(message.from_name, message.from_email), message.reply_to)
            if message is not None
            else None
        )
        self._sms_template = (
            templates.compile_template(campaign.sms_body, "sms_body")
            if campaign.channel == Channel.SMS
            else None
        )

    def email(self, user: Recipient, address: str) -> OutgoingEmail:
        """RenderError when the templates fail for this user, or when there is nothing to
        render (the campaign's email message was deleted)."""
        if self.message is None or self.mime is None:
            raise RenderError(f"email message {self.campaign.email_message_id} no longer exists")
        url = self.links.unsubscribe(self.campaign.id, user.id)
        subject, body_html, body_text = render_content(self.message, user, self.edition, url)
        body_html, body_text = _with_visible_unsubscribe(body_html, body_text, url)
        body_html = track(body_html, self.links, self.campaign.id, user.id, skip=url)
        mid = message_id(self.campaign.id, user.id, self.settings.message_id_domain)
        data = self.mime.build(
            to=address,
            subject=subject,
            message_id=mid,
            unsubscribe_url=url,
            text=body_text,
            html=body_html,
        )
        return OutgoingEmail(
            sender=self.message.from_email, recipient=address, message_id=mid, data=data
        )

    def sms(self, user: Recipient, address: str) -> OutgoingSms:
        assert self._sms_template is not None
        url = self.links.unsubscribe(self.campaign.id, user.id)
        body = templates.render(self._sms_template, templates.context(user, self.edition, url))
        return OutgoingSms(
            to=address, body=body, reference=f"campaign-{self.campaign.id}.user-{user.id}"
        )
