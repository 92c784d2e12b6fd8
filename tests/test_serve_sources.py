"""`serve --sources FILE`: per-source intake checks, over real HTTP against a running serve."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import signal
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from hookctl.errors import RuleErrors
from hookctl.serve.sources import load_sources
from tests.receivers import Receiver, event, rule_yaml, wait_for
from tests.serving import log_json, serving

ZD_SECRET = "zd-" + "signing-secret-1"
MOVIDESK = "movi-" + "url-t0ken"
SCRIPTS_TOKEN = "scr-" + "bearer-t0ken"
SCRIPTS_SECRET = "scr-" + "header-secret"
GLOBAL_TOKEN = "glob-" + "bearer-t0ken"
WHSEC_NEW = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WHSEC_OLD = "whsec_" + "w0q5P6HO8hj2s3qh22KTwCjgJMAewSrx"
ENV = {
    "ZENDESK_WEBHOOK_SECRET": ZD_SECRET,
    "MOVIDESK_TOKEN": MOVIDESK,
    "SCRIPTS_TOKEN": SCRIPTS_TOKEN,
    "SCRIPTS_SECRET": SCRIPTS_SECRET,
    "PARTNER_SECRET": WHSEC_NEW,
    "PARTNER_SECRET_OLD": WHSEC_OLD,
    "GLOBAL_TOKEN": GLOBAL_TOKEN,
}
SOURCES = """\
sources:
  zendesk:
    zendesk_secret_env: ZENDESK_WEBHOOK_SECRET
  movidesk:
    url_token_env: MOVIDESK_TOKEN
  scripts:
    token_env: SCRIPTS_TOKEN
    header_secret_env: SCRIPTS_SECRET
    header_name: X-Scripts-Secret
  partner:
    standard_webhooks_env: [PARTNER_SECRET, PARTNER_SECRET_OLD]
