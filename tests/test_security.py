"""Secrets never leak: canaries in the environment, every command at debug verbosity, every byte kept.

Also: literal secrets in rule files are rule errors, and the HTTP client's own logging is kept quiet.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from hookctl.render.signing import generate_secret
from tests.conftest import deliveries, ndjson

# Every canary holds the marker, so a leak of any part of any of them is found by one search;
# they also hold characters that need URL, form and JSON encoding.
MARKER = "CANARY"
CANARIES = {
    "TG_TOKEN": "987654:CANARYtg-AAH_x~z",
    "DESK_USER": "desk-CANARYuser",
    "DESK_PASSWORD": "CANARY pass:wörd&=/",
    "API_KEY": "CANARYapikey-7f3e9c",
    "BEARER": "CANARYbearer.eyJ0eXAiOiJKV1Qi",
    "QUERY_KEY": "CANARY/query+key=1&x",
}
EVENTS = [
    {
        "event": "ticket.created",
        "id": f"evt_{i}",
        "ticket": {"id": 4711 + i, "subject": "Printer on fire"},
    }
    for i in range(2)
]


def echo(request: Request) -> Response:
    """A receiver that fails and echoes everything it got, as some error pages do."""
    sent = {
        "raw_uri": request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI"),
        "url": request.url,
        "args": request.args.to_dict(),
        "headers": dict(request.headers),
        "body": request.get_data(as_text=True),
    }
    text = json.dumps(sent, ensure_ascii=False)
    return Response(text, status=500, headers={"X-Echo": request.headers.get("Authorization", "-")})


def rules_text(base: str, refused: str) -> str:
    retry = "retry: {every: 10ms, retries: 3}\n  breaker: off"  # NO_BREAKER: refused on purpose
    return f"""
- name: telegram
  webhook:
    url: "{base}/bot{{{{ env.TG_TOKEN }}}}/sendMessage"
    body: {{chat_id: 42, text: "{{{{ ticket.subject }}}}"}}
  {retry}
- name: desk-basic
  webhook:
    url: "{refused}/api/tickets"
    auth: {{type: basic, username: "{{{{ env.DESK_USER }}}}", password: "{{{{ env.DESK_PASSWORD }}}}"}}
  {retry}
- name: crm-key
  webhook:
    url: "{base}/crm"
    format: xml
    auth: {{type: api_key, header: X-API-Key, value: "{{{{ env.API_KEY }}}}"}}
    body: {{key_again: "{{{{ env.API_KEY }}}}", subject: "{{{{ ticket.subject }}}}"}}
  {retry}
- name: sms-bearer
  webhook:
    url: "{base}/sms"
    format: form
    auth: {{type: bearer, token: "{{{{ env.BEARER }}}}"}}
    sign: {{secret: "{{{{ env.WEBHOOK_SECRET }}}}"}}
  {retry}
- name: query-key
  webhook:
    method: GET
    url: "{base}/q"
    auth: {{type: api_key, query: api_key, value: "{{{{ env.QUERY_KEY }}}}"}}
  {retry}
- name: missing-variable
  webhook:
    url: "{base}/m?token={{{{ env.NOT_SET_ANYWHERE }}}}"
