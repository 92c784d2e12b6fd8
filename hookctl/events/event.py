"""What reading events yields: an Event, or a BadEvent whose one-line message is worded here.

One event is at most MAX_EVENT_BYTES (16 MiB) of JSON: a bigger one is reported at its line
and skipped without being held in memory (a request body is at most 16 MB anyway), and the
events after it are still read. Sources are read READ_CHUNK bytes at a time.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

READ_CHUNK = 1 << 16
MAX_EVENT_BYTES = 16 * 1024 * 1024  # the largest event read; documented in the README
_TYPE_NAMES = {
    dict: "object",
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


@dataclass(frozen=True, slots=True)
class Event:
    """One JSON object read from a source, with the place it starts."""

    data: dict[str, Any]
    source: str
    line: int

    @property
    def name(self) -> str | None:
        """The event type from the "event" key, if it is a string."""
        name = self.data.get("event")
        return name if isinstance(name, str) else None

    @property
    def event_id(self) -> str | None:
        """The "id" key, or "Id" in a bare Movidesk payload, as a string; None if unusable."""
        for key in ("id", "Id"):
            value = self.data.get(key)
            if (isinstance(value, str) and value) or type(value) is int:
                return str(value)
        return None


@dataclass(frozen=True, slots=True)
class BadEvent:
    """A line or element that could not be read as an event, and why."""

    source: str
    line: int
    message: str

    def __str__(self) -> str:
        if self.line:
            return f"{self.source}:{self.line}: {self.message}"
        return f"{self.source}: {self.message}"


def too_big_message() -> str:
    """An event past MAX_EVENT_BYTES, skipped."""
    limit = MAX_EVENT_BYTES
    size = f"{limit // (1024 * 1024)} MiB" if limit % (1024 * 1024) == 0 else f"{limit:,} bytes"
    return f"event larger than {size}, the limit for one event; skipped"


def not_object_message(value: Any) -> str:
    """A JSON value that is not an object, by its JSON type."""
    return f"expected a JSON object, got {_TYPE_NAMES.get(type(value), 'something else')}"


def syntax_message(msg: str, column: int) -> str:
    """The json module's syntax error, at a column."""
    return f"invalid JSON: {msg.removesuffix(' at')} (column {column})"


def utf8_message(byte: int, column: int) -> str:
    """A byte that is not valid UTF-8, at a column."""
    return f"invalid UTF-8: byte 0x{byte:02x} (column {column})"


def huge_number_message() -> str:
    """An integer longer than Python converts."""
    return f"invalid JSON: an integer has more than {sys.get_int_max_str_digits()} digits"
