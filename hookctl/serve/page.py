"""The execution-log and events pages: HTML rendered on the server from Jinja templates, no
JavaScript.

The templates are ours and trusted; everything in them from the store (URLs, errors, response
bodies, ticket numbers) is data, escaped by autoescape. Requests are shown masked, as `hookctl
log ID` shows them. Replaying is a POST carrying a token only this page can know (an HMAC of
the delivery id under a key made at start-up), so another site cannot make a browser signed in
as admin replay anything. Firing a stored event again is protected the same way, by a token
of another purpose ("fire:" against "replay:"), so one form's token is never the other's.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime

from jinja2 import Environment, PackageLoader, select_autoescape

from hookctl.serve.reads import STATUSES, DeliveryView, EventRow, EventView, LogRow


def _when(value: float | None) -> str:
    if value is None:
        return ""
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class Page:
    """Renders the log, one delivery, the events and one event; makes and checks the tokens
    of the replay and fire-again forms."""

    def __init__(self) -> None:
        self.env = Environment(
            loader=PackageLoader("hookctl.serve", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["when"] = _when
        self._key = secrets.token_bytes(32)

    def token(self, delivery_id: str) -> str:
        """The anti-forgery token of the replay form for one delivery."""
        return hmac.new(self._key, b"replay:" + delivery_id.encode(), hashlib.sha256).hexdigest()

    def token_ok(self, delivery_id: str, given: str) -> bool:
        """Whether a posted token is this delivery's."""
        return hmac.compare_digest(self.token(delivery_id), given)

    def fire_token(self, event_ref: str) -> str:
        """The anti-forgery token of the fire-again form for one stored event."""
        return hmac.new(self._key, b"fire:" + event_ref.encode(), hashlib.sha256).hexdigest()

    def fire_token_ok(self, event_ref: str, given: str) -> bool:
        """Whether a posted token is this event's fire-again token."""
        return hmac.compare_digest(self.fire_token(event_ref), given)

    def index(
        self,
        rows: list[LogRow],
        *,
        filters: dict[str, str],
        rules: list[str],
        admin: bool,
        can_sign_in: bool,
    ) -> str:
        """The log: newest deliveries first, with the filter form."""
        return self.env.get_template("index.html").render(
            rows=rows,
            filters=filters,
            statuses=STATUSES,
            rules=rules,
            admin=admin,
            can_sign_in=can_sign_in,
        )

    def delivery(
        self, view: DeliveryView, *, admin: bool, can_sign_in: bool, message: str | None = None
    ) -> str:
        """One delivery: its request (masked), every attempt, and the replay form for admins."""
        return self.env.get_template("delivery.html").render(
            d=view,
            admin=admin,
            can_sign_in=can_sign_in,
            token=self.token(view.row.id) if admin else "",
            message=message,
        )

    def events(
        self,
        rows: list[EventRow],
        *,
        filters: dict[str, str],
        admin: bool,
        can_sign_in: bool,
    ) -> str:
        """The stored events: newest first, with the filter form."""
        return self.env.get_template("events.html").render(
            rows=rows, filters=filters, admin=admin, can_sign_in=can_sign_in
        )

    def event(
        self, view: EventView, *, admin: bool, can_sign_in: bool, message: str | None = None
    ) -> str:
        """One stored event: its JSON, its deliveries, and the fire-again form for admins."""
        return self.env.get_template("event.html").render(
            e=view,
            admin=admin,
            can_sign_in=can_sign_in,
            token=self.fire_token(view.row.ref) if admin else "",
            message=message,
        )

    def login(self, *, next_path: str, wrong: bool = False) -> str:
        """The admin sign-in form."""
        return self.env.get_template("login.html").render(next_path=next_path, wrong=wrong)

    def message(self, title: str, text: str) -> str:
        """A short page saying what happened (not found, refused)."""
        return self.env.get_template("message.html").render(title=title, text=text)
