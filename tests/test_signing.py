"""Standard Webhooks signing: the spec's test vector, real requests checked by the reference library."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from pytest_httpserver import HTTPServer
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from werkzeug import Request, Response

from hookctl.render.signing import decode_secret, generate_secret, sign_headers, signature
from tests.conftest import attempts, deliveries, ndjson
from tests.receivers import wait_until_due

# Published with the Standard Webhooks reference libraries.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

EVENT = {
    "event": "ticket.created",
    "id": "evt_1",
    "ticket": {"id": 4711, "subject": "Printer ü <on> fire"},
}


def signed_rule(url: str, secret: str = '"{{ env.WEBHOOK_SECRET }}"', extra: str = "") -> str:
    return (
        f"name: signed\nwebhook:\n  url: {url!r}\n"
        f"  body: {{ticket: '{{{{ ticket.id }}}}', subject: '{{{{ ticket.subject }}}}'}}\n"
        f"  sign: {{secret: {secret}}}\n{extra}"
    )


def verify(secret: str, request: Request) -> None:
    """Verify as a receiver would, with the reference library (raises when it does not verify)."""
    Webhook(secret).verify(request.get_data(), dict(request.headers), json_parse=False)


def test_the_published_test_vector() -> None:
    key = decode_secret(VECTOR_SECRET)
    assert signature(key, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE
    headers = dict(sign_headers([key], VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY))
    assert headers == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }


def test_the_prefix_is_optional_as_in_the_reference_libraries() -> None:
    assert decode_secret(VECTOR_SECRET.removeprefix("whsec_")) == decode_secret(VECTOR_SECRET)


def test_generated_secrets_are_whsec_base64_and_random() -> None:
    first, second = generate_secret(), generate_secret()
    assert first != second and first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 24


@pytest.mark.parametrize(
    "bad", ["whsec_not*base64!", "whsec_", "whsec_c2hvcnQ=", "plain text secret"]
)
def test_a_malformed_secret_is_refused_without_echoing_it(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        decode_secret(bad)
    tail = bad.removeprefix("whsec_")
    assert "secret" in str(info.value) and (not tail or tail not in str(info.value))


def test_sign_secret_prints_a_secret_the_reference_library_accepts(cli) -> None:
    result = cli("sign-secret")
    assert result.exit_code == 0
    secret = result.stdout.strip()
    key = decode_secret(secret)
    body = b'{"a": 1}'
    headers = dict(sign_headers([key], "msg_1", VECTOR_TIMESTAMP, body))
    at = datetime.fromtimestamp(VECTOR_TIMESTAMP, UTC)
    assert Webhook(secret).sign("msg_1", at, body.decode()) == headers["webhook-signature"]


def test_requests_verify_with_the_reference_library(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file, monkeypatch
) -> None:
    secret = generate_secret()
    monkeypatch.setenv("WEBHOOK_SECRET", secret)
    httpserver.expect_request("/hook").respond_with_data("ok")
    result = cli(
        "fire",
        "--json",
        "-r",
        rule_file(signed_rule(httpserver.url_for("/hook"))),
        event_file(EVENT),
    )
    assert result.exit_code == 0, result.stderr
    ((request, _),) = httpserver.log
    verify(secret, request)
    (report,) = ndjson(result.stdout)
    assert request.headers["webhook-id"] == report["id"]
    assert json.loads(request.get_data()) == {"ticket": 4711, "subject": "Printer ü <on> fire"}
    with pytest.raises(WebhookVerificationError):
        verify(generate_secret(), request)
    assert secret not in db_file.read_bytes().decode("utf-8", "replace")


def test_rotation_sends_one_signature_per_secret(
    cli, rule_file, event_file, httpserver: HTTPServer, monkeypatch
) -> None:
    old, new = generate_secret(), generate_secret()
    monkeypatch.setenv("OLD_SECRET", old)
    monkeypatch.setenv("NEW_SECRET", new)
    httpserver.expect_request("/hook").respond_with_data("ok")
    secrets = '["{{ env.NEW_SECRET }}", "{{ env.OLD_SECRET }}"]'
    result = cli(
        "fire",
        "-r",
        rule_file(signed_rule(httpserver.url_for("/hook"), secrets)),
        event_file(EVENT),
    )
    assert result.exit_code == 0, result.stderr
    ((request, _),) = httpserver.log
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    verify(old, request)
    verify(new, request)


def test_retries_and_replays_keep_the_webhook_id_and_sign_again(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file, monkeypatch
) -> None:
    secret = generate_secret()
    monkeypatch.setenv("WEBHOOK_SECRET", secret)
    httpserver.expect_ordered_request("/hook").respond_with_data("busy", status=503)
    httpserver.expect_ordered_request("/hook").respond_with_data("ok")
    httpserver.expect_ordered_request("/hook").respond_with_data("ok again")
    rules = rule_file(signed_rule(httpserver.url_for("/hook"), extra="retry: {schedule: [1ms]}\n"))
    assert cli("fire", "-r", rules, event_file(EVENT)).exit_code == 0
    (row,) = deliveries(db_file)
    assert row["status"] == "pending"
    wait_until_due(db_file)
    assert cli("retry-loop").exit_code == 0
    assert cli("replay", row["id"], "--now").exit_code == 0
    sent = [request for request, _ in httpserver.log]
    assert len(sent) == 3 and len(attempts(db_file)) == 3
    assert {r.headers["webhook-id"] for r in sent} == {row["id"]}
    for request in sent:
        verify(secret, request)


def test_every_request_carries_the_delivery_id(
    cli, rule_file, event_file, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    rule = f"name: plain\nwebhook:\n  url: {httpserver.url_for('/hook')!r}\n"
    result = cli("fire", "--json", "-r", rule_file(rule), event_file(EVENT))
    ((request, _),) = httpserver.log
    (report,) = ndjson(result.stdout)
    assert request.headers["webhook-id"] == report["id"]
    assert "webhook-signature" not in request.headers


def test_dry_run_shows_where_the_signature_goes_not_the_secret(
    cli, rule_file, event_file, monkeypatch
) -> None:
    secret = generate_secret()
    monkeypatch.setenv("WEBHOOK_SECRET", secret)
    result = cli(
        "fire",
        "--dry-run",
        "-r",
        rule_file(signed_rule("https://example.com/hook")),
        event_file(EVENT),
    )
    assert result.exit_code == 0, result.stderr
    assert "webhook-signature: v1,<signed when sent, with ${WEBHOOK_SECRET}>" in result.stdout
    assert secret not in result.stdout + result.stderr


def test_a_literal_signing_secret_is_a_rule_error_unless_allowed(
    cli, rule_file, event_file, httpserver: HTTPServer
) -> None:
    literal = generate_secret()
    result = cli("validate", "-r", rule_file(signed_rule("https://example.com/h", f'"{literal}"')))
    assert result.exit_code == 3
    assert "webhook.sign.secret: looks like a secret written in the rule" in result.stderr
    assert literal not in result.stderr
    httpserver.expect_request("/hook").respond_with_data("ok")
    allowed = signed_rule(
        httpserver.url_for("/hook"), f'"{literal}"', "allow_literal_secrets: true\n"
    )
    assert cli("fire", "-r", rule_file(allowed), event_file(EVENT)).exit_code == 0
    ((request, _),) = httpserver.log
    verify(literal, request)


def test_a_malformed_secret_in_the_environment_fails_the_attempt_not_the_run(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file, monkeypatch
) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", "not-a-secret-value")
    result = cli(
        "fire",
        "--json",
        "-r",
        rule_file(signed_rule(httpserver.url_for("/hook"))),
        event_file(EVENT),
    )
    (report,) = ndjson(result.stdout)
    assert report["status"] == "pending"  # fixed by setting the variable right; the retry will sign
    assert "webhook.sign.secret: not a Standard Webhooks secret" in report["error"]
    assert not httpserver.log
    assert b"not-a-secret-value" not in db_file.read_bytes()


@pytest.mark.parametrize(
    ("sign", "message"),
    [
        ("sign: whsec_x", "webhook.sign: expected a mapping"),
        ("sign: {secrets: x}", "unknown key 'secrets'"),
        ("sign: {secret: []}", "secret: expected a template"),
        ("headers: {webhook-id: x}", "webhook.headers.webhook-id: set by hookctl"),
    ],
)
def test_bad_sign_settings_are_rule_errors(cli, rule_file, sign: str, message: str) -> None:
    rule = f"name: s\nwebhook:\n  url: https://example.com/h\n  {sign}\n"
    result = cli("validate", "-r", rule_file(rule))
    assert result.exit_code == 3
    assert message in result.stderr


def test_replayed_deliveries_keep_their_id_as_webhook_id(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file
) -> None:
    httpserver.expect_request("/hook").respond_with_response(Response("ok"))
    rule = f"name: plain\nwebhook:\n  url: {httpserver.url_for('/hook')!r}\n"
    cli("fire", "-r", rule_file(rule), event_file(EVENT))
    (row,) = deliveries(db_file)
    assert cli("replay", row["id"], "--now").exit_code == 0
    assert [r.headers["webhook-id"] for r, _ in httpserver.log] == [row["id"], row["id"]]
