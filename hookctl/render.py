"""Sandboxed Jinja2: a rule's webhook and one event become a complete request. No I/O.

Ticket text is only ever data: it reaches templates as values, never as template source.
Environment variables are treated as secrets. A template that reads `env.NAME` gets an
opaque placeholder instead of the value; the placeholder is what the store keeps, and
`resolve()` swaps in the real value (encoded for where it stands) just before sending.
So tokens never reach the database, the log or a dry run, and rotating one fixes pending
retries.
"""

from __future__ import annotations

import base64
import json
import re
import secrets as _secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import quote, quote_plus, urlencode, urlsplit

from jinja2 import StrictUndefined, TemplateError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from hookctl.errors import RenderError

CONTENT_TYPES = {
    "json": "application/json",
    "xml": "application/xml",
    "form": "application/x-www-form-urlencoded",
}
METHODS_WITH_DEFAULT_BODY = frozenset({"POST", "PUT", "PATCH"})
MAX_BODY_BYTES = 1024 * 1024

# A template leaf that is a single expression keeps its JSON type: `{{ ticket.id }}` stays a number.
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}|\{%|%\}).)*)\}\}\s*$", re.S)
# Characters XML 1.0 cannot carry; they are replaced, never sent broken.
_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_XML_NAME = re.compile(r"^[A-Za-z_][\w.\-]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class _SandboxEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with the loops and multiplications that could eat memory or time refused."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and right > 64:
            raise SecurityError("exponent too large")
        if operator == "*":
            sizes = [len(x) for x in (left, right) if isinstance(x, str | list | tuple)]
            counts = [x for x in (left, right) if isinstance(x, int)]
            if sizes and counts and sizes[0] * max(counts) > MAX_BODY_BYTES:
                raise SecurityError("result of * would be too large")
        return super().call_binop(context, operator, left, right)


def xml_escape(value: Any) -> str:
    """Escape text for an XML element or attribute, replacing characters XML cannot carry."""
    text = _XML_INVALID.sub("\ufffd", str(value))
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&apos;")
    )


def _tojson(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    """The one sandboxed Jinja environment every template is compiled in."""
    env = _SandboxEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.filters["tojson"] = _tojson
    env.filters["xml_escape"] = xml_escape
    env.filters["urlencode_plus"] = lambda v: quote_plus(str(v))
    return env


@lru_cache(maxsize=4096)
def _compile(source: str) -> Any:
    match = _SINGLE_EXPRESSION.match(source)
    if match:
        return ("expr", environment().compile_expression(match["expr"], undefined_to_none=False))
    return ("template", environment().from_string(source))


def check_template(source: str) -> None:
    """Compile a template, raising jinja2.TemplateSyntaxError (or its kin) when it is malformed."""
    _compile(source)


def is_template(value: str) -> bool:
    """True when a string holds Jinja markup and needs rendering."""
    return "{{" in value or "{%" in value


# --- secrets ---------------------------------------------------------------------------------


class _SecretEnv:
    """`env` inside templates: every variable read becomes a placeholder, and is remembered."""

    def __init__(self, environ: Mapping[str, str], nonce: str) -> None:
        self._environ = environ
        self._nonce = nonce
        self.used: dict[str, None] = {}

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, name: str) -> str:
        if name not in self._environ:
            raise RenderError(f"environment variable {name} is not set")
        self.used[name] = None
        return placeholder(self._nonce, name)


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
        )

    def masked(self) -> MaskedRequest:
        """The request as it may be shown: every secret replaced by `${NAME}`."""

        def m(text: str) -> str:
            return mask(text, self.nonce, self.secrets)

        headers = [(k, m(v)) for k, v in self.headers]
        if self.basic_auth:
            headers.insert(0, ("Authorization", f"Basic {m(self.basic_auth[0])}:{m(self.basic_auth[1])}"))
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


@dataclass(frozen=True, slots=True)
class ResolvedRequest:
    """A request with its secrets filled in, ready for the wire. Never stored or printed."""

    method: str
    url: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    content: bytes | None = None


def _encoder(fmt: str) -> Any:
    if fmt == "json":
        return lambda v: json.dumps(v, ensure_ascii=False)[1:-1]
    if fmt == "xml":
        return xml_escape
    if fmt == "form":
        return quote_plus
    return str


