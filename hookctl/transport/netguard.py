"""The network guard: which addresses a webhook may reach, decided before connecting.

Rules are trusted, but URLs are templates that can carry event data, and a host name can
resolve anywhere. So by default hookctl refuses loopback, private, link-local (cloud metadata
included), shared (CGNAT), multicast, reserved and documentation addresses, and their IPv6
forms and embeddings. Every address a name resolves to is checked, and the connection goes to
an address that was checked, so DNS cannot answer differently between check and connect.
An allow-list opens exactly the networks or host names it names.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str], Awaitable[Sequence[str]]]

CACHE_SECONDS = 30.0  # how long a name's addresses are reused; short, so DNS changes are seen


def _nets(*pairs: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(net), reason) for net, reason in pairs)


# Addresses a cloud instance reaches its credentials through: blocked even inside an allowed
# range, unless an allow-list entry names the address itself.
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
BLOCKED = _nets(
    ("0.0.0.0/8", "an unspecified ('this network') address"),
    ("10.0.0.0/8", "a private address"),
    ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address"),
    ("172.16.0.0/12", "a private address"),
    ("192.0.0.0/24", "a reserved (IETF protocol) address"),
    ("192.0.2.0/24", "a documentation address"),
    ("192.88.99.0/24", "a reserved (6to4 relay) address"),
    ("192.168.0.0/16", "a private address"),
    ("198.18.0.0/15", "a reserved (benchmarking) address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved address"),
    ("::/128", "an unspecified address"),
    ("::1/128", "a loopback address"),
    ("::/8", "a reserved address"),
    ("64:ff9b:1::/48", "a private (local NAT64) address"),
    ("100::/64", "a reserved (discard) address"),
    ("2001::/23", "a reserved (IETF protocol) address"),
    ("2001:db8::/32", "a documentation address"),
    ("3fff::/20", "a documentation address"),
    ("fc00::/7", "a private (unique local) address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address"),
    ("ff00::/8", "a multicast address"),
)
# NAT64 carries an IPv4 address in its last 32 bits: that address is what gets reached.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_UNSPECIFIED = ipaddress.ip_address("0.0.0.0")
_HOST_NAME = re.compile(
    r"^(?:[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?\.)*[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$"
)


class Refused(Exception):
    """The guard will not connect to this host: retrying with the same allow-list cannot help.

    `address` is the address refused and `host` the name it was reached through (None for an
    address written in the URL), so a caller can ask whether another allow-list would allow it.
    """

    def __init__(self, message: str, address: IPAddress, host: str | None = None) -> None:
        super().__init__(message)
        self.address = address
        self.host = host


class PeerRefused(Refused, OSError):
    """The connect-time backstop refused a socket's peer address (an OSError, so the HTTP
    client's connection machinery passes it through as the reason the connection failed)."""


class Unresolvable(OSError):
    """The host name did not resolve; nothing was sent (DNS may recover, so this is retried)."""


@dataclass(frozen=True)
class AllowList:
    """Networks and host names the guard lets through, exactly as named."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        """Read `10.1.2.0/24`, `10.0.0.5`, `fd00::/8` or `intranet.example`; ValueError if malformed."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            literal = parse_literal(entry)
            if literal is not None:
                networks.append(ipaddress.ip_network(literal))
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = _normal_name(entry)
            if not _HOST_NAME.match(name):
                raise ValueError(f"not a network (CIDR), an address or a host name: {raw!r}")
            hosts.add(name)
        return cls(tuple(networks), frozenset(hosts))

    @property
    def entries(self) -> tuple[str, ...]:
        """The list in canonical form (`10.0.0.5/32`, `crm.intranet`), as a delivery records it."""
        return (*(str(net) for net in self.networks), *sorted(self.hosts))

    def allows(self, address: IPAddress, host: str | None = None) -> bool:
        """True when an entry opens this address (reached through `host`, if by name)."""
        if is_metadata(address):
            # Only an entry that is exactly this address opens a metadata endpoint.
            return any(net.num_addresses == 1 and address in net for net in self.networks)
        if host is not None and _normal_name(host) in self.hosts:
            return True
        return any(address in net for net in self.networks)


@lru_cache(maxsize=64)
def _parsed(entries: tuple[str, ...]) -> AllowList | None:
    try:
        return AllowList.parse(entries)
    except ValueError:
        return None


def allowed_by(entries: Iterable[str], refused: Refused) -> bool:
    """Whether an allow-list (one a delivery recorded, say) would let a refused address through."""
    allow = _parsed(tuple(entries))
    return allow is not None and allow.allows(refused.address, refused.host)


def blocked_reason(address: IPAddress) -> str | None:
    """Why the guard refuses an address by default, or None for a public one."""
    if is_metadata(address):
        return "a cloud metadata address"
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            reason = blocked_reason(inner)
            return f"{reason} ({inner}) in IPv6 form" if reason else None
    for net, reason in BLOCKED:
        if address.version == net.version and address in net:
            return reason
    return None


