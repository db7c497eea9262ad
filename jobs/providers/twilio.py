"""SMS through a Twilio-compatible Messages API: form POST with basic auth.

429 and 5xx answers (and timeouts) are transient; other 4xx answers are permanent.
The base URL is configurable, so tests and other providers speaking the same API work.
"""

from __future__ import annotations

import httpx

from jobs.providers import OutgoingSms, SendResult, permanent, sent, transient
from server.config import DeliverySettings


class TwilioProvider:
    name = "twilio"
    concurrency = 4  # requests in flight at once; the client pools keep-alive connections

    def __init__(self, settings: DeliverySettings) -> None:
        self.settings = settings
        base = settings.twilio_base_url.rstrip("/")
        self.url = f"{base}/2010-04-01/Accounts/{settings.twilio_account_sid}/Messages.json"
        # One pooled keep-alive client per batch job.
        self.client = httpx.Client(
            auth=(settings.twilio_account_sid, settings.twilio_auth_token),
            timeout=settings.twilio_timeout,
        )

    def send_sms(self, message: OutgoingSms) -> SendResult:
        form = {"To": message.to, "From": self.settings.twilio_from, "Body": message.body}
        try:
            response = self.client.post(self.url, data=form)
        except httpx.HTTPError as exc:
            return transient(f"twilio request: {type(exc).__name__}: {exc}")
        if response.status_code in (200, 201):
            try:
                return sent(str(response.json()["sid"]))
            except (ValueError, KeyError):
                return permanent(f"twilio answered {response.status_code} without a sid")
        error = f"twilio {response.status_code}: {response.text[:300]}"
        if response.status_code == 429 or response.status_code >= 500:
            return transient(error)
        return permanent(error)

    def close(self) -> None:
        self.client.close()
