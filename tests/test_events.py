"""Tests for reading events (hookctl.events read, ndjson, document): shapes, lines, bad input, streaming."""

from __future__ import annotations

import inspect
import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookctl.events.event import BadEvent, Event
from hookctl.events.read import read_events, read_source
from tests.conftest import ndjson


def read(data: bytes, source: str = "t.json") -> list[Event | BadEvent]:
    return list(read_source(io.BytesIO(data), source))


def summary(items: list[Event | BadEvent]) -> list[tuple[int, object]]:
    """(line, data) for events and (line, message) for bad ones, in order."""
    return [(i.line, i.data if isinstance(i, Event) else i.message) for i in items]


class Trickle(io.RawIOBase):
    """A raw stream that hands out at most `size` bytes per read, like a slow pipe."""

    def __init__(self, data: bytes, size: int) -> None:
        self._data = data
        self._pos = 0
        self._size = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        chunk = self._data[self._pos : self._pos + min(self._size, len(buffer))]
        buffer[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


class Tripwire(io.RawIOBase):
    """A raw stream of generated lines that fails the test if read past `limit` bytes."""

    def __init__(self, line: bytes, count: int, limit: int, head: bytes = b"") -> None:
        self._data = head + line * count
        self._pos = 0
        self._limit = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._pos >= self._limit:
            raise AssertionError(f"read past byte {self._limit}: the source was not streamed")
        chunk = self._data[self._pos : self._pos + len(buffer)]
        buffer[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


# The three shapes, from files and from stdin.


def test_single_object_from_file(tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_text('{"event": "ticket.created", "id": 7}')
    (item,) = read_events([str(path)], io.BytesIO())
    assert item == Event({"event": "ticket.created", "id": 7}, str(path), 1)


def test_pretty_printed_object_from_file(tmp_path: Path) -> None:
    path = tmp_path / "pretty.json"
    path.write_text('\n\n{\n  "event": "ticket.updated",\n  "ticket": {\n    "id": 1\n  }\n}\n')
    (item,) = read_events([str(path)], io.BytesIO())
    assert isinstance(item, Event)
    assert item.data == {"event": "ticket.updated", "ticket": {"id": 1}}
    assert item.line == 3


def test_array_from_file(tmp_path: Path) -> None:
    path = tmp_path / "many.json"
    path.write_text(json.dumps([{"n": 1}, {"n": 2}, {"n": 3}]))
    items = list(read_events([str(path)], io.BytesIO()))
    assert summary(items) == [(1, {"n": 1}), (1, {"n": 2}), (1, {"n": 3})]
    assert {i.source for i in items} == {str(path)}


def test_ndjson_from_file_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    path.write_text('{"n": 1}\n\n   \n{"n": 2}\n{"n": 3}\n\n')
    assert summary(list(read_events([str(path)], io.BytesIO()))) == [
        (1, {"n": 1}),
        (4, {"n": 2}),
        (5, {"n": 3}),
    ]


@pytest.mark.parametrize(
    "data",
    [
        b'{"n": 1}',
        b'{\n  "n": 1\n}\n',
        b'[{"n": 1}]',
        b'{"n": 1}\n',
    ],
)
def test_stdin_in_each_shape(data: bytes) -> None:
    (item,) = read_events(["-"], io.BytesIO(data))
    assert isinstance(item, Event)
    assert (item.data, item.source) == ({"n": 1}, "<stdin>")


def test_files_and_stdin_are_read_in_order(tmp_path: Path) -> None:
    first, last = tmp_path / "a.ndjson", tmp_path / "b.json"
    first.write_text('{"n": 1}\n')
    last.write_text('[{"n": 3}]')
    items = list(read_events([str(first), "-", str(last)], io.BytesIO(b'{"n": 2}\n')))
    assert [(i.source, i.data) for i in items if isinstance(i, Event)] == [
        (str(first), {"n": 1}),
        ("<stdin>", {"n": 2}),
        (str(last), {"n": 3}),
    ]


def test_pretty_printed_array_line_numbers() -> None:
    text = "\n".join(
        [
            "[",  # 1
            "  {",  # 2
            '    "n": 1,',  # 3
            '    "tags": [',  # 4
            '      "a"',  # 5
            "    ]",  # 6
            "  },",  # 7
            '  {"n": 2},',  # 8
            "",  # 9
            "  {",  # 10
            '    "n": 3',  # 11
            "  }",  # 12
            "]",  # 13
        ]
    )
    assert [i.line for i in read(text.encode())] == [2, 8, 10]


def test_json_dumps_indent_array_line_numbers() -> None:
    objects = [{"n": i, "nested": {"list": list(range(i))}} for i in range(5)]
    text = json.dumps(objects, indent=2)
    lines = text.splitlines()
    expected = [n for n, line in enumerate(lines, 1) if line == "  {"]
    assert [i.line for i in read(text.encode())] == expected


def test_concatenated_pretty_objects_like_jq_output() -> None:
    data = b'{\n  "n": 1\n}\n{\n  "n": 2\n}\n'
    assert summary(read(data)) == [(1, {"n": 1}), (4, {"n": 2})]


def test_windows_line_endings() -> None:
    assert summary(read(b'{"n": 1}\r\n\r\n{"n": 2}\r\n')) == [(1, {"n": 1}), (3, {"n": 2})]
    assert summary(read(b'[\r\n  {"n": 1},\r\n  {"n": 2}\r\n]\r\n')) == [
        (2, {"n": 1}),
        (3, {"n": 2}),
    ]


def test_empty_array_and_empty_sources_yield_nothing() -> None:
    assert read(b"[]") == []
    assert read(b"[\n]\n") == []
    assert read(b"") == []
    assert read(b"\n \n\t\n") == []


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_bytes(b"")
    assert list(read_events([str(path)], io.BytesIO())) == []


# Bad input: reported with source and line, and reading goes on where it can.


def test_invalid_json_lines_among_good_ones() -> None:
    data = b'{"n": 1}\n{"n": 2,}\n{"n": 3}\nnot json\n{"n": 4\n{"n": 5}\n'
    items = read(data, "events.ndjson")
    assert summary(items) == [
        (1, {"n": 1}),
        (2, "invalid JSON: Expecting property name enclosed in double quotes (column 9)"),
        (3, {"n": 3}),
        (4, "invalid JSON: Expecting value (column 1)"),
        (5, "invalid JSON: Expecting ',' delimiter (column 8)"),
        (6, {"n": 5}),
    ]
    assert str(items[1]).startswith("events.ndjson:2: invalid JSON: ")


def test_ndjson_whose_first_line_is_cut_short_still_reads_the_rest() -> None:
    data = b'{"n": 1, "tex\n{"n": 2}\n{"n": 3}\n'
    items = read(data)
    assert isinstance(items[0], BadEvent)
    assert items[0].line == 1
    assert summary(items[1:]) == [(2, {"n": 2}), (3, {"n": 3})]


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b"[1, 2]", "array"),
        (b'"text"', "string"),
        (b"42", "number"),
        (b"4.5", "number"),
        (b"null", "null"),
        (b"true", "boolean"),
    ],
)
def test_non_object_lines(line: bytes, kind: str) -> None:
    items = read(b'{"n": 1}\n' + line + b'\n{"n": 2}\n')
    assert summary(items) == [
        (1, {"n": 1}),
        (2, f"expected a JSON object, got {kind}"),
        (3, {"n": 2}),
    ]


