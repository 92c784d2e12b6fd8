"""Trust checks on a rule's webhook: no literal secrets, a valid `sign:`, a sane `max_body:`.

Rule files get committed, shared and pasted into tickets; secrets belong in the environment
(`{{ env.NAME }}`), where hookctl keeps them out of the database and every output. So a value
that looks like a secret written out in a rule is an error, unless the rule says
`allow_literal_secrets: true`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from hookctl.render.templates import is_template

MAX_BODY_LIMIT = 16 * 1024 * 1024  # the most `webhook.max_body` may allow
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|mb)?\s*$", re.I)
_UNITS = {None: 1, "b": 1, "kb": 1024, "mb": 1024 * 1024}
_WHSEC = re.compile(r"whsec_[A-Za-z0-9+/]{8,}")
_SECRET_FIELDS = {"basic": ("password",), "bearer": ("token",), "api_key": ("value",)}
LITERAL_HINT = (
    "looks like a secret written in the rule: take it from the environment ({{ env.NAME }}), "
    "or set allow_literal_secrets: true on the rule"
)


ENV_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# Words that make a variable name a credential's, whatever a rule's `public_env` says.
_SECRET_WORDS = {
    "AUTH", "BEARER", "COOKIE", "CREDENTIAL", "CREDENTIALS", "JWT", "KEY", "PASS", "PASSWD",
    "PASSWORD", "PIN", "PRIVATE", "PWD", "SECRET", "SESSION", "SIGNATURE", "SIGNING", "TOKEN",
}  # fmt: skip
_SECRET_PARTS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "APIKEY", "PRIVATE", "CREDENTIAL")


def secret_name(name: str) -> bool:
    """True for a variable name that says it holds a credential (TELEGRAM_TOKEN, SMS_API_KEY)."""
    upper = name.upper()
    words = set(re.split(r"[^A-Z0-9]+", upper))
    return bool(words & _SECRET_WORDS) or any(part in upper for part in _SECRET_PARTS)


def env_reference(name: str) -> re.Pattern[str]:
    """A template's use of `env.NAME` or `env["NAME"]`."""
    quoted = re.escape(name)
    return re.compile(rf"\benv\s*(?:\.\s*{quoted}\b|\[\s*['\"]{quoted}['\"]\s*\])")


def credential_templates(spec: Any, prefix: str) -> Iterator[tuple[str, str]]:
    """(field, template) for each credential a webhook spec renders: auth, signing secrets,
    and headers or body keys named like credentials (Authorization, X-Api-Key, password)."""
    if not isinstance(spec, Mapping):
        return
    auth = spec.get("auth")
    if isinstance(auth, Mapping):
        for key, value in auth.items():
            if key not in ("type", "header", "query") and isinstance(value, str):
                yield f"{prefix}.auth.{key}", value
    sign = spec.get("sign")
    if isinstance(sign, Mapping):
        secrets = sign.get("secret")
        for value in secrets if isinstance(secrets, list) else [secrets]:
            if isinstance(value, str):
                yield f"{prefix}.sign.secret", value
    headers = spec.get("headers")
    if isinstance(headers, Mapping):
        for name, value in headers.items():
            if secret_key(str(name)) and isinstance(value, str):
                yield f"{prefix}.headers.{name}", value
    for field, _node, key, value in _strings(spec.get("body"), f"{prefix}.body", spec, "body"):
        if secret_key(key):
            yield field, value


