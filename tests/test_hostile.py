"""Hostile input: any ticket text survives every body format; broken events and rules are reported, never crash."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest_httpserver import HTTPServer

from hookctl.errors import RenderError
from hookctl.render.request import resolve
from hookctl.render.webhook import WebhookTemplate, render_request
from tests.conftest import ndjson

XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Every code point, lone surrogates included: JSON events can carry them as \ud800 escapes.
ANY_TEXT = st.text(st.characters(codec=None, categories=None))


def wire_body(fmt: str, body: object, text: str) -> bytes:
    """Render through the real path (template, encoder, secrets resolved) to the bytes sent."""
    webhook = WebhookTemplate(
        method="POST", url="https://example.com/h", format=fmt, body=body, xml_root="ticket"
    )
    request = render_request(webhook, {"ticket": {"subject": text}}, environ={})
    content = resolve(request, {}).content
    assert content is not None
    return content


def form_value(content: bytes, key: str) -> str:
    return parse_qs(content.decode(), keep_blank_values=True, strict_parsing=False)[key][0]


def carried(text: str) -> str:
    """What a format that is UTF-8 on the wire carries of the text: lone surrogates cannot be."""
    return re.sub("[\ud800-\udfff]", "\ufffd", text)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_TEXT)
def test_json_bodies_carry_any_text_exactly(text: str) -> None:
    assert json.loads(wire_body("json", {"s": "{{ ticket.subject }}"}, text)) == {"s": text}
    assert json.loads(wire_body("json", {"s": "<{{ ticket.subject }}>"}, text)) == {
        "s": f"<{text}>"
    }
    assert json.loads(wire_body("json", '{"s": {{ ticket.subject | tojson }}}', text)) == {
        "s": text
    }


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_TEXT)
def test_xml_bodies_carry_any_text_with_only_impossible_characters_replaced(text: str) -> None:
    expected = XML_INVALID.sub("\ufffd", text)
    for body, wrap in (
        ({"s": "{{ ticket.subject }}"}, "{}"),
        ({"s": "[{{ ticket.subject }}]"}, "[{}]"),
    ):
        root = ET.fromstring(wire_body("xml", body, text))
        assert root.tag == "ticket" and (root.findtext("s") or "") == wrap.format(expected)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_TEXT)
def test_form_bodies_carry_any_text(text: str) -> None:
    assert form_value(wire_body("form", {"s": "{{ ticket.subject }}"}, text), "s") == carried(text)
    assert (
        form_value(wire_body("form", {"s": "a&b={{ ticket.subject }}"}, text), "s")
        == f"a&b={carried(text)}"
    )


@pytest.mark.parametrize(
    "where",
    [
        {"headers": (("X-Subject", "{{ ticket.subject }}"),)},
        {"auth": {"type": "bearer", "token": "{{ ticket.subject }}"}},
        {"auth": {"type": "basic", "username": "{{ ticket.subject }}", "password": "x"}},
        {"auth": {"type": "api_key", "header": "X-Key", "value": "{{ ticket.subject }}"}},
        {"url": "https://example.com/{{ ticket.subject }}"},
    ],
)
@pytest.mark.parametrize("bad", ["a\r\nX-Injected: 1", "a\nb", "a\rb", "a\x00b", "a\x7fb"])
def test_line_breaks_from_event_data_cannot_reach_headers_or_the_url(where: dict, bad: str) -> None:
    fields = {"method": "POST", "url": "https://example.com/h", **where}
    with pytest.raises(RenderError, match=r"control character|whitespace or control"):
        render_request(WebhookTemplate(**fields), {"ticket": {"subject": bad}}, environ={})


def test_a_header_injection_attempt_fails_the_delivery_without_sending(
    cli, rule_file, event_file, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    rule = f"name: h\nwebhook:\n  url: {httpserver.url_for('/hook')!r}\n  headers: {{X-Subject: '{{{{ ticket.subject }}}}'}}\n"
    events = [
        {"id": "bad", "ticket": {"subject": "hi\r\nX-Admin: true"}},
        {"id": "good", "ticket": {"subject": "hi ü"}},
    ]
    result = cli("fire", "--json", "-r", rule_file(rule), event_file(events))
    assert result.exit_code == 1
    bad, good = ndjson(result.stdout)
    assert (
        bad["status"] == "failed"
        and "webhook.headers.X-Subject: value contains a line break" in bad["error"]
    )
    assert good["status"] == "succeeded"
    ((request, _),) = httpserver.log
    assert (
        "X-Admin" not in request.headers
        and request.headers["X-Subject"].encode("latin-1").decode() == "hi ü"
    )


def write_fuzz_events(path: Path) -> None:
    good = b'{"event": "t", "id": "good-%d", "ticket": {"id": %d, "subject": "ok"}}\n'
    lines = [
        good % (1, 1),
        b'{"id": "deep", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
        b'{"id": "huge-int", "n": ' + b"9" * 5000 + b"}\n",
        b'{"id": "huge-float", "n": 1e999999, "m": -1e999999}\n',
        b'{"id": "bad-utf8", "s": "\xff\xfe\xc0\xaf"}\n',
        b'{"id": "nul", "s": "a\x00b"}\n',
        b'{"id": "escaped-nul", "ticket": {"subject": "a\\u0000b"}}\n',
        b'{"id": "surrogate", "ticket": {"subject": "\\ud800 alone"}}\n',
        b'{"id": "big", "ticket": {"subject": "' + b"x" * (10 * 1024 * 1024) + b'"}}\n',
        b"[1, 2, 3]\n",
        b"\x00\x01\x02 binary junk\n",
        b'{"id": "unterminated", "s": "\n',
        good % (2, 2),
    ]
    path.write_bytes(b"".join(lines))


def test_malformed_events_are_reported_and_good_ones_still_delivered(
    cli, rule_file, tmp_path: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    events = tmp_path / "fuzz.ndjson"
    write_fuzz_events(events)
    rule = f"name: all\nwebhook:\n  url: {httpserver.url_for('/hook')!r}\n"
    result = cli("fire", "--json", "-r", rule_file(rule), events)
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    reports = {r.get("event_id"): r for r in ndjson(result.stdout)}
    assert reports["good-1"]["status"] == "succeeded" and reports["good-2"]["status"] == "succeeded"
    assert (
        reports["big"]["status"] == "failed"
        and "larger than webhook.max_body (1,048,576 bytes)" in reports["big"]["error"]
    )
    assert reports["surrogate"]["status"] == "succeeded"
    assert (
        reports["huge-float"]["status"] == "failed"
        and "too large for JSON" in reports["huge-float"]["error"]
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) >= 5 and all(re.search(r"fuzz\.ndjson:\d+: ", line) for line in errors)
    sent = {json.loads(r.get_data()).get("id") for r, _ in httpserver.log}
    assert {"good-1", "good-2", "surrogate"} <= sent and "big" not in sent
    received = next(
        json.loads(r.get_data())
        for r, _ in httpserver.log
        if json.loads(r.get_data())["id"] == "surrogate"
    )
    assert received["ticket"]["subject"] == "\ud800 alone"  # JSON carries it, escaped


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"name: [unclosed\n", "invalid YAML"),
        (b"name: x\n\twebhook: {}\n", "invalid YAML"),
        (b"\xff\xfe\x00garbage", "cannot read"),
        (b"- " * 50_000 + b"x\n", "invalid YAML"),
        (b"name: x\nwebhook: " + b"[" * 50_000 + b"]" * 50_000 + b"\n", "invalid YAML"),
        (
            b"a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
            b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
            b"e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
            b"name: bomb\nwebhook: {url: 'https://e.com/', body: {x: *f}}\n",
            "YAML aliases are expanded",
        ),
        (b"&a [*a]\n", "refers to the value that contains it"),
        (b"name: x\nwebhook: 5\n", "webhook: expected a mapping"),
        (
            b"name: x\nwebhook: {url: 'https://e.com/', headers: [1, 2]}\n",
            "webhook.headers: expected a mapping",
        ),
        (
            b"name: x\nwebhook: {url: 'https://e.com/', body: 5}\n",
            "webhook.body: expected a mapping",
        ),
        (b"name: x\nwebhook: {url: 'https://e.com/{{ ticket.id'}\n", "template error"),
        (b"name: x\nwebhook: {url: 'https://e.com/'}\ntimeout: soon\n", "timeout"),
        (b"name: x\nwebhook: {url: 'https://e.com/'}\nwhen: 42\n", "when"),
        (b"42\n", "is not a mapping"),
        (b"", "the file is empty"),
    ],
)
def test_malformed_rules_get_clear_errors(cli, tmp_path: Path, text: bytes, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(text)
    result = cli("validate", "-r", path)
    assert result.exit_code == 3
    assert result.stderr.startswith("Error") and message in result.stderr
    assert "Traceback" not in result.stderr