def test_non_object_elements_in_an_array_are_skipped() -> None:
    data = b'[\n  {"n": 1},\n  [1],\n  "x",\n  null,\n  {"n": 2}\n]'
    assert summary(read(data)) == [
        (2, {"n": 1}),
        (3, "expected a JSON object, got array"),
        (4, "expected a JSON object, got string"),
        (5, "expected a JSON object, got null"),
        (6, {"n": 2}),
    ]


def test_first_line_that_is_not_an_object_is_ndjson() -> None:
    data = b'"hello"\n{"n": 1}\n'
    assert summary(read(data)) == [(1, "expected a JSON object, got string"), (2, {"n": 1})]


@pytest.mark.parametrize(
    ("data", "line", "message"),
    [
        (b'[\n  {"n": 1},\n  {"n": 2}\n', 3, "invalid JSON: the array opened on line 1 never ends"),
        (b'[\n  {"n": 1},\n  {"n": 2},\n]', 4, "invalid JSON: Expecting value (column 1)"),
        (b'[\n  {"n": 1}\n  {"n": 2}\n]', 3, "invalid JSON: Expecting ',' delimiter (column 3)"),
        (b'[\n  {"n": 1},\n  {"n": 2', 3, "invalid JSON: unexpected end of input"),
        (b'[\n  {"n": 1},\n  {"n": tru}\n]', 3, "invalid JSON: Expecting value (column 9)"),
    ],
)
def test_broken_array_stops_after_one_bad_event(data: bytes, line: int, message: str) -> None:
    items = read(data)
    assert summary(items)[0] == (2, {"n": 1})
    assert summary(items)[-1] == (line, message)
    assert isinstance(items[-1], BadEvent)
    assert all(isinstance(i, Event) for i in items[:-1])


