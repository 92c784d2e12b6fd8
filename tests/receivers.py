"""Test helpers for delivery tests: rules with short policies, waiting for due rows, a threaded receiver."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

# For tests whose receiver fails on purpose to exercise retries, notices or leases: the
# circuit breaker (on by default; tests/test_breaker.py) would hold its deliveries instead.
NO_BREAKER = "breaker: off\n"


def rule_yaml(url: str, *, name: str = "r1", retry: str = "none", extra: str = "") -> str:
    """A one-rule file for ticket.created events, POSTing the event to `url`."""
    text = (
        f"name: {name}\n"
        "on: [ticket.created]\n"
        f"webhook: {{method: POST, url: {url!r}}}\n"
        f"retry: {retry}\n"
    )
    return text + extra


def event(n: int, **ticket: Any) -> dict[str, Any]:
    """A ticket.created event with id evt_<n> for ticket <n>."""
    return {"event": "ticket.created", "id": f"evt_{n}", "ticket": {"id": n, **ticket}}


def events_ndjson(count: int, start: int = 0) -> str:
    """`count` distinct events as NDJSON."""
    return "".join(json.dumps(event(n)) + "\n" for n in range(start, start + count))


def wait_until_due(db: Path, timeout: float = 10.0) -> None:
    """Sleep until every pending delivery is due, so the next retry-loop finds them all."""
    from hookctl.store import open_store

    with open_store(db, create=False) as store:
        due = [d.next_attempt_at or 0.0 for d in store.query(status="pending", limit=None)]
    latest = max(due, default=None)
    if latest is not None:
        assert latest - time.time() < timeout, "a delivery is scheduled too far ahead"
        time.sleep(max(0.0, latest - time.time()) + 0.005)


def status_counts(db: Path) -> dict[str, int]:
    """How many deliveries have each status (statuses with none left out), via the store."""
    from hookctl.store import open_store

    with open_store(db, create=False) as store:
        counts = store.stats(since=None).by_status
    return {status: n for status, n in counts.items() if n}


def problems(db: Path) -> list[str]:
    """What the store's own integrity check finds wrong with the database (empty: healthy)."""
    from hookctl.store import open_store

    with open_store(db, create=False) as store:
        return store.check_integrity()


def hookctl(*args: Any, env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen[str]:
    """Start `python -m hookctl ARGS` as a real process (environment inherited, plus `env`)."""
    import os

    return subprocess.Popen(
        [sys.executable, "-m", "hookctl", *map(str, args)],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def wait_for(condition: Any, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll `condition()` until true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class Receiver:
    """A threaded loopback receiver whose answer can change mid-test; records every request.

    Requests are recorded when they arrive (before any delay), so `arrived()` counts attempts in
    flight; each record is (webhook-id header, event id from the JSON body).
    """

    def __init__(self) -> None:
        self.server = HTTPServer(host="127.0.0.1", threaded=True)
        self.status = 200
        self.delay = 0.0
        self.headers: dict[str, str] = {}
        self.received: list[tuple[str | None, str | None]] = []
        self._lock = threading.Lock()
        self.server.expect_request("/hook").respond_with_handler(self._handle)

    @property
    def url(self) -> str:
        """Where rules should send."""
        return self.server.url_for("/hook")

    def _handle(self, request: Request) -> Response:
        body = request.get_json(silent=True) or {}
        with self._lock:
            self.received.append((request.headers.get("webhook-id"), body.get("id")))
            status, delay, headers = self.status, self.delay, dict(self.headers)
        if delay:
            time.sleep(delay)
        return Response(f"answer {status}", status=status, headers=headers)

    def arrived(self) -> int:
        """Requests received so far (answered or still being answered)."""
        with self._lock:
            return len(self.received)

    def ids(self, since: int = 0) -> Counter[str | None]:
        """How often each webhook-id arrived, from request number `since` on."""
        with self._lock:
            return Counter(webhook_id for webhook_id, _ in self.received[since:])

    def start(self) -> Receiver:
        """Start serving."""
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self.server.is_running():
            self.server.stop()
