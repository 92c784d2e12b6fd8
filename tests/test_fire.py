"""`hookctl fire` end to end: real rules, real events, a real HTTP server, a real database."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from tests.conftest import attempts, deliveries, ndjson

EVENT = {
    "event": "ticket.created",
    "id": "evt_1",
    "ticket": {
        "id": 4711,
        "subject": "Printer on fire",
        "urgency": "Urgent",
        "tags": ["hardware", "vip"],
        "actions": [{"author": {"type": "end_user", "name": "Ana"}, "body": "help"}],
    },
}
HOSTILE = 'He said "hi" & <b>bye</b>\n{{7*7}} {% raw %} ü 🎉 \' ; = ? # %20 +'


def simple_rule(url: str, **extra: str) -> str:
    lines = [
        "name: r1",
        "on: [ticket.created]",
        "webhook:",
        f"  method: {extra.get('method', 'POST')}",
        f"  url: {url!r}",
        f"  format: {extra.get('format', 'json')}",
    ]
    if "body" in extra:
        lines.append("  body:")
        lines += ["    " + line for line in extra["body"].strip().splitlines()]
    if "webhook_extra" in extra:
        lines += ["  " + line for line in extra["webhook_extra"].strip().splitlines()]
    if "rule_extra" in extra:
        lines += extra["rule_extra"].strip().splitlines()
    return "\n".join(lines) + "\n"


def test_json_body_is_rendered_sent_and_recorded(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file
):
    httpserver.expect_request("/hook", method="POST").respond_with_json({"ok": True})
    rules = rule_file(
        simple_rule(
            httpserver.url_for("/hook"),
            body='chat_id: "123"\nticket: "{{ ticket.id }}"\ntext: "New: {{ ticket.subject }}"',
        )
    )
    result = cli("fire", "-r", rules, event_file(EVENT), "--json")
    assert result.exit_code == 0, result.stderr
    ((request, _),) = httpserver.log
    assert request.get_json() == {"chat_id": "123", "ticket": 4711, "text": "New: Printer on fire"}
    assert request.headers["Content-Type"] == "application/json"
    (report,) = ndjson(result.stdout)
    assert (
        report["status"] == "succeeded" and report["status_code"] == 200 and report["rule"] == "r1"
    )
    assert report["ticket"] == "4711" and report["event_id"] == "evt_1"
    (row,) = deliveries(db_file)
    assert row["status"] == "succeeded" and row["attempts"] == 1 and row["id"] == report["id"]
    assert len(attempts(db_file)) == 1
    assert "1 event, 1 delivery: 1 succeeded" in result.stderr


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_every_method(cli, rule_file, event_file, httpserver: HTTPServer, method):
    httpserver.expect_request("/hook", method=method).respond_with_data("ok")
    result = cli(
        "fire",
        "-r",
        rule_file(simple_rule(httpserver.url_for("/hook"), method=method)),
        event_file(EVENT),
    )
    assert result.exit_code == 0, result.stderr
    ((request, response),) = httpserver.log
    assert request.method == method and response.status_code == 200
    if method in ("POST", "PUT", "PATCH"):
        assert request.get_json() == EVENT  # no body: the event itself, as JSON (Movidesk's way)
    else:
        assert request.data == b""


def test_xml_body_escapes_hostile_text(cli, rule_file, event_file, httpserver: HTTPServer):
    httpserver.expect_request("/hook").respond_with_data("ok")
    event = {**EVENT, "ticket": {**EVENT["ticket"], "subject": HOSTILE + "\x01"}}
    rules = rule_file(
        simple_rule(
            httpserver.url_for("/hook"),
            format="xml",
            body='subject: "{{ ticket.subject }}"\ntags: "{{ ticket.tags }}"\nid: "{{ ticket.id }}"',
            webhook_extra="xml_root: case",
        )
    )
    assert cli("fire", "-r", rules, event_file(event)).exit_code == 0
    ((request, _),) = httpserver.log
    assert request.headers["Content-Type"] == "application/xml"
    root = ET.fromstring(request.data)
    assert root.tag == "case"
    assert (
        root.findtext("subject") == HOSTILE + "\ufffd"
    )  # XML cannot carry \x01: replaced, not broken
    assert [e.text for e in root.find("tags")] == ["hardware", "vip"]
    assert root.findtext("id") == "4711"


def test_form_body_escapes_hostile_text(cli, rule_file, event_file, httpserver: HTTPServer):
    httpserver.expect_request("/hook").respond_with_data("ok")
    event = {**EVENT, "ticket": {**EVENT["ticket"], "subject": HOSTILE}}
    rules = rule_file(
        simple_rule(
            httpserver.url_for("/hook"),
            format="form",
            body='subject: "{{ ticket.subject }}"\nto: "ana@example.com"\ntags: "{{ ticket.tags }}"',
        )
    )
    assert cli("fire", "-r", rules, event_file(event)).exit_code == 0
    ((request, _),) = httpserver.log
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    fields = parse_qs(request.get_data(as_text=True), keep_blank_values=True)
    assert fields == {"subject": [HOSTILE], "to": ["ana@example.com"], "tags": ["hardware", "vip"]}


def test_json_body_with_hostile_text_is_sent_literally(
    cli, rule_file, event_file, httpserver: HTTPServer
):
    httpserver.expect_request("/hook").respond_with_data("ok")
    event = {**EVENT, "ticket": {**EVENT["ticket"], "subject": HOSTILE}}
    rules = rule_file(
        simple_rule(httpserver.url_for("/hook"), body='text: "Subject: {{ ticket.subject }}"')
    )
    assert cli("fire", "-r", rules, event_file(event)).exit_code == 0
    ((request, _),) = httpserver.log
    assert request.get_json() == {
        "text": "Subject: " + HOSTILE
    }  # {{7*7}} stays text: data, never template


def test_string_body_template_with_filters(cli, rule_file, event_file, httpserver: HTTPServer):
    httpserver.expect_request("/hook").respond_with_data("ok")
    event = {**EVENT, "ticket": {**EVENT["ticket"], "subject": HOSTILE}}
    rules = rule_file(
        simple_rule(
            httpserver.url_for("/hook"),
            webhook_extra='body: \'{"s": {{ ticket.subject | tojson }}, "n": {{ ticket.id }}}\'',
        )
    )
    assert cli("fire", "-r", rules, event_file(event)).exit_code == 0
    ((request, _),) = httpserver.log
    assert json.loads(request.data) == {"s": HOSTILE, "n": 4711}


def test_basic_auth_and_headers_from_env(
    cli, rule_file, event_file, httpserver: HTTPServer, monkeypatch
):
    monkeypatch.setenv("DESK_USER", "desk")
    monkeypatch.setenv("DESK_PASSWORD", "s3cr3t:pa ss")
    httpserver.expect_request("/hook").respond_with_data("ok")
    rules = rule_file(
        simple_rule(
            httpserver.url_for("/hook"),
            webhook_extra=(
                'auth: {type: basic, username: "{{ env.DESK_USER }}", password: "{{ env.DESK_PASSWORD }}"}\n'
                'headers: {X-Source: hookctl, X-Ticket: "{{ ticket.id }}"}'
            ),
        )
    )
    result = cli("fire", "-r", rules, event_file(EVENT), "--json")
    assert result.exit_code == 0, result.stderr
    ((request, _),) = httpserver.log
    assert request.authorization.username == "desk"
    assert request.authorization.password == "s3cr3t:pa ss"
    assert request.headers["X-Source"] == "hookctl" and request.headers["X-Ticket"] == "4711"
    assert "s3cr3t" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("auth", "check"),
    [
        (
            "{type: api_key, header: X-API-Key, value: '{{ env.KEY }}'}",
            lambda r: r.headers["X-API-Key"] == "k-1/2&3",
        ),
        (
            "{type: api_key, query: api_key, value: '{{ env.KEY }}'}",
            lambda r: r.args["api_key"] == "k-1/2&3",
        ),
        (
            "{type: bearer, token: '{{ env.KEY }}'}",
            lambda r: r.headers["Authorization"] == "Bearer k-1/2&3",
        ),
    ],
)
def test_api_key_and_bearer_auth(
    cli, rule_file, event_file, httpserver: HTTPServer, monkeypatch, auth, check
):
    monkeypatch.setenv("KEY", "k-1/2&3")
    httpserver.expect_request("/hook").respond_with_data("ok")
    rules = rule_file(simple_rule(httpserver.url_for("/hook"), webhook_extra=f"auth: {auth}"))
    result = cli("fire", "-r", rules, event_file(EVENT), "--json")
    assert result.exit_code == 0, result.stderr
    ((request, _),) = httpserver.log
    assert check(request)
    assert "k-1/2&3" not in result.stdout  # the log line shows ${KEY}, never the key


def test_secret_in_url_path_is_sent_but_never_recorded(
    cli, rule_file, event_file, httpserver: HTTPServer, monkeypatch, db_file
):
    monkeypatch.setenv("BOT_TOKEN", "123456:ABC-canary")
    httpserver.expect_request("/bot123456:ABC-canary/sendMessage").respond_with_data("ok")
    rules = rule_file(simple_rule(httpserver.url_for("/") + "bot{{ env.BOT_TOKEN }}/sendMessage"))
    result = cli("fire", "-r", rules, event_file(EVENT), "--json")
    assert result.exit_code == 0, result.stderr
    assert ndjson(result.stdout)[0]["url"].endswith("/bot${BOT_TOKEN}/sendMessage")
    assert b"ABC-canary" not in db_file.read_bytes()
    assert "ABC-canary" not in cli("log", "--json").stdout


def test_missing_env_var_holds_the_delivery_until_it_is_set(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file
):
    """Issue 12: an unset variable used to fail the delivery for good, with the raw template
    stored as its request; it is the user's to fix, so the delivery waits (held) instead."""
    httpserver.expect_request("/hook/s3cr3t").respond_with_data("ok")
    rules = rule_file(simple_rule(httpserver.url_for("/hook/") + "{{ env.NOT_SET_ANYWHERE }}"))
    result = cli("fire", "-r", rules, event_file(EVENT), "--json")
    assert result.exit_code == 1  # held: the user has something to fix
    (report,) = ndjson(result.stdout)
    assert (report["status"], report["held"], report["sent"]) == ("pending", True, False)
    assert report["error"] == "held: environment variable NOT_SET_ANYWHERE is not set"
    assert report["attempts"] == 0 and httpserver.log == []
    assert "1 held (nothing sent)" in result.stderr
    (row,) = deliveries(db_file)
    assert (row["status"], row["attempts"], row["unrendered"]) == ("pending", 0, 0)
    assert attempts(db_file) == []  # nothing was sent: no attempt on record

    human = cli("retry-loop", env={})
    assert human.stdout.startswith("held ") and "nothing sent" in human.stdout
    sent = cli("retry-loop", "--json", env={"NOT_SET_ANYWHERE": "s3cr3t"})
    assert sent.exit_code == 0, sent.stderr
    assert [r["status"] for r in ndjson(sent.stdout)] == ["succeeded"]
    assert [r.path for r, _ in httpserver.log] == ["/hook/s3cr3t"]
    (row,) = deliveries(db_file)
    assert (row["status"], row["attempts"]) == ("succeeded", 1)


