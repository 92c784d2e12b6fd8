"""Sandboxed Jinja2: a rule's webhook and one event become a complete request. No I/O.

Ticket text is only ever data: it reaches templates as values, never as template source.
Environment variables are treated as secrets. A template that reads `env.NAME` gets an
opaque placeholder instead of the value; the placeholder is what the store keeps, and
`resolve()` swaps in the real value (encoded for where it stands) just before sending.
So tokens never reach the database, the log or a dry run, and rotating one fixes pending
retries.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote, quote_plus

from jinja2 import StrictUndefined, TemplateError, UndefinedError, nodes
from jinja2.sandbox import SecurityError

from hookctl.errors import RenderError
from hookctl.events.fields import describe_missing
from hookctl.render.budget import Budget, limits
from hookctl.render.encoding import CONTENT_TYPES as CONTENT_TYPES
from hookctl.render.encoding import clean as _clean
from hookctl.render.encoding import encode_body, form_encode, form_pairs, tojson
from hookctl.render.encoding import valid_xml_name as valid_xml_name
from hookctl.render.encoding import xml_escape as xml_escape
from hookctl.render.request import (
    HEADER_CONTROL,
    URL_UNSAFE,
    Request,
    check_url,
    mask,
    placeholder,
)
from hookctl.render.sandbox import SandboxEnvironment, make_environment, render_capped

METHODS_WITH_DEFAULT_BODY = frozenset({"POST", "PUT", "PATCH"})
MAX_BODY_BYTES = 1024 * 1024  # default cap on a rendered body; webhook.max_body changes it

# A template leaf that is a single expression keeps its JSON type: `{{ ticket.id }}` stays a number.
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}|\{%|%\}).)*)\}\}\s*$", re.S)
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# `ticket.actions[-1].body`: a plain path, which _walk reads without building a jinja Context.
_PATH = re.compile(r"^\s*[A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[-?\d+\])*\s*$")
_PATH_STEP = re.compile(r"\.?([A-Za-z_]\w*)|\[(-?\d+)\]")
_INTERPOLATION = re.compile(r"\{\{((?:(?!\{\{|\}\}).)*)\}\}", re.S)
_LITERAL_NAMES = frozenset({"true", "false", "none", "True", "False", "None"})
_MISSING = object()


@lru_cache(maxsize=1)
def environment() -> SandboxEnvironment:
    """The one sandboxed Jinja environment every template is compiled in."""
    return make_environment(
        {
            "tojson": tojson,
            "xml_escape": xml_escape,
            "urlencode_plus": lambda v: quote_plus(_clean(str(v))),
            # In webhook.url: insert the value as it is, not encoded for its place (render_url).
            "raw_url": lambda v: v,
            **{
                f"_url_{place}": _url_filter(place)
                for place in ("host", "path", "query", "fragment")
            },
        }
    )


@lru_cache(maxsize=4096)
def _compile(source: str) -> Any:
    """("expr", expression, path or None) or ("template", template, pieces or None)."""
    match = _SINGLE_EXPRESSION.match(source)
    if match:
        expression = environment().compile_expression(match["expr"], undefined_to_none=False)
        return ("expr", expression, _path(match["expr"]))
    return ("template", environment().from_string(source), _pieces(source))


def _pieces(source: str) -> tuple[str | tuple[str | int, ...], ...] | None:
    """Text with plain `{{ path }}`s only, as literal strings and paths; None for anything else.

    Literal text must be what jinja outputs verbatim: no other markup, and no carriage
    return (jinja rewrites line endings).
    """
    pieces: list[str | tuple[str | int, ...]] = []
    for k, part in enumerate(_INTERPOLATION.split(source)):
        if k % 2 == 0:
            if "{{" in part or "{%" in part or "{#" in part or "\r" in part:
                return None
            if part:
                pieces.append(part)
            continue
        steps = _path(part)
        if steps is None:
            return None
        pieces.append(steps)
    return tuple(pieces)


def _interpolate(
    pieces: tuple[str | tuple[str | int, ...], ...], shared: dict[str, Any]
) -> str | None:
    """`pieces` filled in as jinja would, or None when a value needs jinja to decide."""
    out = []
    for piece in pieces:
        if isinstance(piece, str):
            out.append(piece)
            continue
        value = _walk(piece, shared)
        # str() of anything else (floats, None, lists, objects) is jinja's business.
        if type(value) is str:
            out.append(value)
        elif type(value) is int:
            out.append(str(value))
        else:
            return None
    return "".join(out)


def _path(expression: str) -> tuple[str | int, ...] | None:
    """The steps of a plain path expression (`a.b[0]`), or None for anything else."""
    if not _PATH.match(expression):
        return None
    steps = tuple(
        name if name else int(index) for name, index in _PATH_STEP.findall(expression.strip())
    )
    return None if steps[0] in _LITERAL_NAMES else steps


def _walk(steps: tuple[str | int, ...], shared: dict[str, Any]) -> Any:
    """Read a path through plain dicts and lists as jinja would; _MISSING when jinja must decide.

    Only dict keys that are not also dict attributes (`items`) and list indexes in range are
    read here: everything else (undefined names, objects, the sandbox's checks) goes to jinja.
    """
    value: Any = shared.get(str(steps[0]), _MISSING)
    for step in steps[1:]:
        if type(value) is dict:
            readable = type(step) is str and step in value and not hasattr(dict, step)
        elif type(value) is _SecretEnv:
            # `env.NAME`: its placeholder, exactly what jinja would get.
            readable = type(step) is str and _ENV_NAME.match(step) is not None
        else:
            readable = (
                type(value) is list and type(step) is int and -len(value) <= step < len(value)
            )
        if not readable:
            return _MISSING
        value = value[step]
    return value


def is_template(value: str) -> bool:
    """True when a string holds Jinja markup and needs rendering."""
    return "{{" in value or "{%" in value


# --- secrets ---------------------------------------------------------------------------------


_ENV_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class _SecretEnv:
    """`env` inside templates: every variable read becomes a placeholder, and is remembered.

    A variable that is not set renders too: its value is only needed when the request is sent,
    and that is where a missing one is reported (the delivery waits for it).
    """

    def __init__(self, environ: Mapping[str, str], nonce: str) -> None:
        self._environ = environ
        self._nonce = nonce
        self.used: dict[str, None] = {}

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __contains__(self, name: str) -> bool:
        return name in self._environ

    def __getitem__(self, name: str) -> str:
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise RenderError(f"env.{name}: not an environment variable name")
        self.used[name] = None
        return placeholder(self._nonce, name)


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
    sign: tuple[
        str, ...
    ] = ()  # webhook.sign.secret: one template per secret (several in a rotation)
    max_body: int = MAX_BODY_BYTES


class _Renderer:
    """Renders one request's templates; use inside `limits(renderer.budget)`."""

    def __init__(self, context: dict[str, Any], max_output: int = MAX_BODY_BYTES) -> None:
        self.context = context
        self.budget = Budget(output=max_output)
        # Every expression leaf reads this one mapping (the sandbox's helpers included), built
        # once: TemplateExpression.__call__ would copy the whole context for each leaf.
        self._shared = {**environment().globals, **context}

    def text(self, source: str, where: str) -> str:
        value = self.value(source, where)
        if value is None:
            return ""
        text = (
            value
            if isinstance(value, str)
            else tojson(value)
            if isinstance(value, dict | list)
            else str(value)
        )
        return _clean(text)

    def value(self, source: Any, where: str) -> Any:
        if not isinstance(source, str) or not is_template(source):
            return source
        # `plain`: the expression's path, or the template's pieces, when they have one.
        kind, compiled, plain = _compile(source)
        if plain is not None:
            if kind == "expr":
                found = _walk(plain, self._shared)
                if found is not _MISSING:
                    return found
            else:
                text = _interpolate(plain, self._shared)
                if text is not None and len(text) <= self.budget.output:
                    return text
        try:
            if kind == "expr":
                result = _evaluate(compiled, self._shared)
                if isinstance(result, StrictUndefined):
                    str(result)  # raises UndefinedError with jinja's own message
                return result
            return render_capped(compiled, self.context)
        except RenderError as exc:
            raise RenderError(f"{where}: {exc}") from None
        except UndefinedError as exc:
            raise RenderError(f"{where}: {_undefined(source, self._shared, exc)}") from None
        except SecurityError as exc:
            raise RenderError(f"{where}: refused by the template sandbox: {exc}") from None
        except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise RenderError(f"{where}: {type(exc).__name__}: {exc}") from None
        except (MemoryError, RecursionError):
            raise RenderError(
                f"{where}: the template needs too much memory or nests too deeply"
            ) from None

    def tree(self, node: Any, where: str) -> Any:
        if isinstance(node, Mapping):
            return {k: self.tree(v, f"{where}.{k}") for k, v in node.items()}
        if isinstance(node, list):
            return [self.tree(v, f"{where}[{i}]") for i, v in enumerate(node)]
        return self.value(node, where)


def _undefined(source: str, context: Mapping[str, Any], exc: UndefinedError) -> str:
    """Jinja's "'dict object' has no attribute 'subjet'" said as the event's field that is missing:
    "ticket has no field 'subjet' (did you mean 'subject'?)"."""
    message = exc.message or str(exc)
    try:
        ast = environment().parse(source)
    except TemplateError:
        return message
    for path in _paths_in(ast):
        missing = describe_missing(context, path)
        if missing is None:
            continue
        step, text = missing
        # The chain jinja tripped on names the same step in its message.
        if f"'{step}'" in message or f"element {step}" in message:
            return text
    return message


def _paths_in(ast: Any) -> list[tuple[str | int, ...]]:
    """Every `a.b[0]["c"]` chain of constant steps in a template, outermost first."""
    found: list[tuple[str | int, ...]] = []
    for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        steps: list[str | int] = []
        current = node
        while True:
            if isinstance(current, nodes.Getattr):
                steps.append(current.attr)
                current = current.node
            elif isinstance(current, nodes.Getitem) and isinstance(current.arg, nodes.Const):
                steps.append(current.arg.value)
                current = current.node
            else:
                break
        if isinstance(current, nodes.Name):
            found.append((current.name, *reversed(steps)))
    return sorted(set(found), key=len, reverse=True)


def _evaluate(expression: Any, shared: dict[str, Any]) -> Any:
    """What jinja's TemplateExpression.__call__ does, reading `shared` instead of a copy of it."""
    template = expression._template
    context = template.new_context(shared, shared=True)
    for _ in template.root_render_func(context):
        pass
    return context.vars["result"]


def render_text(source: str, context: Mapping[str, Any], *, where: str) -> str:
    """Render one template string (no secrets: `env` is not in this context)."""
    r = _Renderer(dict(context))
    with limits(r.budget):
        return r.text(source, where)


def render_request(
    webhook: WebhookTemplate,
    event: Mapping[str, Any],
    *,
    environ: Mapping[str, str],
    extra: Mapping[str, Any] | None = None,
) -> Request:
    """Render a rule's webhook for one event. Raises RenderError when it cannot be done."""
    try:
        return _render_request(webhook, event, environ, extra)
    except (RecursionError, MemoryError):
        # Only a pathological event gets here (nesting deep enough to encode, or huge).
        raise RenderError(
            "webhook.body: the event is nested too deeply or is too large to encode"
        ) from None


def unrendered_request(webhook: WebhookTemplate) -> Request:
    """What a webhook that could not be rendered is stored as: its method and URL template,
    no headers, no body. Recorded as failed (or held), never sent as it is."""
    return Request(webhook.method, webhook.url, (), None, webhook.format)


def _render_request(
    webhook: WebhookTemplate,
    event: Mapping[str, Any],
    environ: Mapping[str, str],
    extra: Mapping[str, Any] | None,
) -> Request:
    nonce = os.urandom(8).hex()  # what secrets.token_hex does, minus two calls
    env = _SecretEnv(environ, nonce)
    context: dict[str, Any] = dict(event)
    context.update(extra or {})
    context["env"] = env
    r = _Renderer(context, webhook.max_body)
    with limits(r.budget):  # once for the whole request: every template draws on one budget
        return _render_parts(r, webhook, event, nonce, env)


# --- the URL: each value encoded for the place it stands in --------------------------------

UrlPlace = str  # "base" (starts the URL: as is), "host", "path", "query" or "fragment"
_RAW_URL = re.compile(r"\|\s*raw_url\s*$")
_URL_CONTROL = re.compile("[\x00-\x1f\x7f]")
_BLOCK = re.compile(r"\{%.*?%\}|\{#.*?#\}", re.S)
# Safe characters per place (RFC 3986), minus what would end the part or split it: a path
# value cannot carry `/ ? # & = + ;`, a query value not `& = + ; #`, so neither escapes.
_SAFE = {"path": "!$'()*,:@~", "query": "!$'()*,:@/?~", "fragment": "!$&'()*+,;=:@/?~"}
_HOST_REFUSED = re.compile(r"[/?#@\\\s]")


def url_place(before: str, starts_with_value: bool) -> UrlPlace:
    """Where a `{{ }}` stands in a URL template, from the literal text before it."""
    if starts_with_value:
        before = "http://base/" + before  # a value that starts the URL gives scheme and host
    scheme_end = before.find("://")
    if scheme_end < 0:
        return "base"
    rest = before[scheme_end + 3 :]
    if "#" in rest:
        return "fragment"
    if "?" in rest:
        return "query"
    return "path" if "/" in rest else "host"


@lru_cache(maxsize=1024)
def _url_parts(source: str) -> tuple[tuple[str, str, UrlPlace, bool], ...] | None:
    """A URL template as (literal, expression, place, raw) pieces; None: no `{{ }}` in it.

    The place of each value is decided by the rule's own text, never by values: a `?` that
    an event puts into a path segment is encoded there, it does not start a query.
    """
    pieces = _INTERPOLATION.split(source)
    if len(pieces) == 1:
        return None
    starts = pieces[0] == ""
    parts: list[tuple[str, str, UrlPlace, bool]] = []
    literal = ""
    for k in range(1, len(pieces), 2):
        literal += _BLOCK.sub("", pieces[k - 1])
        expression = pieces[k]
        raw = _RAW_URL.search(expression) is not None
        place = "base" if k == 1 and starts else url_place(literal, starts)
        parts.append((pieces[k - 1], expression, place, raw))
    parts.append((pieces[-1], "", "", False))
    return tuple(parts)


def _url_value(text: str, place: UrlPlace, expression: str) -> str:
    """A value encoded for its place in the URL (RenderError if it cannot stand there)."""
    if _URL_CONTROL.search(text):
        raise RenderError(
            f"webhook.url: rendered URL contains whitespace or control characters: the value "
            f"of {{{{{expression}}}}} has a line break or control character"
        )
    if place == "host":
        bad = _HOST_REFUSED.search(text)
        if bad:
            raise RenderError(
                f"webhook.url: the value of {{{{{expression}}}}} puts {bad[0]!r} into the URL's "
                "host; a host value cannot change the path, query or credentials "
                "(write |raw_url after it to insert it as it is)"
            )
        return text
    if place == "path" and text and not text.strip("."):
        raise RenderError(
            f"webhook.url: the value of {{{{{expression}}}}} is {text!r}, which would move up the "
            "path; a path value cannot be '.' or '..'"
        )
    return quote(text, safe=_SAFE[place])


def render_url(r: _Renderer, source: str) -> str:
    """The rule's webhook.url for this event, each value percent-encoded for where it stands.

    A value that starts the URL (a base URL from `env` or the event) and one marked
    `|raw_url` go in as they are. A template with `{% %}` blocks renders whole, its values
    then placed by the filters _url_path, _url_query... (same rules, done by jinja).
    """
    parts = _url_parts(source)
    if parts is None:
        return r.text(source, "webhook.url")
    if "{%" in source or "{#" in source:
        return r.text(_with_url_filters(source, parts), "webhook.url")
    out: list[str] = []
    for literal, expression, place, raw in parts:
        out.append(literal)
        if not expression:
            continue
        text = r.text("{{" + expression + "}}", "webhook.url")
        out.append(text if raw or place == "base" else _url_value(text, place, expression))
    return "".join(out)


def _with_url_filters(source: str, parts: tuple[tuple[str, str, UrlPlace, bool], ...]) -> str:
    rewritten = []
    for literal, expression, place, raw in parts:
        rewritten.append(literal)
        if not expression:
            continue
        if raw or place == "base":
            rewritten.append("{{" + expression + "}}")
        else:
            rewritten.append("{{ (" + expression + ")|_url_" + place + " }}")
    return "".join(rewritten)


def _url_filter(place: UrlPlace) -> Any:
    def encode(value: Any) -> str:
        text = "" if value is None else value if isinstance(value, str) else str(value)
        return _url_value(_clean(text), place, " value ")

    return encode


def _render_parts(
    r: _Renderer, webhook: WebhookTemplate, event: Mapping[str, Any], nonce: str, env: _SecretEnv
) -> Request:
    url = render_url(r, webhook.url).strip()
    headers: list[tuple[str, str]] = []
    for name, template in webhook.headers:
        headers.append((name, _header_value(r.text(template, f"webhook.headers.{name}"), name)))
    basic: tuple[str, str] | None = None
    auth = webhook.auth or {}
    if auth.get("type") == "basic":
        basic = (
            r.text(auth["username"], "webhook.auth.username"),
            r.text(auth["password"], "webhook.auth.password"),
        )
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
    sign = tuple(r.text(secret, "webhook.sign.secret") for secret in webhook.sign)

    body: str | None = None
    method = webhook.method
    if webhook.body is not None:
        if isinstance(webhook.body, str):
            body = r.text(webhook.body, "webhook.body")
        else:
            data = r.tree(webhook.body, "webhook.body")
            if method in ("GET", "DELETE") and webhook.format == "form":
                url = _add_query(url, form_pairs(data))
            else:
                body = encode_body(data, webhook.format, webhook.xml_root)
    elif method in METHODS_WITH_DEFAULT_BODY:
        body = encode_body(dict(event), webhook.format, webhook.xml_root)

    _check_url(url, nonce, env.used)
    if body is not None:
        size = len(body) if body.isascii() else len(body.encode())
        if size > webhook.max_body:
            raise RenderError(
                f"webhook.body: the rendered body ({size:,} bytes) is larger than "
                f"webhook.max_body ({webhook.max_body:,} bytes); raise webhook.max_body "
                "(at most 16MB) or send less"
            )
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
        sign=sign,
    )


