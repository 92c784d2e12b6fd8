"""Send requests with httpx: a wall-clock deadline per attempt, bounded concurrency, capped reads.

Every connection goes through the network guard (netguard.py): the host is resolved and
checked here, and the socket is opened to the checked address, while TLS still verifies the
certificate against the host name in the URL.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from hookctl import __version__
from hookctl.netguard import Guard, Refused, Unresolvable
from hookctl.policy import format_duration
from hookctl.request import ResolvedRequest
from hookctl.signing import sign_headers

USER_AGENT = f"hookctl/{__version__}"
READ_CAP = 64 * 1024  # read this much of a response at most, so a huge one cannot eat memory
STORED_CAP = 4 * 1024  # and keep this much of it on record
MAX_TIMEOUT = 120.0  # Movidesk's hard cap: no attempt lives longer, whatever the rule says
DEFAULT_CONCURRENCY = 50
DEFAULT_PER_HOST = 20

# httpx logs every request's full URL at INFO, and a URL can hold a token (Telegram's bot URL).
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)


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
    permanent: bool = False  # retrying cannot help (the network guard refused the address)


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to addresses the guard has checked for this host."""

    def __init__(self, guard: Guard) -> None:
        self._guard = guard
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve and check `host`, then connect to the first checked address that answers."""
        error: Exception | None = None
        for address in await self._guard.addresses(host):
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        """Never used: webhooks go over TCP only."""
        raise Refused("refused by the network guard: Unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        """Sleep (httpcore's retry backoff)."""
        await self._inner.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, with a connection pool that connects through the guard."""

    def __init__(self, guard: Guard, limits: httpx.Limits) -> None:
        # SSL_CERT_FILE / SSL_CERT_DIR may name an intranet CA; proxies from the environment never apply.
        context = httpx.create_ssl_context(trust_env=True)
        super().__init__(verify=context, limits=limits, trust_env=False)
        # httpx has no parameter for the network backend; the pool it builds is replaced by the
        # same pool with ours (tests/test_ssrf.py fails if a newer httpx stops using `_pool`).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(guard),
        )


class Sender:
    """An HTTP client for many concurrent attempts, through the network guard; `async with Sender() as s`."""

    def __init__(
        self,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        per_host: int = DEFAULT_PER_HOST,
        guard: Guard | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        max_timeout: float = MAX_TIMEOUT,
    ) -> None:
        self.concurrency = max(1, concurrency)
        self.per_host = max(1, min(per_host, self.concurrency))
        self.guard = guard or Guard()
        self._transport = transport  # given: used as is, without the guard (benchmarks)
        self._clock = clock
        self.max_timeout = max_timeout
        self._slots = asyncio.Semaphore(self.concurrency)
        self._hosts: dict[str, asyncio.Semaphore] = {}
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Sender:
        limits = httpx.Limits(
            max_connections=self.concurrency, max_keepalive_connections=self.concurrency
        )
        self._client = httpx.AsyncClient(
            transport=self._transport or _GuardedTransport(self.guard, limits),
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

    async def send(
        self,
        request: ResolvedRequest,
        *,
        timeout: float,
        secrets: tuple[str, ...] = (),
        webhook_id: str | None = None,
    ) -> Outcome:
        """Make one attempt; never raises for network trouble, it becomes the outcome's error.

        `webhook_id` (the delivery id, the same on every retry) is sent as `webhook-id`, and a
        request with signing keys is signed here, so the timestamp is the attempt's own.
        """
        host = _host_key(request.url)
        host_slots = self._hosts.get(host)
        if host_slots is None:
            host_slots = self._hosts[host] = asyncio.Semaphore(self.per_host)
        # Take the host's slot first, so a dead host's queue never holds global slots.
        async with host_slots, self._slots:
            return await self._attempt(request, timeout, (*request.sensitive, *secrets), webhook_id)

    async def _attempt(
        self,
        request: ResolvedRequest,
        timeout: float,
        secrets: tuple[str, ...],
        webhook_id: str | None,
    ) -> Outcome:
        assert self._client is not None, "use Sender as an async context manager"
        started = self._clock()
        t0 = time.perf_counter()
        status: int | None = None
        headers: dict[str, str] | None = None
        body = b""
        error: str | None = None
        permanent = False
        capped = timeout >= self.max_timeout
        timeout = min(timeout, self.max_timeout)
        try:
            async with asyncio.timeout(timeout):
                async with self._client.stream(
                    request.method,
                    request.url,
                    headers=_wire_headers(request, webhook_id, int(started)),
                    content=request.content,
                ) as response:
                    status = response.status_code
                    headers = dict(response.headers)
                    async for chunk in response.aiter_raw():
                        body += chunk
                        if len(body) >= READ_CAP:
                            break
        except TimeoutError:
            error = f"timed out after {format_duration(timeout)}"
            if capped:
                error = f"the operation was cancelled: no answer within {format_duration(timeout)} (the hard cap)"
        except Refused as exc:
            error, permanent = str(exc), True
        except Unresolvable:
            error = "could not resolve host"
        except httpx.HTTPError as exc:
            error = describe_error(exc)
        except (OSError, ssl.SSLError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        duration_ms = (time.perf_counter() - t0) * 1000
        if headers is not None:
            # A receiver may echo what it got ("invalid token abc123"): never keep a secret.
            headers = {k: _scrub(v, secrets) for k, v in headers.items()}
        if error is not None:
            error = _scrub(error, secrets)
            status_reason = error if status is None else f"HTTP {status}, then {error}"
            return Outcome(
                started, duration_ms, status, status_reason, headers, permanent=permanent
            )
        assert status is not None
        return Outcome(
            started_at=started,
            duration_ms=duration_ms,
            status_code=status,
            error=None if 200 <= status < 400 else f"HTTP {status}",
            response_headers=headers,
            response_body=_decode(body, secrets),
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
    if any(
        s in lowered
        for s in (
            "name or service not known",
            "nodename nor servname",
            "getaddrinfo",
            "name resolution",
        )
    ):
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


def _wire_headers(
    request: ResolvedRequest, webhook_id: str | None, timestamp: int
) -> list[tuple[bytes, bytes]]:
    """The headers as sent: Standard Webhooks headers added, values as UTF-8 (obs-text)."""
    headers = list(request.headers)
    if webhook_id is not None:
        extra = [("webhook-id", webhook_id)]
        if request.sign_keys:
            extra = sign_headers(request.sign_keys, webhook_id, timestamp, request.content)
        names = {name for name, _ in extra}
        headers = [(k, v) for k, v in headers if k.lower() not in names] + extra
    return [(k.encode(), v.encode()) for k, v in headers]


def _decode(body: bytes, secrets: tuple[str, ...]) -> str:
    # Scrub before cutting, so no secret is kept half.
    text = _scrub(body.decode("utf-8", errors="replace"), secrets)
    return text if len(text) <= STORED_CAP else text[:STORED_CAP] + "…"


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for value in secrets:
        if value:
            text = text.replace(value, "***")
    return text


def _host_key(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
