"""Send requests with aiohttp: a wall-clock deadline per attempt, bounded concurrency, capped reads.

Every connection goes through the network guard (netguard.py): host names are resolved and
checked by the connector's resolver, literal addresses are checked before the request, and the
socket is opened to a checked address, while TLS still verifies the certificate against the
host name in the URL. The host judged is the one the client will use: the URL is parsed once,
by yarl (IDNA and all: `１２７.０.０.１` is 127.0.0.1 to it), and that parsed URL is what is
sent. A socket factory checks every peer address at connect time as well, so a connection
that reached an address some other way than through the guard is still refused.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import certifi
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from hookctl import __version__
from hookctl.durations import format_duration
from hookctl.render.request import ResolvedRequest
from hookctl.render.scrub import scrub as _scrub
from hookctl.render.signing import sign_headers
from hookctl.transport.netguard import Guard, Refused, Unresolvable, parse_literal

USER_AGENT = f"hookctl/{__version__}"
READ_CAP = 64 * 1024  # read this much of a response at most, so a huge one cannot eat memory
STORED_CAP = 4 * 1024  # and keep this much of it on record
MAX_TIMEOUT = 120.0  # Movidesk's hard cap: no attempt lives longer, whatever the rule says
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
    permanent: bool = False  # retrying cannot help (the network guard refused the address)
    refused: Refused | None = None  # the guard's refusal: another allow-list might allow it


class _GuardedResolver(AbstractResolver):
    """aiohttp's resolver, through the guard: the connection goes only to checked addresses."""

    def __init__(self, guard: Guard) -> None:
        self._guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The checked addresses for `host` (raises Refused or Unresolvable)."""
        return [
            ResolveResult(
                hostname=host,  # TLS still verifies the certificate against this name
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in await self._guard.addresses(host)
        ]

    async def close(self) -> None:
        """Nothing to release."""


class _BadURL(Exception):
    """A URL that will never be sent (permanent): one the client cannot parse, or an address
    in an unusual form: an old BSD one (`2130706433`, `127.1`), which aiohttp will not send,
    or non-ASCII characters (`１２７.０.０.１`) that IDNA turns into one."""


def _ssl_context() -> ssl.SSLContext:
    """certifi's roots, as before; SSL_CERT_FILE / SSL_CERT_DIR may name an intranet CA instead."""
    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if cafile or capath:
        return ssl.create_default_context(cafile=cafile or None, capath=capath or None)
    return ssl.create_default_context(cafile=certifi.where())