def test_broken_pretty_object_is_one_bad_event_at_the_error() -> None:
    data = b'{\n  "event": "x",\n  "ticket": {\n    "id": 1\n    "status": "New"\n  }\n}\n'
    assert summary(read(data)) == [(5, "invalid JSON: Expecting ',' delimiter (column 5)")]


def test_truncated_pretty_object_is_one_bad_event_at_its_last_line() -> None:
    data = b'{\n  "event": "x",\n  "ticket": {\n\n'
    assert summary(read(data)) == [(3, "invalid JSON: unexpected end of input")]


def test_invalid_utf8_line_is_reported_and_skipped() -> None:
    data = b'{"n": 1}\n{"name": "caf\xe9"}\n{"n": 2}\n'
    assert summary(read(data)) == [
        (1, {"n": 1}),
        (2, "invalid UTF-8: byte 0xe9 (column 14)"),
        (3, {"n": 2}),
    ]


def test_invalid_utf8_inside_an_array_element_skips_that_element() -> None:
    data = b'[\n  {"n": 1},\n  {\n    "name": "caf\xe9"\n  },\n  {"n": 2}\n]'
    assert summary(read(data)) == [
        (2, {"n": 1}),
        (3, "invalid UTF-8: byte 0xe9 (line 4)"),
        (6, {"n": 2}),
    ]


def test_invalid_utf8_outside_a_string_breaks_the_document() -> None:
    data = b'[\n  {"n": 1},\n  \xff{"n": 2}\n]'
    assert summary(read(data)) == [(2, {"n": 1}), (3, "invalid UTF-8: byte 0xff (column 3)")]


def test_valid_multibyte_utf8_and_escapes() -> None:
    data = '{"name": "café ☕ \\u00e9 \\ud83d\\ude00"}\n'.encode()
    (item,) = read(data)
    assert isinstance(item, Event)
    assert item.data["name"] == "café ☕ é 😀"


@pytest.mark.parametrize(
    ("data", "first_line"),
    [
        (b'{"n": 1}\n{"n": 2}\n', 1),
        (b'[{"n": 1}, {"n": 2}]', 1),
        (b'[\n  {"n": 1},\n  {"n": 2}\n]', 2),
    ],
)
def test_utf8_bom_is_accepted(data: bytes, first_line: int) -> None:
    items = read(b"\xef\xbb\xbf" + data)
    assert [i.data for i in items if isinstance(i, Event)] == [{"n": 1}, {"n": 2}]
    assert items[0].line == first_line


def test_utf8_bom_before_pretty_object() -> None:
    assert summary(read(b'\xef\xbb\xbf{\n  "n": 1\n}')) == [(1, {"n": 1})]


def test_nul_bytes_in_ndjson() -> None:
    data = b'{"n": "a\x00b"}\n\x00\x00\x00\x00\n{"n": 1}\x00\n{"n": 2}\n'
    items = read(data)
    assert [i.line for i in items if isinstance(i, BadEvent)] == [1, 2, 3]
    assert summary(items)[-1] == (4, {"n": 2})
    assert "Invalid control character (column 9)" in str(items[0])


def test_escaped_nul_is_valid_json() -> None:
    (item,) = read(b'{"n": "a\\u0000b"}')
    assert isinstance(item, Event)
    assert item.data == {"n": "a\x00b"}


def test_nul_bytes_in_an_array_break_it() -> None:
    items = read(b'[{"n": 1},\n{"n": "\x00"}, {"n": 2}]')
    assert summary(items) == [
        (1, {"n": 1}),
        (2, "invalid JSON: Invalid control character (column 8)"),
    ]


def test_deep_nesting_in_ndjson_is_a_bad_line() -> None:
    data = b'{"n": 1}\n' + b"[" * 100_000 + b'\n{"a": ' + b"[" * 100_000 + b'\n{"n": 2}\n'
    assert summary(read(data)) == [
        (1, {"n": 1}),
        (2, "invalid JSON: nested too deeply"),
        (3, "invalid JSON: nested too deeply"),
        (4, {"n": 2}),
    ]


