"""Sending again: `hookctl replay` (same delivery id) and duplicate suppression on `fire`."""

from __future__ import annotations

import json

import pytest
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
    assert row["status"] == "pending" and row["next_attempt_at"]
    assert (row["attempts"], row["replays"]) == (1, 1)  # over its life, with the replay beside
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


# --- issue 12.1: a request that could not be rendered is never sent as stored ------------------

TG_RULE = """\
name: tg
on: [ticket.created]
webhook:
  url: "{base}/bot{{{{ env.TG_TOKEN }}}}/sendMessage"
  body:
    chat_id: "{{{{ env.TG_CHAT }}}}"
    text: "{{{{ ticket.{field} }}}}"
retry: movidesk
"""
TICKET = {"event": "ticket.created", "id": "evt_tg", "ticket": {"id": 4711, "subject": "Fire"}}


def tg_rule(rule_file, base: str, field: str = "subject", name: str = "tg.yaml"):  # type: ignore[no-untyped-def]
    return rule_file(TG_RULE.format(base=base, field=field), name=name)


def test_a_misspelt_field_fails_unsent_and_a_replay_renders_the_fixed_rule(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file, monkeypatch
):
    monkeypatch.setenv("TG_TOKEN", "123:abc")
    monkeypatch.setenv("TG_CHAT", "42")
    httpserver.expect_request("/bot123:abc/sendMessage").respond_with_data("ok")
    rules = tg_rule(rule_file, httpserver.url_for("").rstrip("/"), field="subjet")
    fired = cli("fire", "-r", rules, event_file(TICKET))
    assert fired.exit_code == 1
    assert (
        "cannot render: webhook.body.text: ticket has no field 'subjet' (did you mean 'subject'?)"
        in (fired.stdout)
    )
    assert "nothing sent" in fired.stdout and "attempt" not in fired.stdout  # not an attempt
    (row,) = deliveries(db_file)
    assert (row["status"], row["attempts"], row["unrendered"]) == ("failed", 0, 1)
    assert attempts(db_file) == [] and httpserver.log == []

    # Without the rules it cannot be rendered again: refused, and still not sent bare.
    refused = cli("replay", row["id"], "--now")
    assert refused.exit_code == 1
    assert f"{row['id']}: not replayed: its request was never rendered" in refused.stderr
    assert "0 deliveries queued again, 1 not replayed" in refused.stderr
    still = cli("replay", "-r", rules, row["id"], "--now")
    assert still.exit_code == 1 and "not replayed: still cannot render:" in still.stderr
    assert httpserver.log == [] and deliveries(db_file)[0]["status"] == "failed"

    tg_rule(rule_file, httpserver.url_for("").rstrip("/"), field="subject")  # the fix, same file
    replayed = cli("replay", "-r", rules, row["id"], "--now", "--json")
    assert replayed.exit_code == 0, replayed.stderr
    assert f"{row['id']}: re-rendered from rule tg as it is now ({rules}:1)" in replayed.stderr
    (report,) = ndjson(replayed.stdout)
    assert (report["id"], report["status"], report["attempts"]) == (row["id"], "succeeded", 1)
    ((request, _),) = httpserver.log
    assert request.path == "/bot123:abc/sendMessage"  # exactly the request the rule meant
    assert request.get_json() == {"chat_id": "42", "text": "Fire"}
    assert request.headers["webhook-id"] == row["id"]
    (row,) = deliveries(db_file)
    assert (row["status"], row["unrendered"], row["attempts"]) == ("succeeded", 0, 1)


def test_an_unset_variable_holds_the_delivery_and_a_replay_sends_what_the_rule_meant(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file, monkeypatch
):
    monkeypatch.delenv("TG_TOKEN", raising=False)
    monkeypatch.setenv("TG_CHAT", "42")
    httpserver.expect_request("/bot123:abc/sendMessage").respond_with_data("ok")
    rules = tg_rule(rule_file, httpserver.url_for("").rstrip("/"))
    fired = cli("fire", "-r", rules, event_file(TICKET), "--json")
    assert fired.exit_code == 1
    (report,) = ndjson(fired.stdout)
    assert report["status"] == "pending" and report["held"]
    assert report["error"] == "held: environment variable TG_TOKEN is not set"
    (row,) = deliveries(db_file)
    assert (row["unrendered"], row["attempts"]) == (0, 0) and httpserver.log == []

    monkeypatch.setenv("TG_TOKEN", "123:abc")
    replayed = cli("replay", row["id"], "--now")  # no rules needed: the request is complete
    assert replayed.exit_code == 0, replayed.stderr
    assert replayed.stdout.startswith("succeeded tg ticket 4711")
    ((request, _),) = httpserver.log
    assert request.path == "/bot123:abc/sendMessage"
    assert request.get_json() == {"chat_id": "42", "text": "Fire"}


