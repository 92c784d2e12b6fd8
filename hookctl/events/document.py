"""Decode a JSON document streamed: top-level values, and arrays element by element.

A source that starts with `[`, or with an object spread over several lines, is a JSON document:
arrays are decoded element by element from a rolling buffer, so memory stays bounded by the
largest event; a syntax error ends that source with one BadEvent at the line of the error. A
value past MAX_EVENT_BYTES is skipped without being held, and the elements after it are read.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

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

_WS = re.compile(r"[ \t\n\r]*")
# Bytes that are not valid UTF-8 are decoded with surrogateescape into this range.
_BAD_BYTE = re.compile("[\udc80-\udcff]")
# A decode error this close to the end of the buffer may only mean the value goes on in the
# next chunk (a cut-off `true`, `-Infinity` or `\\u00e9`), so read more before calling it broken.
_TAIL = 16
_DECODER = json.JSONDecoder()
# int() refuses huge integers; decoding them as strings still tells us where the value ends.
_LENIENT = json.JSONDecoder(parse_int=str)


def read_document(window: Window, source: str) -> Iterator[Event | BadEvent]:
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
                yield BadEvent(source, exc.line, too_big_message())
    except _Broken as exc:
        yield BadEvent(source, exc.line, exc.message)


def _read_array(window: Window, source: str) -> Iterator[Event | BadEvent]:
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
            yield BadEvent(source, exc.line, too_big_message())
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
    return BadEvent(source, line, not_object_message(value))


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


class Window:
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
        problem = huge_number_message() if decoder is _LENIENT else self._bad_byte(end)
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
            return utf8_message(ord(self.text[pos]) - 0xDC00, column)
        return syntax_message(msg, column)

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
        data = self._stream.read(max(READ_CHUNK, len(self.text)))
        if not data:
            self.eof = True
        self._append(self._decoder.decode(data, final=self.eof))

    def _append(self, chunk: str) -> None:
        if not chunk.isascii():
            start = self._base + len(self.text)
            self._bad.extend(start + match.start() for match in _BAD_BYTE.finditer(chunk))
        self.text += chunk
