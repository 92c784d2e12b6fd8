"""Stored events (issue 17): `fire` keeps every event it reads, with its deliveries, bounded.

State is read through the CLI (`log --json`) and the store's public methods, never raw SQL.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from pytest_httpserver import HTTPServer

from hookctl.store import open_store
from hookctl.store.event_records import NewEvent
from hookctl.store.ids import new_event_id
from hookctl.store.sqlite.events import MAX_STORED_EVENT_BYTES
from tests.conftest import ndjson
from tests.receivers import event, rule_yaml


def stored(db: Path) -> list:
    with open_store(db) as store:
        return list(store.stored_events())


def log(cli) -> dict[str, dict]:
    result = cli("log", "--json", "-n", "0")
    assert result.exit_code == 0, result.stderr
    return {r["id"]: r for r in ndjson(result.stdout)}


def test_fire_keeps_every_event_matched_or_not_with_its_deliveries(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file
):
    httpserver.expect_request("/hook").respond_with_data("ok")
    rules = rule_file(rule_yaml(httpserver.url_for("/hook")))
    other = {"event": "ticket.deleted", "id": "evt_x", "ticket": {"id": 9}}
    path = event_file("\n".join(json.dumps(e) for e in (event(1), other, event(2))) + "\n")
    before = time.time()
    assert cli("fire", "-r", rules, path).exit_code == 0
    events = stored(db_file)
    assert [(e.source, e.line, e.event_id, e.event_name, e.ticket) for e in events] == [
        (str(path), 1, "evt_1", "ticket.created", "1"),
        (str(path), 2, "evt_x", "ticket.deleted", "9"),
        (str(path), 3, "evt_2", "ticket.created", "2"),
    ]
    assert all(before <= e.received_at <= time.time() for e in events)
    assert [e.data for e in events] == [event(1), other, event(2)]
    assert not any(e.truncated for e in events)
    # The matched ones name their delivery; the unmatched one has none.
    by_delivery = log(cli)
    assert events[1].deliveries == {}
    for e in (events[0], events[2]):
        (delivery_id,) = e.deliveries.values()
        assert by_delivery[delivery_id]["event_id"] == e.event_id
        with open_store(db_file) as store:
            back = store.event_of(delivery_id)
        assert back is not None and back.id == e.id
    with open_store(db_file) as store:
        assert store.stored_event_rules() == {"r1"}
        assert store.stored_event(events[1].id) == events[1]


def test_a_duplicate_event_is_kept_and_points_at_the_earlier_delivery(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file
):
    httpserver.expect_request("/hook").respond_with_data("ok")
    rules = rule_file(rule_yaml(httpserver.url_for("/hook")))
    path = event_file(event(1))
    assert cli("fire", "-r", rules, path).exit_code == 0
    assert cli("fire", "-r", rules, path).exit_code == 0  # a duplicate: nothing sent
    first, second = stored(db_file)
    assert len(log(cli)) == 1
    assert first.deliveries == second.deliveries == {"r1": next(iter(log(cli)))}


def test_stdin_is_recorded_as_the_source(cli, rule_file, httpserver: HTTPServer, db_file):
    httpserver.expect_request("/hook").respond_with_data("ok")
    rules = rule_file(rule_yaml(httpserver.url_for("/hook")))
    assert cli("fire", "-r", rules, "-", input=json.dumps(event(3))).exit_code == 0
    (kept,) = stored(db_file)
    assert (kept.source, kept.line) == ("<stdin>", 1)


def test_bad_lines_are_not_events_and_the_rest_are_kept(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file
):
    httpserver.expect_request("/hook").respond_with_data("ok")
    rules = rule_file(rule_yaml(httpserver.url_for("/hook")))
    path = event_file(json.dumps(event(1)) + "\n{broken\n" + json.dumps(event(2)) + "\n")
    result = cli("fire", "-r", rules, path)
    assert result.exit_code == 1 and ":2: invalid JSON" in result.stderr
    assert [e.event_id for e in stored(db_file)] == ["evt_1", "evt_2"]


def test_keep_none_by_option_or_environment(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file
):
    httpserver.expect_request("/hook").respond_with_data("ok")
    rules = rule_file(rule_yaml(httpserver.url_for("/hook")))
    assert cli("fire", "--no-keep-events", "-r", rules, event_file(event(1))).exit_code == 0
    env = {"HOOKCTL_KEEP_EVENTS": "0"}
    assert cli("fire", "-r", rules, event_file(event(2)), env=env).exit_code == 0
    assert stored(db_file) == []
    assert {r["event_id"] for r in log(cli).values()} == {"evt_1", "evt_2"}  # still sent
    # And on again: the default keeps them.
    assert cli("fire", "-r", rules, event_file(event(3))).exit_code == 0
    assert [e.event_id for e in stored(db_file)] == ["evt_3"]


def test_dry_run_keeps_nothing(cli, rule_file, event_file, db_file):
    rules = rule_file(rule_yaml("https://example.com/hook"))
    assert cli("fire", "-n", "-r", rules, event_file(event(1))).exit_code == 0
    assert not db_file.exists()


def test_an_event_over_the_limit_is_stored_truncated_and_still_sent(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file
):
    httpserver.expect_request("/hook").respond_with_data("ok")
    rules = rule_file(rule_yaml(httpserver.url_for("/hook")))
    big = event(1, body="x" * (MAX_STORED_EVENT_BYTES + 10))
    assert cli("fire", "-r", rules, event_file(big)).exit_code == 0
    (kept,) = stored(db_file)
    assert kept.truncated and kept.data is None
    assert kept.size == len(json.dumps(big, separators=(",", ":")))
    assert kept.text is not None and len(kept.text) == MAX_STORED_EVENT_BYTES
    assert kept.text.startswith('{"event":"ticket.created"')
    assert [r["status"] for r in log(cli).values()] == ["succeeded"]


def test_an_event_and_its_deliveries_commit_together(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file
):
    # A store that cannot write the event must not keep (or send) its deliveries either.
    httpserver.expect_request("/hook").respond_with_data("ok")
    rules = rule_file(rule_yaml(httpserver.url_for("/hook")))
    open_store(db_file).close()
    conn = sqlite3.connect(db_file)  # a fault injected, not state read
    conn.execute("ALTER TABLE events RENAME TO events_elsewhere")
    conn.commit()
    conn.close()
    result = cli("fire", "-r", rules, event_file(event(1)))
    assert result.exit_code == 4 and "no such table: events" in result.stderr
    assert log(cli) == {}
    assert httpserver.log == []


def test_purge_removes_old_events_with_old_deliveries(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file
):
    httpserver.expect_request("/hook").respond_with_data("ok")
    rules = rule_file(rule_yaml(httpserver.url_for("/hook")))
    assert cli("fire", "-r", rules, event_file(event(1))).exit_code == 0
    old = time.time() - 40 * 86400
    with open_store(db_file) as store:
        store.enqueue(
            [],
            now=time.time(),
            events=[
                NewEvent(new_event_id(old + k), old + k, "old.json", 1, f"o{k}", None, None, {})
                for k in range(3)
            ],
        )
    assert len(stored(db_file)) == 4
    result = cli("purge", "--older-than", "30d")
    assert result.exit_code == 0
    assert result.stderr == "0 deliveries deleted, 3 stored events deleted\n"
    assert [e.event_id for e in stored(db_file)] == ["evt_1"]
    assert cli("purge", "--older-than", "30d").stderr == "0 deliveries deleted\n"


def test_a_time_window_reads_only_its_events(db_file):
    now = time.time()
    with open_store(db_file) as store:
        store.enqueue(
            [],
            now=now,
            events=[
                NewEvent(
                    new_event_id(now - d * 86400), now - d * 86400, "f", 1, str(d), None, None, {}
                )
                for d in (10, 5, 1)
            ],
        )
        assert [e.event_id for e in store.stored_events(since=now - 7 * 86400)] == ["5", "1"]
        assert [e.event_id for e in store.stored_events(until=now - 2 * 86400)] == ["10", "5"]


def test_many_events_are_read_back_a_page_at_a_time(db_file):
    now = time.time()
    with open_store(db_file) as store:
        batch = [
            NewEvent(new_event_id(now), now, "f", n, str(n), None, None, {"n": n})
            for n in range(1234)
        ]
        store.enqueue([], now=now, events=batch)
        assert sorted(e.data["n"] for e in store.stored_events()) == list(range(1234))
