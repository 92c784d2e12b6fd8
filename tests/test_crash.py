"""A sender killed mid-flight (SIGKILL) loses nothing: after its leases expire, retry-loop resends.

The receiver is slow while the victim runs, so many attempts are in flight when it dies; it is
fast again for the recovery. Leases are 1 s (HOOKCTL_LEASE) so recovery does not wait minutes.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.conftest import deliveries
from tests.receivers import (
    NO_BREAKER,
    Receiver,
    events_ndjson,
    hookctl,
    problems,
    rule_yaml,
    status_counts,
    wait_for,
)

COUNT = 300
LEASE = {"HOOKCTL_LEASE": "1s"}


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def kill_when_in_flight(proc, receiver: Receiver, in_flight: int) -> None:
    """SIGKILL `proc` once `in_flight` of its requests have reached the receiver."""
    wait_for(lambda: receiver.arrived() >= in_flight or proc.poll() is not None, what="requests")
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def recover(receiver: Receiver) -> int:
    """Let the dead process's leases run out, then make the receiver fast; returns its count."""
    time.sleep(1.1)
    receiver.delay = 0.0
    return receiver.arrived()


def check_nothing_lost(db_file, receiver: Receiver, recovered_from: int) -> None:
    rows = deliveries(db_file)
    assert len(rows) == COUNT
    assert sorted(r["event_id"] for r in rows) == sorted(f"evt_{n}" for n in range(COUNT))
    assert {r["status"] for r in rows} <= {"succeeded", "pending"}
    left = [r for r in rows if r["status"] == "pending"]
    assert left == [], "nothing should be left after recovery"
    by_id = {r["id"]: r["event_id"] for r in rows}
    # Every request, before and after the crash, carried its delivery's id as webhook-id:
    # a re-sent event arrives under the same id, so the receiver can drop the copy.
    for webhook_id, event_id in receiver.received:
        assert by_id[webhook_id] == event_id
    assert set(receiver.ids()) == set(by_id)
    # Recovery sends each delivery at most once (the dead process's are re-sent, none twice).
    assert set(receiver.ids(since=recovered_from).values()) <= {1}
    assert problems(db_file) == []


def test_fire_killed_mid_flight(rule_file, event_file, receiver: Receiver, db_file):
    receiver.delay = 2.0
    rules = rule_file(rule_yaml(receiver.url, extra="timeout: 10s\n"))
    events = event_file(events_ndjson(COUNT), name="batch.ndjson")
    victim = hookctl("fire", "-r", rules, events, "--concurrency", "20", "--quiet", env=LEASE)
    kill_when_in_flight(victim, receiver, 30)  # the first 20 answered, 10 more in flight
    in_store = status_counts(db_file)
    assert sum(in_store.values()) >= 30 and in_store.get("pending", 0) >= 10
    assert problems(db_file) == []

    recovered_from = recover(receiver)
    # Re-running the batch is safe: it sends only the events the dead process never stored...
    rerun = hookctl("fire", "-r", rules, events, "--json", env=LEASE)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    statuses = [json.loads(line)["status"] for line in out.splitlines()]
    assert set(statuses) <= {"succeeded", "duplicate"} and len(statuses) == COUNT
    # ...and retry-loop sends the ones it stored but did not finish.
    loop = hookctl("retry-loop", "--concurrency", "20", env=LEASE)
    _, err = loop.communicate(timeout=120)
    assert loop.returncode == 0, err
    check_nothing_lost(db_file, receiver, recovered_from)


def test_retry_loop_killed_mid_flight(cli, rule_file, event_file, receiver: Receiver, db_file):
    receiver.status = 503
    rules = rule_file(
        rule_yaml(
            receiver.url, retry="{every: 10ms, retries: 5}", extra="timeout: 10s\n" + NO_BREAKER
        )
    )
    assert cli("fire", "-r", rules, event_file(events_ndjson(COUNT)), "--quiet").exit_code == 0
    first_round = receiver.arrived()
    assert first_round == COUNT
    receiver.status, receiver.delay = 200, 2.0
    time.sleep(0.02)  # all due

    victim = hookctl("retry-loop", "--concurrency", "20", "--quiet", env=LEASE)
    kill_when_in_flight(victim, receiver, first_round + 30)
    assert problems(db_file) == []

    recovered_from = recover(receiver)
    loop = hookctl("retry-loop", "--concurrency", "20", env=LEASE)
    _, err = loop.communicate(timeout=120)
    assert loop.returncode == 0, err
    check_nothing_lost(db_file, receiver, recovered_from)
    # The 503 and the 200 are on record; the attempt the kill cut short never finished.
    assert {d["attempts"] for d in deliveries(db_file)} == {2}


# --- issue 12.5: recovery does not wait out the lease of a process that is gone -------------


def test_retry_loop_right_after_a_kill_takes_the_dead_fires_claims_at_once(
    rule_file, event_file, receiver: Receiver, db_file
):
    """No HOOKCTL_LEASE here: the lease is the attempt's timeout + 2 minutes. The killed fire
    held every delivery it stored; a retry-loop started at once on this machine sees that its
    process is gone and sends them all now, instead of "nothing due" for two minutes."""
    receiver.delay = 2.0
    rules = rule_file(rule_yaml(receiver.url, extra="timeout: 10s\n"))
    events = event_file(events_ndjson(COUNT), name="batch.ndjson")
    victim = hookctl("fire", "-r", rules, events, "--concurrency", "20", "--quiet")
    kill_when_in_flight(victim, receiver, 30)
    receiver.delay = 0.0
    stored = deliveries(db_file)
    assert {d["status"] for d in stored} & {"pending"}, "nothing was left in flight to recover"
    leased = [d for d in stored if d["lease_expires_at"] is not None]
    assert leased and all(d["lease_expires_at"] > time.time() + 60 for d in leased)

    started = time.monotonic()
    loop = hookctl("retry-loop", "--concurrency", "20")
    _, err = loop.communicate(timeout=60)
    assert loop.returncode == 0, err
    assert time.monotonic() - started < 60  # not the lease's 130 s
    after = {d["id"]: d["status"] for d in deliveries(db_file)}
    assert set(after) == {d["id"] for d in stored}
    assert set(after.values()) == {"succeeded"}, err
    assert problems(db_file) == []


def test_a_live_fire_keeps_its_claims_from_a_retry_loop(
    rule_file, event_file, receiver: Receiver, db_file
):
    """The other side of the same check: a fire that is alive (stopped, not dead) keeps its
    leases; a retry-loop meanwhile sends nothing of its."""
    receiver.delay = 2.0
    rules = rule_file(rule_yaml(receiver.url, extra="timeout: 10s\n"))
    events = event_file(events_ndjson(50), name="batch.ndjson")
    victim = hookctl("fire", "-r", rules, events, "--concurrency", "5", "--quiet")
    try:
        wait_for(lambda: receiver.arrived() >= 5 or victim.poll() is not None, what="requests")
        victim.send_signal(signal.SIGSTOP)
        arrived = receiver.arrived()
        loop = hookctl("retry-loop", "--concurrency", "20")
        _, err = loop.communicate(timeout=60)
        assert loop.returncode == 0, err
        assert "nothing due" in err
        assert receiver.arrived() == arrived
    finally:
        victim.send_signal(signal.SIGCONT)
        receiver.delay = 0.0
        victim.communicate(timeout=120)
    assert victim.returncode == 0
    assert {d["status"] for d in deliveries(db_file)} == {"succeeded"}
