"""Read events from files or stdin: one JSON object, a JSON array of objects, or NDJSON, streamed.

The shape is detected from the content. A source whose first line is a complete JSON value is
NDJSON: every non-blank line is decoded on its own, so a bad line never stops the rest. A source
that starts with `[`, or with an object spread over several lines, is a JSON document: arrays are
decoded element by element from a rolling buffer, so memory stays bounded by the largest event;
a syntax error ends that source with one BadEvent at the line of the error.

One event is at most MAX_EVENT_BYTES (16 MiB) of JSON: a bigger one is reported at its line
and skipped without being held in memory (a request body is at most 16 MB anyway), and the
events after it are still read.
"""

from __future__ import annotations

import codecs
import itertools
import json
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

__all__ = ["BadEvent", "Event", "read_events", "read_source"]

_CHUNK = 1 << 16
MAX_EVENT_BYTES = 16 * 1024 * 1024  # the largest event read; documented in the README
_JSON_SPACE = b" \t\r\n"
_WS = re.compile(r"[ \t\n\r]*")
# Bytes that are not valid UTF-8 are decoded with surrogateescape into this range.
_BAD_BYTE = re.compile("[\udc80-\udcff]")
# A decode error this close to the end of the buffer may only mean the value goes on in the
# next chunk (a cut-off `true`, `-Infinity` or `\\u00e9`), so read more before calling it broken.
_TAIL = 16
_DECODER = json.JSONDecoder()
# int() refuses huge integers; decoding them as strings still tells us where the value ends.
_LENIENT = json.JSONDecoder(parse_int=str)
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
    head = stream.readline(_CHUNK).removeprefix(codecs.BOM_UTF8)
    while head and not head.strip(_JSON_SPACE):
        if head.endswith(b"\n"):
            consumed += 1
        head = stream.readline(_CHUNK)
    if not head:
        return
    first = head.lstrip(_JSON_SPACE)[:1]
    if first == b"[":
        yield from _read_document(_Window(stream, head, consumed + 1), source)
        return
    if not head.endswith(b"\n"):
        head += stream.readline(MAX_EVENT_BYTES + 1 - len(head))
    if len(head) > MAX_EVENT_BYTES:
        # One line past the limit: NDJSON with a huge event (or one huge object); skip it.
        yield from _read_lines(itertools.chain([head], _bounded(stream)), source, consumed)
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
            window = _Window(stream, b"".join(lines), consumed + 1)
            yield from _read_document(window, source)
            return
        yield from _read_lines(itertools.chain(lines, _bounded(stream)), source, consumed)
        return
    yield from _read_lines(itertools.chain([head], _bounded(stream)), source, consumed)


def _bounded(stream: BinaryIO) -> Iterator[bytes]:
    """The stream's lines, each at most MAX_EVENT_BYTES + 1 bytes: a longer line comes as its
    first MAX_EVENT_BYTES + 1 bytes (too long: the reader reports it), its rest dropped unread
    into memory."""
    while line := stream.readline(MAX_EVENT_BYTES + 1):
        if len(line) > MAX_EVENT_BYTES and not line.endswith(b"\n"):
            while rest := stream.readline(_CHUNK):
                if rest.endswith(b"\n"):
                    break
        yield line


def _too_big_message() -> str:
    limit = MAX_EVENT_BYTES
    size = f"{limit // (1024 * 1024)} MiB" if limit % (1024 * 1024) == 0 else f"{limit:,} bytes"
    return f"event larger than {size}, the limit for one event; skipped"


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


def _read_lines(lines: Iterable[bytes], source: str, lineno: int) -> Iterator[Event | BadEvent]:
    """Decode NDJSON, one value per line; blank lines are skipped, bad lines reported."""
    loads = json.loads
    for raw in lines:
        lineno += 1
        if len(raw) > MAX_EVENT_BYTES:
            yield BadEvent(source, lineno, _too_big_message())
            continue
        try:
            text = raw.decode()
            value = loads(text)
        except UnicodeDecodeError as exc:
            yield BadEvent(source, lineno, _utf8_message(exc.object[exc.start], exc.start + 1))
            continue
        except json.JSONDecodeError as exc:
            if content := text.rstrip(" \t\r\n"):
                # Past the end of the line means the line ended too early; point at its end.
                column = min(exc.pos, len(content)) + 1
                yield BadEvent(source, lineno, _syntax_message(exc.msg, column))
            continue
        except RecursionError:
            yield BadEvent(source, lineno, "invalid JSON: nested too deeply")
            continue
        except ValueError:
            yield BadEvent(source, lineno, _huge_number_message())
            continue
        if type(value) is dict:
            yield Event(value, source, lineno)
        else:
            yield BadEvent(source, lineno, _not_object_message(value))