def test_deep_nesting_as_a_whole_source() -> None:
    assert summary(read(b"[" * 100_000)) == [(1, "invalid JSON: nested too deeply")]
    assert summary(read(b'{\n"a": ' + b"[" * 100_000)) == [(1, "invalid JSON: nested too deeply")]


def test_deep_nesting_in_an_array_element() -> None:
    data = b'[\n  {"n": 1},\n  ' + b"[" * 100_000 + b"\n]"
    assert summary(read(data)) == [(2, {"n": 1}), (3, "invalid JSON: nested too deeply")]


def test_huge_integers_are_bad_events() -> None:
    digits = b"9" * 5000
    data = b'{"n": ' + digits + b'}\n{"n": 1}\n[\n  {"n": ' + digits + b'},\n  {"n": 2}\n]'
    items = read(data)
    assert summary(items)[1] == (2, {"n": 1})
    assert isinstance(items[0], BadEvent)
    assert "integer has more than" in items[0].message
    array_items = read(b'[\n  {"n": ' + digits + b'},\n  {"n": 2}\n]')
    assert isinstance(array_items[0], BadEvent)
    assert array_items[0].line == 2
    assert summary(array_items[1:]) == [(3, {"n": 2})]


def test_huge_floats_are_fine() -> None:
    (item,) = read(b'{"n": 1e999, "m": 1.' + b"5" * 5000 + b"}")
    assert isinstance(item, Event)
    assert item.data["n"] == float("inf")


# Files that cannot be read.


def test_missing_file_among_good_files(tmp_path: Path) -> None:
    good = tmp_path / "good.ndjson"
    good.write_text('{"n": 1}\n')
    missing = str(tmp_path / "missing.json")
    items = list(read_events([str(good), missing, str(good)], io.BytesIO()))
    assert [type(i) for i in items] == [Event, BadEvent, Event]
    assert items[1] == BadEvent(missing, 0, "cannot open: No such file or directory")
    assert str(items[1]) == f"{missing}: cannot open: No such file or directory"


def test_directory_is_reported_not_raised(tmp_path: Path) -> None:
    (item,) = read_events([str(tmp_path)], io.BytesIO())
    assert isinstance(item, BadEvent)
    assert item.line == 0
    assert item.message.startswith("cannot open")


def test_read_error_half_way_is_a_bad_event() -> None:
    class Failing(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            raise OSError(5, "Input/output error")

    (item,) = read_events(["-"], Failing())  # type: ignore[arg-type]
    assert item == BadEvent("<stdin>", 0, "cannot read: Input/output error")


# Event and BadEvent.


def test_event_name_and_id() -> None:
    assert Event({"event": "ticket.created", "id": "e1"}, "-", 1).name == "ticket.created"
    assert Event({"event": 5}, "-", 1).name is None
    assert Event({}, "-", 1).name is None
    assert Event({"id": "e1"}, "-", 1).event_id == "e1"
    assert Event({"id": 42}, "-", 1).event_id == "42"
    assert Event({"Id": 1234, "Subject": "x"}, "-", 1).event_id == "1234"
    assert Event({"id": "e1", "Id": 9}, "-", 1).event_id == "e1"
    assert Event({"id": True}, "-", 1).event_id is None
    assert Event({"id": 1.5}, "-", 1).event_id is None
    assert Event({"id": {"x": 1}}, "-", 1).event_id is None
    assert Event({"id": ""}, "-", 1).event_id is None
    assert Event({}, "-", 1).event_id is None


def test_bad_event_str() -> None:
    bad = BadEvent("events.ndjson", 3, "invalid JSON: Expecting ',' delimiter (column 17)")
    assert str(bad) == "events.ndjson:3: invalid JSON: Expecting ',' delimiter (column 17)"


def test_events_are_immutable() -> None:
    event = Event({"n": 1}, "-", 1)
    with pytest.raises(AttributeError):
        event.line = 2  # type: ignore[misc]


# Streaming: nothing is read whole, whatever the shape or the chunk boundaries.


def test_read_source_is_lazy() -> None:
    assert inspect.isgenerator(read_source(io.BytesIO(b'{"n": 1}'), "-"))
    assert inspect.isgenerator(read_events(["/does/not/exist"], io.BytesIO()))


def test_large_ndjson_is_streamed() -> None:
    line = json.dumps({"event": "ticket.updated", "ticket": {"subject": "x" * 200}}).encode()
    raw = Tripwire(line + b"\n", count=100_000, limit=1 << 20)  # ~25 MB, limit 1 MB
    events = read_source(io.BufferedReader(raw), "big.ndjson")
    first = next(events)
    assert isinstance(first, Event)
    assert first.line == 1
    for _ in range(1000):
        last = next(events)
    assert last.line == 1001


@pytest.mark.parametrize("indent", [None, 2])
def test_large_array_is_streamed(indent: int | None) -> None:
    element = json.dumps({"event": "ticket.updated", "body": "y" * 500}, indent=indent).encode()
    raw = Tripwire(element + b",\n", count=50_000, limit=1 << 20, head=b"[\n")
    events = read_source(io.BufferedReader(raw), "big.json")
    assert [next(events).line for _ in range(3)] == ([2, 3, 4] if indent is None else [2, 6, 10])


def test_whole_large_ndjson_file(tmp_path: Path) -> None:
    path = tmp_path / "big.ndjson"
    with path.open("w") as out:
        for n in range(50_000):
            out.write(json.dumps({"n": n}) + ("\n\n" if n % 1000 == 0 else "\n"))
    items = list(read_events([str(path)], io.BytesIO()))
    assert len(items) == 50_000
    assert all(isinstance(i, Event) for i in items)
    assert summary(items[-1:]) == [(50_000 + 50, {"n": 49_999})]


def test_elements_larger_than_a_chunk() -> None:
    big = [{"n": i, "body": "é" * 70_000 * i} for i in range(4)]
    items = read(json.dumps(big, ensure_ascii=False).encode())
    assert [i.data for i in items if isinstance(i, Event)] == big


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(st.characters(codec="utf-8")),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
OBJECTS = st.lists(st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=4), max_size=6)