def secret_key(name: str) -> bool:
    """True for a header or body key whose value is a credential (Authorization, X-Api-Key, password)."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    return key == "authorization" or key.endswith(
        ("password", "passwd", "secret", "token", "apikey")
    )


def _literal(value: Any) -> bool:
    return (
        isinstance(value, str | int)
        and not isinstance(value, bool)
        and str(value).strip() != ""
        and not (isinstance(value, str) and is_template(value))
    )


def literal_secrets(spec: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any, str]]:
    """(field, node, key) for each literal that looks like a secret in one webhook mapping."""
    url = spec.get("url")
    if isinstance(url, str):
        password = _url_password(url)
        if password is not None and password and not is_template(password):
            yield f"{prefix}.url", spec, "url"
    auth = spec.get("auth")
    if isinstance(auth, Mapping):
        for key in _SECRET_FIELDS.get(str(auth.get("type")), ()):
            if _literal(auth.get(key)):
                yield f"{prefix}.auth.{key}", auth, key
    headers = spec.get("headers")
    if isinstance(headers, Mapping):
        for name, value in headers.items():
            if secret_key(str(name)) and _literal(value):
                yield f"{prefix}.headers.{name}", headers, str(name)
    yield from _body_secrets(spec.get("body"), f"{prefix}.body", spec, "body")
    sign = spec.get("sign")
    if isinstance(sign, Mapping):
        secrets = sign.get("secret")
        for i, value in enumerate(secrets if isinstance(secrets, list) else [secrets]):
            if _literal(value):
                yield (
                    f"{prefix}.sign.secret" + (f"[{i}]" if isinstance(secrets, list) else ""),
                    sign,
                    "secret",
                )
    seen = set()
    for field, node, key, value in _strings(spec, prefix, spec, ""):
        if _WHSEC.search(value) and field not in seen:
            seen.add(field)
            yield field, node, key


def _body_secrets(body: Any, field: str, node: Any, key: str) -> Iterator[tuple[str, Any, str]]:
    if isinstance(body, Mapping):
        for k, v in body.items():
            if secret_key(str(k)) and _literal(v):
                yield f"{field}.{k}", body, str(k)
            else:
                yield from _body_secrets(v, f"{field}.{k}", body, str(k))
    elif isinstance(body, list):
        for i, v in enumerate(body):
            yield from _body_secrets(v, f"{field}[{i}]", node, key)


def _strings(value: Any, field: str, node: Any, key: str) -> Iterator[tuple[str, Any, str, str]]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings(v, f"{field}.{k}", value, str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{field}[{i}]", node, key)
    elif isinstance(value, str):
        yield field, node, key, value


def _url_password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def sign_secrets(spec: Any) -> tuple[str, ...]:
    """The secret templates of `sign: {secret: ...}` (a string, or a list during a rotation)."""
    if not isinstance(spec, Mapping):
        raise ValueError('expected a mapping such as {secret: "{{ env.WEBHOOK_SECRET }}"}')
    unknown = [str(k) for k in spec if k != "secret"]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; allowed: secret")
    secret = spec.get("secret")
    secrets = secret if isinstance(secret, list) else [secret]
    if not secrets or not all(isinstance(s, str) and s.strip() for s in secrets):
        raise ValueError(
            'secret: expected a template such as "{{ env.WEBHOOK_SECRET }}", or a list of them'
        )
    return tuple(str(s).strip() for s in secrets)


def parse_size(value: Any) -> int:
    """Bytes from `512KB`, `2MB` or a number; ValueError past 16MB."""
    match = (
        _SIZE.match(str(value))
        if isinstance(value, str | int) and not isinstance(value, bool)
        else None
    )
    if not match:
        raise ValueError(f"expected a size such as 512KB or 2MB, got {value!r}")
    size = int(match[1]) * _UNITS[match[2].lower() if match[2] else None]
    if not 0 < size <= MAX_BODY_LIMIT:
        raise ValueError("must be more than 0 and at most 16MB")
    return size


MAX_NODES = 100_000  # values in one rule file, YAML aliases expanded


def expansion_problem(doc: Any) -> str | None:
    """Why a loaded YAML document is unsafe to walk (an alias bomb or a cycle), or None."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(value: Any) -> int:
        if not isinstance(value, Mapping | list):
            return 1
        key = id(value)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ValueError("a YAML alias refers to the value that contains it")
        active.add(key)
        children = value.values() if isinstance(value, Mapping) else value
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_NODES:
                raise ValueError(f"more than {MAX_NODES:,} values once YAML aliases are expanded")
        active.discard(key)
        sizes[key] = total
        return total

    try:
        size(doc)
    except ValueError as exc:
        return str(exc)
    return None