def _read_document(window: _Window, source: str) -> Iterator[Event | BadEvent]:
    """Decode a run of top-level JSON values; an array is streamed element by element."""
    try:
        while char := window.peek():
            if char == "[":
                yield from _read_array(window, source)
                continue
            try:
                yield _to_event(*window.decode(), source)
            except _TooBig as exc:
                if not exc.skipped:
                    window.skip_value()
                yield BadEvent(source, exc.line, _too_big_message())
    except _Broken as exc:
        yield BadEvent(source, exc.line, exc.message)


def _read_array(window: _Window, source: str) -> Iterator[Event | BadEvent]:
    """Yield each element of the array that starts at the window's position."""
    opened = window.line
    window.skip(1)
    if window.peek() == "]":
        window.skip(1)
        return
    while True:
        window.peek()
        try:
            yield _to_event(*window.decode(), source)
        except _TooBig as exc:
            if not exc.skipped:
                window.skip_value()  # without holding it: the elements after it are still read
            yield BadEvent(source, exc.line, _too_big_message())
        last = window.line
        char = window.peek()
        if char == ",":
            window.skip(1)
        elif char == "]":
            window.skip(1)
            return
        elif not char:
            raise _Broken(last, f"invalid JSON: the array opened on line {opened} never ends")
        else:
            raise _Broken(window.line, window.syntax_message("Expecting ',' delimiter", window.pos))


def _to_event(value: Any, line: int, problem: str | None, source: str) -> Event | BadEvent:
    """Wrap one decoded value as an Event, or say why it is not one."""
    if problem:
        return BadEvent(source, line, problem)
    if type(value) is dict:
        return Event(value, source, line)
    return BadEvent(source, line, _not_object_message(value))


def _not_object_message(value: Any) -> str:
    return f"expected a JSON object, got {_TYPE_NAMES.get(type(value), 'something else')}"


def _syntax_message(msg: str, column: int) -> str:
    return f"invalid JSON: {msg.removesuffix(' at')} (column {column})"


def _utf8_message(byte: int, column: int) -> str:
    return f"invalid UTF-8: byte 0x{byte:02x} (column {column})"


def _huge_number_message() -> str:
    return f"invalid JSON: an integer has more than {sys.get_int_max_str_digits()} digits"


class _TooBig(Exception):
    """The value starting at `line` is larger than MAX_EVENT_BYTES."""

    def __init__(self, line: int, *, skipped: bool = False) -> None:
        super().__init__(line)
        self.line = line
        self.skipped = skipped  # already read past it (it fitted in the buffer after all)


# Inside a string only a quote or a backslash matters; outside, quotes, nesting and commas.
_IN_STRING = re.compile(r'["\\]')
_OUTSIDE = re.compile(r'["\[\]{},]')


