"""`hookctl log`, `purge` and `db path`: the execution log and the database it lives in."""

from __future__ import annotations

import os
import pty
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from hookctl.rules.policy import PRESETS
from hookctl.store import open_store
from hookctl.store.ids import new_delivery_id
from hookctl.store.records import AttemptResult, NewDelivery
from tests.conftest import deliveries, ndjson
from tests.receivers import event, events_ndjson, problems, rule_yaml

DAY = 86400.0
LOG_FIELDS = {
    "id",
    "status",
    "attempts",
    "url",
    "error",
    "rule",
    "ticket",
    "event_id",
    "created_at",
    "updated_at",
    "next_attempt_at",
}


def record_old(db: Path, *, days: float, status: str, rule: str = "old", ticket: str = "1") -> str:
    """A delivery created and last attempted `days` ago, through the store with that clock."""
    then = time.time() - days * DAY
    new = NewDelivery(
        id=new_delivery_id(then),
        rule=rule,
        event_id=f"evt_old_{status}",
        event_name="ticket.created",
        ticket=ticket,
        dedupe_key=None,
        method="POST",
        url="http://127.0.0.1:9/old",
        request={"method": "POST", "url": "http://127.0.0.1:9/old", "headers": [], "body": None},
        policy=PRESETS["eddydesk"].to_dict(),
        timeout=3.0,
        accept="2xx-3xx",
    )
    with open_store(db) as store:
        store.enqueue([new], now=then)
        (claim,) = store.claim(now=then, limit=1, lease_seconds=60, token="t", ids=[new.id])
        code = 200 if status == "succeeded" else 500
        result = AttemptResult(
            delivery_id=claim.id,
            token="t",
            started_at=then,
            duration_ms=5.0,
            status_code=code,
            error=None if code == 200 else "HTTP 500",
            response_headers={},
            response_body="",
            status=status,  # type: ignore[arg-type]
            next_attempt_at=then + 1800 if status == "pending" else None,
        )
        assert store.complete([result], now=then) == [True]
    return new.id


@pytest.fixture
def mixed_log(cli, rule_file, event_file, httpserver: HTTPServer, db_file) -> dict[str, Any]:
    """Deliveries of three rules over two tickets: succeeded, failed and pending."""
    httpserver.expect_request("/ok").respond_with_data("ok")
    httpserver.expect_request("/gone").respond_with_data("gone", status=410)
    httpserver.expect_request("/busy").respond_with_data("busy", status=503)
    rules = [
        rule_file(rule_yaml(httpserver.url_for("/ok"), name="ok")),
        rule_file(rule_yaml(httpserver.url_for("/gone"), name="gone")),
        rule_file(rule_yaml(httpserver.url_for("/busy"), name="busy", retry="movidesk")),
    ]
    args = [arg for path in rules for arg in ("-r", path)]
    assert cli("fire", *args, event_file([event(1), event(2)])).exit_code == 1
    return {d["id"]: d for d in deliveries(db_file)}


def log_json(cli, *args: Any) -> list[dict[str, Any]]:
    result = cli("log", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return ndjson(result.stdout)


def test_log_json_has_every_field_newest_first(cli, mixed_log):
    records = log_json(cli)
    assert [r["id"] for r in records] == sorted(mixed_log, reverse=True)
    for r in records:
        assert set(r) >= LOG_FIELDS
        row = mixed_log[r["id"]]
        assert (r["status"], r["rule"], r["ticket"], r["event_id"]) == (
            row["status"],
            row["rule"],
            row["ticket"],
            row["event_id"],
        )
        assert r["attempts"] == 1 and r["url"].startswith("http://")
        assert r["created_at"].endswith("Z") and r["updated_at"].endswith("Z")
        assert (r["next_attempt_at"] is not None) == (r["status"] == "pending")
    errors = {r["rule"]: r["error"] for r in records}
    assert errors == {"ok": None, "gone": "HTTP 410", "busy": "HTTP 503"}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--status", "failed"], {("gone", "1"), ("gone", "2")}),
        (["--status", "pending"], {("busy", "1"), ("busy", "2")}),
        (["--rule", "ok"], {("ok", "1"), ("ok", "2")}),
        (["--ticket", "2"], {("ok", "2"), ("gone", "2"), ("busy", "2")}),
        (["--status", "succeeded", "--ticket", "1"], {("ok", "1")}),
        (["--rule", "busy", "--ticket", "1", "--since", "1h"], {("busy", "1")}),
    ],
)
def test_log_filters(cli, mixed_log, args, expected):
    assert {(r["rule"], r["ticket"]) for r in log_json(cli, *args)} == expected