def _header_value(value: str, name: str) -> str:
    if HEADER_CONTROL.search(value):
        raise RenderError(
            f"webhook.headers.{name}: value contains a line break or control character"
        )
    return value


def _check_url(url: str, nonce: str = "", secrets: Iterable[str] = ()) -> None:
    for name in secrets:
        token = placeholder(nonce, name)
        if url.startswith(token):
            # The URL starts with a secret; only resolve() sees its value, so check the rest here.
            url = "https://secret.invalid" + url[len(token) :]
    if URL_UNSAFE.search(url):
        raise RenderError(
            f"webhook.url: rendered URL contains whitespace or control characters: {url!r}"
        )
    names = tuple(secrets)
    probe = url
    for name in names:
        # A variable's value is only known when sending (resolve checks it then): stand in a
        # value that is valid anywhere in a URL, a port included.
        probe = probe.replace(placeholder(nonce, name), "0")
    check_url(probe, shown=mask(url, nonce, names) if names else url)


def _add_query(url: str, pairs: list[tuple[str, Any]]) -> str:
    if not pairs:
        return url
    query = form_encode(pairs)
    base, _, fragment = url.partition("#")
    joined = f"{base}{'&' if '?' in base else '?'}{query}"
    return f"{joined}#{fragment}" if fragment else joined


def valid_header_name(name: str) -> bool:
    """True for an HTTP header name (RFC 9110 token)."""
    return bool(_HEADER_NAME.match(name))
