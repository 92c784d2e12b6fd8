"""Sending again: `hookctl replay` (same delivery id) and duplicate suppression on `fire`."""

from __future__ import annotations

import json

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.conftest import attempts, deliveries, ndjson
from tests.receivers import event, events_ndjson, rule_yaml, wait_until_due


def fail_then_succeed(httpserver: HTTPServer, path: str = "/hook") -> None:
    """`path` answers 410 Gone the first time, then 200."""
    calls = []

    def answer(request: Request) -> Response:
        calls.append(request)
        return Response("gone", status=410) if len(calls) == 1 else Response("welcome back")

    httpserver.expect_request(path).respond_with_handler(answer)


def test_replay_by_id_reuses_the_delivery_id(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file
):
    fail_then_succeed(httpserver)
    rules = rule_file(rule_yaml(httpserver.url_for("/hook"), retry="movidesk"))
    fired = cli("fire", "-r", rules, event_file(event(1)), "--json")
    assert fired.exit_code == 1
    (report,) = ndjson(fired.stdout)
    assert report["status"] == "failed"

    replayed = cli("replay", report["id"][:22])
    assert replayed.exit_code == 0, replayed.stderr
    assert replayed.stderr == "1 delivery queued again\n" and replayed.stdout == ""
    (row,) = deliveries(db_file)
    assert row["status"] == "pending" and row["attempts"] == 0 and row["next_attempt_at"]
    assert len(httpserver.log) == 1  # queued, not sent

    sent = cli("retry-loop", "--json")
    assert sent.exit_code == 0, sent.stderr
    assert [(r["id"], r["status"]) for r in ndjson(sent.stdout)] == [(report["id"], "succeeded")]
    assert [r.headers["webhook-id"] for r, _ in httpserver.log] == [report["id"]] * 2
    assert [(a["number"], a["status_code"]) for a in attempts(db_file)] == [(1, 410), (2, 200)]


def test_replay_by_filters(cli, rule_file, event_file, httpserver: HTTPServer, db_file):
    httpserver.expect_request("/gone").respond_with_data("gone", status=410)
    httpserver.expect_request("/ok").respond_with_data("ok")
    rules = [
        rule_file(rule_yaml(httpserver.url_for("/gone"), name="a")),
        rule_file(rule_yaml(httpserver.url_for("/gone"), name="b")),
        rule_file(rule_yaml(httpserver.url_for("/ok"), name="c")),
    ]
    args = [arg for path in rules for arg in ("-r", path)]
    assert cli("fire", *args, event_file(events_ndjson(2))).exit_code == 1
    before = {(d["rule"], d["event_id"]): d for d in deliveries(db_file)}

    replayed = cli("replay", "--status", "failed", "--since", "1d", "--rule", "a")
    assert replayed.exit_code == 0, replayed.stderr
    assert replayed.stderr == "2 deliveries queued again\n"
    after = {(d["rule"], d["event_id"]): d for d in deliveries(db_file)}
    assert {k: d["status"] for k, d in after.items()} == {
        ("a", "evt_0"): "pending",
        ("a", "evt_1"): "pending",
        ("b", "evt_0"): "failed",
        ("b", "evt_1"): "failed",
        ("c", "evt_0"): "succeeded",
        ("c", "evt_1"): "succeeded",
    }
    assert {k: d["id"] for k, d in after.items()} == {k: d["id"] for k, d in before.items()}

    nothing = cli("replay", "--status", "failed", "--since", "1d", "--rule", "c")
    assert nothing.exit_code == 0 and nothing.stderr == "0 deliveries queued again\n"


def test_replay_now_sends_only_the_replayed_deliveries(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file
):
    fail_then_succeed(httpserver, "/gone")
    httpserver.expect_request("/later").respond_with_data("busy", status=503)
    replay_me = rule_file(rule_yaml(httpserver.url_for("/gone"), name="replay-me"))
    waiting = rule_file(rule_yaml(httpserver.url_for("/later"), name="waiting", retry="movidesk"))
    assert cli("fire", "-r", replay_me, "-r", waiting, event_file(event(3))).exit_code == 1
    by_rule = {d["rule"]: d for d in deliveries(db_file)}
    assert by_rule["waiting"]["status"] == "pending"
    httpserver.clear_log()

    result = cli("replay", by_rule["replay-me"]["id"], "--now", "--json")
    assert result.exit_code == 0, result.stderr
    (report,) = ndjson(result.stdout)
    assert (report["id"], report["status"]) == (by_rule["replay-me"]["id"], "succeeded")
    assert [r.path for r, _ in httpserver.log] == ["/gone"]
    assert httpserver.log[0][0].headers["webhook-id"] == by_rule["replay-me"]["id"]
    # The other pending delivery is due in 30 s; --now must not have touched it.
    after = {d["rule"]: d for d in deliveries(db_file)}
    assert after["waiting"]["attempts"] == 1 and after["waiting"]["status"] == "pending"


def test_replay_now_sends_due_pending_deliveries_it_did_not_replay_no_more(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file
):
    fail_then_succeed(httpserver, "/gone")
    httpserver.expect_request("/soon").respond_with_data("busy", status=503)
    replay_me = rule_file(rule_yaml(httpserver.url_for("/gone"), name="replay-me"))
    due = rule_file(rule_yaml(httpserver.url_for("/soon"), name="due", retry="{schedule: [1ms]}"))
    assert cli("fire", "-r", replay_me, "-r", due, event_file(event(4))).exit_code == 1
    wait_until_due(db_file)  # `due` is now due: a whole retry-loop pass would send it
    target = next(d["id"] for d in deliveries(db_file) if d["rule"] == "replay-me")
    httpserver.clear_log()
    assert cli("replay", target, "--now").exit_code == 0
    assert [r.path for r, _ in httpserver.log] == ["/gone"]