def test_log_since_leaves_out_older_deliveries(cli, mixed_log, db_file):
    old = record_old(db_file, days=3, status="failed")
    assert old not in {r["id"] for r in log_json(cli, "--since", "1d")}
    assert old in {r["id"] for r in log_json(cli, "--since", "4d")}
    assert [r["id"] for r in log_json(cli, "--status", "failed", "--since", "2d")] == sorted(
        (i for i, d in mixed_log.items() if d["status"] == "failed"), reverse=True
    )


def test_log_limit(cli, rule_file, event_file, httpserver: HTTPServer):
    httpserver.expect_request("/hook").respond_with_data("ok")
    rules = rule_file(rule_yaml(httpserver.url_for("/hook")))
    assert cli("fire", "-r", rules, event_file(events_ndjson(60))).exit_code == 0
    assert len(log_json(cli)) == 50  # the default
    assert len(log_json(cli, "--limit", "7")) == 7
    assert len(log_json(cli, "--limit", "0")) == 60  # 0 = all
    assert cli("log", "--limit", "-1").exit_code == 2


def test_log_bad_filters_are_usage_errors(cli, mixed_log):
    for args in (["--status", "lost"], ["--since", "yesterday"]):
        result = cli("log", *args)
        assert result.exit_code == 2 and result.stderr.startswith("Error: --")


def test_log_piped_is_plain_tab_separated(cli, mixed_log):
    result = cli("log")
    assert result.exit_code == 0
    header, *lines = result.stdout.splitlines()
    assert header.split("\t") == [
        "Last update",
        "Status",
        "Attempts",
        "URL",
        "Error",
        "Rule",
        "Ticket",
        "ID",
    ]
    assert len(lines) == 6 and "\x1b[" not in result.stdout
    rows = [line.split("\t") for line in lines]
    assert {(r[1], r[5], r[7]) for r in rows} == {
        (d["status"], d["rule"], d["id"]) for d in mixed_log.values()
    }
    gone = next(r for r in rows if r[5] == "gone")
    assert gone[2] == "1" and gone[4] == "HTTP 410"


def test_log_on_a_terminal_is_a_table(mixed_log, db_file):
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "hookctl", "log", "--db", str(db_file)],
            stdout=follower,
            stderr=subprocess.PIPE,
            env={**os.environ, "COLUMNS": "200"},
            timeout=60,
        )
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    assert proc.returncode == 0, proc.stderr
    text = b"".join(chunks).decode()
    assert "\t" not in text
    assert "\x1b[3" not in text  # a table; NO_COLOR (set by conftest) holds
    assert "Last update" in text and "Status" in text
    assert all(delivery_id in text for delivery_id in mixed_log)


def test_log_one_delivery_by_prefix(cli, mixed_log):
    delivery_id, row = next((i, d) for i, d in mixed_log.items() if d["rule"] == "gone")
    shown = cli("log", delivery_id[4:24].lower())  # "msg_" optional, any case
    assert shown.exit_code == 0, shown.stderr
    assert shown.stdout.startswith(f"{delivery_id}  failed  rule gone  ticket {row['ticket']}")
    assert f"POST {row['url']}" in shown.stdout
    assert "attempt 1  " in shown.stdout and "  HTTP 410\n" in shown.stdout
    assert "HTTP 410 - HTTP 410" not in shown.stdout  # issue 12: the outcome said once
    assert "\n  gone\n" in shown.stdout  # the response body

    (record,) = ndjson(cli("log", delivery_id, "--json").stdout)
    assert set(record) >= LOG_FIELDS and record["attempts"] == 1
    assert record["request"]["method"] == "POST"
    (attempt,) = record["attempts_detail"]
    assert (attempt["status_code"], attempt["response_body"]) == (410, "gone")


