"""Decode NDJSON: every non-blank line on its own, so a bad line never stops the rest.

Lines are read at most MAX_EVENT_BYTES + 1 bytes at a time: a longer one is reported at its
line and the rest of it dropped unread into memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from hookctl.events.event import (
    MAX_EVENT_BYTES,
    READ_CHUNK,
    BadEvent,
    Event,
    huge_number_message,
    not_object_message,
    syntax_message,
    too_big_message,
    utf8_message,
)


def bounded_lines(stream: BinaryIO) -> Iterator[bytes]:
    """The stream's lines, each at most MAX_EVENT_BYTES + 1 bytes: a longer line comes as its
    first MAX_EVENT_BYTES + 1 bytes (too long: the reader reports it), its rest dropped unread
    into memory."""
    while line := stream.readline(MAX_EVENT_BYTES + 1):
        if len(line) > MAX_EVENT_BYTES and not line.endswith(b"\n"):
            while rest := stream.readline(READ_CHUNK):
                if rest.endswith(b"\n"):
                    break
        yield line


def read_lines(lines: Iterable[bytes], source: str, lineno: int) -> Iterator[Event | BadEvent]:
    """Decode NDJSON, one value per line; blank lines are skipped, bad lines reported."""
    loads = json.loads
    for raw in lines:
        lineno += 1
        if len(raw) > MAX_EVENT_BYTES:
            yield BadEvent(source, lineno, too_big_message())
            continue
        try:
            text = raw.decode()
            value = loads(text)
        except UnicodeDecodeError as exc:
            yield BadEvent(source, lineno, utf8_message(exc.object[exc.start], exc.start + 1))
            continue
        except json.JSONDecodeError as exc:
            if content := text.rstrip(" \t\r\n"):
                # Past the end of the line means the line ended too early; point at its end.
                column = min(exc.pos, len(content)) + 1
                yield BadEvent(source, lineno, syntax_message(exc.msg, column))
            continue
        except RecursionError:
            yield BadEvent(source, lineno, "invalid JSON: nested too deeply")
            continue
        except ValueError:
            yield BadEvent(source, lineno, huge_number_message())
            continue
        if type(value) is dict:
            yield Event(value, source, lineno)
        else:
            yield BadEvent(source, lineno, not_object_message(value))