def resolve(request: Request, environ: Mapping[str, str]) -> ResolvedRequest:
    """Fill in secrets from the environment, each encoded for where it stands."""
    url, body = request.url, request.body
    headers = list(request.headers)
    basic = request.basic_auth
    encode_body = _encoder(request.format)
    for name in request.secrets:
        if name not in environ:
            raise RenderError(f"environment variable {name} is not set")
        value = environ[name]
        token = placeholder(request.nonce, name)
        url = url.replace(token, quote(value, safe=":@!$'()*,~"))
        if body is not None:
            body = body.replace(token, encode_body(value))
        if any(c in value for c in "\r\n\0"):
            if any(token in v for _, v in headers) or basic:
                raise RenderError(f"environment variable {name} holds a line break")
        headers = [(k, v.replace(token, value)) for k, v in headers]
        if basic:
            basic = (basic[0].replace(token, value), basic[1].replace(token, value))
    if basic:
        credentials = base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
        headers.insert(0, ("Authorization", f"Basic {credentials}"))
    return ResolvedRequest(
        method=request.method,
        url=url,
        headers=headers,
        content=body.encode() if body is not None else None,
    )


# --- rendering -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebhookTemplate:
    """The parts of a rule's `webhook:` that rendering needs (rules.py builds it)."""

    method: str
    url: str
    format: str = "json"
    headers: tuple[tuple[str, str], ...] = ()
    body: Any = None  # a mapping/list (leaves are templates), a template string, or None
    auth: Mapping[str, str] | None = None
    xml_root: str = "payload"


class _Renderer:
    def __init__(self, context: dict[str, Any]) -> None:
        self.context = context

    def text(self, source: str, where: str) -> str:
        value = self.value(source, where)
        if value is None:
            return ""
        return value if isinstance(value, str) else _tojson(value) if isinstance(value, dict | list) else str(value)

    def value(self, source: Any, where: str) -> Any:
        if not isinstance(source, str) or not is_template(source):
            return source
        kind, compiled = _compile(source)
        try:
            if kind == "expr":
                result = compiled(**self.context)
                if isinstance(result, StrictUndefined):
                    str(result)  # raises UndefinedError with jinja's own message
                return result
            return compiled.render(self.context)
        except RenderError as exc:
            raise RenderError(f"{where}: {exc}") from None
        except UndefinedError as exc:
            raise RenderError(f"{where}: {exc.message}") from None
        except SecurityError as exc:
            raise RenderError(f"{where}: refused by the template sandbox: {exc}") from None
        except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise RenderError(f"{where}: {type(exc).__name__}: {exc}") from None

    def tree(self, node: Any, where: str) -> Any:
        if isinstance(node, Mapping):
            return {k: self.tree(v, f"{where}.{k}") for k, v in node.items()}
        if isinstance(node, list):
            return [self.tree(v, f"{where}[{i}]") for i, v in enumerate(node)]
        return self.value(node, where)


def render_text(source: str, context: Mapping[str, Any], *, where: str) -> str:
    """Render one template string (no secrets: `env` is not in this context)."""
    return _Renderer(dict(context)).text(source, where)


