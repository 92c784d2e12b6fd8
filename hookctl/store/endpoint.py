"""What an endpoint is: the scheme, host and port a delivery goes to, named from a URL or a user.

An endpoint is coarser than a URL on purpose: pause, health (and later a breaker and rate
limits) are about a receiving server, and two rules posting to different paths of one server
share it. A rule cannot name a finer endpoint (a path) today. The name is canonical, so every
backend and every process agree on it: `https://hooks.example.com:443` (lower-case scheme and
host, the port always spelt out, no user info, an IPv6 host in brackets).
"""

from __future__ import annotations

import time
from functools import lru_cache
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


@lru_cache(maxsize=4096)  # enqueue names every delivery's; a batch shares a handful of URLs
def endpoint_of(url: str) -> str:
    """The endpoint a delivery to `url` goes to (never raises: a bad URL gets a best guess)."""
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower()
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        # Unparseable (`http://[bad/`, a bad port): the attempt says why; the name only groups it.
        scheme, _, rest = url.strip().partition("://")
        return f"{scheme.lower()}://{rest.split('/', 1)[0].lower()}"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


def parse_endpoint(text: str) -> str:
    """The endpoint a user means: as `hookctl endpoints` names it, a URL, `host:port` or a host
    (http://, as a bare host would be sent). ValueError for one that names no host."""
    given = text.strip()
    if "://" not in given:
        given = "http://" + given
    name = endpoint_of(given)
    scheme, _, rest = name.partition("://")
    if not scheme or not rest or rest.startswith(":"):
        raise ValueError(f"{text!r} names no endpoint; give a URL, host:port or a listed name")
    return name


def endpoints_at(host_port: str, known: list[str]) -> list[str]:
    """The known endpoints, of any scheme, on `host_port` (`host:port`, as endpoint names end)."""
    return [k for k in known if k.partition("://")[2] == host_port]


def paused_note(endpoint: str, since: float, reason: str | None = None) -> str:
    """Why a delivery waits unsent: what `fire` prints and `log` shows for a paused endpoint."""
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
    why = f" ({reason})" if reason else ""
    return (
        f"endpoint {endpoint} paused since {when}{why}; it waits, attempts untouched, "
        f"until `hookctl endpoints resume {endpoint}`"
    )


def open_note(endpoint: str, since: float, next_probe: float | None) -> str:
    """Why a delivery waits: its endpoint's circuit breaker is open (what `fire` and `log`
    say): "endpoint ... open since 10:42 UTC, next probe 10:47:30 UTC"."""
    when = time.strftime("%H:%M", time.gmtime(since))
    probe = time.strftime("%H:%M:%S UTC", time.gmtime(next_probe)) if next_probe else "due"
    return (
        f"endpoint {endpoint} open since {when} UTC, next probe {probe}; "
        "it waits, its attempts and retry window untouched"
    )
