"""Every form a secret may come back in from a receiver, and text with all of them taken out.

A receiver that rejects a request often quotes it: an error page with the token in it, a JSON
reply echoing the body (PHP writes `/` as `\\/`), a JSON string inside JSON, a URL-encoded
redirect, an HTML page, base64 of a header. What hookctl keeps of a reply (status line
errors, headers, the body) is scrubbed of each secret in every one of these forms before it
is stored or printed. The forms of a value are worked out once (they are cached), so a reply
costs one substring search per form.

This sits in render/ beside the placeholders: the values and their wire encodings are known
here (resolve() puts them in `ResolvedRequest.sensitive`); the sender only applies `scrub`.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable
from functools import lru_cache
from urllib.parse import quote, quote_plus

from hookctl.render.encoding import clean

MASK = "***"
# A derived form shorter than this (the base64 of a 2-character chat id) would blank out
# unrelated text; the raw values themselves are always scrubbed, whatever their length.
MIN_FORM = 4
KEY = 4  # forms that agree in this many first characters share a key (see _keys)

_UNICODE_ESCAPE = re.compile(r"\\u[0-9a-f]{4}")
_PERCENT = re.compile(r"%[0-9A-F]{2}")
_HTML_SPECIAL = frozenset("&<>\"'")
# URL-encoders' safe sets: none, path (`/`), RFC 3986 sub-delims as hookctl puts them in a
# URL, both, and JavaScript's encodeURIComponent.
_URL_SAFE = ("", "/", ":@!$'()*,~", "/:@!$'()*,~", "-_.!~*'()")


@lru_cache(maxsize=1)
def _html_names() -> dict[str, str]:
    """HTML5's named entity for each character that has one (the shortest lower-case name)."""
    import html.entities  # 2 ms with the table: only once a secret is sent, not at start-up

    names: dict[str, str] = {}
    for name, char in html.entities.html5.items():
        usable = len(char) == 1 and name.endswith(";") and name.islower()
        if usable and (char not in names or len(name) < len(names[char])):
            names[char] = name
    return {char: f"&{name}" for char, name in names.items()}


def _json_forms(text: str) -> set[str]:
    """JSON string contents as encoders write them: ASCII-only or not, `\\/` (PHP),
    upper-case `\\u` hex (Java, .NET), `<>&` as `\\u003c` (Go)."""
    ascii_only = json.dumps(text)[1:-1]
    forms = {ascii_only, json.dumps(text, ensure_ascii=False)[1:-1]}
    forms.add(ascii_only.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))
    forms |= {_UNICODE_ESCAPE.sub(lambda m: m[0].upper().replace("\\U", "\\u"), f) for f in forms}
    forms |= {f.replace("/", "\\/") for f in forms}
    return forms


def _url_forms(text: str) -> set[str]:
    """Percent-encoded with each common safe set, space as `%20` or `+`, hex in either case."""
    forms = {quote(text, safe=safe) for safe in _URL_SAFE}
    forms |= {quote_plus(text, safe=safe) for safe in _URL_SAFE}
    forms |= {_PERCENT.sub(lambda m: m[0].lower(), f) for f in forms}
    return forms


def _base64_forms(text: str) -> set[str]:
    """The base64 of the value wherever it sits in the encoded data: for each of the three
    alignments, the characters that depend on the value's bytes alone (with the padded end,
    for a value that ends the data); standard and URL-safe alphabets."""
    data = text.encode()
    forms: set[str] = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data).decode()
        start = -(-8 * offset // 6)  # characters that carry bits of the bytes before it
        end = 8 * (offset + len(data)) // 6  # characters made only of known bits
        forms |= {encoded[start:end], encoded[start:], encoded[start:].rstrip("=")}
    forms |= {f.replace("+", "-").replace("/", "_") for f in forms}
    return forms


def _html_forms(text: str) -> set[str]:
    """HTML entities: named (`&amp;`, every HTML5 name as PHP's htmlentities), decimal and
    hex (either case), for the five specials, those and `/`, those and non-ASCII, or all."""
    sets: list[Callable[[str], bool]] = [
        lambda c: c in _HTML_SPECIAL,
        lambda c: c in _HTML_SPECIAL or c == "/",
        lambda c: c in _HTML_SPECIAL or not c.isascii(),
        lambda c: c in _HTML_SPECIAL or c == "/" or not c.isascii(),
        lambda c: True,
    ]
    styles = (lambda c: f"&#{ord(c)};", lambda c: f"&#x{ord(c):x};", lambda c: f"&#X{ord(c):X};")
    forms = {
        "".join(style(c) if which(c) else c for c in text) for which in sets for style in styles
    }
    quotes = {"'": ("&#x27;", "&#39;", "&#039;", "&apos;"), '"': ("&quot;",)}
    for apostrophe in quotes["'"]:
        specials = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": apostrophe}
        forms.add("".join(specials.get(c, c) for c in text))  # html.escape, htmlspecialchars
        forms.add("".join(specials.get(c, "&#x2F;" if c == "/" else c) for c in text))  # OWASP
    named = _html_names()
    forms.add("".join(named.get(c, c) for c in text))  # htmlentities(ENT_HTML5)
    return forms


@lru_cache(maxsize=256)  # the same few secrets on every delivery
def echo_forms(value: str) -> frozenset[str]:
    """Every form of `value` a receiver may echo: raw, JSON (once and twice), URL, base64, HTML."""
    text = clean(value)  # as it was sent: lone surrogates became U+FFFD
    once = _json_forms(text)
    twice = {form for inner in once for form in _json_forms(inner)}
    forms = {text, *once, *twice}
    forms |= _url_forms(text) | _base64_forms(text) | _html_forms(text)
    return frozenset(forms)


@lru_cache(maxsize=64)
def forms_of(values: tuple[str, ...], extra: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """What `scrub` looks for, for these secret values (and `extra` exact forms): the forms of
    at least MIN_FORM characters, longest first, so a longer form is taken out whole."""
    found: set[str] = set(extra)
    for value in values:
        found |= echo_forms(value)
    return tuple(sorted((f for f in found if len(f) >= MIN_FORM), key=len, reverse=True))


@lru_cache(maxsize=64)
def _keys(forms: tuple[str, ...]) -> tuple[str, ...]:
    """A few substrings, one of which every form starts with: the longest prefix shared by
    the forms whose first KEY characters agree. The encodings of one value mostly leave its
    first letters alone, so a hundred forms share about a dozen keys, and a long key is a
    fast search."""
    groups: dict[str, list[str]] = {}
    for form in forms:
        if form:
            groups.setdefault(form[:KEY], []).append(form)
    # Strings, not paths: the character-by-character prefix is the point.
    return tuple(os.path.commonprefix(group) for group in groups.values())  # noqa: RUF071


def scrub(text: str, forms: tuple[str, ...]) -> str:
    """`text` with every one of `forms` (longest first) replaced by `***`.

    Most replies hold no secret: a text that contains none of the keys (each a prefix of
    some forms) contains no form, and is returned after a dozen substring searches instead
    of one per form.
    """
    for key in _keys(forms):
        if key in text:
            break
    else:
        return text
    for form in forms:
        if form and form in text:
            text = text.replace(form, MASK)
    return text