def test_log_one_delivery_unknown_or_ambiguous(cli, mixed_log):
    unknown = cli("log", "msg_ZZZZ")
    assert unknown.exit_code == 2 and unknown.stderr == "Error: no delivery 'msg_ZZZZ'\n"
    ambiguous = cli("log", "msg_")
    assert ambiguous.exit_code == 2 and "matches more than one delivery" in ambiguous.stderr


def test_log_masks_secrets_in_the_request(
    cli, rule_file, event_file, httpserver: HTTPServer, monkeypatch
):
    monkeypatch.setenv("HOOK_TOKEN", "canary-3141")
    httpserver.expect_request("/hook").respond_with_data("ok")
    rules = rule_file(
        rule_yaml(
            httpserver.url_for("/hook") + "?key={{ env.HOOK_TOKEN }}",
            extra="",
        ).replace("webhook: {", "webhook: {headers: {X-Token: '{{ env.HOOK_TOKEN }}'}, ")
    )
    assert cli("fire", "-r", rules, event_file(event(1))).exit_code == 0
    (record,) = log_json(cli)
    shown = cli("log", record["id"])
    assert "X-Token: ${HOOK_TOKEN}" in shown.stdout and "key=${HOOK_TOKEN}" in shown.stdout
    everything = shown.stdout + cli("log", record["id"], "--json").stdout + cli("log").stdout
    assert "canary-3141" not in everything


def test_log_without_a_database_yet(cli, tmp_path):
    result = cli("log", "--db", tmp_path / "nowhere.db")
    assert result.exit_code == 2 and "no database at" in result.stderr
    assert not (tmp_path / "nowhere.db").exists()


@pytest.mark.parametrize("command", [["log"], ["retry-loop"], ["purge", "--older-than", "1d"]])
def test_a_file_that_is_not_sqlite_is_a_clear_error(cli, tmp_path, command):
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list\n" * 500)
    result = cli(*command, "--db", notes)
    assert result.exit_code == 4  # the database cannot be used
    assert result.stderr.startswith(f"Error: {notes} is not a SQLite database")
    assert len(result.stderr.splitlines()) == 1
    assert notes.read_text() == "shopping list\n" * 500


