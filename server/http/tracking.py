"""The tracking HTTP app (WSGI): open pixel, click redirects, unsubscribe pages with RFC 8058
one-click, and provider webhooks. `python -m server.http.tracking` serves it with gunicorn.

Why gunicorn: pre-fork sync workers use every core for this CPU-light, database-bound work,
a crashed worker is replaced, and it is the most widely deployed WSGI server on Linux.
"""

from __future__ import annotations

import html
import logging
import uuid
from collections.abc import Iterable
from typing import Any

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from server.config import DeliverySettings
from server.delivery import events, webhooks
from server.delivery.events import EventInput
from server.delivery.link_tokens import CLICK, OPEN, UNSUBSCRIBE, InvalidToken, TokenSigner
from server.store.db import release_connection
from server.store.models import EventType

log = logging.getLogger(__name__)

# The smallest transparent GIF.
PIXEL = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)
NO_STORE = {"Cache-Control": "no-store, private", "Referrer-Policy": "no-referrer"}
PAGE = (
    "<!doctype html><html><head><meta charset=utf-8><meta name=viewport "
    "content='width=device-width'><title>{title}</title></head><body>{body}</body></html>"
)


def _page(title: str, body: str, status: int = 200) -> Response:
    return Response(
        PAGE.format(title=html.escape(title), body=body),
        status=status,
        mimetype="text/html",
        headers=NO_STORE,
    )


class TrackingApp:
    def __init__(self, settings: DeliverySettings) -> None:
        self.settings = settings
        self.signer = TokenSigner(settings.tracking_secret)
        self.urls = Map(
            [
                Rule("/o/<token>.gif", endpoint="open", methods=["GET"]),
                Rule("/c/<token>", endpoint="click", methods=["GET"]),
                Rule("/u/<token>", endpoint="unsubscribe", methods=["GET", "POST"]),
                Rule("/webhooks/twilio/status", endpoint="twilio_status", methods=["POST"]),
                Rule("/webhooks/twilio/inbound", endpoint="twilio_inbound", methods=["POST"]),
                Rule("/healthz", endpoint="health", methods=["GET"]),
            ]
        )

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        try:
            endpoint, args = self.urls.bind_to_environ(environ).match()
            response = getattr(self, f"on_{endpoint}")(request, **args)
        except HTTPException as exc:
            response = exc.get_response()
        except Exception:
            log.exception("tracking request failed", extra={"path": request.path})
            response = Response("internal error", status=500)
        finally:
            release_connection()
        return response(environ, start_response)

    def _token(self, token: str, purpose: str) -> Any:
        try:
            return self.signer.verify(token, purpose)
        except InvalidToken:
            raise NotFound("unknown link") from None

    def on_health(self, request: Request) -> Response:
        return Response("ok", mimetype="text/plain")

    @staticmethod
    def _record_visit(request: Request, kind: EventType, link: Any) -> None:
        """Every GET counts (totals); HEAD, from link checkers and proxies, records nothing."""
        if request.method == "GET":
            events.record_one(
                EventInput(
                    type=kind,
                    event_id=uuid.uuid4().hex,
                    campaign_id=link.campaign_id,
                    user_id=link.user_id,
                    url=link.url,
                )
            )

    def on_open(self, request: Request, token: str) -> Response:
        self._record_visit(request, EventType.OPENED, self._token(token, OPEN))
        return Response(PIXEL, mimetype="image/gif", headers=NO_STORE)

    def on_click(self, request: Request, token: str) -> Response:
        link = self._token(token, CLICK)
        self._record_visit(request, EventType.CLICKED, link)
        return Response(status=302, headers={"Location": link.url, **NO_STORE})

    def on_unsubscribe(self, request: Request, token: str) -> Response:
        link = self._token(token, UNSUBSCRIBE)
        if request.method != "POST":  # a GET (or HEAD) never unsubscribes: scanners follow links
            form = (
                f"<form method=post action='/u/{html.escape(token)}'><p>Stop receiving "
                "these messages?</p><button type=submit name=List-Unsubscribe "
                "value=One-Click>Unsubscribe</button></form>"
            )
            return _page("Unsubscribe", form)
        events.record_one(
            EventInput(
                type=EventType.UNSUBSCRIBED,
                event_id=f"unsubscribe:{link.campaign_id}:{link.user_id}",
                campaign_id=link.campaign_id,
                user_id=link.user_id,
                detail="one-click"
                if request.form.get("List-Unsubscribe") == "One-Click"
                else "page",
            )
        )
        # RFC 8058: answer the POST itself, never with a redirect.
        return _page(
            "Unsubscribed", "<p>You are unsubscribed. You will not get these messages any more.</p>"
        )

    def _twilio_params(self, request: Request) -> dict[str, str]:
        params = {key: request.form[key] for key in request.form}
        url = self.settings.public_base_url.rstrip("/") + request.full_path.rstrip("?")
        given = request.headers.get("X-Twilio-Signature", "")
        if not webhooks.signature_valid(self.settings.twilio_auth_token, url, params, given):
            raise _Forbidden()
        return params

    def on_twilio_status(self, request: Request) -> Response:
        webhooks.record_status(self._twilio_params(request))
        return Response(status=204)

    def on_twilio_inbound(self, request: Request) -> Response:
        params = self._twilio_params(request)
        if webhooks.is_stop(params.get("Body", "")):
            webhooks.opt_out(params.get("From", ""))
        return Response("<Response/>", mimetype="application/xml")


class _Forbidden(HTTPException):
    code = 403
    description = "bad or missing X-Twilio-Signature"


def main() -> None:
    """Serve the app with gunicorn: TRACKING_HOST, TRACKING_PORT, TRACKING_WORKERS."""
    import os

    from gunicorn.app.base import BaseApplication

    from server import logs
    from server.config import Settings
    from server.store.db import open_database

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            host = os.environ.get("TRACKING_HOST") or "127.0.0.1"
            port = os.environ.get("TRACKING_PORT") or "8080"
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", int(os.environ.get("TRACKING_WORKERS") or 2))
            self.cfg.set("accesslog", None)
            self.cfg.set("graceful_timeout", 10)

        def load(self) -> TrackingApp:
            # Runs in each worker after the fork: each gets its own connection pool.
            logs.setup()
            settings = Settings.from_env()
            open_database(settings.database_url, pool_size=4)
            return TrackingApp(DeliverySettings.from_env())

    Server().run()


if __name__ == "__main__":
    main()
