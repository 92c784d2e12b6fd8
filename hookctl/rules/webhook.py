"""Validate `webhook:` specs (method, URL, format, headers, auth, body, signing) with located errors."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from jinja2 import TemplateError, meta

from hookctl.errors import RuleError
from hookctl.render.encoding import CONTENT_TYPES, valid_xml_name
from hookctl.render.templates import MAX_BODY_BYTES, environment, is_template
from hookctl.render.webhook import WebhookTemplate, valid_header_name
from hookctl.rules.policy import ACCEPTS
from hookctl.rules.trust import (
    LITERAL_HINT,
    literal_secrets,
    parse_size,
    sign_secrets,
)

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
FORMATS = tuple(CONTENT_TYPES)
WEBHOOK_KEYS = (
    "method",
    "url",
    "format",
    "headers",
    "auth",
    "body",
    "accept",
    "xml_root",
    "sign",
    "max_body",
)
AUTH_KEYS = {
    "basic": ("username", "password"),
    "api_key": ("header", "query", "value"),
    "bearer": ("token",),
}
# Names every template may use besides the event's own keys; near-misses are typos.
KNOWN_NAMES = ("env", "rule", "event", "ticket", "id", "delivery", "endpoint")
SIGNING_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
# What a rule's key can look like; anything else is quoted only by an excerpt (it may be a
# line of a file that was never meant to be read as a rule).
_KEY_SHAPE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,39}$")
_ODD_SHOWN = 3


def excerpt(text: str, limit: int = 12) -> str:
    """The start of `text` up to its first character that is not a letter, digit, `_` or `-`,
    at most `limit` characters, then `…`: enough to recognise a line, too little to leak it."""
    head = re.match(r"[A-Za-z0-9_-]*", text)
    start = head[0][:limit] if head else ""
    return start + "…" if start != text else start


def webhook_to_dict(webhook: WebhookTemplate) -> dict[str, Any]:
    """The JSON-able form of a webhook template (stored for `on_failure`)."""
    data = asdict(webhook)
    data["headers"] = [list(h) for h in webhook.headers]
    data["auth"] = dict(webhook.auth) if webhook.auth else None
    return data


def webhook_from_dict(data: Mapping[str, Any]) -> WebhookTemplate:
    """Rebuild a webhook template from its stored form."""
    fields = dict(data)
    fields["headers"] = tuple((k, v) for k, v in fields.get("headers") or ())
    fields["sign"] = tuple(fields.get("sign") or ())
    return WebhookTemplate(**fields)


def plain(value: Any) -> Any:
    """Drop the line-number mapping type so rules hold ordinary data."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