def test_replay_of_a_mixed_set_does_the_right_thing_for_each(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file, monkeypatch, tmp_path
):
    monkeypatch.setenv("TG_TOKEN", "123:abc")
    monkeypatch.setenv("TG_CHAT", "42")
    fail_then_succeed(httpserver, "/gone")
    httpserver.expect_request("/bot123:abc/sendMessage").respond_with_data("ok")
    base = httpserver.url_for("").rstrip("/")
    rendered = rule_file(rule_yaml(httpserver.url_for("/gone"), name="sent-once"), name="a.yaml")
    tg_rule(rule_file, base, field="subjet", name="b.yaml")  # fixed below
    rule_file(
        TG_RULE.format(base=base, field="nope").replace("name: tg", "name: broken"), name="c.yaml"
    )
    removed = rule_file(
        TG_RULE.format(base=base, field="gone").replace("name: tg", "name: removed"),
        name="d.yaml",
    )
    rules_dir = rendered.parent
    assert cli("fire", "-r", rules_dir, event_file(TICKET)).exit_code == 1
    ids = {d["rule"]: d["id"] for d in deliveries(db_file)}
    assert {d["rule"]: d["status"] for d in deliveries(db_file)} == dict.fromkeys(ids, "failed")
    assert [r.path for r, _ in httpserver.log] == ["/gone"]
    httpserver.clear_log()

    tg_rule(rule_file, base, field="subject", name="b.yaml")  # fixed
    removed.unlink()  # and one rule is gone
    result = cli("replay", "-r", rules_dir, "--status", "failed", "--now", "--json")
    assert result.exit_code == 1  # two could not be replayed
    assert f"{ids['tg']}: re-rendered from rule tg as it is now" in result.stderr
    assert f"{ids['broken']}: not replayed: still cannot render:" in result.stderr
    assert "ticket has no field 'nope'" in result.stderr
    assert f"{ids['removed']}: not replayed: no rule named 'removed' in {rules_dir} now" in (
        result.stderr
    )
    assert "2 deliveries queued again, 2 not replayed" in result.stderr
    reports = {r["rule"]: r["status"] for r in ndjson(result.stdout)}
    assert reports == {"sent-once": "succeeded", "tg": "succeeded"}
    assert sorted(r.path for r, _ in httpserver.log) == ["/bot123:abc/sendMessage", "/gone"]
    after = {d["rule"]: (d["status"], d["unrendered"]) for d in deliveries(db_file)}
    assert after == {
        "sent-once": ("succeeded", 0),
        "tg": ("succeeded", 0),
        "broken": ("failed", 1),
        "removed": ("failed", 1),
    }


def test_an_unrendered_delivery_left_pending_by_a_crash_is_never_sent_bare(
    cli, httpserver: HTTPServer, db_file
):
    from hookctl.store import open_store
    from hookctl.store.ids import new_delivery_id
    from hookctl.store.records import NewDelivery

    url = httpserver.url_for("/bot{{ env.TG_TOKEN }}/x")
    now = __import__("time").time()
    with open_store(db_file) as store:  # as fire leaves it when killed before recording the failure
        store.enqueue(
            [
                NewDelivery(
                    id=new_delivery_id(now), rule="tg", event_id="e", event_name="ticket.created",
                    ticket="1", dedupe_key=None, method="POST", url=url,
                    request={"method": "POST", "url": url, "headers": [], "body": None},
                    policy={"name": "none", "schedule": []}, timeout=3.0, accept="2xx-3xx",
                    unrendered=True,
                )
            ],
            now=now,
        )  # fmt: skip
    result = cli("retry-loop", "--json")
    assert result.exit_code == 1
    (report,) = ndjson(result.stdout)
    assert report["status"] == "failed" and report["error"].startswith("cannot render:")
    assert httpserver.log == [] and attempts(db_file) == []


