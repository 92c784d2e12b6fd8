"""`hookctl explain` and hookctl.ruletest.explain: the on: check, the condition trace, the request, curl."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from hookctl.events.event import Event
from hookctl.render.request import resolve
from hookctl.render.webhook import render_request
from hookctl.rules.conditions import ABSENT
from hookctl.rules.load import load_rules
from hookctl.ruletest.explain import explain_rule, to_curl, trace_dict, trace_lines
from tests.conftest import ndjson

EVENT = {
    "event": "ticket.created",
    "id": "evt_1",
    "ticket": {"id": 4711, "urgency": "Urgent", "tags": ["vip"], "subject": "Printer on fire"},
}
NESTED = """
name: nested
on: [ticket.*]
when:
  all:
    - {field: ticket.urgency, op: in, value: [High, Urgent]}
    - any:
        - {field: ticket.status, op: eq, value: open}
        - {field: ticket.tags, op: contains, value: vip}
    - none:
        - {field: ticket.tags, op: contains, value: spam}
webhook:
  url: "https://hooks.example.com/{{ ticket.id }}?token={{ env.HOOK_TOKEN }}"
  body: {text: "{{ ticket.subject }}"}
"""


def one_rule(rule_file, text: str):  # type: ignore[no-untyped-def]
    (rule,) = load_rules([rule_file(text)])
    return rule


def test_trace_records_every_condition_with_the_value_it_saw(rule_file):
    rule = one_rule(rule_file, NESTED)
    found = explain_rule(rule, Event(EVENT, "e.json", 1), {"HOOK_TOKEN": "t0ps3cret"})

    assert found.matched and found.on_passed and found.when_passed
    top = found.trace
    assert top is not None and top.node.kind == "all" and top.passed
    urgency, any_group, none_group = top.children
    assert (urgency.node.field, urgency.actual, urgency.passed) == (
        "ticket.urgency",
        "Urgent",
        True,
    )
    status, tags = any_group.children
    assert status.actual is ABSENT and not status.passed
    assert tags.actual == ["vip"] and tags.passed and any_group.passed
    assert none_group.passed and not none_group.children[0].passed
    assert found.request is not None
    assert found.request.masked().url == "https://hooks.example.com/4711?token=${HOOK_TOKEN}"


def test_trace_as_text_and_json(rule_file):
    rule = one_rule(rule_file, NESTED)
    found = explain_rule(rule, Event({**EVENT, "ticket": {"id": 1}}, "e.json", 1), {})

    assert not found.matched
    assert trace_lines(found.trace) == [
        "FAIL  all:",
        '  FAIL  ticket.urgency in ["High", "Urgent"] (actual absent)',
        "  FAIL  any:",
        '    FAIL  ticket.status eq "open" (actual absent)',
        '    FAIL  ticket.tags contains "vip" (actual absent)',
        "  pass  none:",
        '    FAIL  ticket.tags contains "spam" (actual absent)',
    ]
    data = trace_dict(found.trace)
    assert data["group"] == "all" and data["passed"] is False
    assert data["items"][0] == {
        "field": "ticket.urgency",
        "op": "in",
        "expected": ["High", "Urgent"],
        "actual": None,
        "absent": True,
        "passed": False,
    }


def test_on_reason_and_disabled_rules(rule_file):
    rule = one_rule(rule_file, NESTED.replace("name: nested", "name: nested\nenabled: false"))
    found = explain_rule(rule, Event({**EVENT, "event": "chat.started"}, "e.json", 1), {})
    assert not found.on_passed and not found.matched
    assert found.on_reason() == "on: 'chat.started' does not match [ticket.*]"

    found = explain_rule(rule, Event(EVENT, "e.json", 1), {"HOOK_TOKEN": "x"})
    assert found.on_passed and found.when_passed and not found.matched  # disabled
    assert found.request is None

    nameless = explain_rule(rule, Event({"ticket": {}}, "e.json", 1), {})
    assert "no `event` field" in nameless.on_reason()


# --- to_curl: the command must run and send exactly what hookctl would send -------------------


def curl_roundtrip(httpserver: HTTPServer, request, environ: dict[str, str]) -> Request:  # type: ignore[no-untyped-def]
    """Run to_curl's command in bash with the secrets exported; return what the server got."""
    seen: list[Request] = []

    def handler(incoming: Request) -> Response:
        incoming.get_data()
        seen.append(incoming)
        return Response("ok")

    httpserver.expect_request("/hook").respond_with_handler(handler)
    env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent-home", **environ}
    done = subprocess.run(
        ["bash", "-c", to_curl(request) + " --silent --show-error --noproxy '*'"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    (got,) = seen
    return got


HOSTILE = "It's \"$HOME\" & `id` ${HOME} $(id)\nline two 🔥 \\ '"


def test_curl_command_sends_the_same_request(httpserver: HTTPServer, rule_file):
    webhook = load_webhook(
        rule_file,
        f"""
        url: "{httpserver.url_for("/hook")}?key={{{{ env.API_KEY }}}}"
        headers: {{X-Subject: "{{{{ ticket.id }}}} {{{{ env.API_KEY }}}}"}}
        auth: {{type: bearer, token: "{{{{ env.API_KEY }}}}"}}
        body: {{text: "{{{{ ticket.subject }}}}", key: "{{{{ env.API_KEY }}}}"}}
        """,
    )
    environ = {"API_KEY": "k3y-v4lue"}
    request = render_request(webhook, {"ticket": {"id": 7, "subject": HOSTILE}}, environ=environ)
    command = to_curl(request)
    assert "k3y-v4lue" not in command and '"${API_KEY}"' in command

    got = curl_roundtrip(httpserver, request, environ)
    wire = resolve(request, environ)
    assert got.method == "POST"
    assert got.args["key"] == "k3y-v4lue"
    assert got.headers["X-Subject"] == "7 k3y-v4lue"
    assert got.headers["Authorization"] == "Bearer k3y-v4lue"
    assert got.get_data() == wire.content
    assert json.loads(got.get_data())["text"] == HOSTILE  # ticket text stays literal


def test_curl_with_basic_auth_and_a_body_starting_with_at(httpserver: HTTPServer, rule_file):
    webhook = load_webhook(
        rule_file,
        f"""
        url: "{httpserver.url_for("/hook")}"
        auth: {{type: basic, username: "{{{{ env.U }}}}", password: "{{{{ env.P }}}}"}}
        body: "@{{{{ ticket.subject }}}}"
        """,
    )
    environ = {"U": "ana", "P": "pa:ss word"}
    request = render_request(webhook, {"ticket": {"subject": "/etc/passwd"}}, environ=environ)
    got = curl_roundtrip(httpserver, request, environ)
    assert got.authorization is not None
    assert (got.authorization.username, got.authorization.password) == ("ana", "pa:ss word")
    assert got.get_data() == b"@/etc/passwd"  # sent as text, not read from a file


def load_webhook(rule_file, text: str):  # type: ignore[no-untyped-def]
    """A validated rule's webhook, from the YAML lines under `webhook:`."""
    body = textwrap.indent(textwrap.dedent(text).strip(), "  ")
    return one_rule(rule_file, f"name: w\nwebhook:\n{body}\n").webhook


# --- the command -----------------------------------------------------------------------------


def test_explain_prints_each_rule_for_each_event(cli, rule_file, event_file, db_file):
    rules = rule_file(NESTED)
    rule_file("name: quiet\non: [ticket.updated]\nwebhook: {url: 'https://a.example/x'}\n")
    events = event_file(
        json.dumps(EVENT) + "\n" + json.dumps({**EVENT, "id": "evt_2", "ticket": {"id": 2}}) + "\n"
    )
    result = cli("explain", "-r", rules.parent, events, env={"HOOK_TOKEN": "t0ps3cret"})

    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert out.count("event ticket.created") == 2
    assert "matched   nested" in out and "no match  nested" in out
    assert (
        "no match  quiet" in out and "on: 'ticket.created' does not match [ticket.updated]" in out
    )
    assert '      pass  ticket.tags contains "vip" (actual ["vip"])' in out
    assert "POST https://hooks.example.com/4711?token=${HOOK_TOKEN}" in out
    assert '{"text":"Printer on fire"}' in out
    assert "t0ps3cret" not in out
    assert not db_file.exists()  # explaining sends and stores nothing


def test_explain_json_and_curl(cli, rule_file, event_file):
    rules = rule_file(NESTED)
    result = cli(
        "explain", "-r", rules, event_file(EVENT), "--json", "--curl", env={"HOOK_TOKEN": "x"}
    )
    assert result.exit_code == 0, result.stderr
    (record,) = ndjson(result.stdout)
    assert record["rule"] == "nested" and record["matched"] is True
    assert record["on_passed"] and record["when_passed"]
    assert record["event_id"] == "evt_1" and record["event_source"].endswith(":1")
    assert record["conditions"]["items"][1]["group"] == "any"
    assert record["request"]["url"] == "https://hooks.example.com/4711?token=${HOOK_TOKEN}"
    assert record["curl"].startswith(
        "curl -X POST 'https://hooks.example.com/4711?token='\"${HOOK_TOKEN}\""
    )
    assert record["error"] is None


def test_an_unset_variable_renders_as_its_name_and_is_listed_as_needed(cli, rule_file, event_file):
    """Issue 12: explain used to exit 1 on the README's own example when a variable was unset."""
    rules = rule_file(NESTED)
    rule_file("name: plain\nwebhook: {url: 'https://a.example/x'}\n")
    result = cli("explain", "-r", rules.parent, event_file(EVENT), "--json")

    assert result.exit_code == 0, result.stdout
    by_rule = {r["rule"]: r for r in ndjson(result.stdout)}
    nested = by_rule["nested"]
    assert nested["matched"] and nested["error"] is None
    assert nested["request"]["url"] == "https://hooks.example.com/4711?token=${HOOK_TOKEN}"
    assert nested["needs_env"] == [{"name": "HOOK_TOKEN", "set": False}]
    assert by_rule["plain"]["request"]["url"] == "https://a.example/x"
    assert by_rule["plain"]["needs_env"] == []

    text = cli("explain", "-r", rules.parent, event_file(EVENT))
    assert text.exit_code == 0
    assert "a real send needs: HOOK_TOKEN (not set); a delivery waits, held, until then" in (
        text.stdout
    )
    with_it = cli("explain", "-r", rules, event_file(EVENT), env={"HOOK_TOKEN": "t0k3n"})
    assert "a real send needs: HOOK_TOKEN\n" in with_it.stdout and "t0k3n" not in with_it.stdout


def test_rule_option_and_its_typos(cli, rule_file, event_file):
    rules = rule_file(NESTED)
    result = cli("explain", "-r", rules, "--rule", "nestd", event_file(EVENT))
    assert result.exit_code == 2
    assert "no rule named 'nestd'" in result.stderr and "did you mean 'nested'" in result.stderr


def test_unreadable_events_are_reported_and_the_rest_explained(cli, rule_file, event_file):
    rules = rule_file("name: plain\nwebhook: {url: 'https://a.example/x'}\n")
    events = event_file('{"event": "a", "id": 1}\nnot json\n{"event": "b", "id": 2}\n')
    result = cli("explain", "-r", rules, events, "--json")
    assert result.exit_code == 1
    assert [r["event"] for r in ndjson(result.stdout)] == ["a", "b"]
    assert ":2:" in result.stderr


@pytest.mark.parametrize("args", [["--json"], []])
def test_explain_reads_stdin(cli, rule_file, args):
    rules = rule_file("name: plain\nwebhook: {url: 'https://a.example/x'}\n")
    result = cli("explain", "-r", rules, "-", *args, input=json.dumps(EVENT))
    assert result.exit_code == 0
    assert "plain" in result.stdout


def test_curl_of_a_signed_request_says_it_is_unsigned(cli, rule_file, event_file):
    path = rule_file(
        "name: signed\nwebhook:\n  url: https://a.example/h\n  sign: {secret: '{{ env.WEBHOOK_SECRET }}'}\n"
    )
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    result = cli(
        "explain", "--json", "--curl", "-r", path, event_file(EVENT), env={"WEBHOOK_SECRET": secret}
    )
    (record,) = ndjson(result.stdout)
    assert record["curl"].startswith("# hookctl signs this request when it sends it")
    assert secret not in result.stdout