class SpecChecker:
    """Collects located errors while validating a rule mapping; checks `webhook:` specs."""

    def __init__(self, data: Mapping[str, Any], path: Path, name: str | None) -> None:
        self.data = data
        self.path = path
        self.name = name
        self.errors: list[RuleError] = []
        self.allow_literal = data.get("allow_literal_secrets") is True

    def error(
        self,
        field: str,
        message: str,
        node: Any = None,
        key: str | None = None,
        *,
        line: int | None = None,
    ) -> None:
        """Record an error at `line`, else at the line of `key` in `node`, else of `node`."""
        if line is None:
            line = getattr(node, "line", None)
            lines = getattr(node, "lines", None)
            if lines and key is not None and key in lines:
                line = lines[key]
        where = f"{self.path}:{line}" if line else str(self.path)
        self.errors.append(RuleError(message, file=where, rule=self.name, field=field))

    def unknown_keys(self, mapping: Mapping[str, Any], allowed: Iterable[str], prefix: str) -> None:
        """An error per unknown key, naming the key but never its value.

        A key that is not shaped like one (a whole line of some other file, such as a rules
        path that points at /etc/shadow) is quoted by a short excerpt only, and past a few
        such lines the rest are counted, not listed.
        """
        allowed = tuple(allowed)
        odd = 0
        for key in mapping:
            if key in allowed:
                continue
            if not _KEY_SHAPE.match(str(key)):
                odd += 1
                if odd <= _ODD_SHOWN:
                    self.error(
                        prefix.rstrip("."),
                        f"a line starting {excerpt(str(key))!r} is not a `key: value` of a "
                        "rule (is this a hookctl rule file?)",
                        mapping,
                        str(key),
                    )
                continue
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.error(
                f"{prefix}{key}",
                f"unknown key{hint}; allowed: {', '.join(allowed)}",
                mapping,
                str(key),
            )
        if odd > _ODD_SHOWN:
            more = odd - _ODD_SHOWN
            self.error(
                prefix.rstrip("."),
                f"and {more} more line{'s' if more != 1 else ''} like these",
                mapping,
            )

    def template(
        self, value: Any, field: str, node: Any, key: str | None, names: tuple[str, ...]
    ) -> None:
        """Compile a template now so syntax errors and typos surface at load, not at send."""
        if not isinstance(value, str) or not is_template(value):
            return
        try:
            ast = environment().parse(value)
            environment().compile(ast)
        except TemplateError as exc:
            self.error(field, f"template error: {getattr(exc, 'message', None) or exc}", node, key)
            return
        for variable in sorted(meta.find_undeclared_variables(ast)):
            if variable in names:
                continue
            close = difflib.get_close_matches(variable, names, n=1, cutoff=0.75)
            if close:
                self.error(
                    field, f"unknown variable {variable!r} (did you mean {close[0]!r}?)", node, key
                )

    def templates_in(
        self, value: Any, field: str, node: Any, key: str | None, names: tuple[str, ...]
    ) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                self.templates_in(v, f"{field}.{k}", value, k, names)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self.templates_in(v, f"{field}[{i}]", node, key, names)
        else:
            self.template(value, field, node, key, names)

    def webhook(self, spec: Any, prefix: str, names: tuple[str, ...]) -> WebhookTemplate | None:
        if not isinstance(spec, Mapping):
            self.error(prefix, "expected a mapping with at least method and url", self.data, prefix)
            return None
        p = prefix + "."
        self.unknown_keys(spec, WEBHOOK_KEYS, p)
        method = str(spec.get("method", "POST")).upper()
        if method not in METHODS:
            self.error(
                f"{p}method",
                f"expected one of {', '.join(METHODS)}, got {spec.get('method')!r}",
                spec,
                "method",
            )
        fmt = spec.get("format", "json")
        if fmt not in FORMATS:
            self.error(f"{p}format", f"expected json, xml or form, got {fmt!r}", spec, "format")
            fmt = "json"
        url = spec.get("url")
        if not isinstance(url, str) or not url.strip():
            self.error(f"{p}url", "required: the URL to send to (a template)", spec, "url")
            url = ""
        elif not url.strip().startswith(("http://", "https://", "{{", "{%")):
            self.error(f"{p}url", f"expected an http:// or https:// URL, got {url!r}", spec, "url")
        self.template(url, f"{p}url", spec, "url", names)

        headers: list[tuple[str, str]] = []
        raw_headers = spec.get("headers") or {}
        if not isinstance(raw_headers, Mapping):
            self.error(
                f"{p}headers", "expected a mapping of header names to values", spec, "headers"
            )
            raw_headers = {}
        for hname, hvalue in raw_headers.items():
            if not valid_header_name(str(hname)):
                self.error(
                    f"{p}headers.{hname}", "not a valid HTTP header name", raw_headers, hname
                )
            if not isinstance(hvalue, str | int | float) or isinstance(hvalue, bool):
                self.error(f"{p}headers.{hname}", "expected a string value", raw_headers, hname)
                continue
            if any(c in str(hvalue) for c in "\r\n\0"):
                self.error(f"{p}headers.{hname}", "value contains a line break", raw_headers, hname)
            self.template(str(hvalue), f"{p}headers.{hname}", raw_headers, hname, names)
            headers.append((str(hname), str(hvalue)))

        auth = self.auth(spec.get("auth"), f"{p}auth", spec, names)
        body = spec.get("body")
        if body is not None and not isinstance(body, str | Mapping | list):
            self.error(f"{p}body", "expected a mapping, a list or a template string", spec, "body")
            body = None
        if isinstance(body, Mapping | list):
            self.templates_in(body, f"{p}body", spec, "body", names)
            if fmt == "xml":
                self.xml_names(body, f"{p}body", spec)
            if fmt == "form" and not isinstance(body, Mapping):
                self.error(
                    f"{p}body",
                    "a form body must be a mapping of field names to values",
                    spec,
                    "body",
                )
        elif isinstance(body, str):
            self.template(body, f"{p}body", spec, "body", names)
        accept = spec.get("accept", "2xx-3xx")
        if accept not in ACCEPTS:
            self.error(f"{p}accept", f"expected '2xx-3xx' or '2xx', got {accept!r}", spec, "accept")
        xml_root = spec.get("xml_root", "payload")
        if not isinstance(xml_root, str) or not valid_xml_name(xml_root):
            self.error(
                f"{p}xml_root", f"not a valid XML element name: {xml_root!r}", spec, "xml_root"
            )
            xml_root = "payload"
        sign, max_body = self.trust(spec, prefix, names)
        return WebhookTemplate(
            method=method,
            url=url.strip(),
            format=fmt,
            headers=tuple(headers),
            body=plain(body),
            auth=auth,
            xml_root=xml_root,
            sign=sign,
            max_body=max_body,
        )

    def trust(
        self, spec: Mapping[str, Any], prefix: str, names: tuple[str, ...]
    ) -> tuple[tuple[str, ...], int]:
        """Check signing, the body cap, headers hookctl sets itself, and literal secrets."""
        sign: tuple[str, ...] = ()
        if spec.get("sign") is not None:
            try:
                sign = sign_secrets(spec["sign"])
            except ValueError as exc:
                self.error(f"{prefix}.sign", str(exc), spec, "sign")
            for secret in sign:
                self.template(secret, f"{prefix}.sign.secret", spec, "sign", names)
        max_body = MAX_BODY_BYTES
        if "max_body" in spec:
            try:
                max_body = parse_size(spec["max_body"])
            except ValueError as exc:
                self.error(f"{prefix}.max_body", str(exc), spec, "max_body")
        headers = spec.get("headers")
        for name in headers if isinstance(headers, Mapping) else ():
            if str(name).lower() in SIGNING_HEADERS:
                self.error(
                    f"{prefix}.headers.{name}",
                    "set by hookctl (the delivery id; see webhook.sign)",
                    headers,
                    name,
                )
        if not self.allow_literal:
            for field, node, key in literal_secrets(spec, prefix):
                self.error(field, LITERAL_HINT, node, key)
        return sign, max_body

    def xml_names(self, body: Any, field: str, node: Any) -> None:
        if isinstance(body, Mapping):
            for k, v in body.items():
                if not valid_xml_name(str(k)):
                    self.error(f"{field}.{k}", "not a valid XML element name", body, k)
                self.xml_names(v, f"{field}.{k}", body)
        elif isinstance(body, list):
            for i, v in enumerate(body):
                self.xml_names(v, f"{field}[{i}]", node)

    def auth(
        self, spec: Any, field: str, parent: Any, names: tuple[str, ...]
    ) -> dict[str, str] | None:
        if spec is None:
            return None
        if not isinstance(spec, Mapping) or spec.get("type") not in AUTH_KEYS:
            got = spec.get("type") if isinstance(spec, Mapping) else spec
            self.error(
                f"{field}.type", f"expected basic, api_key or bearer, got {got!r}", parent, "auth"
            )
            return None
        kind = spec["type"]
        allowed = AUTH_KEYS[kind]
        self.unknown_keys(spec, ("type", *allowed), f"{field}.")
        required = {"basic": ("username", "password"), "api_key": ("value",), "bearer": ("token",)}[
            kind
        ]
        for key in required:
            if not isinstance(spec.get(key), str | int) or spec.get(key) == "":
                self.error(f"{field}.{key}", f"required for {kind} auth", spec, key)
        if kind == "api_key" and spec.get("header") and spec.get("query"):
            self.error(f"{field}", "give either header or query, not both", parent, "auth")
        if kind == "api_key" and spec.get("header") and not valid_header_name(str(spec["header"])):
            self.error(f"{field}.header", "not a valid HTTP header name", spec, "header")
        result = {k: str(v) for k, v in spec.items() if v is not None}
        for key in allowed:
            if key in result:
                self.template(result[key], f"{field}.{key}", spec, key, names)
        return result
