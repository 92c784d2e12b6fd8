"""Every command on `--db postgresql://...`: fire, retry-loop, log, log ID, replay, purge, stats, db path."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.conftest import ndjson
from tests.receivers import Receiver, events_ndjson, rule_yaml


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
        import time

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