def render_request(
    webhook: WebhookTemplate,
    event: Mapping[str, Any],
    *,
    environ: Mapping[str, str],
    extra: Mapping[str, Any] | None = None,
) -> Request:
    """Render a rule's webhook for one event. Raises RenderError when it cannot be done."""
    nonce = _secrets.token_hex(8)
    env = _SecretEnv(environ, nonce)
    context: dict[str, Any] = dict(event)
    context.update(extra or {})
    context["env"] = env
    r = _Renderer(context)

    url = r.text(webhook.url, "webhook.url").strip()
    headers: list[tuple[str, str]] = []
    for name, template in webhook.headers:
        headers.append((name, _header_value(r.text(template, f"webhook.headers.{name}"), name)))
    basic: tuple[str, str] | None = None
    auth = webhook.auth or {}
    if auth.get("type") == "basic":
        basic = (r.text(auth["username"], "webhook.auth.username"), r.text(auth["password"], "webhook.auth.password"))
        for part in basic:
            _header_value(part, "Authorization")
    elif auth.get("type") == "bearer":
        token = r.text(auth["token"], "webhook.auth.token")
        headers.append(("Authorization", _header_value(f"Bearer {token}", "Authorization")))
    elif auth.get("type") == "api_key":
        value = r.text(auth["value"], "webhook.auth.value")
        if auth.get("query"):
            url = _add_query(url, [(auth["query"], value)])
        else:
            header = auth.get("header") or "X-API-Key"
            headers.append((header, _header_value(value, header)))

    body: str | None = None
    method = webhook.method
    if webhook.body is not None:
        if isinstance(webhook.body, str):
            body = r.text(webhook.body, "webhook.body")
        else:
            data = r.tree(webhook.body, "webhook.body")
            if method in ("GET", "DELETE") and webhook.format == "form":
                url = _add_query(url, _form_pairs(data))
            else:
                body = encode_body(data, webhook.format, webhook.xml_root)
    elif method in METHODS_WITH_DEFAULT_BODY:
        body = encode_body(dict(event), webhook.format, webhook.xml_root)

    _check_url(url)
    if body is not None:
        if len(body.encode()) > MAX_BODY_BYTES:
            raise RenderError(f"webhook.body: rendered body is larger than {MAX_BODY_BYTES} bytes")
        if not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("Content-Type", CONTENT_TYPES[webhook.format]))
    return Request(
        method=method,
        url=url,
        headers=tuple(headers),
        body=body,
        format=webhook.format,
        basic_auth=basic,
        secrets=tuple(env.used),
        nonce=nonce if env.used else "",
    )


def _header_value(value: str, name: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise RenderError(f"webhook.headers.{name}: value contains a line break or NUL")
    return value


def _check_url(url: str) -> None:
    if any(c in url for c in "\r\n\t\0 "):
        raise RenderError(f"webhook.url: rendered URL contains whitespace or control characters: {url!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RenderError(f"webhook.url: rendered URL is not an http(s) URL: {url!r}")


def _add_query(url: str, pairs: list[tuple[str, Any]]) -> str:
    if not pairs:
        return url
    query = urlencode([(k, _scalar(v)) for k, v in pairs])
    base, _, fragment = url.partition("#")
    joined = f"{base}{'&' if '?' in base else '?'}{query}"
    return f"{joined}#{fragment}" if fragment else joined


# --- body encodings ------------------------------------------------------------------------


def encode_body(data: Any, fmt: str, xml_root: str = "payload") -> str:
    """Encode rendered data for the wire format; escaping is the encoder's job, not the user's."""
    if fmt == "json":
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    if fmt == "xml":
        return '<?xml version="1.0" encoding="UTF-8"?>' + _xml_element(xml_root, data)
    if fmt == "form":
        return urlencode([(k, _scalar(v)) for k, v in _form_pairs(data)])
    raise RenderError(f"unknown body format {fmt!r}")


def _scalar(value: Any) -> str:
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    return str(value)


def _form_pairs(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Flatten to form fields: lists repeat the key, nested mappings use `parent[child]`."""
    if isinstance(data, Mapping):
        pairs: list[tuple[str, Any]] = []
        for key, value in data.items():
            name = f"{prefix}[{key}]" if prefix else str(key)
            pairs.extend(_form_pairs(value, name))
        return pairs
    if isinstance(data, list):
        return [pair for item in data for pair in _form_pairs(item, prefix)]
    if not prefix:
        raise RenderError("webhook.body: a form body must be a mapping")
    return [(prefix, data)]


def _xml_element(name: str, value: Any) -> str:
    if not _XML_NAME.match(name) or name.lower().startswith("xml"):
        raise RenderError(f"webhook.body: {name!r} is not a valid XML element name")
    if isinstance(value, Mapping):
        inner = "".join(_xml_element(str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        inner = "".join(_xml_element("item", v) for v in value)
    else:
        inner = xml_escape(_scalar(value))
    return f"<{name}>{inner}</{name}>"


def valid_header_name(name: str) -> bool:
    """True for an HTTP header name (RFC 9110 token)."""
    return bool(_HEADER_NAME.match(name))


def valid_xml_name(name: str) -> bool:
    """True for a name usable as an XML element."""
    return bool(_XML_NAME.match(name)) and not name.lower().startswith("xml")