def is_metadata(address: IPAddress) -> bool:
    """True for a cloud metadata endpoint, in any form."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            return inner in METADATA
    return address in METADATA


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, NAT64 or 6to4 IPv6 address stands for."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    return None


def parse_literal(host: str) -> IPAddress | None:
    """The address a host names literally, read as the system resolver would (`0x7f.1`, `2130706433`)."""
    text = host.strip("[]").split("%", 1)[0]
    if text.endswith("."):
        text = text[:-1]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    # inet_aton takes the old BSD forms (octal, hex, fewer than four parts); so does getaddrinfo.
    if text and all(c in "0123456789abcdefABCDEFxX." for c in text) and text[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


async def system_resolver(host: str) -> list[str]:
    """Resolve with the system's resolver (getaddrinfo, in a worker thread)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Unresolvable(f"could not resolve host {host}") from exc
    return [str(info[4][0]) for info in infos]


class Guard:
    """Decides which addresses a host may be reached at; caches resolutions for a short while."""

    def __init__(
        self,
        allow: AllowList | None = None,
        resolver: Resolver = system_resolver,
        *,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        config_file: str | None = None,
    ) -> None:
        self.allow = allow or AllowList()
        self.config_file = config_file  # named in refusals: where an allowance lasts
        self._resolver = resolver
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._pending: dict[str, asyncio.Task[tuple[str, ...]]] = {}
        # Refused-by-default addresses this guard let through for a host (an allow-listed
        # name): the connect-time backstop (check_peer) lets exactly these through too.
        self._approved: set[IPAddress] = set()

    async def addresses(self, host: str) -> list[str]:
        """The checked addresses to connect to for `host`; raises Refused or Unresolvable."""
        literal = parse_literal(host)
        if literal is not None:
            return [str(self._check(host, [literal], by_name=False)[0])]
        name = _normal_name(host)
        if name == "localhost" or name.endswith(".localhost"):
            # RFC 6761: these names are loopback, whatever a resolver says.
            found: Sequence[IPAddress] = (
                ipaddress.ip_address("127.0.0.1"),
                ipaddress.ip_address("::1"),
            )
        else:
            found = [a for a in map(parse_literal, await self._resolve(host)) if a is not None]
            if not found:
                raise Unresolvable(f"could not resolve host {host}")
        return [str(a) for a in self._check(host, found, by_name=True)]

    def _check(self, host: str, found: Sequence[IPAddress], *, by_name: bool) -> list[IPAddress]:
        # An IPv4-mapped address is reached as IPv4: connect to what was checked.
        plain = [
            a.ipv4_mapped if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped else a
            for a in found
        ]
        named = host if by_name else None
        usable = [a for a in plain if blocked_reason(a) is None or self.allow.allows(a, named)]
        if usable:
            self._approved.update(a for a in usable if blocked_reason(a) is not None)
            return usable
        address = plain[0]
        reason = blocked_reason(address)
        what = f"{host} resolves to {address}, {reason}" if by_name else f"{address} is {reason}"
        hint = f"--allow-net {address}" + (
            f" (or --allow-net {_normal_name(host)})" if by_name else ""
        )
        hint += self._where()
        raise Refused(f"refused by the network guard: {what}; allow it with {hint}", address, named)

    def check_peer(self, peer: str) -> None:
        """The backstop at connect time: refuse a socket to an address the guard did not clear.

        Every connection the HTTP client opens passes through here, whatever path its address
        took (a host the client normalised to an IP literal and never resolved, say), so no
        spelling of a host can reach a refused address without an allow-list entry for it.
        """
        try:
            address = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            raise PeerRefused(
                f"refused by the network guard: {peer!r} is not an address", _UNSPECIFIED
            ) from None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        reason = blocked_reason(address)
        if reason is None or address in self._approved or self.allow.allows(address):
            return
        raise PeerRefused(
            f"refused by the network guard: {address} is {reason}; "
            f"allow it with --allow-net {address}{self._where()}",
            address,
        )

    def held_reason(self, refused: Refused, recorded: Iterable[str]) -> str:
        """Why a delivery is held: this guard refuses what it was fired allowed to reach."""
        address, host = refused.address, refused.host
        reason = blocked_reason(address) or "not allowed"
        what = f"{host} resolves to {address}, {reason}" if host else f"{address} is {reason}"
        where = f"in allow_net in {self.config_file}, or " if self.config_file else ""
        return (
            f"held: refused by the network guard here: {what}, which the delivery was fired "
            f"allowed to reach (allow_net {', '.join(recorded)}); allow it for every command "
            f"{where}with --allow-net {host or address}"
        )

    def _where(self) -> str:
        if self.config_file is None:
            return ""
        return f", or in allow_net in {self.config_file} for every command"

    async def _resolve(self, host: str) -> tuple[str, ...]:
        now = self._clock()
        cached = self._cache.get(host)
        if cached is not None and cached[0] > now:
            return cached[1]
        task = self._pending.get(host)
        if task is None:
            # One lookup per name however many attempts wait on it; shielded, so one attempt's
            # deadline does not cancel the lookup the others are waiting for.
            task = self._pending[host] = asyncio.ensure_future(self._lookup(host))
            task.add_done_callback(lambda done: self._forget(host, done))
        return await asyncio.shield(task)

    def _forget(self, host: str, task: asyncio.Task[tuple[str, ...]]) -> None:
        self._pending.pop(host, None)
        if not task.cancelled():
            task.exception()  # retrieved: its waiters may all have given up already

    async def _lookup(self, host: str) -> tuple[str, ...]:
        addresses = tuple(await self._resolver(host))
        self._cache[host] = (self._clock() + self._cache_seconds, addresses)
        return addresses


def _normal_name(host: str) -> str:
    return host.strip().rstrip(".").lower()