@pytest.mark.sqlite
def test_a_database_from_before_marks_its_unrendered_deliveries_and_counts_attempts(
    cli, tmp_path, httpserver: HTTPServer
):
    """Rows written before m005: the bare request of a render failure is marked, never sent;
    a replayed delivery's count is fixed up from its attempt log."""
    import sqlite3
    import time

    import sqlite_utils

    from hookctl.store.ids import new_delivery_id
    from hookctl.store.sqlite import migrations

    db = tmp_path / "old.db"
    conn = sqlite3.connect(db, isolation_level=None)
    old = sqlite_utils.Database(conn)
    for migration in (migrations.m001_initial, migrations.m002_request_body):
        migration(old)
    conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    conn.executemany(
        "INSERT INTO _migrations VALUES (?, 0)", [("m001_initial",), ("m002_request_body",)]
    )
    bare_url = httpserver.url_for("/bot{{ env.TG_TOKEN }}/x")
    now = time.time()
    bare, replayed = new_delivery_id(now), new_delivery_id(now + 0.01)
    for delivery_id, status, count, error, url in (
        (bare, "failed", 1, "cannot render the request: webhook.url: environment variable "
         "TG_TOKEN is not set", bare_url),
        (replayed, "succeeded", 1, None, httpserver.url_for("/ok")),
    ):  # fmt: skip
        conn.execute(
            "INSERT INTO deliveries (id, rule, status, attempts, url, method, request, policy, "
            "timeout, accept, created_at, updated_at) VALUES (?, 'tg', ?, ?, ?, 'POST', ?, "
            '\'{"name": "none", "schedule": []}\', 3, \'2xx-3xx\', ?, ?)',
            (delivery_id, status, count, url, json.dumps({"method": "POST", "url": url}), now, now),
        )
        conn.execute("UPDATE deliveries SET error = ? WHERE id = ?", (error, delivery_id))
    # The replayed one: two attempts logged, its count restarted at the replay.
    conn.executemany(
        "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, error)"
        " VALUES (?, ?, ?, 1, ?, ?)",
        [
            (bare, 1, now, None, "cannot render the request: webhook.url: ..."),
            (replayed, 1, now, 500, "HTTP 500"),
            (replayed, 2, now, 200, None),
        ],
    )
    conn.close()

    (record,) = ndjson(cli("log", replayed, "--db", db, "--json").stdout)
    assert (record["attempts"], record["replays"]) == (2, 1)
    refused = cli("replay", bare, "--db", db, "--now", "-r", tmp_path)
    assert refused.exit_code in (1, 2)
    assert httpserver.log == []  # the bare template was never sent
    assert cli("log", bare, "--db", db, "--json").exit_code == 0
    (row,) = ndjson(cli("log", bare, "--db", db, "--json").stdout)
    assert row["unrendered"] is True and row["status"] == "failed"


# --- issue 12.4: one meaning for "attempts" ---------------------------------------------------


def test_attempts_mean_the_same_in_the_list_the_detail_json_and_messages_after_replays(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file
):
    httpserver.expect_request("/hook").respond_with_data("down", status=500)
    rules = rule_file(rule_yaml(httpserver.url_for("/hook"), retry="{schedule: [1ms]}"))
    fired = cli("fire", "-r", rules, event_file(event(1)))
    assert "HTTP 500" in fired.stdout and "; attempt 1, next at" in fired.stdout
    wait_until_due(db_file)
    again = cli("retry-loop")
    assert "failed after 2 attempts" in again.stdout
    (row,) = deliveries(db_file)

    replayed = cli("replay", row["id"], "--now")
    # The policy starts again (one retry left), the count goes on: the third attempt.
    assert "; attempt 3, 1 replay, next at" in replayed.stdout
    wait_until_due(db_file)
    last = cli("retry-loop")
    assert "failed after 4 attempts, 1 replay" in last.stdout

    table = cli("log").stdout.splitlines()
    assert table[1].split("\t")[2] == "4 (1 replay)"
    (record,) = ndjson(cli("log", "--json").stdout)
    assert (record["attempts"], record["replays"]) == (4, 1)
    detail = cli("log", row["id"]).stdout
    assert "\n4 attempts, 1 replay\n" in detail
    assert [n for n in range(1, 6) if f"\nattempt {n}  " in detail] == [1, 2, 3, 4]
    (full,) = ndjson(cli("log", row["id"], "--json").stdout)
    assert full["attempts"] == len(full["attempts_detail"]) == 4
