"""A store that stalls or fails mid-run, and a worker that lost its claims (issue 11, items 3-4).

Real processes: a second process holds the database's write lock (`BEGIN IMMEDIATE`) for
longer than the busy timeout in the middle of a `fire`; a `fire` runs under a file-size limit
(RLIMIT_FSIZE, the disk "fills up"); a `retry-loop` is stopped (SIGSTOP) past its lease while
another worker finishes its deliveries, then resumed (SIGCONT). State is read through the
CLI (`log --json`) and the store's public methods.
"""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hookctl.store import open_store
from tests.conftest import ndjson
from tests.receivers import (
    NO_BREAKER,
    Receiver,
    events_ndjson,
    hookctl,
    rule_yaml,
    wait_for,
    wait_until_due,
)

LOCK_SECONDS = 2.5  # the other process's transaction: longer than the busy timeout below
BUSY_TIMEOUT = 1.0

HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def test_a_write_lock_held_past_the_busy_timeout_mid_fire_loses_no_outcome(
    cli, rule_file, event_file, receiver: Receiver, db_file, monkeypatch
):
    # fire runs in this process (so the busy timeout can be short); the lock is another's.
    monkeypatch.setattr("hookctl.store.sqlite.database.BUSY_TIMEOUT", BUSY_TIMEOUT)
    count = 600
    receiver.delay = 0.05
    holder: list[subprocess.Popen[str]] = []
    lock_at = threading.Event()
    lock_taken = threading.Event()

    def take_the_lock() -> None:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(db_file), str(LOCK_SECONDS)],
            stdout=subprocess.PIPE,
            text=True,
        )
        holder.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        lock_at.set()

    real_handle = receiver._handle

    def handle(request):  # type: ignore[no-untyped-def]
        # On the 100th request, another process takes the write lock (and keeps it a while).
        # Once: two requests arriving together could both count 100 and start two holders.
        with receiver._lock:
            nth = len(receiver.received) + 1
            first = nth >= 100 and not lock_taken.is_set()
            if first:
                lock_taken.set()
        if first:
            threading.Thread(target=take_the_lock, daemon=True).start()
        return real_handle(request)

    receiver.server.clear()
    receiver.server.expect_request("/hook").respond_with_handler(handle)
    rules = rule_file(rule_yaml(receiver.url, retry="{every: 1m, retries: 3}"))
    result = cli("fire", "-r", rules, event_file(events_ndjson(count)), "--json", "-c", "20")
    assert lock_at.is_set(), "the lock was never taken mid-run"
    holder[0].communicate(timeout=30)  # and closes its pipe
    assert result.exit_code == 0, result.stderr
    reports = ndjson(result.stdout)
    assert len(reports) == count and {r["status"] for r in reports} == {"succeeded"}, [
        (r["error"], r["duration_ms"]) for r in reports if r["status"] != "succeeded"
    ][:5]
    # Every request the receiver got is on record, once: nothing will be sent again.
    at_receiver = receiver.ids()
    assert len(at_receiver) == count and set(at_receiver.values()) == {1}
    logged = ndjson(cli("log", "--json", "--limit", "0").stdout)
    assert len(logged) == count and {r["status"] for r in logged} == {"succeeded"}
    assert cli("retry-loop").stderr.strip() == "nothing due"
    # Each attempt's duration is its HTTP exchange's (the receiver takes 50 ms), not the stall.
    with open_store(db_file) as store:
        durations = [a.duration_ms for r in logged for a in store.get(r["id"]).attempt_log]  # type: ignore[union-attr]
    assert len(durations) == count
    assert max(durations) < LOCK_SECONDS * 1000 / 2, max(durations)


def _limit_file_size(limit: int):  # type: ignore[no-untyped-def]
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_disk_that_fills_up_mid_run_stops_it_in_one_line(
    cli, rule_file, event_file, receiver: Receiver, db_file
):
    rules = rule_file(rule_yaml(receiver.url))
    assert (
        cli("fire", "-r", rules, event_file(events_ndjson(5), name="first.ndjson")).exit_code == 0
    )
    size = max(
        Path(f"{db_file}{s}").stat().st_size for s in ("", "-wal") if Path(f"{db_file}{s}").exists()
    )
    events = event_file(events_ndjson(3000, start=5), name="batch.ndjson")
    # Room for a few batches, then every write fails: the "disk" is full.
    proc = hookctl(
        "fire", "-r", rules, events, "--quiet", preexec_fn=_limit_file_size(size + 600_000)
    )
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err  # the database cannot be used (README exit codes)
    lines = err.splitlines()
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith("Error: database ") and "stopped sending" in lines[0], lines[0]
    for noise in ("Session is closed", "Task was destroyed", "Traceback", "never retrieved"):
        assert noise not in err
    # What was recorded is consistent: each request the receiver got is a stored delivery.
    with open_store(db_file) as store:
        stored = {r.id for r in store.query(limit=None)}
    assert set(receiver.ids()) <= stored


def test_a_resumed_worker_does_not_send_claims_another_has_finished(
    cli, rule_file, event_file, receiver: Receiver, db_file
):
    count = 200
    receiver.status = 503
    rules = rule_file(rule_yaml(receiver.url, retry="{every: 10ms, retries: 3}", extra=NO_BREAKER))
    assert cli("fire", "-r", rules, event_file(events_ndjson(count)), "--quiet").exit_code == 0
    first_round = receiver.arrived()
    receiver.status, receiver.delay = 200, 0.3
    wait_until_due(db_file)
    lease = {"HOOKCTL_LEASE": "2s"}
    stale = hookctl("retry-loop", "--json", "-c", "10", "--per-host", "10", env=lease)
    try:
        wait_for(lambda: receiver.arrived() >= first_round + 15, what="the first worker's sends")
        # Stop it while its requests wait for their answers (0.3 s), not between a check of
        # its lease and the bytes leaving: that instant cannot be closed from inside.
        time.sleep(0.1)
        stale.send_signal(signal.SIGSTOP)
        time.sleep(2.5)  # past its lease
        other = hookctl("retry-loop", "--json", "-c", "50", env=lease)
        _, err = other.communicate(timeout=120)
        assert other.returncode == 0, err
        resumed_at = receiver.arrived()
    finally:
        stale.send_signal(signal.SIGCONT)
    _, err = stale.communicate(timeout=60)
    assert stale.returncode == 0, err
    # Everything was done before the stale worker woke: it must send nothing more.
    assert sum(receiver.ids(since=resumed_at).values()) == 0
    assert "lost to another worker" in err
    logged = ndjson(cli("log", "--json", "--limit", "0").stdout)
    assert len(logged) == count and {r["status"] for r in logged} == {"succeeded"}
