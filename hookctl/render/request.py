"""The request between render and send: placeholders for secrets until the moment it is sent.

A `Request` holds every secret as a placeholder, so it is safe to store and (masked) to show.
`resolve()` swaps in the real values from the environment, each encoded for where it stands,
just before an attempt; the result is never stored or printed.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

from hookctl.errors import RenderError
from hookctl.render.encoding import clean as _clean
from hookctl.render.encoding import tojson, xml_escape
from hookctl.render.scrub import forms_of
from hookctl.render.signing import decode_secret

# Controls a header value cannot carry (tab is allowed): CR/LF would split the request.
HEADER_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
URL_UNSAFE = re.compile("[\x00-\x20\x7f]")


def placeholder(nonce: str, name: str) -> str:
    """The stand-in for a secret; only [A-Za-z0-9_], so every body encoding leaves it intact."""
    return f"__hookctl_{nonce}_{name}__"


def mask(text: str, nonce: str, names: tuple[str, ...]) -> str:
    """Show where secrets go without showing them: `${NAME}`."""
    for name in names:
        text = text.replace(placeholder(nonce, name), "${" + name + "}")
    return text


# --- the request ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """A rendered request, secrets still as placeholders: safe to store and to show."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: str | None
    format: str
    basic_auth: tuple[str, str] | None = None
    secrets: tuple[str, ...] = ()
    nonce: str = ""
    sign: tuple[str, ...] = ()  # signing secrets (placeholders), applied when each attempt is sent

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form the store keeps."""
        return {
            "method": self.method,
            "url": self.url,
            "headers": [list(h) for h in self.headers],
            "body": self.body,
            "format": self.format,
            "basic_auth": list(self.basic_auth) if self.basic_auth else None,
            "secrets": list(self.secrets),
            "nonce": self.nonce,
            "sign": list(self.sign),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Request:
        """Rebuild a stored request."""
        auth = data.get("basic_auth")
        return cls(
            method=data["method"],
            url=data["url"],
            headers=tuple((k, v) for k, v in data.get("headers") or ()),
            body=data.get("body"),
            format=data.get("format", "json"),
            basic_auth=(auth[0], auth[1]) if auth else None,
            secrets=tuple(data.get("secrets") or ()),
            nonce=data.get("nonce", ""),
            sign=tuple(data.get("sign") or ()),
        )

    def masked_url(self) -> str:
        """The URL alone as masked() shows it, without masking the body too."""
        return mask(self.url, self.nonce, self.secrets)

    def masked(self) -> MaskedRequest:
        """The request as it may be shown: every secret replaced by `${NAME}`."""

        def m(text: str) -> str:
            return mask(text, self.nonce, self.secrets)

        headers = [(k, m(v)) for k, v in self.headers]
        if self.basic_auth:
            headers.insert(
                0, ("Authorization", f"Basic {m(self.basic_auth[0])}:{m(self.basic_auth[1])}")
            )
        if self.sign:
            keys = ", ".join(m(s) for s in self.sign)
            headers.append(("webhook-signature", f"v1,<signed when sent, with {keys}>"))
        return MaskedRequest(
            method=self.method,
            url=m(self.url),
            headers=tuple(headers),
            body=m(self.body) if self.body is not None else None,
        )


@dataclass(frozen=True, slots=True)
class MaskedRequest:
    """What a person or a log sees of a request."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: str | None

    def to_dict(self) -> dict[str, Any]:
        """The request as JSON output shows it."""
        return {
            "method": self.method,
            "url": self.url,
            "headers": dict(self.headers),
            "body": self.body,
        }


@dataclass(frozen=True, slots=True)
class ResolvedRequest:
    """A request with its secrets filled in, ready for the wire. Never stored or printed."""

    method: str
    url: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    content: bytes | None = None
    sign_keys: tuple[bytes, ...] = ()  # Standard Webhooks keys; the sender signs each attempt
    sensitive: tuple[
        str, ...
    ] = ()  # every form the secrets take on the wire, to scrub from replies


def _encoder(fmt: str) -> Any:
    if fmt == "json":
        return lambda v: tojson(v)[1:-1]
    if fmt == "xml":
        return xml_escape
    if fmt == "form":
        return lambda v: quote_plus(_clean(v))
    return str


