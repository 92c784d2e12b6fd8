"""`hookctl endpoints`, `pause`, `resume` (issue 15): holding a receiver's deliveries, its health."""

from __future__ import annotations

import signal
import time

from tests.conftest import ndjson
from tests.receivers import Receiver, event, events_ndjson, hookctl, rule_yaml, wait_for


def _log(cli) -> list[dict]:
    result = cli("log", "--json", "-n", "0")
    assert result.exit_code == 0, result.stderr
    return ndjson(result.stdout)


def test_pause_holds_fire_and_a_running_retry_loop_until_resume(
    cli, rule_file, event_file, db_file
):
    receiver = Receiver().start()
    try:
        endpoint = receiver.url.rsplit("/", 1)[0]  # http://127.0.0.1:PORT
        rules = rule_file(rule_yaml(receiver.url, retry="{every: 10ms, retries: 2}"))
        paused = cli("endpoints", "pause", endpoint.split("://")[1], "--reason", "maintenance")
        assert paused.exit_code == 0, paused.stderr
        assert f"Paused {endpoint}" in paused.stderr

        fired = cli("fire", "-r", rules, event_file(events_ndjson(3)), "--json")
        assert fired.exit_code == 1  # held, nothing sent: cron hears of it
        reports = ndjson(fired.stdout)
        assert [(r["status"], r["attempts"], r["held"]) for r in reports] == [
            ("pending", 0, True)
        ] * 3
        assert f"endpoint {endpoint} paused since" in reports[0]["error"]

        # Another process, polling the whole time: it claims nothing while the endpoint is paused.
        loop = hookctl("retry-loop", "--every", "20ms", "--json")
        try:
            time.sleep(0.5)  # many passes of the loop; none may send
            assert receiver.arrived() == 0
            logged = _log(cli)
            assert [(d["status"], d["attempts"]) for d in logged] == [("pending", 0)] * 3
            assert {d["endpoint"] for d in logged} == {endpoint}
            assert all(f"endpoint {endpoint} paused since" in d["waiting"] for d in logged)
            one = cli("log", logged[0]["id"])
            assert f"waiting: endpoint {endpoint} paused since" in one.stdout

            resumed = cli("endpoints", "resume", receiver.url)  # a URL names it too
            assert resumed.exit_code == 0 and f"Resumed {endpoint}" in resumed.stderr
            wait_for(
                lambda: [d["status"] for d in _log(cli)] == ["succeeded"] * 3,
                what="the loop to deliver the backlog",
            )
        finally:
            loop.send_signal(signal.SIGINT)
            _out, err = loop.communicate(timeout=30)
        assert loop.returncode == 0, err
        assert sorted(receiver.ids().values()) == [1, 1, 1]  # each sent once, after resume
        assert all(d["attempts"] == 1 and d["waiting"] is None for d in _log(cli))
    finally:
        receiver.stop()


def test_a_paused_endpoint_does_not_hold_another(cli, rule_file, event_file, free_port):
    live = Receiver().start()
    try:
        rule_file(rule_yaml(live.url, name="live"))
        rules = rule_file(rule_yaml(f"http://127.0.0.1:{free_port}/down", name="held")).parent
        assert cli("endpoints", "pause", f"http://127.0.0.1:{free_port}/").exit_code == 0
        fired = cli("fire", "-r", rules, event_file(event(1)), "--json")
        by_rule = {r["rule"]: r for r in ndjson(fired.stdout)}
        assert by_rule["live"]["status"] == "succeeded"
        assert (by_rule["held"]["status"], by_rule["held"]["attempts"]) == ("pending", 0)
        assert live.arrived() == 1
        retried = cli("retry-loop", "--json")
        assert retried.exit_code == 0 and retried.stdout == ""  # the held one is not due
    finally:
        live.stop()


