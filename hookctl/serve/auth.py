"""Who may post events and who may act on the log page: the intake checks and the admin check.

Every secret comes from an environment variable named by a `serve` option, never from argv
(which `ps` shows to every user). Comparisons are constant-time. With several checks set, a
request passes when any one of them accepts it: a Zendesk webhook and a script with a token can
share one server. A sources file (`serve --sources`, read by sources.py) gives a source checks of
its own, built here by the same function as the global options' checks: `/events/NAME` for a
listed source must pass one of them, and the global ones do not apply to it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from hookctl.devserver import verify as verify_standard_webhooks
from hookctl.errors import UsageError
from hookctl.render import signing

TOLERANCE = (
    300.0  # seconds a signature timestamp may be off, as the Standard Webhooks libraries allow
)
ZENDESK_SIGNATURE = "X-Zendesk-Webhook-Signature"
ZENDESK_TIMESTAMP = "X-Zendesk-Webhook-Signature-Timestamp"
# The URL token reaches the checks as this pseudo-header (set by the server from the query, and
# never taken from the request's own headers).
QUERY_TOKEN_HEADER = "X-Hookctl-Url-Token"


class Check(Protocol):
    """One way a request may prove it comes from the helpdesk."""

    @property
    def name(self) -> str:
        """What the check is, for the start-up line."""

    def __call__(self, headers: Mapping[str, str], body: bytes, now: float) -> str | None:
        """None when the request passes; else why not (for the 401, never echoing a secret)."""


@dataclass(frozen=True)
class Bearer:
    """`Authorization: Bearer TOKEN`."""

    token: bytes
    name: str = "bearer token"

    def __call__(self, headers: Mapping[str, str], body: bytes, now: float) -> str | None:
        given = headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not value:
            return "no bearer token"
        ok = hmac.compare_digest(value.strip().encode(), self.token)
        return None if ok else "wrong bearer token"


@dataclass(frozen=True)
class Basic:
    """`Authorization: Basic base64(user:password)`, the user and password from `USER:PASSWORD`."""

    credentials: bytes
    name: str = "basic auth"

    def __call__(self, headers: Mapping[str, str], body: bytes, now: float) -> str | None:
        given = basic_credentials(headers)
        if given is None:
            return "no basic auth"
        return None if hmac.compare_digest(given, self.credentials) else "wrong user or password"


@dataclass(frozen=True)
class SharedHeader:
    """A header that carries a shared secret as is (`X-Hookctl-Secret: ...`)."""

    header: str
    secret: bytes
    name: str = "shared-secret header"

    def __call__(self, headers: Mapping[str, str], body: bytes, now: float) -> str | None:
        given = headers.get(self.header)
        if not given:
            return f"no {self.header} header"
        ok = hmac.compare_digest(given.encode(), self.secret)
        return None if ok else f"wrong {self.header}"


@dataclass(frozen=True)
class QueryToken:
    """`?token=SECRET` in the URL, for helpdesks that let you set only a URL (Movidesk).

    Weaker than a header: URLs end up in proxy and access logs, so keep those private.
    """

    secret: bytes
    param: str = "token"
    name: str = "URL token"

    def __call__(self, headers: Mapping[str, str], body: bytes, now: float) -> str | None:
        given = headers.get(QUERY_TOKEN_HEADER)
        if not given:
            return f"no ?{self.param}= in the URL"
        return None if hmac.compare_digest(given.encode(), self.secret) else "wrong URL token"


@dataclass(frozen=True)
class Zendesk:
    """Zendesk's webhook signature: base64 HMAC-SHA256, keyed with the webhook's signing secret,
    of the `X-Zendesk-Webhook-Signature-Timestamp` value followed by the raw body."""

    secret: bytes
    tolerance: float = TOLERANCE
    name: str = "Zendesk signature"

    def __call__(self, headers: Mapping[str, str], body: bytes, now: float) -> str | None:
        given, stamp = headers.get(ZENDESK_SIGNATURE), headers.get(ZENDESK_TIMESTAMP)
        if not given or not stamp:
            return f"no {ZENDESK_SIGNATURE} or {ZENDESK_TIMESTAMP} header"
        when = _iso_seconds(stamp)
        if when is not None and abs(now - when) > self.tolerance:
            return f"{ZENDESK_TIMESTAMP} is {abs(now - when):.0f} s off (tolerance {self.tolerance:.0f} s)"
        expected = zendesk_signature(self.secret, stamp, body)
        return (
            None if hmac.compare_digest(expected, given.strip()) else "Zendesk signature mismatch"
        )


@dataclass(frozen=True)
class StandardWebhooks:
    """Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature` (v1, HMAC)."""

    keys: tuple[bytes, ...]
    tolerance: float = TOLERANCE
    name: str = "Standard Webhooks signature"

    def __call__(self, headers: Mapping[str, str], body: bytes, now: float) -> str | None:
        return verify_standard_webhooks(self.keys, headers, body, now, self.tolerance)


def zendesk_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """What Zendesk sends in X-Zendesk-Webhook-Signature for this timestamp and body."""
    mac = hmac.new(secret, timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def basic_credentials(headers: Mapping[str, str]) -> bytes | None:
    """The `user:password` bytes of a Basic Authorization header, or None."""
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


def _iso_seconds(stamp: str) -> float | None:
    """An ISO 8601 timestamp (Zendesk's form) as epoch seconds; None if it is not one."""
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class Gate:
    """The intake checks and the admin credentials, as `serve`'s options (and its sources
    file) set them.

    `checks` are the global options' checks: they guard `/events` and every source the
    sources file does not list. A listed source is guarded by its own checks only. With
    `refuse_unlisted`, `/events` and unlisted sources are not taken at all (`listed` says so).
    """

    checks: list[Check] = field(default_factory=list)
    admin: bytes | None = None  # the admin password (any user name) for the log page's actions
    sources: dict[str, list[Check]] = field(default_factory=dict)
    refuse_unlisted: bool = False

    @property
    def open(self) -> bool:
        """Some route takes events with no check: anyone who reaches the port may post them.

        A listed source always has a check; `/events` and unlisted sources are open when
        they are not refused and no global option is set.
        """
        unlisted_open = not self.refuse_unlisted and not self.checks
        return unlisted_open or any(not checks for checks in self.sources.values())

    def listed(self, source: str | None) -> bool:
        """Whether events for `source` (None: plain `/events`) are taken at all."""
        return not self.refuse_unlisted or (source is not None and source in self.sources)

    def intake(
        self,
        headers: Mapping[str, str],
        body: bytes,
        now: float | None = None,
        source: str | None = None,
    ) -> str | None:
        """None when the request passes one of the checks for `source` (its own when it is
        listed, else the global ones; none set passes), else the reasons."""
        checks = self.sources.get(source, self.checks) if source is not None else self.checks
        if not checks:
            return None
        when = time.time() if now is None else now
        reasons = []
        for check in checks:
            reason = check(headers, body, when)
            if reason is None:
                return None
            reasons.append(reason)
        return "; ".join(reasons)

    def is_admin(self, headers: Mapping[str, str]) -> bool:
        """True when the request carries the admin password as basic auth (any user name)."""
        given = basic_credentials(headers)
        if given is None:
            return False
        _, _, password = given.partition(b":")
        return self.password_ok(password)

    def password_ok(self, password: bytes) -> bool:
        """Whether `password` is the admin password (never, when none is set)."""
        return self.admin is not None and hmac.compare_digest(password, self.admin)


DEFAULT_HEADER = "X-Hookctl-Secret"


@dataclass(frozen=True)
class SecretNames:
    """The environment variable names `serve`'s options gave, one per kind of check."""

    token: str | None = None
    basic: str | None = None
    header: str | None = None
    header_name: str = DEFAULT_HEADER
    query_token: str | None = None
    zendesk: str | None = None
    standard_webhooks: Sequence[str] = ()
    admin: str | None = None


# serve's option for each kind of check, and the key a sources file gives it.
OPTIONS = {
    "token": ("--token-env", "token_env"),
    "basic": ("--basic-env", "basic_env"),
    "header": ("--header-secret-env", "header_secret_env"),
    "query_token": ("--url-token-env", "url_token_env"),
    "zendesk": ("--zendesk-secret-env", "zendesk_secret_env"),
    "standard_webhooks": ("--standard-webhooks-env", "standard_webhooks_env"),
    "admin": ("--admin-env", "admin_env"),
}


def checks_from_env(
    names: SecretNames, environ: Mapping[str, str], where: str | None = None
) -> list[Check]:
    """The intake checks the names describe, their secrets read from `environ`.

    The one place checks are built, for the global options and for each source of a sources
    file alike. A variable unset or bad is a UsageError naming the option (`--token-env
    NAME: ...`), or with `where` (`FILE:LINE: source 'zendesk'`) the source and its key.
    """
    checks: list[Check] = []
    if names.token:
        checks.append(Bearer(_read(environ, "token", names.token, where).encode()))
    if names.basic:
        value = _read(environ, "basic", names.basic, where)
        if ":" not in value:
            raise UsageError(
                f"{_label('basic', names.basic, where)}: the value must be USER:PASSWORD"
            )
        checks.append(Basic(value.encode()))
    if names.header:
        secret = _read(environ, "header", names.header, where)
        checks.append(SharedHeader(names.header_name, secret.encode()))
    if names.query_token:
        checks.append(QueryToken(_read(environ, "query_token", names.query_token, where).encode()))
    if names.zendesk:
        checks.append(Zendesk(_read(environ, "zendesk", names.zendesk, where).encode()))
    if names.standard_webhooks:
        keys = []
        for name in names.standard_webhooks:
            try:
                keys.append(signing.decode_secret(_read(environ, "standard_webhooks", name, where)))
            except ValueError as exc:
                raise UsageError(f"{_label('standard_webhooks', name, where)}: {exc}") from None
        checks.append(StandardWebhooks(tuple(keys)))
    return checks


def _label(kind: str, name: str, where: str | None) -> str:
    option, key = OPTIONS[kind]
    return f"{option} {name}" if where is None else f"{where}: {key} {name}"


def _read(environ: Mapping[str, str], kind: str, name: str, where: str | None) -> str:
    value = environ.get(name, "")
    if not value.strip():
        raise UsageError(
            f"{_label(kind, name, where)}: the environment variable {name} is not set or empty"
        )
    return value.strip()


class Sources(Protocol):
    """What the gate needs of a sources file (sources.SourcesFile; read there, not here, so
    this module, which sources.py builds on, does not import it back)."""

    @property
    def sources(self) -> Sequence[ListedSource]: ...

    @property
    def refuse_unlisted(self) -> bool: ...


class ListedSource(Protocol):
    """One listed source as the gate needs it (sources.Source)."""

    @property
    def name(self) -> str: ...

    @property
    def where(self) -> str: ...

    @property
    def names(self) -> SecretNames: ...


def gate_from_env(
    names: SecretNames, environ: Mapping[str, str], sources: Sources | None = None
) -> Gate:
    """The Gate the names (and the sources file, if any) describe; a UsageError naming the
    option, or the source and its key, when a variable is unset or bad."""
    gate = Gate(checks=checks_from_env(names, environ))
    if names.admin:
        gate.admin = _read(environ, "admin", names.admin, None).encode()
    if sources is not None:
        for source in sources.sources:
            where = f"{source.where}: source {source.name!r}"
            gate.sources[source.name] = checks_from_env(source.names, environ, where)
        gate.refuse_unlisted = sources.refuse_unlisted
    return gate


SESSION_COOKIE = "hookctl_admin"
SESSION_SECONDS = 12 * 3600.0


class Sessions:
    """Admin sign-ins from the log page's form: a cookie signed with a key made at start-up.

    Restarting the server signs everyone out, which is fine for an admin page. The cookie is
    HttpOnly and SameSite=Strict: no script reads it and no other site's form sends it.
    """

    def __init__(self, key: bytes | None = None, clock: Callable[[], float] = time.time) -> None:
        self._key = key or secrets.token_bytes(32)
        self._clock = clock

    def issue(self) -> str:
        """A new session value."""
        stamp = str(int(self._clock()))
        return f"{stamp}.{self._mac(stamp)}"

    def valid(self, value: str | None) -> bool:
        """Whether a cookie's value is a session of ours that has not expired."""
        if not value or "." not in value:
            return False
        stamp, _, mac = value.partition(".")
        if not stamp.isdigit() or not hmac.compare_digest(mac, self._mac(stamp)):
            return False
        return 0 <= self._clock() - int(stamp) <= SESSION_SECONDS

    def _mac(self, stamp: str) -> str:
        return hmac.new(self._key, b"session:" + stamp.encode(), hashlib.sha256).hexdigest()
