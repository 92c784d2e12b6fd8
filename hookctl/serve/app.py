"""`serve`'s HTTP side: the `Server` that wires the routes, its health and metrics answers,
SIGHUP's reload, and the server's life (signals, start, shutdown).

POST /events[/{source}]  events in: 202 once stored; 400 bad JSON (line named), 401, 404
                         (a source the sources file refuses), 413, 503          (intake.py)
GET  /healthz /readyz    up; ready (store writable, rules loaded, not stopping)
GET  /metrics            Prometheus text format
GET  /  /deliveries/ID   the execution log; POST /deliveries/ID/replay for an admin
GET  /events /events/REF the stored events; POST /events/REF/fire (fire again) for an admin
GET  POST /login         the admin's sign-in                                (page_routes.py)
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from hookctl.errors import HookctlError
from hookctl.serve import reads
from hookctl.serve.auth import Gate, Sessions
from hookctl.serve.intake import Intake
from hookctl.serve.metrics import CONTENT_TYPE, Metrics
from hookctl.serve.page import Page
from hookctl.serve.page_routes import Pages
from hookctl.serve.runner import Runner

if TYPE_CHECKING:
    from hookctl.rules.load import Rule


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`: only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Server(Intake, Pages):
    """What the routes need: the runner, the gate, the page, and how to read the log.

    The intake and page routes are mixins: their bodies read these fields as `self.…`, and
    SIGHUP's new gate (`self.gate = …`) is seen by every route at once.
    """

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