def test_endpoints_lists_health_as_a_table_and_as_json(cli, rule_file, event_file):
    receiver = Receiver().start()
    try:
        rules = rule_file(rule_yaml(receiver.url))
        assert cli("fire", "-r", rules, event_file(events_ndjson(2))).exit_code == 0
        receiver.status = 500
        assert cli("fire", "-r", rules, event_file(events_ndjson(1, start=5))).exit_code == 1
        listed = cli("endpoints", "--json")
        assert listed.exit_code == 0, listed.stderr
        (record,) = ndjson(listed.stdout)
        assert record["endpoint"] == receiver.url.rsplit("/", 1)[0]
        assert (record["pending"], record["failed"], record["attempts"]) == (0, 1, 3)
        assert record["successes"] == 2 and record["success_rate"] == round(2 / 3, 4)
        assert record["p95_ms"] is not None and record["last_success_at"] is not None
        assert record["paused"] is False and record["paused_since"] is None
        table = cli("endpoints")
        lines = table.stdout.splitlines()
        assert lines[0].split("\t")[:3] == ["Endpoint", "State", "Pending"]
        assert lines[1].split("\t")[1] == "active" and "67% of 3" in lines[1]
    finally:
        receiver.stop()


def test_bad_or_ambiguous_endpoints_are_usage_errors(cli, rule_file, event_file, db_file):
    assert cli("endpoints", "pause", "http://").exit_code == 2
    assert cli("endpoints", "pause", ":8080").exit_code == 2
    assert cli("endpoints", "pause", "https://h.example").exit_code == 0
    assert cli("endpoints", "pause", "http://h.example:443").exit_code == 0
    ambiguous = cli("endpoints", "resume", "h.example:443")
    assert ambiguous.exit_code == 2
    assert "matches http://h.example:443, https://h.example:443" in ambiguous.stderr
    again = cli("endpoints", "pause", "https://H.example:443/x")
    assert again.exit_code == 0 and "was paused already" in again.stderr
    assert cli("endpoints", "resume", "nothing.example").stderr.endswith("was not paused.\n")
    assert cli("endpoints", "--window", "soon").exit_code == 2


def test_a_database_from_before_gets_its_endpoints_from_the_urls(cli, tmp_path):
    """Rows written before m008_endpoints: the migration names their endpoint from `url`, so
    they are listed, paused and resumed like new ones."""
    import json
    import sqlite3

    import sqlite_utils

    from hookctl.rules.policy import DEFAULT_POLICY
    from hookctl.store.ids import new_delivery_id
    from hookctl.store.sqlite import migrations

    receiver = Receiver().start()
    try:
        db = tmp_path / "old.db"
        conn = sqlite3.connect(db, isolation_level=None)
        old = sqlite_utils.Database(conn)
        before = migrations.MIGRATIONS[: migrations.MIGRATIONS.index(migrations.m008_endpoints)]
        for migration in before:
            migration(old)
        conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL)")
        conn.executemany("INSERT INTO _migrations VALUES (?, 0)", [(m.__name__,) for m in before])
        now = time.time()
        delivery_id = new_delivery_id(now)
        request = {"method": "POST", "url": receiver.url, "headers": [], "body": "{}"}
        conn.execute(
            "INSERT INTO deliveries (id, rule, status, attempts, url, method, request, policy, "
            "timeout, accept, created_at, updated_at, next_attempt_at) "
            "VALUES (?, 'r1', 'pending', 0, ?, 'POST', ?, ?, 3, '2xx-3xx', ?, ?, ?)",
            (delivery_id, receiver.url, json.dumps(request),
             json.dumps(DEFAULT_POLICY.to_dict()), now, now, now),
        )  # fmt: skip
        conn.close()
        endpoint = receiver.url.rsplit("/", 1)[0]

        (record,) = ndjson(cli("endpoints", "--json", "--db", db).stdout)
        assert (record["endpoint"], record["pending"]) == (endpoint, 1)
        assert cli("endpoints", "pause", endpoint.split("://")[1], "--db", db).exit_code == 0
        assert cli("retry-loop", "--db", db).exit_code == 0
        assert receiver.arrived() == 0
        assert cli("endpoints", "resume", endpoint, "--db", db).exit_code == 0
        assert cli("retry-loop", "--db", db).exit_code == 0
        assert receiver.ids() == {delivery_id: 1}
    finally:
        receiver.stop()