def resolve(request: Request, environ: Mapping[str, str]) -> ResolvedRequest:
    """Fill in secrets from the environment, each encoded for where it stands."""
    url, body = request.url, request.body
    headers = list(request.headers)
    basic = request.basic_auth
    sign = list(request.sign)
    encode_body = _encoder(request.format)
    values: list[str] = []
    wire: set[str] = set()  # the forms they take in this request, beside their echo forms
    for name in request.secrets:
        if name not in environ:
            raise RenderError(f"environment variable {name} is not set")
        value = environ[name]
        token = placeholder(request.nonce, name)
        in_url = quote(_clean(value), safe=":@!$'()*,~")
        in_body = encode_body(value)
        values.append(value)
        wire.update((in_url, in_body))
        if url.startswith(token):
            # A variable that starts the URL holds a base or whole URL (Slack-style): as is.
            url = _url_from_env(name, value) + url[len(token) :]
        url = url.replace(token, in_url)
        if body is not None:
            body = body.replace(token, in_body)
        in_headers = basic or any(token in v for _, v in headers)
        if in_headers and HEADER_CONTROL.search(value):
            raise RenderError(
                f"environment variable {name} holds a line break or control character"
            )
        headers = [(k, v.replace(token, value)) for k, v in headers]
        if basic:
            basic = (basic[0].replace(token, value), basic[1].replace(token, value))
        sign = [s.replace(token, value) for s in sign]
    if url != request.url:
        try:
            check_url(url)
        except RenderError:
            # Not the URL in the message: it holds the secrets' values now.
            names = ", ".join(request.secrets)
            raise RenderError(
                f"webhook.url: with the value of {names} filled in, it is not a valid URL"
            ) from None
    if basic:
        credentials = base64.b64encode(_clean(f"{basic[0]}:{basic[1]}").encode()).decode()
        headers.insert(0, ("Authorization", f"Basic {credentials}"))
        wire.add(credentials)
    keys = []
    for secret in sign:
        try:
            keys.append(decode_secret(secret))
        except ValueError as exc:
            raise RenderError(f"webhook.sign.secret: {exc}") from None
    return ResolvedRequest(
        method=request.method,
        url=url,
        headers=[(k, _clean(v)) for k, v in headers],
        content=body.encode() if body is not None else None,
        sign_keys=tuple(keys),
        # Forms of short values (a chat id like 42) are left out (they would blank out
        # unrelated text); the raw values are still scrubbed: the pipeline passes them on.
        sensitive=forms_of(tuple(values), frozenset(wire)),
    )


def check_url(url: str, where: str = "webhook.url", *, shown: str | None = None) -> None:
    """Refuse a URL the sender could not send: parsed as the HTTP client will parse it.

    An event value can make a URL unparseable (`[bad` in the host, a port of 99999, a host
    IDNA refuses); that is this delivery's failure (RenderError), never an exception that
    stops the batch. `shown` is the URL as an error may show it (secrets masked).
    """
    from yarl import URL

    shown = url if shown is None else shown
    try:
        parts = urlsplit(url)
        parsed = URL(url)
    except ValueError as exc:  # UnicodeError (IDNA) is a ValueError too
        raise RenderError(f"{where}: rendered URL is not a valid URL ({exc}): {shown!r}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc or not parsed.raw_host:
        raise RenderError(f"{where}: rendered URL is not an http(s) URL: {shown!r}")
    for part in (parsed.user, parsed.password):
        # The client sends URL credentials as Basic auth, in latin-1.
        if part and not _latin1(part):
            raise RenderError(
                f"{where}: the user name or password in the URL is not latin-1 text; "
                "use webhook.auth (basic) instead"
            )


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _url_from_env(name: str, value: str) -> str:
    """Check a URL taken from the environment without ever echoing it (it may hold a token)."""
    parts = urlsplit(value)
    if URL_UNSAFE.search(value) or parts.scheme not in ("http", "https") or not parts.netloc:
        raise RenderError(f"webhook.url: environment variable {name} does not hold an http(s) URL")
    return value
