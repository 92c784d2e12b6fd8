"""Read events from files or stdin: each source opened, its shape detected, and decoded.

The shape is detected from the content: one JSON object, a JSON array of objects, or NDJSON,
streamed. A source whose first line is a complete JSON value is NDJSON (ndjson.py decodes it);
a source that starts with `[`, or with an object spread over several lines, is a JSON document
(document.py). Neither is read whole: memory stays bounded by the largest event.
"""

from __future__ import annotations

import codecs
import itertools
import json
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from hookctl.events.document import Window, read_document
from hookctl.events.event import MAX_EVENT_BYTES, READ_CHUNK, BadEvent, Event
from hookctl.events.ndjson import bounded_lines, read_lines

__all__ = ["read_events", "read_source"]

_JSON_SPACE = b" \t\r\n"


def read_events(paths: Sequence[str], stdin: BinaryIO) -> Iterator[Event | BadEvent]:
    """Read each path in turn ('-' is stdin); an unreadable file yields one BadEvent at line 0."""
    for path in paths:
        if path == "-":
            yield from _guarded(stdin, "<stdin>")
            continue
        try:
            # Not a with statement: only a failure to open, not to read, is "cannot open".
            stream = open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            yield BadEvent(path, 0, f"cannot open: {exc.strerror or exc}")
            continue
        with stream:
            yield from _guarded(stream, path)


def _guarded(stream: BinaryIO, source: str) -> Iterator[Event | BadEvent]:
    """Read one source, turning a read failure half way through into a BadEvent."""
    try:
        yield from read_source(stream, source)
    except OSError as exc:
        yield BadEvent(source, 0, f"cannot read: {exc.strerror or exc}")


def read_source(stream: BinaryIO, source: str) -> Iterator[Event | BadEvent]:
    """Yield every event in one binary stream, whatever its shape, without reading it whole."""
    consumed = 0  # lines fully read before the first line with content
    # A limit, because a minified array can be one enormous line.
    head = stream.readline(READ_CHUNK).removeprefix(codecs.BOM_UTF8)
    while head and not head.strip(_JSON_SPACE):
        if head.endswith(b"\n"):
            consumed += 1
        head = stream.readline(READ_CHUNK)
    if not head:
        return
    first = head.lstrip(_JSON_SPACE)[:1]
    if first == b"[":
        yield from read_document(Window(stream, head, consumed + 1), source)
        return
    if not head.endswith(b"\n"):
        head += stream.readline(MAX_EVENT_BYTES + 1 - len(head))
    if len(head) > MAX_EVENT_BYTES:
        # One line past the limit: NDJSON with a huge event (or one huge object); skip it.
        yield from read_lines(itertools.chain([head], bounded_lines(stream)), source, consumed)
        return
    if first == b"{" and _starts_document(head):
        lines = [head]
        following = stream.readline(MAX_EVENT_BYTES + 1)
        while following and not following.strip(_JSON_SPACE):
            lines.append(following)
            following = stream.readline(MAX_EVENT_BYTES + 1)
        lines.append(following)
        # Pretty-printed JSON never starts a line after `{` with another `{`; NDJSON whose
        # first line was cut short does.
        if not following.lstrip(_JSON_SPACE).startswith(b"{"):
            window = Window(stream, b"".join(lines), consumed + 1)
            yield from read_document(window, source)
            return
        yield from read_lines(itertools.chain(lines, bounded_lines(stream)), source, consumed)
        return
    yield from read_lines(itertools.chain([head], bounded_lines(stream)), source, consumed)


def _starts_document(line: bytes) -> bool:
    """True if the line is the unfinished start of a JSON value rather than a whole one."""
    try:
        text = line.decode()
        json.loads(text)
    except json.JSONDecodeError as exc:
        return exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")
    except (ValueError, RecursionError):
        return False
    return False