"""


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    """Python logging configured at DEBUG for everything, as an embedding application might."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    # The test receiver (werkzeug) logs what it received; that is the other side, not hookctl.
    handler.addFilter(lambda record: not record.name.startswith("werkzeug"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def forms(secret: str) -> set[str]:
    """The ways a secret may appear without the marker in it."""
    key = secret.removeprefix("whsec_")
    basic = f"{CANARIES['DESK_USER']}:{CANARIES['DESK_PASSWORD']}".encode()
    return {MARKER, secret, key, base64.b64encode(basic).decode()}


def test_canaries_never_reach_output_logs_or_the_database(
    cli,
    rule_file,
    event_file,
    httpserver: HTTPServer,
    free_port,
    db_file: Path,
    monkeypatch,
    debug_log,
) -> None:
    secret = generate_secret()
    for name, value in {**CANARIES, "WEBHOOK_SECRET": secret}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HOOKCTL_DEBUG", "1")
    httpserver.expect_request("/hook").respond_with_data("ok")
    for path in ("/crm", "/sms", "/q"):
        httpserver.expect_request(path).respond_with_handler(echo)
    httpserver.expect_request(f"/bot{CANARIES['TG_TOKEN']}/sendMessage").respond_with_handler(echo)
    base = httpserver.url_for("").rstrip("/")
    rules = rule_file(rules_text(base, f"http://127.0.0.1:{free_port}"))
    events = event_file(EVENTS)
    outputs: list[str] = []

    def run(*args: str) -> None:
        result = cli(*args)  # an unexpected exception would propagate and fail the test
        outputs.extend([result.stdout, result.stderr])

    run("fire", "--dry-run", "-r", rules, events)
    run("fire", "--dry-run", "--json", "-r", rules, events)
    run("fire", "-r", rules, events)
    assert (
        sum(1 for _ in httpserver.log) == 8
    )  # 4 reachable rules x 2 events, all failing with echoes
    time.sleep(0.05)
    run("retry-loop", "--json")
    monkeypatch.delenv("API_KEY")  # the next attempt cannot be made: an error naming the variable
    time.sleep(0.05)
    run("retry-loop")
    run("log")
    run("log", "--json")
    for row in deliveries(db_file):
        run("log", row["id"])
        run("log", row["id"], "--json")
    run(
        "validate",
        "-r",
        rule_file(
            "name: lit\nwebhook:\n  url: https://e.com/\n  auth: {type: bearer, token: CANARYliteral}\n"
        ),
    )

    text = "\n".join(outputs)
    assert "environment variable NOT_SET_ANYWHERE is not set" in text
    assert "environment variable API_KEY is not set" in text
    assert "${TG_TOKEN}" in text and "${DESK_PASSWORD}" in text and "${QUERY_KEY}" in text
    assert "connection refused" in text and "HTTP 500" in text
    kept = b"".join(p.read_bytes() for p in db_file.parent.glob(db_file.name + "*"))
    for form in forms(secret):
        assert form not in text, form
        assert form not in debug_log.getvalue(), form
        assert form.encode() not in kept, form
        assert json.dumps(form)[1:-1].encode() not in kept, form
    # The echoes were received and kept, with the secrets scrubbed out of them.
    assert b"***" in kept


def test_http_client_request_logging_is_silenced(
    caplog: pytest.LogCaptureFixture,
    cli,
    rule_file,
    event_file,
    httpserver: HTTPServer,
    monkeypatch,
) -> None:
    monkeypatch.setenv("TG_TOKEN", CANARIES["TG_TOKEN"])
    caplog.set_level(logging.DEBUG)
    httpserver.expect_request(f"/bot{CANARIES['TG_TOKEN']}/send").respond_with_data("ok")
    url = httpserver.url_for("").rstrip("/") + "/bot{{ env.TG_TOKEN }}/send"
    assert (
        cli(
            "fire", "-r", rule_file(f"name: t\nwebhook: {{url: '{url}'}}\n"), event_file(EVENTS[0])
        ).exit_code
        == 0
    )
    assert len(httpserver.log) == 1
    ours = [
        r for r in caplog.records if not r.name.startswith("werkzeug")
    ]  # werkzeug: the receiver
    assert not [r for r in ours if MARKER in r.getMessage()]
    assert not [r for r in ours if r.name.startswith(("aiohttp", "httpx", "httpcore"))]


@pytest.mark.parametrize(
    ("webhook", "field"),
    [
        ("auth: {type: basic, username: u, password: hunter2}", "webhook.auth.password"),
        ("auth: {type: bearer, token: abc123}", "webhook.auth.token"),
        ("auth: {type: api_key, header: X-Key, value: abc123}", "webhook.auth.value"),
        ("headers: {Authorization: Bearer abc123}", "webhook.headers.Authorization"),
        ("headers: {X-Api-Key: abc123}", "webhook.headers.X-Api-Key"),
        ("headers: {X-Auth-Token: abc123}", "webhook.headers.X-Auth-Token"),
        ("body: {user: {password: hunter2}}", "webhook.body.user.password"),
        ("body: {client_secret: s3cr3t}", "webhook.body.client_secret"),
        ("body: {note: 'key whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'}", "webhook.body.note"),
        ("headers: {X-Sig: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'}", "webhook.headers.X-Sig"),
    ],
)
def test_literal_secrets_in_rules_are_errors(cli, rule_file, webhook: str, field: str) -> None:
    rule = f"name: lit\nwebhook:\n  url: https://e.com/hook\n  {webhook}\n"
    result = cli("validate", "-r", rule_file(rule))
    assert result.exit_code == 3
    assert f"rule 'lit': {field}: looks like a secret written in the rule" in result.stderr
    for value in ("hunter2", "abc123", "s3cr3t", "MfKQ9r8G"):
        assert value not in result.stderr
    allowed = rule_file(rule + "allow_literal_secrets: true\n")
    assert cli("validate", "-r", allowed).exit_code == 0


def test_a_password_in_a_literal_url_is_an_error(cli, rule_file) -> None:
    result = cli(
        "validate", "-r", rule_file("name: u\nwebhook: {url: 'https://bot:tok3n@e.com/h'}\n")
    )
    assert result.exit_code == 3 and "webhook.url: looks like a secret" in result.stderr
    ok = rule_file("name: u\nwebhook: {url: 'https://bot:{{ env.TOKEN }}@e.com/h'}\n")
    assert cli("validate", "-r", ok).exit_code == 0


@pytest.mark.parametrize(
    "webhook",
    [
        "headers: {X-Source: hookctl, Accept: application/json}",
        "body: {token_type: bearer, password_hint: '', token: '{{ ticket.token }}'}",
        "auth: {type: basic, username: desk, password: '{{ env.DESK_PASSWORD }}'}",
    ],
)
def test_ordinary_values_are_not_mistaken_for_secrets(cli, rule_file, webhook: str) -> None:
    rule = f"name: ok\nwebhook:\n  url: https://e.com/hook\n  {webhook}\n"
    result = cli("validate", "-r", rule_file(rule))
    assert result.exit_code == 0, result.stderr


def test_a_line_break_in_a_secret_is_refused_at_send_without_showing_it(
    cli, rule_file, event_file, httpserver: HTTPServer, monkeypatch
) -> None:
    monkeypatch.setenv("API_KEY", "CANARYkey\r\nX-Injected: yes")
    rule = f"name: k\nwebhook:\n  url: {httpserver.url_for('/k')!r}\n  headers: {{X-Key: '{{{{ env.API_KEY }}}}'}}\n"
    result = cli("fire", "--json", "-r", rule_file(rule), event_file(EVENTS[0]))
    (report,) = ndjson(result.stdout)
    assert report["status"] == "pending"  # held: fixing the environment fixes the delivery
    assert report["error"] == (
        "held: environment variable API_KEY holds a line break or control character"
    )
    assert not httpserver.log and MARKER not in result.stdout + result.stderr


def test_whole_url_from_an_environment_variable(
    cli, rule_file, event_file, httpserver, monkeypatch, db_file
):
    """Slack-style: the whole webhook URL is a secret; it is sent as is and never recorded."""
    httpserver.expect_request("/services/T0/B0/canary-url-token").respond_with_data("ok")
    monkeypatch.setenv("HOOK_URL", httpserver.url_for("/services/T0/B0/canary-url-token"))
    rules = rule_file(
        "name: slack\nwebhook: {method: POST, url: '{{ env.HOOK_URL }}', body: {text: hi}}\n"
    )
    event = event_file({"event": "ticket.created", "id": "e1"})
    result = cli("fire", "-r", rules, event, "--json")
    assert result.exit_code == 0, result.stderr
    assert len(httpserver.log) == 1
    assert "canary-url-token" not in result.stdout + result.stderr
    assert b"canary-url-token" not in db_file.read_bytes()
    dry = cli("fire", "--dry-run", "-r", rules, event)
    assert "POST ${HOOK_URL}" in dry.stdout


def test_url_variable_that_is_not_a_url_is_a_clear_error(cli, rule_file, event_file, monkeypatch):
    monkeypatch.setenv("HOOK_URL", "not a url canary-xyz")
    rules = rule_file("name: slack\nwebhook: {method: POST, url: '{{ env.HOOK_URL }}/x'}\n")
    result = cli("fire", "-r", rules, event_file({"event": "ticket.created", "id": "e1"}), "--json")
    (report,) = ndjson(result.stdout)
    # Like a missing variable: kept for retry, since fixing the environment fixes the delivery.
    assert report["status"] == "pending"
    assert (
        report["error"]
        == "held: webhook.url: environment variable HOOK_URL does not hold an http(s) URL"
    )
    assert "canary-xyz" not in result.stdout + result.stderr


# --- event data in the URL (issue 11.6) -------------------------------------------------------


class RawTarget:
    """A receiver that records each request's target exactly as it came on the wire."""

    def __init__(self, httpserver: HTTPServer) -> None:
        self.targets: list[str] = []
        self.args: list[dict[str, list[str]]] = []
        httpserver.expect_request(re.compile(".*")).respond_with_handler(self._handle)

    def _handle(self, request: Request) -> Response:
        self.targets.append(request.environ["RAW_URI"])
        self.args.append(request.args.to_dict(flat=False))
        return Response("ok")


HOSTILE_ID = "5/../../admin?x=1#frag"


def url_rule(rule_file, url: str) -> Path:  # type: ignore[no-untyped-def]
    return rule_file(f"name: crm\non: [ticket.created]\nwebhook: {{method: POST, url: {url!r}}}\n")


def fire_one(cli, rules: Path, event_file, ticket: dict) -> dict:  # type: ignore[no-untyped-def]
    event = {"event": "ticket.created", "id": "e1", "ticket": ticket}
    result = cli("fire", "--json", "--force", "-r", rules, event_file(event))
    (report,) = ndjson(result.stdout)
    return dict(report)


def test_event_data_cannot_rewrite_the_path_or_the_query(
    cli, rule_file, event_file, httpserver: HTTPServer
) -> None:
    receiver = RawTarget(httpserver)
    base = httpserver.url_for("").rstrip("/")
    rules = url_rule(rule_file, base + "/t/{{ ticket.id }}?s=abc")
    report = fire_one(cli, rules, event_file, {"id": HOSTILE_ID})
    assert report["status"] == "succeeded", report
    # The rule's own path and query: the value is one segment, `/ ? #` encoded in it (the
    # client writes `=` back as itself: in a path it is only a character).
    assert receiver.targets == ["/t/5%2F..%2F..%2Fadmin%3Fx=1%23frag?s=abc"]
    assert receiver.args == [{"s": ["abc"]}]


def test_event_data_in_the_query_stays_one_query_value(
    cli, rule_file, event_file, httpserver: HTTPServer
) -> None:
    receiver = RawTarget(httpserver)
    base = httpserver.url_for("").rstrip("/")
    rules = url_rule(rule_file, base + "/search?q={{ ticket.subject }}&s=abc")
    report = fire_one(cli, rules, event_file, {"subject": "a&s=evil+x #y"})
    assert report["status"] == "succeeded", report
    assert receiver.args == [{"q": ["a&s=evil+x #y"], "s": ["abc"]}]


def test_raw_url_inserts_a_value_as_it_is_when_the_rule_says_so(
    cli, rule_file, event_file, httpserver: HTTPServer
) -> None:
    receiver = RawTarget(httpserver)
    base = httpserver.url_for("").rstrip("/")
    rules = url_rule(rule_file, base + "/{{ ticket.path|raw_url }}")
    report = fire_one(cli, rules, event_file, {"path": "api/v2/tickets?expand=1"})
    assert report["status"] == "succeeded", report
    assert receiver.targets == ["/api/v2/tickets?expand=1"]


@pytest.mark.parametrize(
    ("url", "value", "error"),
    [
        ("/t/{{ ticket.v }}/x", "..", "is '..', which would move up the path"),
        ("/t/{{ ticket.v }}", ".", "is '.', which would move up the path"),
    ],
)
def test_a_dot_segment_value_fails_the_delivery(
    cli, rule_file, event_file, httpserver: HTTPServer, url: str, value: str, error: str
) -> None:
    receiver = RawTarget(httpserver)
    rules = url_rule(rule_file, httpserver.url_for("").rstrip("/") + url)
    report = fire_one(cli, rules, event_file, {"v": value})
    assert report["status"] == "failed" and report["attempts"] == 0
    assert error in report["error"] and receiver.targets == []


def test_a_host_value_cannot_carry_a_path_or_credentials(cli, rule_file, event_file) -> None:
    rules = url_rule(rule_file, "https://{{ ticket.host }}/t")
    for value, char in (("crm.example/admin?", "/"), ("evil.example@crm.example", "@")):
        report = fire_one(cli, rules, event_file, {"host": value})
        assert report["status"] == "failed" and report["attempts"] == 0
        assert f"puts {char!r} into the URL's host" in report["error"]
    ok = cli(
        "fire",
        "--dry-run",
        "-r",
        rules,
        event_file({"event": "ticket.created", "ticket": {"host": "crm.example:8443"}}),
    )
    assert "POST https://crm.example:8443/t" in ok.stdout


def test_placement_also_holds_inside_template_blocks(cli, rule_file, event_file) -> None:
    rules = url_rule(
        rule_file, "https://crm.example/t/{% if ticket.id %}{{ ticket.id }}{% endif %}?s=1"
    )
    dry = cli(
        "fire", "--dry-run", "-r", rules,
        event_file({"event": "ticket.created", "ticket": {"id": HOSTILE_ID}}),
    )  # fmt: skip
    assert "POST https://crm.example/t/5%2F..%2F..%2Fadmin%3Fx%3D1%23frag?s=1" in dry.stdout