@pytest.mark.sqlite
def test_someone_elses_sqlite_file_is_left_alone(cli, rule_file, event_file, tmp_path):
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    result = cli("retry-loop", "--db", other)
    assert (
        result.exit_code == 4 and "is a SQLite database but not a hookctl database" in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_purge_deletes_old_finished_deliveries_and_keeps_pending(cli, mixed_log, db_file):
    old_ok = record_old(db_file, days=40, status="succeeded")
    old_failed = record_old(db_file, days=40, status="failed")
    old_pending = record_old(db_file, days=40, status="pending")
    result = cli("purge", "--older-than", "30d")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == "2 deliveries deleted\n"
    remaining = {d["id"] for d in deliveries(db_file)}
    assert remaining == set(mixed_log) | {old_pending}
    assert problems(db_file) == []  # no attempt left behind without its delivery
    with open_store(db_file) as store:
        assert store.get(old_ok) is None and store.get(old_failed) is None
    assert cli("purge", "--older-than", "30d").stderr == "0 deliveries deleted\n"
    assert cli("purge", "--older-than", "soon").exit_code == 2


def test_db_path(cli, tmp_path, monkeypatch):
    assert cli("db", "path").stdout == f"{tmp_path / 'hookctl.db'}\n"  # HOOKCTL_DB (conftest)
    assert cli("db", "path", "--db", tmp_path / "x.db").stdout == f"{tmp_path / 'x.db'}\n"
    monkeypatch.delenv("HOOKCTL_DB")
    assert cli("db", "path").stdout == f"{tmp_path / 'home' / 'hookctl.db'}\n"  # HOOKCTL_HOME
    assert not (tmp_path / "home").exists()  # printing the path creates nothing


def test_the_default_database_lives_in_the_xdg_data_dir(
    cli, tmp_path, monkeypatch, rule_file, event_file, httpserver: HTTPServer
):
    """Issue 12: the database is data (~/.local/share/hookctl), not configuration (~/.config);
    one at the old place is still found and used, with a note."""
    httpserver.expect_request("/ok").respond_with_data("ok")
    for name in ("HOOKCTL_DB", "HOOKCTL_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    default = tmp_path / "user" / ".local" / "share" / "hookctl" / "hookctl.db"
    assert cli("db", "path").stdout == f"{default}\n"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert cli("db", "path").stdout == f"{tmp_path / 'data' / 'hookctl' / 'hookctl.db'}\n"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/is/ignored")  # as the XDG spec says
    assert cli("db", "path").stdout == f"{default}\n"
    monkeypatch.delenv("XDG_DATA_HOME")

    # A database where older versions put it keeps working, with a note saying where to move it.
    old = tmp_path / "user" / ".config" / "hookctl" / "hookctl.db"
    rules = rule_file(rule_yaml(httpserver.url_for("/ok")))
    assert cli("fire", "-r", rules, event_file(event(1)), "--db", old).exit_code == 0
    shown = cli("db", "path")
    assert shown.stdout == f"{old}\n"
    assert shown.stderr == (
        f"note: using the database at {old}, where older hookctl versions kept it; the default "
        f"is now {default}: move it there (with any -wal and -shm files) or point HOOKCTL_DB at it\n"
    )
    listed = cli("log", "--json")
    assert len(ndjson(listed.stdout)) == 1 and "note: using the database at" in listed.stderr
    again = cli("fire", "-r", rules, event_file(event(1)))  # fire finds it too: a duplicate
    assert "already recorded: succeeded" in again.stdout and not default.exists()
    assert cli("--quiet", "log").stderr == ""  # no note for cron


def on_terminal(args: list[str], columns: int) -> str:
    """Run hookctl with stdout on a terminal `columns` wide; what it drew, escapes removed."""
    import fcntl
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "hookctl", *args],
            stdout=follower,
            stderr=subprocess.PIPE,
            env=env,
            timeout=60,
        )
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    assert proc.returncode == 0, proc.stderr
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode()).replace("\r", "")


def test_log_table_keeps_ids_and_rules_whole_one_line_a_row(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file
):
    httpserver.expect_request("/a/very/long/path/for/the/receiver/hook").respond_with_data("ok")
    long_name = "notify-the-escalation-team-about-vip-tickets"
    rules = [
        rule_file(
            rule_yaml(httpserver.url_for("/a/very/long/path/for/the/receiver/hook"), name=long_name)
        ),
        # Refused by the network guard: the long error that once made a row 7 lines tall.
        rule_file(rule_yaml("http://10.0.0.5:8080/intranet/hook", name="intranet")),
    ]
    args = [arg for path in rules for arg in ("-r", path)]
    cli("fire", *args, event_file([event(1), event(2)]))
    rows = deliveries(db_file)
    error = next(d["error"] for d in rows if d["rule"] == "intranet")
    assert len(error) > 60
    for columns in (120, 80, 60):
        screen = on_terminal(["log", "--db", str(db_file)], columns)
        lines = [line for line in screen.splitlines() if line.strip()]
        assert len(lines) == 1 + len(rows), (columns, screen)  # a header, then one line each
        assert all(len(line.rstrip()) <= columns for line in lines), screen
        for row in rows:
            (line,) = [line for line in lines if row["id"] in line]  # the id whole, once
            assert row["status"] in line
            if columns == 120:  # narrower, a 44-character rule name is cut, the id still whole
                assert row["rule"] in line
        if columns == 120:
            assert "…" in screen and error not in screen  # cut here; whole in `log ID`
    detail = cli("log", next(d["id"] for d in rows if d["rule"] == "intranet")).stdout
    assert error in detail


def test_log_one_delivery_uses_one_time_format(cli, mixed_log):
    delivery_id = next(i for i, d in mixed_log.items() if d["rule"] == "busy")
    shown = cli("log", delivery_id).stdout
    stamps = re.findall(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?Z?", shown)
    assert len(stamps) >= 4  # created, updated, next attempt, the attempt
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", s) for s in stamps), stamps