class _Broken(Exception):
    """The document is syntactically broken at `line`; nothing after it can be trusted."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _Window:
    """A rolling text buffer over a binary stream that knows the line number at `pos`."""

    def __init__(self, stream: BinaryIO, prefix: bytes, line: int) -> None:
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self.text = ""
        self.pos = 0
        self.line = line
        self.eof = False
        self._base = 0  # offset in the whole source of text[0]
        self._dropped = 0  # characters of the current line already dropped from text
        self._bad: list[int] = []  # source offsets of bytes that were not valid UTF-8
        self._append(self._decoder.decode(prefix))

    def skip(self, count: int) -> None:
        """Move the read position forward by count characters."""
        end = self.pos + count
        self.line += self.text.count("\n", self.pos, end)
        self.pos = end

    def peek(self) -> str:
        """Skip whitespace and return the next character, or "" at the end of the input."""
        while True:
            match = _WS.match(self.text, self.pos)
            assert match is not None  # the pattern matches the empty string
            self.skip(match.end() - self.pos)
            if self.pos < len(self.text):
                return self.text[self.pos]
            if self.eof:
                return ""
            self._more()

    def decode(self) -> tuple[Any, int, str | None]:
        """Decode the value at pos; return it, its first line, and why it is unusable (or None)."""
        decoder = _DECODER
        while True:
            try:
                value, end = decoder.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as exc:
                cut_short = exc.pos >= len(self.text) - _TAIL or exc.msg.startswith(
                    "Unterminated string"
                )
                if cut_short and not self.eof:
                    if len(self.text) - self.pos > MAX_EVENT_BYTES:
                        raise _TooBig(self.line) from None
                    self._more()
                    continue
                # At the end of the input, blame the last line with content, not the one after.
                at = min(exc.pos, len(self.text.rstrip(" \t\r\n")))
                line = self.line + self.text.count("\n", self.pos, at)
                raise _Broken(line, self.syntax_message(exc.msg, exc.pos)) from None
            except RecursionError:
                raise _Broken(self.line, "invalid JSON: nested too deeply") from None
            except ValueError as exc:
                if decoder is _LENIENT:
                    raise _Broken(self.line, f"invalid JSON: {exc}") from None
                decoder = _LENIENT
                continue
            if end == len(self.text) and not self.eof:
                self._more()  # a number at the very end may go on in the next chunk
                continue
            if end - self.pos > MAX_EVENT_BYTES:
                line = self.line
                self.skip(end - self.pos)
                raise _TooBig(line, skipped=True)
            break
        line = self.line
        problem = _huge_number_message() if decoder is _LENIENT else self._bad_byte(end)
        self.skip(end - self.pos)
        return value, line, problem

    def skip_value(self) -> None:
        """Move past the value at pos without decoding it (it is too big to hold), reading on
        as needed and dropping what was passed; stop before the `,` or `]` that follows it."""
        depth, in_string, at = 0, False, self.pos
        while True:
            pattern = _IN_STRING if in_string else _OUTSIDE
            match = pattern.search(self.text, at)
            if match is None:
                if self.eof:
                    self.skip(len(self.text) - self.pos)
                    return
                self.skip(len(self.text) - self.pos)
                self._more()
                at = self.pos
                continue
            char, at = match[0], match.end()
            if in_string:
                if char == "\\":
                    if at >= len(self.text) and not self.eof:
                        self.skip(at - 1 - self.pos)  # keep the backslash with what it escapes
                        self._more()
                        at = self.pos + 1
                    at += 1
                else:
                    in_string = False
            elif char == '"':
                in_string = True
            elif char in "[{":
                depth += 1
            elif char in "]}" and depth > 0:
                depth -= 1
            elif depth == 0:  # the `,` or `]` after the value
                self.skip(at - 1 - self.pos)
                return
            if depth == 0 and not in_string and char in '"]}':
                self.skip(at - self.pos)
                return

    def syntax_message(self, msg: str, pos: int) -> str:
        """Describe a syntax error at pos, naming bytes that were not UTF-8 as such."""
        newline = self.text.rfind("\n", 0, pos)
        column = pos - newline if newline >= 0 else self._dropped + pos + 1
        if pos >= len(self.text):
            return "invalid JSON: unexpected end of input"
        if _BAD_BYTE.match(self.text, pos):
            return _utf8_message(ord(self.text[pos]) - 0xDC00, column)
        return _syntax_message(msg, column)

    def _bad_byte(self, end: int) -> str | None:
        """Describe the first invalid UTF-8 byte in text[pos:end], if there is one."""
        start, stop = self._base + self.pos, self._base + end
        for offset in self._bad:
            if start <= offset < stop:
                at = offset - self._base
                line = self.line + self.text.count("\n", self.pos, at)
                return f"invalid UTF-8: byte 0x{ord(self.text[at]) - 0xDC00:02x} (line {line})"
        return None

    def _more(self) -> None:
        """Drop what was read and read at least as much again as is still unread."""
        if self.pos:
            newline = self.text.rfind("\n", 0, self.pos)
            self._dropped = self.pos - newline - 1 if newline >= 0 else self._dropped + self.pos
            self._base += self.pos
            self.text = self.text[self.pos :]
            self.pos = 0
            self._bad = [offset for offset in self._bad if offset >= self._base]
        # At least doubling keeps re-decoding a big value linear in its size.
        data = self._stream.read(max(_CHUNK, len(self.text)))
        if not data:
            self.eof = True
        self._append(self._decoder.decode(data, final=self.eof))

    def _append(self, chunk: str) -> None:
        if not chunk.isascii():
            start = self._base + len(self.text)
            self._bad.extend(start + match.start() for match in _BAD_BYTE.finditer(chunk))
        self.text += chunk