class Sender:
    """An HTTP client for many concurrent attempts, through the network guard; `async with Sender() as s`."""

    def __init__(
        self,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        per_host: int = DEFAULT_PER_HOST,
        guard: Guard | None = None,
        clock: Callable[[], float] = time.time,
        max_timeout: float = MAX_TIMEOUT,
    ) -> None:
        self.concurrency = max(1, concurrency)
        self.per_host = max(1, min(per_host, self.concurrency))
        self.guard = guard or Guard()
        self._clock = clock
        self.max_timeout = max_timeout
        self._slots = asyncio.Semaphore(self.concurrency)
        self._hosts: dict[str, asyncio.Semaphore] = {}
        # Hosts that passed _check_literal: the allow list is fixed for the Sender's life.
        self._checked: set[str] = set()
        self._client: aiohttp.ClientSession | None = None
        self._tls: ssl.SSLContext | None = None

    def _ssl_for(self, url: str) -> ssl.SSLContext | bool:
        """The TLS context for https URLs, made on first use: loading the roots takes ~15 ms."""
        if url[:6].lower() != "https:":
            return True  # aiohttp's default; plain http never uses it
        if self._tls is None:
            self._tls = _ssl_context()
        return self._tls

    async def __aenter__(self) -> Sender:
        connector = aiohttp.TCPConnector(
            limit=self.concurrency,
            limit_per_host=0,  # send() holds the per-host limit, before a global slot is taken
            resolver=_GuardedResolver(self.guard),
            use_dns_cache=False,  # the guard caches lookups, and checks every one
            socket_factory=self._open_socket,  # the backstop: every peer address is checked
        )
        self._client = aiohttp.ClientSession(
            connector=connector,
            # The deadline is enforced around the whole attempt (see send); this is a backstop.
            timeout=aiohttp.ClientTimeout(total=130.0),
            trust_env=False,  # proxies from the environment never apply
            auto_decompress=False,  # raw bytes: a compressed reply could expand past READ_CAP
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._client is not None:
            await self._client.close()

    async def send(
        self,
        request: ResolvedRequest,
        *,
        timeout: float,
        secrets: tuple[str, ...] = (),
        webhook_id: str | None = None,
        ready: Callable[[], Awaitable[bool]] | None = None,
    ) -> Outcome | None:
        """Make one attempt; never raises for network trouble, it becomes the outcome's error.

        `webhook_id` (the delivery id, the same on every retry) is sent as `webhook-id`, and a
        request with signing keys is signed here, so the timestamp is the attempt's own.
        `ready` is asked once the slots are taken, just before sending: False sends nothing
        and returns None (the pipeline checks there that the claim is still its own).
        """
        host = host_key(request.url)
        host_slots = self._hosts.get(host)
        if host_slots is None:
            host_slots = self._hosts[host] = asyncio.Semaphore(self.per_host)
        # Take the host's slot first, so a dead host's queue never holds global slots.
        async with host_slots, self._slots:
            if ready is not None and not await ready():
                return None
            return await self._attempt(request, timeout, (*request.sensitive, *secrets), webhook_id)

    def _open_socket(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """aiohttp's socket factory: refuse a peer the guard did not clear (raises PeerRefused)."""
        family, type_, proto, _, sockaddr = addr_info
        self.guard.check_peer(str(sockaddr[0]))
        return socket.socket(family=family, type=type_, proto=proto)

    async def _check_literal(self, url: URL, text: str) -> None:
        """Check an address in the URL: aiohttp connects to those without resolving.

        `url` is the parsed URL aiohttp will use, so its host is the one the connection goes
        to (yarl has applied IDNA); `text` is the URL as rendered, to spot unusual spellings.
        """
        written = urlsplit(text).hostname or ""
        if written in self._checked:
            return
        host = url.raw_host or ""
        literal = parse_literal(host)
        if literal is not None:
            await self.guard.addresses(host)  # raises Refused
            if not written.isascii() or (literal.version == 4 and host != str(literal)):
                raise _BadURL(
                    f"invalid URL: {written} is an unusual spelling of {literal}; write {literal}"
                )
        self._checked.add(written)

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
        refused: Refused | None = None
        capped = timeout >= self.max_timeout
        timeout = min(timeout, self.max_timeout)
        try:
            async with asyncio.timeout(timeout):
                # Parsed once: the URL whose host the guard judges is the one that is sent.
                try:
                    url = URL(request.url)
                    urlsplit(request.url)
                except ValueError as exc:
                    raise _BadURL(f"invalid URL: {exc}") from None
                await self._check_literal(url, request.url)
                async with self._client.request(
                    request.method,
                    url,
                    headers=_wire_headers(request, webhook_id, int(started)),
                    data=request.content or None,
                    allow_redirects=False,
                    ssl=self._ssl_for(request.url),
                    skip_auto_headers=("Content-Type",),  # not application/octet-stream
                ) as response:
                    status = response.status
                    headers = _joined(response.headers)
                    while len(body) < READ_CAP:
                        chunk = await response.content.read(READ_CAP - len(body))
                        if not chunk:
                            break
                        body += chunk
        except TimeoutError:
            error = f"timed out after {format_duration(timeout)}"
            if capped:
                error = f"the operation was cancelled: no answer within {format_duration(timeout)} (the hard cap)"
        except Refused as exc:
            error, permanent, refused = str(exc), True, exc
        except _BadURL as exc:
            error, permanent = str(exc), True
        except Unresolvable:
            error = "could not resolve host"
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, Refused):
                error, permanent, refused = str(exc.os_error), True, exc.os_error
            else:
                error = describe_error(exc)
        except aiohttp.InvalidURL as exc:
            error, permanent = describe_error(exc), True  # the same URL is refused every time
        except aiohttp.ClientError as exc:
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
                started,
                duration_ms,
                status,
                status_reason,
                headers,
                permanent=permanent,
                refused=refused,
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
    # aiohttp wraps the reason (refused, DNS) in a ClientConnectorError; it is in the chain.
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror | Unresolvable):
            return "could not resolve host"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "could not resolve host"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS error: {text}"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return f"connection closed by the server: {text}"
    if isinstance(exc, aiohttp.InvalidURL):
        return f"invalid URL: {text}"
    if "refused" in text.lower():
        return "connection refused"
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
) -> list[tuple[str, str]]:
    """The headers as sent: Standard Webhooks headers added (aiohttp writes values as UTF-8)."""
    headers = list(request.headers)
    if webhook_id is not None:
        extra = [("webhook-id", webhook_id)]
        if request.sign_keys:
            extra = sign_headers(request.sign_keys, webhook_id, timestamp, request.content)
        names = {name for name, _ in extra}
        headers = [(k, v) for k, v in headers if k.lower() not in names] + extra
    return headers


def _joined(headers: Mapping[str, str]) -> dict[str, str]:
    """Response headers by lower-case name, repeated ones joined with ", " (as httpx did)."""
    joined: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        joined[key] = f"{joined[key]}, {value}" if key in joined else value
    return joined


def _decode(body: bytes, secrets: tuple[str, ...]) -> str:
    # Scrub before cutting, so no secret is kept half.
    text = _scrub(body.decode("utf-8", errors="replace"), secrets)
    return text if len(text) <= STORED_CAP else text[:STORED_CAP] + "…"


def host_key(url: str) -> str:
    """The scheme, host and port of a URL: what per-host limits count by (never raises)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        # Unparseable (`http://[bad/`): the attempt will say why; the key only groups it.
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}"
    return f"{parts.scheme}://{parts.netloc}"
