"""Send requests with httpx: a wall-clock deadline per attempt, bounded concurrency, capped reads."""

from __future__ import annotations

import asyncio
import email.utils
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from hookctl import __version__
from hookctl.policy import format_duration
from hookctl.render import ResolvedRequest

USER_AGENT = f"hookctl/{__version__}"
READ_CAP = 64 * 1024  # read this much of a response at most, so a huge one cannot eat memory
STORED_CAP = 4 * 1024  # and keep this much of it on record
DEFAULT_CONCURRENCY = 50
DEFAULT_PER_HOST = 20


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened on one attempt. The caller decides, with policy.classify, what it means."""

    started_at: float
    duration_ms: float
    status_code: int | None
    error: str | None
    response_headers: dict[str, str] | None = None
    response_body: str | None = None
    retry_after: float | None = None


class Sender:
    """An HTTP client for many concurrent attempts; use as `async with Sender() as s`."""

    def __init__(
        self,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        per_host: int = DEFAULT_PER_HOST,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.concurrency = max(1, concurrency)
        self.per_host = max(1, min(per_host, self.concurrency))
        self._transport = transport
        self._clock = clock
        self._slots = asyncio.Semaphore(self.concurrency)
        self._hosts: dict[str, asyncio.Semaphore] = {}
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Sender:
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        self._client = httpx.AsyncClient(
            transport=self._transport,
            limits=limits,
            # The deadline is enforced around the whole attempt (see send); these are a backstop.
            timeout=httpx.Timeout(130.0),
            follow_redirects=False,
            trust_env=False,
            # identity: a compressed reply could expand past READ_CAP in one chunk.
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def send(self, request: ResolvedRequest, *, timeout: float, secrets: tuple[str, ...] = ()) -> Outcome:
        """Make one attempt; never raises for network trouble, it becomes the outcome's error."""
        host = _host_key(request.url)
        host_slots = self._hosts.get(host)
        if host_slots is None:
            host_slots = self._hosts[host] = asyncio.Semaphore(self.per_host)
        # Take the host's slot first, so a dead host's queue never holds global slots.
        async with host_slots, self._slots:
            return await self._attempt(request, timeout, secrets)

    async def _attempt(self, request: ResolvedRequest, timeout: float, secrets: tuple[str, ...]) -> Outcome:
        assert self._client is not None, "use Sender as an async context manager"
        started = self._clock()
        t0 = time.perf_counter()
        status: int | None = None
        headers: dict[str, str] | None = None
        body = b""
        error: str | None = None
        try:
            async with asyncio.timeout(timeout):
                async with self._client.stream(
                    request.method, request.url, headers=request.headers, content=request.content
                ) as response:
                    status = response.status_code
                    headers = dict(response.headers)
                    async for chunk in response.aiter_raw():
                        body += chunk
                        if len(body) >= READ_CAP:
                            break
        except TimeoutError:
            error = f"timed out after {format_duration(timeout)}"
        except httpx.HTTPError as exc:
            error = describe_error(exc)
        except (OSError, ssl.SSLError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        duration_ms = (time.perf_counter() - t0) * 1000
        if error is not None:
            status_reason = error if status is None else f"HTTP {status}, then {error}"
            return Outcome(started, duration_ms, status, _scrub(status_reason, secrets), headers)
        assert status is not None
        return Outcome(
            started_at=started,
            duration_ms=duration_ms,
            status_code=status,
            error=None if 200 <= status < 400 else f"HTTP {status}",
            response_headers=headers,
            response_body=_decode(body, headers or {}),
            retry_after=parse_retry_after((headers or {}).get("retry-after"), now=started),
        )


def describe_error(exc: Exception) -> str:
    """A short human reason for a failed connection, as the execution log shows it."""
    text = str(exc) or type(exc).__name__
    # anyio's "All connection attempts failed" hides the reason in the exception chain.
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "could not resolve host"
        cause = cause.__cause__ or cause.__context__
    lowered = text.lower()
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if "refused" in lowered:
        return "connection refused"
    if any(s in lowered for s in ("name or service not known", "nodename nor servname", "getaddrinfo", "name resolution")):
        return "could not resolve host"
    if "ssl" in lowered or "certificate" in lowered:
        return f"TLS error: {text}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"connection closed by the server: {text}"
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return f"invalid URL: {text}"
    return f"network error: {text}"


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def _decode(body: bytes, headers: dict[str, str]) -> str:
    text = body[:STORED_CAP].decode("utf-8", errors="replace")
    if len(body) > STORED_CAP:
        text += "…"
    return text


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for value in secrets:
        if value:
            text = text.replace(value, "***")
    return text


def _host_key(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
