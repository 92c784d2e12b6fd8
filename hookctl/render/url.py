"""The URL of a rule's webhook: each `{{ }}` value encoded for the place it stands in."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Protocol
from urllib.parse import quote

from hookctl.errors import RenderError
from hookctl.render.encoding import clean as _clean

# A `{{ }}` in template text (templates.py splits on it too, for its plain paths).
_INTERPOLATION = re.compile(r"\{\{((?:(?!\{\{|\}\}).)*)\}\}", re.S)

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


class TextRenderer(Protocol):
    """What render_url needs of a renderer (templates._Renderer): one template as text."""

    def text(self, source: str, where: str) -> str:
        """`source` rendered to text; `where` names the rule field in errors."""
        ...


def render_url(r: TextRenderer, source: str) -> str:
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
