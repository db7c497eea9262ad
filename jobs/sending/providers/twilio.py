"""SMS through a Twilio-compatible Messages API: form POST with basic auth.

429 and 5xx answers are transient provider faults (a 429's Retry-After is kept as a floor for
the retry); other 4xx answers are permanent for that recipient and never a fault. A request
that never reached the API (refused, connect or pool timeout, failed write) is a transient
fault. A request that was sent but got no answer (read timeout, connection dropped) is
ambiguous: the API may have accepted it, and Twilio's Messages API takes no idempotency key
that would make a resend safe, so it is never resent.
The base URL is configurable, so tests and other providers speaking the same API work.
"""

from __future__ import annotations

import email.utils
import ssl
import threading
import time

import certifi
import httpx

from jobs.sending.providers import OutgoingSms, SendResult, ambiguous, permanent, sent, transient
from server.config import DeliverySettings

# The request went out whole; what is missing is only the answer.
_AFTER_SENDING = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)


def retry_after_seconds(value: str | None) -> float:
    """A Retry-After header (seconds or an HTTP date) as seconds from now; 0 when absent."""
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return 0.0


class TwilioProvider:
    name = "twilio"

    def __init__(self, settings: DeliverySettings) -> None:
        self.settings = settings
        # Requests in flight at once, each on a send thread with a keep-alive client of its
        # own: one client shared by many threads spends more time in its pool's lock than
        # on the wire (BENCHMARKS.md, "Sending engine v2").
        self.concurrency = settings.sms_max_in_flight
        base = settings.twilio_base_url.rstrip("/")
        self.url = f"{base}/2010-04-01/Accounts/{settings.twilio_account_sid}/Messages.json"
        self.endpoint = f"{base}/{settings.twilio_account_sid}"
        # One TLS context for every thread's client: building one loads the CA bundle, which
        # costs more than many requests.
        self._tls = ssl.create_default_context(cafile=certifi.where())
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()

    @property
    def client(self) -> httpx.Client:
        """This thread's client (one keep-alive connection)."""
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(
                auth=(self.settings.twilio_account_sid, self.settings.twilio_auth_token),
                timeout=self.settings.twilio_timeout,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                verify=self._tls,
            )
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def send_sms(self, message: OutgoingSms) -> SendResult:
        form = {"To": message.to, "From": self.settings.twilio_from, "Body": message.body}
        try:
            response = self.client.post(self.url, data=form)
        except _AFTER_SENDING as exc:
            return ambiguous(f"twilio: no answer to the request: {type(exc).__name__}")
        except httpx.HTTPError as exc:
            return transient(f"twilio request: {type(exc).__name__}: {exc}", fault=True)
        return self._answer(response)

    @staticmethod
    def _answer(response: httpx.Response) -> SendResult:
        if response.status_code in (200, 201):
            try:
                return sent(str(response.json()["sid"]))
            except (ValueError, KeyError):
                return permanent(f"twilio answered {response.status_code} without a sid")
        error = f"twilio {response.status_code}: {response.text[:300]}"
        if response.status_code == 429 or response.status_code >= 500:
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            return transient(error, fault=True, retry_after=wait)
        return permanent(error)

    def close(self) -> None:
        """Every thread's client (called once the send threads are done)."""
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
