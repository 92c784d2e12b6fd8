"""Body encodings: JSON, XML and form fields. Escaping is the encoder's job, never the user's.

Whatever an event holds (quotes, `<`, `&`, newlines, emoji, lone surrogates from `\\ud800`
escapes, characters XML cannot carry), the body stays well-formed and parses back to the
same text; only what a format cannot carry at all is replaced by U+FFFD.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from hookctl.errors import RenderError

CONTENT_TYPES = {
    "json": "application/json",
    "xml": "application/xml",
    "form": "application/x-www-form-urlencoded",
}
# Characters XML 1.0 cannot carry; they are replaced, never sent broken. Written as what is
# left out of XML's Char production rather than its negation, which took 4.5 ms to compile.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_XML_NAME = re.compile(r"^[A-Za-z_][\w.\-]*$")
# Lone surrogates (from `\\ud800` escapes in JSON events) have no UTF-8 form.
_SURROGATE = re.compile("[\ud800-\udfff]")


def xml_escape(value: Any) -> str:
    """Escape text for an XML element or attribute, replacing characters XML cannot carry."""
    text = _XML_INVALID.sub("\ufffd", str(value))
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&apos;")
        .replace("\r", "&#13;")  # a parser turns a raw CR into LF; the reference keeps it
    )


# Built once: json.dumps builds a new encoder on every call that passes options.
_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False)
_JSON_COMPACT = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def tojson(value: Any, **kwargs: Any) -> str:
    """JSON text, non-ASCII kept as is."""
    try:
        if not kwargs:
            text = _JSON.encode(value)
        elif kwargs == {"separators": (",", ":")}:
            text = _JSON_COMPACT.encode(value)
        else:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False, **kwargs)
    except ValueError:
        # Python would write Infinity or NaN, which no JSON parser has to accept.
        raise RenderError("a number is too large for JSON (Infinity or NaN)") from None
    if text.isascii():  # the common case, and O(1): no surrogate to look for
        return text
    # A lone surrogate stays itself as a \\u escape, where raw it could not be encoded at all.
    return _SURROGATE.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


def clean(text: str) -> str:
    """Text that can be encoded as UTF-8: lone surrogates become U+FFFD."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def encode_body(data: Any, fmt: str, xml_root: str = "payload") -> str:
    """Encode rendered data for the wire format; escaping is the encoder's job, not the user's."""
    if fmt == "json":
        try:
            return tojson(data, separators=(",", ":"))
        except RenderError as exc:
            raise RenderError(f"webhook.body: {exc}") from None
        except TypeError as exc:  # a template produced something that is not data
            raise RenderError(f"webhook.body: {exc}") from None
    if fmt == "xml":
        return '<?xml version="1.0" encoding="UTF-8"?>' + _xml_element(xml_root, data)
    if fmt == "form":
        return form_encode(form_pairs(data))
    raise RenderError(f"unknown body format {fmt!r}")


def form_encode(pairs: list[tuple[str, Any]]) -> str:
    """Form fields as `application/x-www-form-urlencoded` text."""
    return urlencode([(clean(k), clean(scalar(v))) for k, v in pairs])


def scalar(value: Any) -> str:
    """The text a value is sent as in a form field or an XML element (`true`, `""` for null)."""
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    return str(value)


def form_pairs(data: Any, prefix: str | None = None) -> list[tuple[str, Any]]:
    """Flatten to form fields: lists repeat the key, nested mappings use `parent[child]`.

    The one flattener: the form encoder sends these pairs, and `hookctl test` compares an
    expected form body by them.
    """
    if isinstance(data, Mapping):
        pairs: list[tuple[str, Any]] = []
        for key, value in data.items():
            pairs.extend(form_pairs(value, str(key) if prefix is None else f"{prefix}[{key}]"))
        return pairs
    if prefix is None:
        raise RenderError("webhook.body: a form body must be a mapping")
    if isinstance(data, list):
        return [pair for item in data for pair in form_pairs(item, prefix)]
    return [(prefix, data)]


def _xml_element(name: str, value: Any) -> str:
    if not _XML_NAME.match(name) or name.lower().startswith("xml"):
        raise RenderError(f"webhook.body: {name!r} is not a valid XML element name")
    if isinstance(value, Mapping):
        inner = "".join(_xml_element(str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        inner = "".join(_xml_element("item", v) for v in value)
    else:
        inner = xml_escape(scalar(value))
    return f"<{name}>{inner}</{name}>"


def valid_xml_name(name: str) -> bool:
    """True for a name usable as an XML element."""
    return bool(_XML_NAME.match(name)) and not name.lower().startswith("xml")