def test_redirect_is_success_and_not_followed(cli, rule_file, event_file, httpserver: HTTPServer):
    httpserver.expect_request("/hook").respond_with_response(
        Response(status=302, headers={"Location": "/elsewhere"})
    )
    httpserver.expect_request("/elsewhere").respond_with_data("should not be reached")
    result = cli(
        "fire",
        "-r",
        rule_file(simple_rule(httpserver.url_for("/hook"))),
        event_file(EVENT),
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    assert [r.path for r, _ in httpserver.log] == ["/hook"]
    assert ndjson(result.stdout)[0]["status_code"] == 302


def test_accept_2xx_only_makes_a_redirect_a_failure(
    cli, rule_file, event_file, httpserver: HTTPServer
):
    httpserver.expect_request("/hook").respond_with_response(
        Response(status=302, headers={"Location": "/x"})
    )
    rules = rule_file(
        simple_rule(
            httpserver.url_for("/hook"), webhook_extra="accept: 2xx", rule_extra="retry: none"
        )
    )
    result = cli("fire", "-r", rules, event_file(EVENT), "--json")
    assert result.exit_code == 1
    assert ndjson(result.stdout)[0]["status"] == "failed"


def test_server_error_is_queued_for_retry(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file
):
    httpserver.expect_request("/hook").respond_with_data("boom", status=500)
    result = cli(
        "fire",
        "-r",
        rule_file(simple_rule(httpserver.url_for("/hook"))),
        event_file(EVENT),
        "--json",
    )
    assert result.exit_code == 0  # queued for retry is not a failure yet
    (report,) = ndjson(result.stdout)
    assert (
        report["status"] == "pending"
        and report["error"] == "HTTP 500"
        and report["next_attempt_at"]
    )
    (row,) = deliveries(db_file)
    assert row["status"] == "pending" and row["next_attempt_at"] - row[
        "updated_at"
    ] == pytest.approx(1800, abs=5)
    assert attempts(db_file)[0]["response_body"] == "boom"


def test_server_error_without_retries_fails(cli, rule_file, event_file, httpserver: HTTPServer):
    httpserver.expect_request("/hook").respond_with_data("boom", status=500)
    rules = rule_file(simple_rule(httpserver.url_for("/hook"), rule_extra="retry: none"))
    result = cli("fire", "-r", rules, event_file(EVENT))
    assert result.exit_code == 1
    assert result.stdout.startswith("failed") and "HTTP 500" in result.stdout


def test_refused_connection(cli, rule_file, event_file, free_port):
    rules = rule_file(simple_rule(f"http://127.0.0.1:{free_port}/hook", rule_extra="retry: none"))
    result = cli("fire", "-r", rules, event_file(EVENT), "--json")
    assert result.exit_code == 1
    assert ndjson(result.stdout)[0]["error"] == "connection refused"


def test_hanging_receiver_ends_at_the_deadline(cli, rule_file, event_file, hanging_server, db_file):
    rules = rule_file(simple_rule(hanging_server, rule_extra="timeout: 500ms\nretry: none"))
    result = cli("fire", "-r", rules, event_file(EVENT), "--json")
    assert result.exit_code == 1
    assert ndjson(result.stdout)[0]["error"] == "timed out after 500ms"
    (attempt,) = attempts(db_file)
    assert attempt["status_code"] is None and attempt["error"] == "timed out after 500ms"


def test_invalid_json_lines_are_reported_and_the_rest_is_sent(
    cli, rule_file, event_file, httpserver: HTTPServer
):
    httpserver.expect_request("/hook").respond_with_data("ok")
    good = [json.dumps({**EVENT, "id": f"e{i}"}) for i in range(3)]
    path = event_file(
        "\n".join([good[0], "{not json", good[1], "[1, 2]", good[2]]) + "\n", name="mixed.ndjson"
    )
    result = cli("fire", "-r", rule_file(simple_rule(httpserver.url_for("/hook"))), path, "--json")
    assert result.exit_code == 1
    assert len(httpserver.log) == 3
    assert f"{path}:2:" in result.stderr and f"{path}:4:" in result.stderr
    assert [r["status"] for r in ndjson(result.stdout)] == ["succeeded"] * 3


@pytest.mark.parametrize("shape", ["object", "array", "ndjson"])
def test_stdin_in_every_shape(cli, rule_file, httpserver: HTTPServer, shape):
    httpserver.expect_request("/hook").respond_with_data("ok")
    events = [{**EVENT, "id": f"e{i}"} for i in range(2 if shape != "object" else 1)]
    text = {
        "object": json.dumps(events[0], indent=2),
        "array": json.dumps(events, indent=2),
        "ndjson": "\n".join(json.dumps(e) for e in events),
    }[shape]
    result = cli("fire", "-r", rule_file(simple_rule(httpserver.url_for("/hook"))), input=text)
    assert result.exit_code == 0, result.stderr
    assert sorted(r.get_json()["id"] for r, _ in httpserver.log) == [e["id"] for e in events]


def test_dry_run_prints_the_request_and_sends_nothing(
    cli, rule_file, event_file, httpserver: HTTPServer, monkeypatch, db_file
):
    monkeypatch.setenv("KEY", "canary-key-42")
    rules = rule_file(
        simple_rule(
            httpserver.url_for("/hook"),
            body='text: "{{ ticket.subject }}"',
            webhook_extra="auth: {type: api_key, header: X-Key, value: '{{ env.KEY }}'}",
        )
    )
    result = cli("fire", "--dry-run", "-r", rules, event_file(EVENT))
    assert result.exit_code == 0, result.stderr
    assert f"POST {httpserver.url_for('/hook')}" in result.stdout
    assert "X-Key: ${KEY}" in result.stdout and '{"text":"Printer on fire"}' in result.stdout
    assert "canary-key-42" not in result.stdout + result.stderr
    assert httpserver.log == [] and not db_file.exists()


def test_rule_conditions_pick_the_events(cli, rule_file, event_file, httpserver: HTTPServer):
    httpserver.expect_request("/hook").respond_with_data("ok")
    rules = rule_file(
        simple_rule(
            httpserver.url_for("/hook"),
            rule_extra=(
                "when:\n  all:\n    - {field: ticket.urgency, op: in, value: [High, Urgent]}\n"
                "    - {field: 'ticket.actions[-1].author.type', op: eq, value: end_user}\n"
                "    - none:\n        - {field: ticket.missing, op: exists}"
            ),
        )
    )
    low = {**EVENT, "id": "low", "ticket": {**EVENT["ticket"], "urgency": "Low"}}
    other_event = {**EVENT, "id": "upd", "event": "ticket.updated"}
    result = cli("fire", "-r", rules, event_file([EVENT, low, other_event]), "--json")
    assert result.exit_code == 0
    assert [r.get_json()["id"] for r, _ in httpserver.log] == ["evt_1"]
    assert "3 events, 1 delivery" in result.stderr


def test_invalid_rules_send_nothing_and_exit_3(cli, rule_file, event_file, httpserver: HTTPServer):
    good = rule_file(simple_rule(httpserver.url_for("/hook")), name="good.yaml")
    bad = rule_file(
        "name: bad\nwebhook:\n  method: POST\n  url: http://x/\n  format: jsn\n", name="bad.yaml"
    )
    result = cli("fire", "-r", good.parent, event_file(EVENT))
    assert result.exit_code == 3
    assert (
        f"{bad}:5: rule 'bad': webhook.format: expected json, xml or form, got 'jsn'"
        in result.stderr
    )
    assert httpserver.log == []


def test_duplicate_events_are_not_sent_twice_unless_forced(
    cli, rule_file, event_file, httpserver: HTTPServer
):
    httpserver.expect_request("/hook").respond_with_data("ok")
    rules = rule_file(simple_rule(httpserver.url_for("/hook")))
    events = event_file(EVENT)
    assert cli("fire", "-r", rules, events).exit_code == 0
    again = cli("fire", "-r", rules, events, "--json")
    assert again.exit_code == 0
    assert ndjson(again.stdout)[0]["status"] == "duplicate"
    assert len(httpserver.log) == 1
    forced = cli("fire", "-r", rules, events, "--force", "--json")
    assert ndjson(forced.stdout)[0]["status"] == "succeeded"
    assert len(httpserver.log) == 2


def test_no_rules_is_a_usage_error(cli, event_file):
    result = cli("fire", event_file(EVENT))
    assert result.exit_code == 2
    assert "no rules" in result.stderr


def test_movidesk_bare_payload(cli, rule_file, event_file, httpserver: HTTPServer, db_file):
    httpserver.expect_request("/relay").respond_with_data("ok")
    payload = {
        "Id": 98231,
        "Subject": "Nota",
        "Urgency": "Alta",
        "Actions": [{"CreatedBy": {"PersonType": 2}}],
    }
    rules = rule_file(
        "name: relay\nwhen:\n  - {field: Urgency, op: eq, value: Alta}\n"
        "  - {field: 'Actions[-1].CreatedBy.PersonType', op: eq, value: 2}\n"
        f"webhook: {{method: POST, url: '{httpserver.url_for('/relay')}'}}\n"
    )
    result = cli("fire", "-r", rules, event_file(payload), "--json")
    assert result.exit_code == 0, result.stderr
    assert httpserver.log[0][0].get_json() == payload
    assert deliveries(db_file)[0]["ticket"] == "98231"


def test_root_quiet_and_verbose(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file, monkeypatch
):
    httpserver.expect_request("/hook").respond_with_data("ok")
    rules = rule_file(simple_rule(httpserver.url_for("/hook")))
    quiet = cli("-q", "fire", "-r", rules, event_file(EVENT))
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert quiet.stdout == ""  # nothing on success, so cron mails nothing
    monkeypatch.delenv("HOOKCTL_QUIET")  # the root -q set it for this (test) process
    verbose = cli("-v", "fire", "--force", "-r", rules, event_file(EVENT))
    delivery_id = deliveries(db_file)[-1]["id"]
    assert f"[{delivery_id}  event " in verbose.stdout


def test_verbose_shows_a_traceback_with_an_error(cli, rule_file, event_file):
    bad = rule_file("name: bad\nwebhook: {url: 'http://x/', format: jsn}\n")
    result = cli("-v", "fire", "-r", bad, event_file(EVENT))
    assert result.exit_code == 3
    assert "Traceback" in result.stderr and "webhook.format" in result.stderr
