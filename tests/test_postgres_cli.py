"""Every command on `--db postgresql://...`: fire, retry-loop, log, log ID, replay, purge, stats,
db path, endpoints (pause and resume under a running retry-loop), plan over stored events."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hookctl.store import open_store
from hookctl.store.event_records import NewEvent
from hookctl.store.ids import new_event_id
from hookctl.store.sqlite.events import MAX_STORED_EVENT_BYTES
from tests.conftest import ndjson
from tests.receivers import Receiver, events_ndjson, hookctl, rule_yaml, wait_for
from tests.test_plan import by_rule, counts, fired, plan, v2, write_rules  # noqa: F401


def test_the_commands_work_on_postgres(
    cli: Any, pg_url: str, rule_file: Any, event_file: Any, monkeypatch: Any
) -> None:
    receiver = Receiver().start()
    try:
        receiver.status = 503
        rules = rule_file(rule_yaml(receiver.url, retry="{every: 10ms, retries: 5}"))
        monkeypatch.setenv("HOOKCTL_DB", pg_url)
        fired = cli("fire", "-r", rules, event_file(events_ndjson(3)), "--json")
        assert fired.exit_code == 0, fired.stderr
        assert {r["status"] for r in ndjson(fired.stdout)} == {"pending"}
        receiver.status = 200
        time.sleep(0.05)
        looped = cli("retry-loop", "--json")
        assert looped.exit_code == 0, looped.stderr
        assert {r["status"] for r in ndjson(looped.stdout)} == {"succeeded"}
        listed = ndjson(cli("log", "--json").stdout)
        assert [r["attempts"] for r in listed] == [2, 2, 2]
        one = json.loads(cli("log", listed[0]["id"][:22], "--json").stdout)
        assert one["attempts"] == 2
        assert [a["status_code"] for a in one["attempts_detail"]] == [503, 200]
        replayed = cli("replay", "--status", "succeeded", "--now", "--json")
        assert replayed.exit_code == 0, replayed.stderr
        stats = json.loads(cli("stats", "--json").stdout)
        assert stats["by_status"]["succeeded"] == 3 and stats["attempts"] == 9
        assert cli("purge", "--older-than", "0s").exit_code == 0
        assert cli("log", "--json").stdout == ""
        assert receiver.ids() == dict.fromkeys([r["id"] for r in listed], 3)
    finally:
        receiver.stop()


def test_db_path_masks_the_password(cli: Any) -> None:
    url = "postgresql://hookctl:s3cret@db.example:5432/hooks?sslmode=require&password=also"
    shown = cli("db", "path", "--db", url).stdout.strip()
    assert shown == "postgresql://hookctl:***@db.example:5432/hooks?sslmode=require&password=***"


def test_missing_driver_names_the_extra() -> None:
    # psycopg made unimportable, as on an install without the extra.
    code = (
        "import sys; sys.modules['psycopg'] = None; from hookctl.cli import main; "
        "sys.argv = ['hookctl', 'log', '--db', 'postgresql://u@/db?host=/nonexistent']; main()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2  # BackendUnavailable: a usage error, as for an unknown scheme
    assert done.stderr.strip().splitlines() == [
        "Error: the PostgreSQL backend needs psycopg: pip install 'hookctl[postgres]' "
        "(or use a SQLite file for --db)"
    ]


# --- endpoints, pause/resume and plan on PostgreSQL (every command on both backends) ---------


@pytest.fixture
def on_postgres(pg_url: str, monkeypatch: Any) -> str:
    """HOOKCTL_DB is a fresh PostgreSQL database (listed before `fired`: set before it runs)."""
    monkeypatch.setenv("HOOKCTL_DB", pg_url)
    return pg_url


def _log(cli: Any) -> list[dict[str, Any]]:
    result = cli("log", "--json", "-n", "0")
    assert result.exit_code == 0, result.stderr
    return ndjson(result.stdout)


def test_pause_holds_a_running_retry_loop_until_resume_on_postgres(
    cli: Any, on_postgres: str, rule_file: Any, event_file: Any
) -> None:
    receiver = Receiver().start()
    try:
        endpoint = receiver.url.rsplit("/", 1)[0]
        rules = rule_file(rule_yaml(receiver.url, retry="{every: 10ms, retries: 2}"))
        paused = cli("endpoints", "pause", endpoint.split("://")[1], "--reason", "maintenance")
        assert paused.exit_code == 0, paused.stderr
        assert f"Paused {endpoint}" in paused.stderr
        fired = cli("fire", "-r", rules, event_file(events_ndjson(3)), "--json")
        assert fired.exit_code == 1  # held, nothing sent
        assert [(r["status"], r["held"]) for r in ndjson(fired.stdout)] == [("pending", True)] * 3
        # Another process polling every 50 ms (and woken by every NOTIFY): it must claim nothing.
        loop = hookctl("retry-loop", "--every", "50ms", "--json")
        try:
            time.sleep(0.8)
            assert receiver.arrived() == 0 and loop.poll() is None
            logged = _log(cli)
            assert [(d["status"], d["attempts"]) for d in logged] == [("pending", 0)] * 3
            assert all(f"endpoint {endpoint} paused since" in d["waiting"] for d in logged)
            listed = ndjson(cli("endpoints", "--json").stdout)
            assert [(r["endpoint"], r["paused"], r["paused_reason"]) for r in listed] == [
                (endpoint, True, "maintenance")
            ]
            resumed = cli("endpoints", "resume", receiver.url)
            assert resumed.exit_code == 0 and f"Resumed {endpoint}" in resumed.stderr
            wait_for(
                lambda: [d["status"] for d in _log(cli)] == ["succeeded"] * 3,
                what="the loop to deliver the backlog",
            )
        finally:
            loop.send_signal(signal.SIGTERM)
            out, err = loop.communicate(timeout=30)
        assert loop.returncode == 0, err
        assert [r["status"] for r in ndjson(out)] == ["succeeded"] * 3
        assert sorted(receiver.ids().values()) == [1, 1, 1]  # each sent once, after resume
        assert all(d["attempts"] == 1 and d["waiting"] is None for d in _log(cli))
    finally:
        receiver.stop()


def test_endpoints_lists_health_and_refuses_bad_names_on_postgres(
    cli: Any, on_postgres: str, rule_file: Any, event_file: Any
) -> None:
    receiver = Receiver().start()
    try:
        rules = rule_file(rule_yaml(receiver.url))
        assert cli("fire", "-r", rules, event_file(events_ndjson(2))).exit_code == 0
        receiver.status = 500
        assert cli("fire", "-r", rules, event_file(events_ndjson(1, start=5))).exit_code == 1
    finally:
        receiver.stop()
    listed = cli("endpoints", "--json")
    assert listed.exit_code == 0, listed.stderr
    (record,) = ndjson(listed.stdout)
    assert record["endpoint"] == receiver.url.rsplit("/", 1)[0]
    assert (record["pending"], record["failed"], record["attempts"]) == (0, 1, 3)
    assert record["successes"] == 2 and record["success_rate"] == round(2 / 3, 4)
    assert record["p95_ms"] is not None and record["last_success_at"] is not None
    assert record["paused"] is False and record["paused_since"] is None
    lines = cli("endpoints").stdout.splitlines()
    assert lines[0].split("\t")[:3] == ["Endpoint", "State", "Pending"]
    assert lines[1].split("\t")[1] == "active" and "67% of 3" in lines[1]
    # Pausing names never seen, an ambiguous resume, twice paused, never paused.
    assert cli("endpoints", "pause", "https://h.example").exit_code == 0
    assert cli("endpoints", "pause", "http://h.example:443").exit_code == 0
    ambiguous = cli("endpoints", "resume", "h.example:443")
    assert ambiguous.exit_code == 2
    assert "matches http://h.example:443, https://h.example:443" in ambiguous.stderr
    again = cli("endpoints", "pause", "https://H.example:443/x")
    assert again.exit_code == 0 and "was paused already" in again.stderr
    assert cli("endpoints", "resume", "nothing.example").stderr.endswith("was not paused.\n")
    states = {r["endpoint"]: r["paused"] for r in ndjson(cli("endpoints", "--json").stdout)}
    assert states == {
        record["endpoint"]: False,
        "http://h.example:443": True,
        "https://h.example:443": True,
    }


def test_plan_over_events_stored_on_postgres(
    cli: Any,
    on_postgres: str,
    fired: dict[str, Any],  # noqa: F811  (the fixture of tests/test_plan.py, on PostgreSQL)
    tmp_path: Path,
    httpserver: Any,
) -> None:
    unchanged = plan(cli, "-r", fired["rules"])
    assert unchanged[0] == 0, unchanged[2]
    assert unchanged[1][-1]["events"] == 9 and unchanged[1][-1]["differs"] is False
    new = write_rules(tmp_path / "new", v2(fired["base"]))
    code, records, stderr = plan(cli, "-r", new)
    assert code == 2, stderr
    assert {n: (r["status"], counts(r)) for n, r in by_rule(records).items()} == {
        "urgent": ("kept", (0, 2, 0, 2)),
        "created-all": ("renamed", (0, 0, 6, 0)),
        "low": ("new", (2, 0, 0, 0)),
        "legacy": ("deleted", (0, 2, 0, 0)),
    }
    log = {d["id"]: d for d in fired["log"]}
    changed = [r for r in records if r["record"] == "example" and r["kind"] == "changed"]
    assert changed and all(log[e["delivery_id"]]["rule"] == "all-created" for e in changed)
    # Duplicates, an old event outside the default window, and one stored truncated.
    assert cli("fire", "-r", fired["rules"], fired["events"]).exit_code == 0
    now = time.time()
    old = now - 10 * 86400
    big = {"event": "ticket.created", "id": "big", "ticket": {"id": 99, "urgency": "Low"}}
    big["pad"] = "x" * MAX_STORED_EVENT_BYTES
    low_old = {"event": "ticket.created", "id": "old", "ticket": {"id": 98, "urgency": "Low"}}
    with open_store(on_postgres) as store:
        store.enqueue(
            [],
            now=now,
            events=[
                NewEvent(new_event_id(old), old, "old.json", 1, "old", "ticket.created", "98", low_old),
                NewEvent(new_event_id(now), now, "big.json", 1, "big", "ticket.created", "99", big),
            ],
        )  # fmt: skip
    _, records, _ = plan(cli, "-r", new)
    summary = records[-1]
    assert (summary["events"], summary["duplicates"], summary["truncated"]) == (9, 9, 1)
    assert counts(by_rule(records)["low"]) == (2, 0, 0, 0)
    _, records, _ = plan(cli, "-r", new, "--since", "30d")
    assert counts(by_rule(records)["low"]) == (3, 0, 0, 0)
    assert httpserver.log == []  # a plan sends nothing
