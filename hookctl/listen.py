"""A local webhook receiver for trying rules end to end (`hookctl listen`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 10 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the receiver saw it, and what it answered."""

    number: int
    received_at: float
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    answered: int


@dataclass
class Behaviour:
    """How the receiver answers: a status, failures first, a delay."""

    status: int = 200
    fail_first: int = 0
    fail_status: int = 500
    delay: float = 0.0


class Receiver:
    """A threaded HTTP server on loopback that reports every request to a callback."""

    def __init__(
        self,
        host: str,
        port: int,
        behaviour: Behaviour,
        on_request: Callable[[Received], None],
    ) -> None:
        self.behaviour = behaviour
        self.on_request = on_request
        self._count = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.server.daemon_threads = True

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        return int(self.server.server_address[1])

    def count(self) -> int:
        """Requests received so far."""
        with self._lock:
            return self._count

    def serve(self, *, limit: int | None = None) -> None:
        """Serve until shutdown(), or until `limit` requests have been answered."""
        if limit is None:
            self.server.serve_forever()
            return
        while self.count() < limit:
            self.server.handle_request()

    def shutdown(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()

    def _next(self) -> tuple[int, int]:
        with self._lock:
            self._count += 1
            number = self._count
        b = self.behaviour
        return number, (b.fail_status if number <= b.fail_first else b.status)

    def _handler(self) -> Any:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, MAX_BODY)) if length else b""
                number, status = receiver._next()
                if receiver.behaviour.delay:
                    time.sleep(receiver.behaviour.delay)
                payload = b'{"ok": true}' if status < 400 else b'{"ok": false}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                receiver.on_request(
                    Received(
                        number=number,
                        received_at=time.time(),
                        method=self.command,
                        path=self.path,
                        headers=tuple(self.headers.items()),
                        body=body,
                        answered=status,
                    )
                )

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: requests are reported through on_request instead."""

        return Handler
