"""`serve`'s HTTP side: the routes, their answers, and the server's life (signals, shutdown).

POST /events[/{source}]  events in: 202 once stored; 400 bad JSON (line named), 401, 404
                         (a source the sources file refuses), 413, 503
GET  /healthz /readyz    up; ready (store writable, rules loaded, not stopping)
GET  /metrics            Prometheus text format
GET  /  /deliveries/ID   the execution log; POST /deliveries/ID/replay for an admin
GET  /events /events/REF the stored events; POST /events/REF/fire (fire again) for an admin
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import CIMultiDict

from hookctl.errors import HookctlError
from hookctl.events.event import Event
from hookctl.events.read import read_source
from hookctl.serve import reads
from hookctl.serve.auth import (
    QUERY_TOKEN_HEADER,
    SESSION_COOKIE,
    SESSION_SECONDS,
    Gate,
    Sessions,
)
from hookctl.serve.metrics import CONTENT_TYPE, Metrics
from hookctl.serve.page import Page
from hookctl.serve.runner import Busy, Runner, Unavailable
from hookctl.serve.sources import SOURCE

if TYPE_CHECKING:
    from hookctl.rules.load import Rule

EVENT_REF = re.compile(r"^evt_[0-9A-Za-z]{1,64}$")
PAGE_ROWS = 100


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


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


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`: only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Server:
    """What the routes need: the runner, the gate, the page, and how to read the log."""

    runner: Runner
    gate: Gate
    metrics: Metrics
    max_body: int
    open_pages: bool  # the log and /metrics readable without the admin password
    reload_rules: Callable[[], list[Rule]]
    # SIGHUP reads the sources file again through this (None: no --sources given).
    reload_gate: Callable[[], Gate] | None = None
    log: Callable[[str], None] = _stderr
    page: Page = field(default_factory=Page)
    sessions: Sessions = field(default_factory=Sessions)

    # --- helpers ----------------------------------------------------------------------------

    def _refuse(
        self, source: str, reason: str, status: int, error: str, **extra: Any
    ) -> web.Response:
        self.metrics.refused(source, reason)
        headers = {}
        if status == 503:
            headers["Retry-After"] = str(self.runner.retry_after())
        return web.json_response({"error": error, **extra}, status=status, headers=headers)

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

    # --- intake -----------------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.Response:
        """Take one JSON object, an array of them, or NDJSON; 202 once all are stored."""
        given = request.match_info.get("source")
        source = "http" if given is None else given
        if not SOURCE.match(source):
            return self._refuse("invalid", "bad_request", 404, f"no such source: {source[:64]!r}")
        gate = self.gate  # one set of settings for the whole request, whatever SIGHUP does
        if not gate.listed(given):
            # Labelled `unlisted`, not by the name asked for: a scanner makes no new series.
            # The names listed are not secrets, but telling them helps nobody who should post.
            count = len(gate.sources)
            return self._refuse(
                "unlisted",
                "unknown_source",
                404,
                f"unknown source: {'none given' if given is None else repr(given)}; this "
                f"server takes events for its {count} listed source{'s' if count != 1 else ''} "
                "only (POST /events/SOURCE)",
                sources=count,
            )
        # Until the request has passed its checks, the name in the URL is anyone's: refusals
        # count under it only for /events or a listed source, else under `unverified`.
        unproven = source if given is None or given in gate.sources else "unverified"
        if request.content_length is not None and request.content_length > self.max_body:
            return self._too_big(unproven)
        body = bytearray()
        async for chunk in request.content.iter_chunked(1 << 16):
            body += chunk
            if len(body) > self.max_body:
                return self._too_big(unproven)
        headers = CIMultiDict(request.headers)
        headers.popall(QUERY_TOKEN_HEADER, None)
        if "token" in request.query:
            headers[QUERY_TOKEN_HEADER] = request.query["token"]
        reason = gate.intake(headers, bytes(body), source=given)
        if reason is not None:
            return self._refuse(unproven, "unauthorized", 401, "unauthorized", detail=reason)
        events: list[Event] = []
        problems: list[dict[str, Any]] = []
        for item in read_source(io.BytesIO(bytes(body)), source):
            if isinstance(item, Event):
                events.append(item)
            else:
                problems.append({"line": item.line, "error": item.message})
        if problems:
            first = problems[0]
            return self._refuse(
                source,
                "bad_request",
                400,
                f"line {first['line']}: {first['error']}",
                errors=problems[:20],
                stored=0,
            )
        if not events:
            return self._refuse(source, "bad_request", 400, "no events in the body", stored=0)
        try:
            accepted = await self.runner.submit(events)
        except Busy as exc:
            return self._refuse(source, "busy", 503, f"busy, retry later: {exc}")
        except Unavailable as exc:
            return self._refuse(source, "store", 503, f"the store cannot take events: {exc}")
        self.metrics.received(source, len(events))
        return web.json_response(
            {
                "accepted": len(accepted),
                "events": [
                    {
                        "line": event.line,
                        "id": a.event_id,
                        "deliveries": len(a.delivery_ids),
                        "delivery_ids": list(a.delivery_ids),
                        "duplicates": a.duplicates,
                    }
                    for event, a in zip(events, accepted, strict=True)
                ],
            },
            status=202,
        )

    def _too_big(self, source: str) -> web.Response:
        return self._refuse(
            source, "too_large", 413, f"body over the limit of {self.max_body} bytes", stored=0
        )

    # --- health and metrics -------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        """The process is up and answering."""
        return web.json_response({"ok": True})

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready for events: rules loaded, the store readable and its last write good."""
        problems = []
        if self.runner.stopping:
            problems.append("shutting down")
        if not self.runner.store_ok:
            problems.append("the last write to the store failed")
        try:
            await self.runner.read(reads.due_count, time.time())
        except HookctlError as exc:
            problems.append(f"store: {exc}")
        body = {"ready": not problems, "rules": len(self.runner.rules), "problems": problems}
        headers = {"Retry-After": str(self.runner.retry_after())} if problems else {}
        return web.json_response(body, status=503 if problems else 200, headers=headers)

    async def metrics_text(self, request: web.Request) -> web.Response:
        """Everything in the Prometheus text format."""
        if not self._can_view(request):
            return self._sign_in_needed()
        # The store's gauges, read again only if old (cheap reads; the counts off the loop).
        await self.metrics.gauges.refresh(self.runner.read, self.runner.read_apart)
        text = self.metrics.text()
        return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE})

    # --- the log page -------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        """The execution log, filtered by status, rule, ticket and time."""
        if not self._can_view(request):
            return self._sign_in_needed()
        q = request.query
        filters = {k: q.get(k, "").strip() for k in ("status", "rule", "ticket", "since")}
        since = None
        if filters["since"]:
            from hookctl.durations import parse_duration

            try:
                since = time.time() - parse_duration(filters["since"])
            except ValueError as exc:
                return self._html(self.page.message("Bad filter", f"since: {exc}"), status=400)
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
        since = None
        if filters["since"]:
            from hookctl.durations import parse_duration

            try:
                since = time.time() - parse_duration(filters["since"])
            except ValueError as exc:
                return self._html(self.page.message("Bad filter", f"since: {exc}"), status=400)
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

    # --- life ---------------------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: load the rules, and the sources file if one was given, again; each that is
        invalid is refused and the old one kept (the other is still reloaded)."""
        try:
            rules = self.reload_rules()
        except HookctlError as exc:
            self.log(
                f"serve: reload refused, keeping the {len(self.runner.rules)} rules loaded:\n  {exc}"
            )
        else:
            self.runner.reload(rules)
            self.log(f"serve: reloaded {len(rules)} rules")
        if self.reload_gate is None:
            return
        try:
            gate = self.reload_gate()
        except HookctlError as exc:
            self.log(
                "serve: sources reload refused, keeping the settings loaded "
                f"({describe_sources(self.gate)}):\n  {exc}"
            )
            return
        self.gate = gate
        self.log(f"serve: reloaded the sources file: {describe_sources(gate)}")

    def app(self) -> web.Application:
        """The aiohttp application with every route."""
        app = web.Application(client_max_size=self.max_body + 1024)
        app.add_routes(
            [
                web.post("/events", self.events),
                web.post("/events/{source}", self.events),
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
                web.get("/metrics", self.metrics_text),
                web.get("/", self.index),
                web.get("/login", self.login_form),
                web.post("/login", self.login),
                web.get("/deliveries/{id}", self.delivery),
                web.post("/deliveries/{id}/replay", self.replay),
                web.get("/events", self.events_page),
                web.get("/events/{ref}", self.event_page),
                web.post("/events/{ref}/fire", self.fire_again),
            ]
        )
        return app


def describe_sources(gate: Gate) -> str:
    """`2 sources with their own checks, others refused`, for the log lines."""
    count = len(gate.sources)
    others = "refused" if gate.refuse_unlisted else "the global options"
    own = "source with its own checks" if count == 1 else "sources with their own checks"
    return f"{count} {own}, others {others}"


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


async def run(server: Server, host: str, port: int, guard: Any, grace: float) -> None:
    """Serve until SIGTERM/SIGINT; SIGHUP reloads the rules."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
        loop.add_signal_handler(signal.SIGHUP, server.reload)
    await server.runner.start(guard)
    app_runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=grace)
    await app_runner.setup()
    site = web.TCPSite(app_runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await app_runner.cleanup()
        await server.runner.stop(grace)
        from hookctl.errors import UsageError

        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sockets = getattr(site._server, "sockets", None) or []
    bound = [s.getsockname() for s in sockets]
    real_port = bound[0][1] if bound else port
    shown = f"[{host}]" if ":" in host else host
    sources = f"; {describe_sources(server.gate)}" if server.reload_gate is not None else ""
    server.log(
        f"serve: listening on http://{shown}:{real_port} "
        f"({len(server.runner.rules)} rules{sources}; pid {os.getpid()})"
    )
    sys.stderr.flush()
    await stop.wait()
    server.log("serve: stopping: no new events; finishing what is in flight")
    server.runner.stopping = True
    # Requests already being answered finish (their events are stored); then the sends.
    await app_runner.cleanup()
    await server.runner.stop(grace)
    server.log("serve: stopped")
