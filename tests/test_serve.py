"""`hookctl serve`: events posted over real HTTP are stored before the 202 and delivered."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import signal
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import ndjson
from tests.receivers import Receiver, event, rule_yaml, wait_for
from tests.serving import log_json, serving, start, stop

WHSEC = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TOKEN = "tok-" + "s3cr3t-intake-token"


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def test_posted_events_are_stored_then_delivered(cli, rule_file, receiver, db_file):
    rules = rule_file(rule_yaml(receiver.url))
    with serving("-r", rules) as server, server.client() as http:
        one = http.post("/events", json=event(1))
        assert one.status_code == 202, one.text
        body = one.json()
        assert body["accepted"] == 1
        [first] = body["events"]
        assert first["id"] == "evt_1" and first["deliveries"] == 1 and first["duplicates"] == 0
        # An array and NDJSON, as `fire` reads them; one that matches no rule is taken too.
        array = http.post("/events", json=[event(2), event(3), {"event": "other", "id": "x"}])
        assert array.status_code == 202
        assert [e["deliveries"] for e in array.json()["events"]] == [1, 1, 0]
        lines = json.dumps(event(4)) + "\n" + json.dumps(event(5)) + "\n"
        nd = http.post(
            "/events/movidesk", content=lines, headers={"Content-Type": "application/x-ndjson"}
        )
        assert nd.status_code == 202 and nd.json()["accepted"] == 2
        # The same event again is recognised (by its id): one delivery, sent once.
        again = http.post("/events", json=event(1))
        assert again.status_code == 202 and again.json()["events"][0]["duplicates"] == 1
        wait_for(lambda: receiver.arrived() >= 5, what="5 deliveries")
        wait_for(
            lambda: (
                all(r["status"] == "succeeded" for r in log_json(cli, db_file))
                and len(log_json(cli, db_file)) == 5
            ),
            what="5 succeeded in the log",
        )
        shown = cli("log", first["delivery_ids"][0], "--db", db_file, "--json")
        assert ndjson(shown.stdout)[0]["status"] == "succeeded"
    time.sleep(0.2)
    assert sorted(i for _, i in receiver.received) == [f"evt_{n}" for n in range(1, 6)]


def test_no_send_only_stores_and_a_retry_loop_beside_it_sends(cli, rule_file, receiver, db_file):
    # The split deployment: serve takes events in, retry-loop workers send them.
    rules = rule_file(rule_yaml(receiver.url))
    with (
        serving("-r", rules, "--no-send", "--retry-every", "50ms") as server,
        server.client() as http,
    ):
        answer = http.post("/events", json=[event(1), event(2)])
        assert answer.status_code == 202, answer.text
        assert [e["deliveries"] for e in answer.json()["events"]] == [1, 1]
        time.sleep(0.5)  # a sending serve would have sent them by now (retry-every 50ms)
        assert receiver.arrived() == 0
        assert [r["status"] for r in log_json(cli, db_file)] == ["pending", "pending"]
        done = cli("retry-loop", "--db", db_file)
        assert done.exit_code == 0, done.stderr
        assert receiver.arrived() == 2
        assert {r["status"] for r in log_json(cli, db_file)} == {"succeeded"}


def test_bad_input_is_refused_with_the_line_and_nothing_stored(cli, rule_file, receiver, db_file):
    rules = rule_file(rule_yaml(receiver.url))
    limits = ("--max-body", "2k", "--max-pending", "3")
    with serving("-r", rules, *limits) as server, server.client() as http:
        bad = http.post("/events", content=json.dumps(event(1)) + "\n{oops\n")
        assert bad.status_code == 400
        err = bad.json()
        assert err["error"].startswith("line 2:") and err["stored"] == 0
        assert err["errors"][0]["line"] == 2
        not_object = http.post("/events", content="[1]")
        assert not_object.status_code == 400 and "line 1" in not_object.json()["error"]
        empty = http.post("/events", content="")
        assert empty.status_code == 400 and empty.json()["error"] == "no events in the body"
        big = http.post("/events", json=event(9, subject="x" * 4000))
        assert big.status_code == 413 and "2048 bytes" in big.json()["error"]
        # More events than may wait to be stored: 503 with Retry-After, none of them taken.
        busy = http.post("/events", json=[event(n) for n in range(10, 14)])
        assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 1
        assert http.post("/events/bad%20source", json=event(1)).status_code == 404
    assert log_json(cli, db_file) == []
    assert receiver.arrived() == 0


def _zendesk_headers(secret: str, body: bytes, stamp: str | None = None) -> dict[str, str]:
    # As Zendesk documents it: base64(HMAC-SHA256(secret, timestamp + body)).
    stamp = stamp or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    mac = hmac.new(secret.encode(), stamp.encode() + body, hashlib.sha256).digest()
    return {
        "X-Zendesk-Webhook-Signature": base64.b64encode(mac).decode(),
        "X-Zendesk-Webhook-Signature-Timestamp": stamp,
        "Content-Type": "application/json",
    }


def test_each_auth_mode_accepts_and_refuses(cli, rule_file, receiver, db_file):
    rules = rule_file(rule_yaml(receiver.url))
    env = {
        "IN_TOKEN": TOKEN,
        "IN_BASIC": "zendesk:pa55-word",
        "IN_HEADER": "shared-hdr-secret",
        "IN_ZENDESK": "zd-signing-secret",
        "IN_WHSEC": WHSEC,
        "IN_URL": "url-t0ken",
    }
    args = [
        "-r", rules, "--token-env", "IN_TOKEN", "--basic-env", "IN_BASIC",
        "--header-secret-env", "IN_HEADER", "--header-name", "X-Helpdesk-Secret",
        "--zendesk-secret-env", "IN_ZENDESK", "--standard-webhooks-env", "IN_WHSEC", "--url-token-env", "IN_URL",
    ]  # fmt: skip
    n = iter(range(100, 200))
    with serving(*args, env=env) as server, server.client() as http:

        def post(headers: dict[str, str], body: bytes | None = None) -> int:
            content = body or json.dumps(event(next(n))).encode()
            return http.post("/events", content=content, headers=headers).status_code

        assert post({"Authorization": f"Bearer {TOKEN}"}) == 202
        assert post({"Authorization": "Bearer wrong"}) == 401
        basic = base64.b64encode(b"zendesk:pa55-word").decode()
        assert post({"Authorization": f"Basic {basic}"}) == 202
        assert post({"Authorization": "Basic " + base64.b64encode(b"zendesk:no").decode()}) == 401
        assert post({"X-Helpdesk-Secret": "shared-hdr-secret"}) == 202
        assert post({"X-Helpdesk-Secret": "guess"}) == 401
        body = json.dumps(event(next(n))).encode()
        assert post(_zendesk_headers("zd-signing-secret", body), body) == 202
        assert post(_zendesk_headers("another-secret", body), body) == 401
        tampered = body.replace(b"ticket", b"Ticket")
        assert post(_zendesk_headers("zd-signing-secret", body), tampered) == 401
        old = "2020-01-01T00:00:00Z"
        assert post(_zendesk_headers("zd-signing-secret", body, old), body) == 401
        # Standard Webhooks, signed by the reference library.
        body = json.dumps(event(next(n))).encode()
        signed = Webhook(WHSEC).sign("msg_1", datetime.now(UTC), body.decode())
        headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(time.time()))}
        assert post({**headers, "webhook-signature": signed}, body) == 202
        assert post({**headers, "webhook-signature": "v1,AAAA"}, body) == 401
        # Movidesk takes only a URL: the token in its query; the pseudo-header is no way in.
        ok = http.post("/events/movidesk?token=url-t0ken", json=event(150))
        assert ok.status_code == 202
        assert http.post("/events?token=nope", json=event(151)).status_code == 401
        sneaky = http.post("/events", json=event(152), headers={"X-Hookctl-Url-Token": "url-t0ken"})
        assert sneaky.status_code == 401
        refused = http.post("/events", json=event(199))
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
        assert TOKEN not in refused.text and "zd-signing-secret" not in refused.text
        wait_for(lambda: receiver.arrived() >= 6, what="the 6 accepted")
    stored = log_json(cli, db_file)
    assert len(stored) == 6  # refused requests stored nothing
    assert {r["event_id"] for r in stored} == {
        "evt_100",
        "evt_102",
        "evt_104",
        "evt_106",
        "evt_107",
        "evt_150",
    }
    assert all(secret not in server.stderr for secret in env.values())


def test_refuses_to_start_open_to_the_network_or_without_its_secret(cli, rule_file, receiver):
    rules = rule_file(rule_yaml(receiver.url))
    open_net = cli("serve", "-r", rules, "--host", "0.0.0.0", "--port", "0")
    assert open_net.exit_code == 2
    assert "refusing to listen on 0.0.0.0 with no authentication" in open_net.stderr
    unset = cli("serve", "-r", rules, "--token-env", "NOT_SET_ANYWHERE")
    assert unset.exit_code == 2 and "NOT_SET_ANYWHERE is not set" in unset.stderr
    # A secret typed where its variable's name belongs is refused, and never echoed.
    argv_secret = cli("serve", "-r", rules, "--token-env", "abc-123/secret!")
    assert argv_secret.exit_code == 2 and "abc-123/secret!" not in argv_secret.stderr


def test_off_loopback_the_log_needs_the_admin_password(rule_file, receiver):
    rules = rule_file(rule_yaml(receiver.url))
    env = {"IN_TOKEN": TOKEN, "ADMIN_PW": "adm1n-pw"}
    args = ["-r", rules, "--host", "0.0.0.0", "--token-env", "IN_TOKEN", "--admin-env", "ADMIN_PW"]
    with serving(*args, env=env) as server, server.client() as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/").status_code == 401
        assert http.get("/metrics").status_code == 401
        assert http.get("/", auth=("admin", "adm1n-pw")).status_code == 200
        assert http.get("/metrics", auth=("any", "adm1n-pw")).status_code == 200
        assert http.get("/", auth=("admin", "wrong")).status_code == 401


def test_health_reload_and_graceful_stop(cli, rule_file, receiver, db_file, tmp_path):
    rules = rule_file(rule_yaml(receiver.url, name="first"), "rules.yaml")
    server = start("-r", rules.parent)
    try:
        with server.client() as http:
            assert http.get("/healthz").json() == {"ok": True}
            ready = http.get("/readyz")
            assert ready.status_code == 200 and ready.json()["rules"] == 1
            # An invalid set is refused; the old rules keep working.
            rules.write_text("name: [broken\n", encoding="utf-8")
            server.signal(signal.SIGHUP)
            server.wait_line(r"reload refused, keeping the 1 rules")
            assert http.post("/events", json=event(1)).json()["events"][0]["deliveries"] == 1
            # A valid set replaces them.
            rules.write_text(rule_yaml(receiver.url, name="second"), encoding="utf-8")
            server.signal(signal.SIGHUP)
            server.wait_line(r"reloaded 1 rules")
            assert http.post("/events", json=event(2)).status_code == 202
            wait_for(lambda: receiver.arrived() >= 2, what="both delivered")
    finally:
        code = stop(server)
    assert code == 0, server.stderr
    assert "serve: stopped" in server.stderr
    by_event = {r["event_id"]: r for r in log_json(cli, db_file)}
    assert by_event["evt_1"]["rule"] == "first" and by_event["evt_2"]["rule"] == "second"
    assert {r["status"] for r in by_event.values()} == {"succeeded"}


def test_retries_inside_the_server(cli, rule_file, receiver, db_file):
    receiver.status = 503
    rules = rule_file(rule_yaml(receiver.url, retry="{every: 300ms, retries: 5}"))
    with serving("-r", rules, "--retry-every", "0.2s") as server, server.client() as http:
        assert http.post("/events", json=event(1)).status_code == 202
        wait_for(lambda: receiver.arrived() >= 1, what="the first attempt")
        receiver.status = 200
        wait_for(
            lambda: [r["status"] for r in log_json(cli, db_file)] == ["succeeded"],
            timeout=30,
            what="the retry to succeed",
        )
    assert receiver.arrived() == 2


def _file_size_limit(limit: int):  # type: ignore[no-untyped-def]
    import resource

    def apply() -> None:
        # Python ignores SIGXFSZ, so a write past the limit fails (EFBIG) instead of killing us.
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_store_that_cannot_write_answers_503_and_keeps_every_202(cli, rule_file, db_file):
    # Nothing listens on the rule's port: deliveries wait as pending, the queue only grows.
    rules = rule_file(rule_yaml("http://127.0.0.1:9/hook", retry="{every: 1h, retries: 3}"))
    cli("fire", "-r", rules, "--db", db_file, input="")  # creates the database first
    server = start("-r", rules, preexec_fn=_file_size_limit(2_000_000))
    answers: dict[str, int] = {}
    try:
        with server.client() as http:
            for n in range(400):
                r = http.post("/events", json=event(n, subject="x" * 20_000))
                answers[f"evt_{n}"] = r.status_code
                if r.status_code == 503:
                    assert int(r.headers["Retry-After"]) >= 1
                    assert "store" in r.json()["error"]
                    if list(answers.values()).count(503) >= 3:
                        break
            ready = http.get("/readyz")
    finally:
        stop(server)
    assert set(answers.values()) == {202, 503}, answers
    assert ready.status_code == 503 and "the last write to the store failed" in ready.text
    stored = {r["event_id"] for r in log_json(cli, db_file)}
    assert stored == {e for e, code in answers.items() if code == 202}


def test_open_to_the_network_only_when_told(rule_file, receiver):
    rules = rule_file(rule_yaml(receiver.url))
    args = ("-r", rules, "--host", "0.0.0.0", "--allow-unauthenticated", "--public-log")
    with serving(*args) as server, server.client() as http:
        assert http.post("/events", json=event(1)).status_code == 202
        assert http.get("/").status_code == 200  # --public-log: read-only for anyone
        assert 'id="replay"' not in http.get("/").text
