"""A local webhook receiver for trying rules end to end (`hookctl listen`).

It runs on aiohttp's server in one asyncio loop: fast enough to be the receiver of a
benchmark, and exact about `--count N`, since requests are numbered one at a time on that
loop: the first N are answered and reported, any that arrive before it has closed get a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hookctl.render import signing

MAX_BODY = 10 * 1024 * 1024
TOLERANCE = (
    300.0  # seconds a webhook-timestamp may be off, as the Standard Webhooks libraries allow
)
_OK = b'{"ok": true}'
_NOT_OK = b'{"ok": false}'


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
    """An HTTP server that reports every request to a callback, one at a time, in order.

    The socket is bound when the Receiver is made (an OSError says the port is taken);
    `serve()` runs the server in the calling thread until `shutdown()` (from any thread) or
    until `limit` requests have been answered and reported.
    """

    def __init__(
        self,
        host: str,
        port: int,
        behaviour: Behaviour,
        on_request: Callable[[Received], None],
    ) -> None:
        self.behaviour = behaviour
        self.on_request = on_request
        # Called once the reports of a burst are made (stdout.flush): one write per burst of
        # requests rather than one per request, which under load costs more than the report.
        self.on_idle: Callable[[], None] = lambda: None
        self._idle_pending = False
        self._count = 0
        self._reported = 0
        self._limit: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stopped = threading.Event()
        self._shutdown_asked = False
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind((host, port))
            self._socket.listen(1024)
        except OSError:
            self._socket.close()
            raise

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        return int(self._socket.getsockname()[1])

    def count(self) -> int:
        """Requests received so far."""
        return self._count

    def serve(self, *, limit: int | None = None) -> None:
        """Serve until shutdown(), or until `limit` requests have been answered and reported."""
        self._limit = limit
        try:
            asyncio.run(self._serve())
        finally:
            self._stopped.set()

    @property
    def stop_asked(self) -> bool:
        """Whether shutdown() or stop_soon() was called."""
        return self._shutdown_asked

    def stop_soon(self) -> None:
        """Ask serve() to stop, without waiting: safe from any thread and from a signal handler
        (`listen`'s Ctrl-C), whenever it comes: before serve() starts, it returns at once."""
        self._shutdown_asked = True
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not self._stopped.is_set():
            with contextlib.suppress(RuntimeError):  # the loop has just closed
                loop.call_soon_threadsafe(stop.set)

    def shutdown(self) -> None:
        """Stop serving (waiting for serve() to return, when it runs) and close the socket."""
        self.stop_soon()
        if self._loop is not None and not self._stopped.is_set():
            self._stopped.wait(timeout=10)
        self.close()

    def close(self) -> None:
        """Close the listening socket."""
        self._socket.close()

    async def _serve(self) -> None:
        from aiohttp import web

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        # After both are set: a stop_soon() before this line is seen here, one after sets _stop.
        if self._shutdown_asked:
            return
        # aiohttp's low-level server: every path is ours, so no router or middlewares to pass.
        # No access log: every request is reported through on_request instead. lingering_time
        # 0: after refusing a body, close at once instead of reading it on.
        server = web.Server(self._handle, access_log=None, lingering_time=0)
        runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.SockSite(runner, self._socket).start()
            await self._stop.wait()
        finally:
            await runner.cleanup()
            self.on_idle()

    def _next(self) -> tuple[int, int]:
        # One loop thread numbers every request, so no two ever share a number.
        self._count += 1
        number = self._count
        b = self.behaviour
        return number, (b.fail_status if number <= b.fail_first else b.status)

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        received_at = time.time()
        try:
            body = await _body(request)
        except _BadRequest as exc:
            payload = json.dumps({"ok": False, "error": str(exc)}).encode()
            # The rest of the body is still on the wire: close rather than read it.
            response = web.Response(
                status=exc.status, body=payload, content_type="application/json"
            )
            response.force_close()
            return response
        if self._limit is not None and self._count >= self._limit:
            # Past --count: this receiver is closing; the sender retries elsewhere or later.
            response = web.Response(status=503, body=_NOT_OK, content_type="application/json")
            response.force_close()
            return response
        number, status = self._next()
        checked = None
        behaviour = self.behaviour
        if behaviour.keys:
            problem = verify(
                behaviour.keys, request.headers, body, received_at, behaviour.tolerance
            )
            checked = problem or "valid"
            status = 401 if problem else status
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        response = web.Response(
            status=status, body=_OK if status < 400 else _NOT_OK, content_type="application/json"
        )
        # Answered first, then reported: the answer is on its way however slow the report is.
        await response.prepare(request)
        await response.write_eof()
        self._report(
            Received(
                number=number,
                received_at=received_at,
                method=request.method,
                path=request.path_qs,
                headers=tuple(request.headers.items()),
                body=body,
                answered=status,
                signature=checked,
            )
        )
        return response

    def _report(self, request: Received) -> None:
        self.on_request(request)
        self._reported += 1
        if not self._idle_pending and self._loop is not None:
            self._idle_pending = True
            self._loop.call_soon(self._idle)
        if self._limit is not None and self._reported >= self._limit and self._stop is not None:
            # Counted only once reported, so --count N never exits before the Nth is printed.
            self._stop.set()

    def _idle(self) -> None:
        self._idle_pending = False
        self.on_idle()


async def _body(request: Any) -> bytes:
    """The whole body (chunked or not), refusing one larger than MAX_BODY before reading it."""
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise _BadRequest(413, f"body larger than {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > MAX_BODY:
            raise _BadRequest(413, f"body larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
