"""A minimal asyncio HTTP/1.1 keep-alive receiver for the benchmarks, run as its own process.

    python bench/receiver.py [--delay 0.02] [--status 200] [--hang] [--max-seconds 900]

It binds 127.0.0.1 on a free port, prints the port on stdout, and answers every request with
`--status` after `--delay` seconds (`--hang`: accepts and reads, never answers). It stops by
itself when its stdin closes (the parent went away) or after `--max-seconds`.

Paths under /_bench/ are controls and are not counted:
  GET  /_bench/stats          {"count", "first", "last", "by_status"} (first/last: time.time())
  POST /_bench/reset          zero the counters
  POST /_bench/status/NNN     answer NNN from now on
  GET  /_bench/redirect       302 to /_bench/landed (counted under "redirects", for checks)
  GET  /_bench/landed         counted under "landed": only a client that follows redirects gets here
  GET  /_bench/big            a 1 MiB body, to check that capped reads leave the pool healthy
  GET  /_bench/ids            {"distinct", "repeats"}: webhook-ids seen, and arrivals beyond
                              each one's first (re-sends: crash.py, stall.py); /all adds
                              {"ids": {webhook-id: arrivals}}
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import threading
import time

_REASONS = {200: "OK", 302: "Found", 404: "Not Found", 500: "Internal Server Error"}
_MAX_HEAD = 64 * 1024


class State:
    """Counters shared by every connection."""

    def __init__(self, delay: float, status: int) -> None:
        self.delay = delay
        self.status = status
        self.reset()

    def reset(self) -> None:
        """Forget everything counted so far."""
        self.count = 0
        self.first: float | None = None
        self.last: float | None = None
        self.by_status: dict[int, int] = {}
        self.redirects = 0
        self.landed = 0
        self.ids: dict[str, int] = {}  # arrivals per webhook-id

    def stats(self) -> dict[str, object]:
        """What /_bench/stats returns."""
        return {
            "count": self.count,
            "first": self.first,
            "last": self.last,
            "by_status": self.by_status,
            "redirects": self.redirects,
            "landed": self.landed,
        }


def response(status: int, body: bytes, extra: str = "") -> bytes:
    """A complete HTTP/1.1 response with a Content-Length, so the connection stays open."""
    reason = _REASONS.get(status, "Status")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode("ascii") + body


_OK = response(200, b'{"ok":true}')


class HttpProtocol(asyncio.Protocol):
    """One connection: parse requests (Content-Length bodies only) and answer them in order."""

    def __init__(self, state: State, hang: bool) -> None:
        self.state = state
        self.hang = hang
        self.buf = bytearray()
        self.need: int | None = None
        self.head: tuple[str, str, bool, str | None] = ("", "", False, None)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport to answer on."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the transport; late timers see it gone."""
        self.transport = None

    def data_received(self, data: bytes) -> None:
        """Buffer bytes and handle every complete request in them."""
        if self.hang:
            return
        self.buf += data
        while True:
            if self.need is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > _MAX_HEAD and self.transport is not None:
                        self.transport.close()
                    return
                lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
                del self.buf[: end + 4]
                method, path, _ = ([*lines[0].split(" ", 2), "", ""])[:3]
                length, close, webhook_id = 0, False, None
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    name = name.strip().lower()
                    if name == "content-length":
                        length = int(value.strip() or 0)
                    elif name == "connection" and value.strip().lower() == "close":
                        close = True
                    elif name == "webhook-id":
                        webhook_id = value.strip()
                self.need, self.head = length, (method, path, close, webhook_id)
            if len(self.buf) < self.need:
                return
            del self.buf[: self.need]
            self.need = None
            self._answer(*self.head)

    def _answer(self, method: str, path: str, close: bool, webhook_id: str | None) -> None:
        state = self.state
        if path.startswith("/_bench/"):
            self._send(self._control(method, path), close)
            return
        now = time.time()
        state.count += 1
        if webhook_id is not None:
            state.ids[webhook_id] = state.ids.get(webhook_id, 0) + 1
        state.first = now if state.first is None else state.first
        state.last = now
        status = state.status
        state.by_status[status] = state.by_status.get(status, 0) + 1
        data = _OK if status == 200 else response(status, b'{"ok":false}')
        if state.delay > 0:
            # Requests on one connection arrive one at a time and the delay is constant, so the
            # timers fire in arrival order and answers stay in order.
            asyncio.get_running_loop().call_later(state.delay, self._send, data, close)
        else:
            self._send(data, close)

    def _control(self, method: str, path: str) -> bytes:
        state = self.state
        if path == "/_bench/stats":
            return response(200, json.dumps(state.stats()).encode())
        if path == "/_bench/reset" and method == "POST":
            state.reset()
            return response(200, b"{}")
        if path.startswith("/_bench/status/") and method == "POST":
            state.status = int(path.rsplit("/", 1)[1])
            return response(200, b"{}")
        if path == "/_bench/redirect":
            state.redirects += 1
            return response(302, b"{}", "Location: /_bench/landed\r\n")
        if path == "/_bench/landed":
            state.landed += 1
            return response(200, b"{}")
        if path in ("/_bench/ids", "/_bench/ids/all"):
            repeats = sum(n - 1 for n in state.ids.values())
            data: dict[str, object] = {"distinct": len(state.ids), "repeats": repeats}
            if path.endswith("/all"):
                data["ids"] = state.ids
            return response(200, json.dumps(data).encode())
        if path == "/_bench/big":
            return response(200, b"x" * (1 << 20))
        return response(404, b"{}")

    def _send(self, data: bytes, close: bool) -> None:
        if self.transport is None:
            return
        self.transport.write(data)
        if close:
            self.transport.close()


async def serve(delay: float, status: int, hang: bool, max_seconds: float) -> None:
    """Serve until stdin closes or max_seconds pass."""
    loop = asyncio.get_running_loop()
    state = State(delay, status)
    server = await loop.create_server(
        lambda: HttpProtocol(state, hang), "127.0.0.1", 0, backlog=1024, reuse_address=True
    )
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    stop = asyncio.Event()

    def watch_stdin() -> None:
        # read() returns at EOF: the parent closed the pipe or died.
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max_seconds)
    server.close()


def main() -> None:
    """Parse options and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--status", type=int, default=200, help="status to answer with")
    parser.add_argument("--hang", action="store_true", help="accept and never answer")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop after this long")
    args = parser.parse_args()
    asyncio.run(serve(args.delay, args.status, args.hang, args.max_seconds))


if __name__ == "__main__":
    main()
