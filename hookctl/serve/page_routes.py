"""`serve`'s pages: the log (/, /deliveries/ID, replay), the events (/events, /events/REF,
fire again) and signing in, with who may see them and the checks on every admin's POST.

A mixin of `Server` (hookctl/serve/app.py), which holds the attributes declared here; page.py
renders the HTML these routes answer with.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from aiohttp import web

from hookctl.serve import reads
from hookctl.serve.auth import SESSION_COOKIE, SESSION_SECONDS
from hookctl.serve.runner import Busy, Unavailable

if TYPE_CHECKING:
    from hookctl.serve.auth import Gate, Sessions
    from hookctl.serve.page import Page
    from hookctl.serve.runner import Runner

EVENT_REF = re.compile(r"^evt_[0-9A-Za-z]{1,64}$")
PAGE_ROWS = 100

_SECURITY_HEADERS = {
    # No script runs on these pages; forms post only here; no other site may frame them.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Pages:
    """The HTML routes, and the sign-in they need unless the pages are open."""

    runner: Runner
    gate: Gate
    open_pages: bool
    page: Page
    sessions: Sessions

    def _can_view(self, request: web.Request) -> bool:
        return self.open_pages or self._is_admin(request)

    def _is_admin(self, request: web.Request) -> bool:
        if self.gate.admin is None:
            return False
        signed_in = self.sessions.valid(request.cookies.get(SESSION_COOKIE))
        return signed_in or self.gate.is_admin(request.headers)

    def _html(self, text: str, status: int = 200) -> web.Response:
        return web.Response(
            text=text, status=status, content_type="text/html", headers=_SECURITY_HEADERS
        )

    def _sign_in_needed(self) -> web.Response:
        if self.gate.admin is None:
            return self._html(
                self.page.message("Not available", "This server shows its log on loopback only."),
                status=403,
            )
        # A browser gets the sign-in form; a script may send the password as basic auth.
        response = self._html(self.page.login(next_path="/"), status=401)
        response.headers["WWW-Authenticate"] = 'Basic realm="hookctl admin", charset="UTF-8"'
        return response

    def _since(self, given: str) -> tuple[float | None, web.Response | None]:
        """The `since` filter as the time to show from (None: not given), or, when it is not
        a duration, the 400 page to answer with instead."""
        if not given:
            return None, None
        from hookctl.durations import parse_duration

        try:
            return time.time() - parse_duration(given), None
        except ValueError as exc:
            return None, self._html(self.page.message("Bad filter", f"since: {exc}"), status=400)

    # --- the log page -------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        """The execution log, filtered by status, rule, ticket and time."""
        if not self._can_view(request):
            return self._sign_in_needed()
        q = request.query
        filters = {k: q.get(k, "").strip() for k in ("status", "rule", "ticket", "since")}
        since, bad = self._since(filters["since"])
        if bad is not None:
            return bad
        status = filters["status"] if filters["status"] in reads.STATUSES else None
        rows = await self.runner.read(
            reads.log_rows,
            status=status,
            rule=filters["rule"] or None,
            ticket=filters["ticket"] or None,
            since=since,
            limit=PAGE_ROWS,
        )
        names = sorted({r.name for r in self.runner.rules} | {r.rule for r in rows})
        return self._html(
            self.page.index(
                rows,
                filters=filters,
                rules=names,
                admin=self._is_admin(request),
                can_sign_in=self.gate.admin is not None,
            )
        )

    async def delivery(self, request: web.Request) -> web.Response:
        """One delivery: request (masked), attempts, and the replay form for an admin."""
        if not self._can_view(request):
            return self._sign_in_needed()
        view = await self.runner.read(reads.delivery, request.match_info["id"])
        if view is None:
            return self._html(self.page.message("Not found", "No such delivery."), status=404)
        message = "Queued again: due now." if request.query.get("replayed") else None
        return self._html(
            self.page.delivery(
                view,
                admin=self._is_admin(request),
                can_sign_in=self.gate.admin is not None,
                message=message,
            )
        )

    async def replay(self, request: web.Request) -> web.Response:
        """Queue one delivery again: an admin's POST from this page only."""
        if not self._is_admin(request):
            return self._sign_in_needed()
        delivery_id = request.match_info["id"]
        form = await request.post()
        token = form.get("token")
        if not isinstance(token, str) or not self.page.token_ok(delivery_id, token):
            return self._html(self.page.message("Refused", "The form's token is wrong."), 403)
        if not _same_origin(request):
            return self._html(self.page.message("Refused", "Cross-site request."), 403)
        problem = await self.runner.read(reads.replay, delivery_id, time.time())
        if problem is not None:
            return self._html(self.page.message("Not replayed", problem), status=409)
        raise web.HTTPSeeOther(f"/deliveries/{delivery_id}?replayed=1")

    # --- the events page --------------------------------------------------------------------

    async def events_page(self, request: web.Request) -> web.Response:
        """The stored events, filtered by source, event name, ticket, event id and time."""
        if not self._can_view(request):
            return self._sign_in_needed()
        q = request.query
        filters = {k: q.get(k, "").strip() for k in ("source", "event", "ticket", "id", "since")}
        since, bad = self._since(filters["since"])
        if bad is not None:
            return bad
        rows = await self.runner.read(
            reads.event_rows,
            source=filters["source"] or None,
            event_name=filters["event"] or None,
            ticket=filters["ticket"] or None,
            event_id=filters["id"] or None,
            since=since,
            limit=PAGE_ROWS,
        )
        return self._html(
            self.page.events(
                rows,
                filters=filters,
                admin=self._is_admin(request),
                can_sign_in=self.gate.admin is not None,
            )
        )

    async def event_page(self, request: web.Request) -> web.Response:
        """One stored event: its JSON, its deliveries, and the fire-again form for an admin."""
        if not self._can_view(request):
            return self._sign_in_needed()
        ref = request.match_info["ref"]
        view = await self.runner.read(reads.event, ref) if EVENT_REF.match(ref) else None
        if view is None:
            return self._html(self.page.message("Not found", "No such stored event."), status=404)
        return self._html(
            self.page.event(
                view,
                admin=self._is_admin(request),
                can_sign_in=self.gate.admin is not None,
                message=_fired_message(request.query.get("fired")),
            )
        )

    async def fire_again(self, request: web.Request) -> web.Response:
        """Run a stored event through the rules loaded now (no duplicate check): an admin's
        POST from its page only; the new deliveries are sent by the server's sending loop."""
        if not self._is_admin(request):
            return self._sign_in_needed()
        ref = request.match_info["ref"]
        form = await request.post()
        token = form.get("token")
        if not isinstance(token, str) or not self.page.fire_token_ok(ref, token):
            return self._html(self.page.message("Refused", "The form's token is wrong."), 403)
        if not _same_origin(request):
            return self._html(self.page.message("Refused", "Cross-site request."), 403)
        found = await self.runner.read(reads.firing, ref) if EVENT_REF.match(ref) else None
        if found is None:
            return self._html(self.page.message("Not found", "No such stored event."), status=404)
        if found.problem is not None or found.data is None:
            text = found.problem or "it cannot be fired again"
            return self._html(self.page.message("Not fired", text), status=409)
        try:
            made = await self.runner.fire_again(found.data, found.source, found.line, found.ref)
        except (Busy, Unavailable) as exc:
            return self._html(self.page.message("Not fired", str(exc)), status=503)
        raise web.HTTPSeeOther(f"/events/{ref}?fired={len(made)}")

    async def login_form(self, request: web.Request) -> web.Response:
        """The sign-in form (a password field, posted to this page)."""
        if self.gate.admin is None:
            return self._html(
                self.page.message("Not available", "No admin password is set (serve --admin-env)."),
                status=404,
            )
        return self._html(self.page.login(next_path=_local(request.query.get("next"))))

    async def login(self, request: web.Request) -> web.Response:
        """Check the admin password; a good one gets a session cookie and goes back."""
        form = await request.post()
        target = _local(form.get("next"))
        password = form.get("password")
        if not _same_origin(request) or self.gate.admin is None:
            return self._html(self.page.message("Refused", "Cross-site request."), 403)
        if not isinstance(password, str) or not self.gate.password_ok(password.encode()):
            return self._html(self.page.login(next_path=target, wrong=True), status=401)
        response = web.HTTPSeeOther(target)
        response.set_cookie(
            SESSION_COOKIE,
            self.sessions.issue(),
            max_age=int(SESSION_SECONDS),
            path="/",
            httponly=True,
            samesite="Strict",
            secure=request.secure or request.headers.get("X-Forwarded-Proto") == "https",
        )
        raise response


def _local(target: object) -> str:
    """A path on this server to go back to, never another site."""
    if not isinstance(target, str) or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def _fired_message(fired: str | None) -> str | None:
    """What the event page says after firing it again (`?fired=N`); None when it was not."""
    if fired is None or not fired.isdigit():
        return None
    count = int(fired)
    if count == 0:
        return "Fired again: no rule loaded now matches it, so no delivery was made."
    return f"Fired again: {count} new deliver{'y' if count == 1 else 'ies'}, due now."


def _same_origin(request: web.Request) -> bool:
    """A browser's POST says where it came from: refuse one from another site."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    return origin.split("://", 1)[-1] == request.host