"""


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def write(tmp_path: Path, text: str, name: str = "sources.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def zendesk_headers(secret: str, body: bytes) -> dict[str, str]:
    # As Zendesk documents it: base64(HMAC-SHA256(secret, timestamp + body)).
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    mac = hmac.new(secret.encode(), stamp.encode() + body, hashlib.sha256).digest()
    return {
        "X-Zendesk-Webhook-Signature": base64.b64encode(mac).decode(),
        "X-Zendesk-Webhook-Signature-Timestamp": stamp,
        "Content-Type": "application/json",
    }


def body_of(n: int) -> bytes:
    return json.dumps(event(n)).encode()


def stored_ids(cli, db_file) -> set[str]:  # type: ignore[no-untyped-def]
    # The rule matches every event posted here: one delivery per stored event.
    return {row["event_id"] for row in log_json(cli, db_file)}


def test_a_listed_source_passes_only_its_own_checks(cli, rule_file, receiver, db_file, tmp_path):
    rules = rule_file(rule_yaml(receiver.url))
    sources = write(tmp_path, SOURCES + "unlisted: global  # the default, said\n")
    args = ("-r", rules, "--sources", sources, "--token-env", "GLOBAL_TOKEN")
    with serving(*args, env=ENV) as server, server.client() as http:
        assert "4 sources with their own checks, others the global options" in server.stderr

        def post(path: str, n: int, headers: dict[str, str] | None = None) -> int:
            return http.post(path, content=body_of(n), headers=headers or {}).status_code

        # zendesk: its signature, and nothing else.
        assert post("/events/zendesk", 1, zendesk_headers(ZD_SECRET, body_of(1))) == 202
        global_only = http.post(
            "/events/zendesk",
            content=body_of(2),
            headers={"Authorization": f"Bearer {GLOBAL_TOKEN}"},
        )
        assert global_only.status_code == 401
        assert GLOBAL_TOKEN not in global_only.text and ZD_SECRET not in global_only.text
        assert post("/events/zendesk", 3, {"Authorization": f"Bearer {SCRIPTS_TOKEN}"}) == 401
        assert post(f"/events/zendesk?token={MOVIDESK}", 4) == 401
        assert post("/events/zendesk", 5, zendesk_headers("another-secret", body_of(5))) == 401
        # movidesk: the URL token, on its own route only.
        assert post(f"/events/movidesk?token={MOVIDESK}", 10) == 202
        assert post("/events/movidesk?token=wrong", 11) == 401
        assert post("/events/movidesk", 12, {"Authorization": f"Bearer {GLOBAL_TOKEN}"}) == 401
        assert post(f"/events?token={MOVIDESK}", 13) == 401
        assert post(f"/events/other?token={MOVIDESK}", 14) == 401
        # scripts: either of its two checks, the header by its own name.
        assert post("/events/scripts", 20, {"X-Scripts-Secret": SCRIPTS_SECRET}) == 202
        assert post("/events/scripts", 21, {"Authorization": f"Bearer {SCRIPTS_TOKEN}"}) == 202
        assert post("/events/scripts", 22, {"X-Hookctl-Secret": SCRIPTS_SECRET}) == 401
        assert post("/events/scripts", 23, {"Authorization": f"Bearer {GLOBAL_TOKEN}"}) == 401
        # partner: Standard Webhooks, the old key of a rotation still good.
        for n, key in ((30, WHSEC_OLD), (31, WHSEC_NEW)):
            body = body_of(n)
            signed = Webhook(key).sign(f"msg_{n}", datetime.now(UTC), body.decode())
            headers = {
                "webhook-id": f"msg_{n}",
                "webhook-timestamp": str(int(time.time())),
                "webhook-signature": signed,
            }
            assert http.post("/events/partner", content=body, headers=headers).status_code == 202
        # unlisted: global (the default): /events and other sources take the global token.
        assert post("/events", 40, {"Authorization": f"Bearer {GLOBAL_TOKEN}"}) == 202
        assert post("/events/other", 41, {"Authorization": f"Bearer {GLOBAL_TOKEN}"}) == 202
        assert post("/events/other", 42, zendesk_headers(ZD_SECRET, body_of(42))) == 401
        assert post("/events", 43) == 401
        wait_for(lambda: receiver.arrived() >= 8, what="the 8 accepted")
    assert stored_ids(cli, db_file) == {f"evt_{n}" for n in (1, 10, 20, 21, 30, 31, 40, 41)}
    assert all(secret not in server.stderr for secret in ENV.values())


def test_unlisted_refuse_answers_404_and_stores_nothing(
    cli, rule_file, receiver, db_file, tmp_path
):
    rules = rule_file(rule_yaml(receiver.url))
    sources = write(
        tmp_path,
        """\
        sources:
          movidesk:
            url_token_env: MOVIDESK_TOKEN
        unlisted: refuse
        """,
    )
    args = ("-r", rules, "--sources", sources, "--token-env", "GLOBAL_TOKEN")
    with serving(*args, env=ENV) as server, server.client() as http:
        assert "1 source with its own checks, others refused" in server.stderr
        bearer = {"Authorization": f"Bearer {GLOBAL_TOKEN}"}
        plain = http.post("/events", content=body_of(1), headers=bearer)
        assert plain.status_code == 404
        assert plain.json() == {
            "error": "unknown source: none given; this server takes events for its 1 listed "
            "source only (POST /events/SOURCE)",
            "sources": 1,
        }
        other = http.post(f"/events/zendesk?token={MOVIDESK}", content=body_of(2), headers=bearer)
        assert other.status_code == 404 and other.json()["sources"] == 1
        assert "movidesk" not in other.text  # the count of the listed sources, not their names
        ok = http.post(f"/events/movidesk?token={MOVIDESK}", content=body_of(3))
        assert ok.status_code == 202
        metrics = http.get("/metrics").text
        assert 'hookctl_events_refused_total{reason="unknown_source",source="unlisted"} 2.0' in (
            metrics
        ) or 'hookctl_events_refused_total{source="unlisted",reason="unknown_source"} 2.0' in (
            metrics
        )
        wait_for(lambda: receiver.arrived() >= 1, what="the one accepted")
    assert stored_ids(cli, db_file) == {"evt_3"}


def test_a_variable_unset_or_empty_refuses_to_start_naming_source_and_variable(
    cli, rule_file, receiver, tmp_path
):
    rules = rule_file(rule_yaml(receiver.url))
    sources = write(tmp_path, SOURCES)
    for value in (None, "  "):
        env = {k: v for k, v in ENV.items() if k != "MOVIDESK_TOKEN"}
        if value is not None:
            env["MOVIDESK_TOKEN"] = value
        with pytest.MonkeyPatch.context() as mp:
            for name, v in env.items():
                mp.setenv(name, v)
            if value is None:
                mp.delenv("MOVIDESK_TOKEN", raising=False)
            done = cli("serve", "-r", rules, "--sources", sources, "--port", "0")
        assert done.exit_code == 2, done.output
        assert done.stderr == (
            f"Error: {sources}:4: source 'movidesk': url_token_env MOVIDESK_TOKEN: the "
            "environment variable MOVIDESK_TOKEN is not set or empty\n"
        )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "sources:\n  zendesk:\n    zendesk_secret_envv: ZENDESK_WEBHOOK_SECRET\n",
            ":3: sources.zendesk.zendesk_secret_envv: unknown key (did you mean "
            "'zendesk_secret_env'?); allowed: ",
        ),
        ("sources:\n  zendesk: {zendesk_secret_env: X\n", ":3: invalid YAML: expected ','"),
        (
            "sources:\n  movidesk: {}\n",
            ":2: sources.movidesk: a source needs at least one check: token_env, ",
        ),
        (
            "sources:\n  movidesk:\n    header_name: X-A\n",
            ":3: sources.movidesk.header_name: header_name needs header_secret_env",
        ),
        (
            "sources:\n  movidesk:\n    url_token_env: [MOVIDESK_TOKEN]\n",
            ":3: sources.movidesk.url_token_env: expected the NAME of an environment variable",
        ),
        (
            "sources:\n  movidesk:\n    url_token_env: MOVIDESK_TOKEN\nunlisted: refused\n",
            ":4: unlisted: expected global or refuse",
        ),
        (
            "sourcse:\n  movidesk:\n    url_token_env: MOVIDESK_TOKEN\n",
            ":1: sourcse: unknown key (did you mean 'sources'?)",
        ),
        (
            "sources:\n  bad/name:\n    url_token_env: MOVIDESK_TOKEN\n",
            ":2: sources.bad/name: a source name is letters, digits and . _ -",
        ),
    ],
)
def test_a_bad_sources_file_is_one_located_line_and_exit_3(
    cli, rule_file, receiver, tmp_path, text, expected
):
    rules = rule_file(rule_yaml(receiver.url))
    sources = write(tmp_path, text)
    done = cli("serve", "-r", rules, "--sources", sources, "--port", "0", env=ENV)
    assert done.exit_code == 3, done.output
    assert done.stderr.startswith(f"Error: {sources}{expected}"), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_no_such_sources_file_is_a_usage_error(cli, rule_file, receiver, tmp_path):
    rules = rule_file(rule_yaml(receiver.url))
    done = cli("serve", "-r", rules, "--sources", tmp_path / "nope.yaml", "--port", "0")
    assert done.exit_code == 2 and "no such file" in done.stderr


def test_off_loopback_every_route_that_takes_events_needs_a_check(
    cli, rule_file, receiver, tmp_path
):
    rules = rule_file(rule_yaml(receiver.url))
    listed = "sources:\n  movidesk:\n    url_token_env: MOVIDESK_TOKEN\n"
    globally = write(tmp_path, listed, "global.yaml")
    off = ("--host", "0.0.0.0", "--port", "0")
    # unlisted: global with no global option: /events would be open.
    done = cli("serve", "-r", rules, "--sources", globally, *off, env=ENV)
    assert done.exit_code == 2
    assert "refusing to listen on 0.0.0.0 with no authentication" in done.stderr
    assert "unlisted: refuse" in done.stderr
    # With a global option, or every unlisted route refused, it starts.
    refused = write(tmp_path, listed + "unlisted: refuse\n", "refuse.yaml")
    for args in (("--sources", refused), ("--sources", globally, "--token-env", "GLOBAL_TOKEN")):
        with (
            serving("-r", rules, *args, "--host", "0.0.0.0", env=ENV) as server,
            server.client() as http,
        ):
            ok = http.post(f"/events/movidesk?token={MOVIDESK}", content=body_of(1))
            assert ok.status_code == 202
            assert http.post("/events/movidesk", content=body_of(2)).status_code == 401


def test_sighup_reloads_the_sources_file_and_keeps_it_when_invalid(
    cli, rule_file, receiver, db_file, tmp_path
):
    rules = rule_file(rule_yaml(receiver.url))
    sources = write(tmp_path, "sources:\n  movidesk:\n    url_token_env: MOVIDESK_TOKEN\n")
    bearer = {"Authorization": f"Bearer {SCRIPTS_TOKEN}"}
    with serving("-r", rules, "--sources", sources, env=ENV) as server, server.client() as http:
        assert http.post(f"/events/movidesk?token={MOVIDESK}", content=body_of(1)).status_code == (
            202
        )
        assert http.post("/events", content=body_of(2)).status_code == 202  # global: none set
        # A changed file takes effect: movidesk now takes a bearer token, the rest refused.
        write(
            tmp_path,
            "sources:\n  movidesk:\n    token_env: SCRIPTS_TOKEN\nunlisted: refuse\n",
        )
        server.signal(signal.SIGHUP)
        server.wait_line(r"reloaded the sources file: 1 source with its own checks, others refused")
        assert http.post(f"/events/movidesk?token={MOVIDESK}", content=body_of(3)).status_code == (
            401
        )
        assert http.post("/events/movidesk", content=body_of(4), headers=bearer).status_code == 202
        assert http.post("/events", content=body_of(5)).status_code == 404
        # An invalid file is refused and the settings loaded are kept.
        write(tmp_path, "sources:\n  movidesk:\n    token_envv: SCRIPTS_TOKEN\n")
        server.signal(signal.SIGHUP)
        server.wait_line(
            r"sources reload refused, keeping the settings loaded \(1 source with its own checks"
        )
        server.wait_line(r"token_envv: unknown key \(did you mean 'token_env'\?\)")
        # So is one naming a variable this process does not have.
        write(tmp_path, "sources:\n  movidesk:\n    token_env: NOT_SET_ANYWHERE\n")
        server.signal(signal.SIGHUP)
        server.wait_line(r"NOT_SET_ANYWHERE is not set or empty")
        assert http.post("/events/movidesk", content=body_of(6), headers=bearer).status_code == 202
        assert http.post("/events", content=body_of(7)).status_code == 404
        wait_for(lambda: receiver.arrived() >= 4, what="the 4 accepted")
    assert stored_ids(cli, db_file) == {"evt_1", "evt_2", "evt_4", "evt_6"}


def test_the_file_reads_into_plain_settings(tmp_path):
    loaded = load_sources(write(tmp_path, SOURCES + "unlisted: refuse\n"))
    assert loaded.refuse_unlisted is True
    by_name = {s.name: s for s in loaded.sources}
    assert list(by_name) == ["zendesk", "movidesk", "scripts", "partner"]
    assert by_name["zendesk"].names.zendesk == "ZENDESK_WEBHOOK_SECRET"
    assert by_name["zendesk"].where == f"{tmp_path / 'sources.yaml'}:2"
    assert by_name["scripts"].names.header_name == "X-Scripts-Secret"
    assert by_name["scripts"].names.token == "SCRIPTS_TOKEN"
    assert tuple(by_name["partner"].names.standard_webhooks) == (
        "PARTNER_SECRET",
        "PARTNER_SECRET_OLD",
    )
    one = load_sources(write(tmp_path, "sources:\n  p:\n    standard_webhooks_env: K\n", "b.yaml"))
    assert one.refuse_unlisted is False and tuple(one.sources[0].names.standard_webhooks) == ("K",)
    with pytest.raises(RuleErrors) as caught:
        load_sources(write(tmp_path, "", "empty.yaml"))
    assert "the file is empty" in str(caught.value)


def test_the_readme_sources_files_are_valid(tmp_path):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", readme, flags=re.S) if "sources:" in b]
    assert len(blocks) >= 2
    for n, block in enumerate(blocks):
        loaded = load_sources(write(tmp_path, block, f"readme{n}.yaml"))
        assert {"zendesk", "movidesk"} <= {s.name for s in loaded.sources}
        assert loaded.refuse_unlisted
