"""Provider webhooks: Twilio-style SMS status callbacks and inbound replies (STOP).

Both are refused unless the request carries a valid X-Twilio-Signature: base64 of
HMAC-SHA1(auth token, full URL + each POST parameter name and value, sorted by name).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

from server.core.channels import Channel
from server.delivery import events
from server.delivery.events import EventInput
from server.store.db import tuples
from server.store.models import Campaign, Delivery, EventType, Suppression, User, utcnow

# Replies that opt a number out (carrier practice and CTIA guidance).
STOP_KEYWORDS = frozenset(
    {
        "STOP",
        "STOPALL",
        "STOP ALL",
        "UNSUBSCRIBE",
        "END",
        "QUIT",
        "CANCEL",
        "OPTOUT",
        "OPT-OUT",
        "REVOKE",
    }
)
# Twilio error codes that mean the number will never receive: suppress it.
HARD_ERRORS = frozenset({"21211", "21614", "30005", "30006"})


def signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    data = url + "".join(f"{key}{params[key]}" for key in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signature_valid(auth_token: str, url: str, params: Mapping[str, str], given: str) -> bool:
    return bool(auth_token) and hmac.compare_digest(signature(auth_token, url, params), given)


def status_event(params: Mapping[str, str]) -> EventInput | None:
    """The delivery event a status callback reports, if any (queued/sent carry none)."""
    sid, status = params.get("MessageSid", ""), params.get("MessageStatus", "")
    if status == "delivered":
        kind = EventType.DELIVERED
    elif status in ("undelivered", "failed"):
        hard = params.get("ErrorCode", "") in HARD_ERRORS
        kind = EventType.BOUNCED_HARD if hard else EventType.BOUNCED_SOFT
    else:
        return None
    return EventInput(
        type=kind,
        event_id=f"twilio:{sid}:{status}",
        provider_message_id=sid,
        detail=f"twilio {status} {params.get('ErrorCode', '')}".strip(),
    )


def record_status(params: Mapping[str, str]) -> events.Outcome | None:
    """Record what a status callback reports; None when it reports no delivery event."""
    event = status_event(params)
    return None if event is None else events.record_one(event)


def is_stop(body: str) -> bool:
    return " ".join(body.strip().upper().split()) in STOP_KEYWORDS


def opt_out(phone: str) -> int:
    """Suppress `phone` for every organization that has sent it an SMS; returns how many."""
    organizations = [
        row[0]
        for row in tuples(
            Campaign.select(Campaign.organization_id)
            .distinct()
            .join(Delivery, on=(Delivery.campaign == Campaign.id))
            .where((Delivery.address == phone) & (Campaign.channel == Channel.SMS))
        )
    ]
    for organization_id in organizations:
        Suppression.insert(
            organization_id=organization_id, channel=Channel.SMS, address=phone, reason="stop_reply"
        ).on_conflict_ignore().execute()
        User.update(sms_unsubscribed=True, modified=utcnow()).where(
            (User.organization_id == organization_id) & (User.phone == phone)
        ).execute()
    return len(organizations)
