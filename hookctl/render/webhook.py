"""A rule's `webhook:` and one event become a complete request (templates.py renders each
part; url.py encodes the URL's values). No I/O."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hookctl.errors import RenderError
from hookctl.render.budget import limits
from hookctl.render.encoding import CONTENT_TYPES, encode_body, form_encode, form_pairs
from hookctl.render.request import (
    HEADER_CONTROL,
    URL_UNSAFE,
    Request,
    check_url,
    mask,
    placeholder,
)
from hookctl.render.templates import MAX_BODY_BYTES, _Renderer, _SecretEnv
from hookctl.render.url import render_url

METHODS_WITH_DEFAULT_BODY = frozenset({"POST", "PUT", "PATCH"})
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


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