@settings(max_examples=200, deadline=None)
@given(
    objects=OBJECTS,
    shape=st.sampled_from(["ndjson", "array", "pretty-array"]),
    ascii_only=st.booleans(),
    read_size=st.integers(1, 9),
)
def test_any_chunking_gives_the_same_events(
    objects: list[dict[str, object]], shape: str, ascii_only: bool, read_size: int
) -> None:
    def dump(value: object, indent: int | None = None) -> str:
        return json.dumps(value, ensure_ascii=ascii_only, indent=indent)

    if shape == "ndjson":
        text = "".join(dump(o) + "\n" for o in objects)
        lines = list(range(1, len(objects) + 1))
    elif shape == "array":
        text = dump(objects)
        lines = [1] * len(objects)
    else:
        text = dump(objects, indent=2)
        lines = [n for n, line in enumerate(text.split("\n"), 1) if line.startswith("  {")]
    items = list(read_source(Trickle(text.encode(), read_size), "-"))  # type: ignore[arg-type]
    assert [(i.line, i.data) for i in items if isinstance(i, Event)] == list(
        zip(lines, objects, strict=True)
    )
    assert not [i for i in items if isinstance(i, BadEvent)]


# --- one event's size is bounded ---------------------------------------------------------------


def test_an_event_past_the_size_limit_is_reported_at_its_line_and_the_rest_still_read(
    cli, rule_file, event_file, httpserver, tmp_path
):
    from hookctl.events.event import MAX_EVENT_BYTES

    httpserver.expect_request("/hook").respond_with_data("ok")
    rules = rule_file(f"name: r\nwebhook: {{url: {httpserver.url_for('/hook')!r}}}\nretry: none\n")
    huge = json.dumps({"id": "huge", "pad": "x" * (MAX_EVENT_BYTES + 10)})
    lines = tmp_path / "events.ndjson"
    lines.write_text(json.dumps({"id": "a"}) + "\n" + huge + "\n" + json.dumps({"id": "b"}) + "\n")
    array = tmp_path / "events.json"
    array.write_text(
        "[\n" + json.dumps({"id": "c"}) + ",\n" + huge + ",\n" + json.dumps({"id": "d"}) + "\n]\n"
    )
    result = cli("fire", "-r", rules, lines, array, "--json")
    assert result.exit_code == 1
    assert [r["event_id"] for r in ndjson(result.stdout)] == ["a", "b", "c", "d"]
    limit = "event larger than 16 MiB, the limit for one event; skipped"
    assert f"Error: {lines}:2: {limit}\n" in result.stderr
    assert f"Error: {array}:3: {limit}\n" in result.stderr
    assert len(httpserver.log) == 4
