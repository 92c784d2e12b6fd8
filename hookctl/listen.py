"""A local webhook receiver for trying rules end to end (`hookctl listen`)."""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hookctl import signing

MAX_BODY = 10 * 1024 * 1024
TOLERANCE = (
    300.0  # seconds a webhook-timestamp may be off, as the Standard Webhooks libraries allow
)


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
    signature: str | None = None  # with secrets: "valid", or what is wrong; None: not checked


@dataclass
class Behaviour:
    """How the receiver answers: a status, failures first, a delay."""

    status: int = 200
    fail_first: int = 0
    fail_status: int = 500
    delay: float = 0.0
    keys: tuple[bytes, ...] = ()  # Standard Webhooks keys: verify signatures, answer 401 if bad
    tolerance: float = TOLERANCE


def verify(
    keys: Sequence[bytes], headers: Any, body: bytes, now: float, tolerance: float = TOLERANCE
) -> str | None:
    """Check a Standard Webhooks signature: None when one of the keys signed it, else what is wrong."""
    msg_id, stamp, signatures = (headers.get(name) for name in signing.HEADERS)
    if not (msg_id and stamp and signatures):
        return "unsigned: missing " + ", ".join(n for n in signing.HEADERS if not headers.get(n))
    try:
        timestamp = int(stamp)
    except ValueError:
        return "webhook-timestamp is not a number"
    if abs(now - timestamp) > tolerance:
        off = "old" if now > timestamp else "in the future"
        return (
            f"webhook-timestamp is {abs(now - timestamp):.0f} s {off} (tolerance {tolerance:.0f} s)"
        )
    given = [part for part in signatures.split() if part.startswith("v1,")]
    for key in keys:
        expected = signing.signature(key, msg_id, timestamp, body)
        if any(hmac.compare_digest(expected, part) for part in given):
            return None
    return "signature mismatch: no v1 signature matches the secret"


class _BadRequest(Exception):
    """A request whose body cannot be read; answered with `status` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Receiver:
    """A threaded HTTP server that reports every request to a callback, one at a time."""

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
        self._reported = 0
        self._limit: int | None = None
        self._lock = threading.Lock()
        self._report_lock = (
            threading.Lock()
        )  # requests arrive in parallel; their output must not mix
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
        """Serve until shutdown(), or until `limit` requests have been answered and reported."""
        self._limit = limit
        self.server.serve_forever(poll_interval=0.1)

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

    def _report(self, request: Received) -> None:
        with self._report_lock:
            self.on_request(request)
            self._reported += 1
            done = self._limit is not None and self._reported >= self._limit
        if done:
            # Counted only once reported, so --count N never exits before the Nth is printed.
            threading.Thread(target=self.server.shutdown, daemon=True).start()

    def _handler(self) -> Any:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                received_at = time.time()
                try:
                    body = self._body()
                except _BadRequest as exc:
                    self.close_connection = True  # the rest of the body is still on the wire
                    self._answer(exc.status, json.dumps({"ok": False, "error": str(exc)}).encode())
                    return
                number, status = receiver._next()
                checked = None
                if receiver.behaviour.keys:
                    problem = verify(
                        receiver.behaviour.keys,
                        self.headers,
                        body,
                        received_at,
                        receiver.behaviour.tolerance,
                    )
                    checked = problem or "valid"
                    status = 401 if problem else status
                if receiver.behaviour.delay:
                    time.sleep(receiver.behaviour.delay)
                self._answer(status, b'{"ok": true}' if status < 400 else b'{"ok": false}')
                receiver._report(
                    Received(
                        number=number,
                        received_at=received_at,
                        method=self.command,
                        path=self.path,
                        headers=tuple(self.headers.items()),
                        body=body,
                        answered=status,
                        signature=checked,
                    )
                )

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    return self._chunked()
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    raise _BadRequest(400, "bad Content-Length") from None
                if length < 0:
                    raise _BadRequest(400, "bad Content-Length")
                if length > MAX_BODY:
                    raise _BadRequest(413, f"body larger than {MAX_BODY} bytes")
                return self.rfile.read(length) if length else b""

            def _chunked(self) -> bytes:
                chunks: list[bytes] = []
                size = 0
                while True:
                    line = self.rfile.readline(1024)
                    try:
                        length = int(line.split(b";")[0].strip(), 16)
                    except ValueError:
                        raise _BadRequest(400, "bad chunk size") from None
                    if length == 0:
                        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                            pass  # trailer fields
                        return b"".join(chunks)
                    size += length
                    if size > MAX_BODY:
                        raise _BadRequest(413, f"body larger than {MAX_BODY} bytes")
                    chunks.append(self.rfile.read(length))
                    self.rfile.readline()

            def _answer(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                self.wfile.flush()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: requests are reported through on_request instead."""

        return Handler