def test_replay_now_that_fails_again_exits_1(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file
):
    httpserver.expect_request("/hook").respond_with_data("gone", status=410)
    rules = rule_file(rule_yaml(httpserver.url_for("/hook")))
    assert cli("fire", "-r", rules, event_file(event(1))).exit_code == 1
    (row,) = deliveries(db_file)
    result = cli("replay", row["id"], "--now")
    assert result.exit_code == 1
    assert result.stdout.startswith("failed") and "HTTP 410" in result.stdout
    assert [r.headers["webhook-id"] for r, _ in httpserver.log] == [row["id"]] * 2


def test_replay_unknown_id_is_a_usage_error(cli, rule_file, event_file, httpserver, db_file):
    httpserver.expect_request("/hook").respond_with_data("ok")
    assert (
        cli(
            "fire", "-r", rule_file(rule_yaml(httpserver.url_for("/hook"))), event_file(event(1))
        ).exit_code
        == 0
    )
    result = cli("replay", "msg_NOPE")
    assert result.exit_code == 2
    assert result.stderr == "Error: no delivery 'msg_NOPE'\n"
    assert cli("replay").exit_code == 2  # nothing selected
    mixed = cli("replay", deliveries(db_file)[0]["id"], "--status", "failed")
    assert mixed.exit_code == 2 and "by id or by filters, not both" in mixed.stderr
    assert deliveries(db_file)[0]["status"] == "succeeded"


def test_rerunning_a_batch_file_sends_nothing_new(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file
):
    httpserver.expect_request("/hook").respond_with_data("ok")
    rules = rule_file(rule_yaml(httpserver.url_for("/hook")))
    batch = event_file(events_ndjson(20), name="batch.ndjson")
    first = cli("fire", "-r", rules, batch, "--json")
    assert first.exit_code == 0
    ids = {r["event_id"]: r["id"] for r in ndjson(first.stdout)}

    again = cli("fire", "-r", rules, batch, "--json")
    assert again.exit_code == 0
    reports = ndjson(again.stdout)
    assert {r["status"] for r in reports} == {"duplicate"}
    assert {r["event_id"]: r["id"] for r in reports} == ids  # points at the original delivery
    assert "20 events, 20 deliveries: 20 duplicates" in again.stderr
    assert len(httpserver.log) == 20 and len(deliveries(db_file)) == 20

    with batch.open("a", encoding="utf-8") as f:  # the batch grew: only the new events go out
        f.write(events_ndjson(5, start=20))
    grown = cli("fire", "-r", rules, batch)
    assert "25 events, 25 deliveries: 5 succeeded, 20 duplicates" in grown.stderr
    assert len(httpserver.log) == 25

    forced = cli("fire", "-r", rules, batch, "--force", "--json")
    assert {r["status"] for r in ndjson(forced.stdout)} == {"succeeded"}
    assert len(httpserver.log) == 50 and len(deliveries(db_file)) == 50
    sent_ids = [r.headers["webhook-id"] for r, _ in httpserver.log]
    assert len(set(sent_ids)) == 50  # a forced send is a new delivery, with a new id


def test_identical_events_without_id_are_one_event(
    cli, rule_file, event_file, httpserver: HTTPServer
):
    httpserver.expect_request("/hook").respond_with_data("ok")
    rules = rule_file(rule_yaml(httpserver.url_for("/hook")))
    same = {"event": "ticket.created", "ticket": {"id": 9, "subject": "Olá"}}
    other = {"event": "ticket.created", "ticket": {"id": 9, "subject": "Olá!"}}
    text = "".join(json.dumps(e) + "\n" for e in (same, other, same))
    result = cli("fire", "-r", rules, event_file(text), "--json")
    statuses = sorted(r["status"] for r in ndjson(result.stdout))
    assert statuses == ["duplicate", "succeeded", "succeeded"]
    assert len(httpserver.log) == 2


def test_the_same_event_for_two_rules_is_not_a_duplicate(
    cli, rule_file, event_file, httpserver: HTTPServer
):
    httpserver.expect_request("/hook").respond_with_data("ok")
    rules = [rule_file(rule_yaml(httpserver.url_for("/hook"), name=n)) for n in ("a", "b")]
    result = cli("fire", "-r", rules[0], "-r", rules[1], event_file(event(1)), "--json")
    assert [r["status"] for r in ndjson(result.stdout)] == ["succeeded", "succeeded"]


def test_a_replay_that_fails_again_notifies_again(
    cli, rule_file, event_file, httpserver: HTTPServer, free_port, db_file
):
    httpserver.expect_request("/alert").respond_with_data("noted")
    rules = rule_file(
        rule_yaml(f"http://127.0.0.1:{free_port}/hook")
        + f"on_failure: {{url: '{httpserver.url_for('/alert')}', body: {{id: '{{{{ delivery.id }}}}'}}}}\n"
    )
    fired = cli("fire", "-r", rules, event_file(event(1)), "--json")
    failed = next(r for r in ndjson(fired.stdout) if r["rule"] == "r1")
    assert failed["status"] == "failed" and len(httpserver.log) == 1

    again = cli("replay", failed["id"], "--now", "--json")
    assert again.exit_code == 1
    reports = {r["rule"]: r for r in ndjson(again.stdout)}
    assert reports["r1"]["status"] == "failed"
    assert reports["r1:on_failure"]["status"] == "succeeded"
    assert [r.get_json()["id"] for r, _ in httpserver.log] == [failed["id"]] * 2
    notices = [d for d in deliveries(db_file) if d["rule"] == "r1:on_failure"]
    assert len(notices) == 2
