"""Several hookctl processes on one database: each due delivery is sent by exactly one of them."""

from __future__ import annotations

import pytest

from tests.conftest import attempts, deliveries, ndjson
from tests.receivers import (
    NO_BREAKER,
    Receiver,
    events_ndjson,
    hookctl,
    problems,
    rule_yaml,
    status_counts,
    wait_until_due,
)

COUNT = 500


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def test_four_retry_loops_send_each_due_delivery_exactly_once(
    cli, rule_file, event_file, receiver: Receiver, db_file
):
    receiver.status = 500
    rules = rule_file(rule_yaml(receiver.url, retry="{every: 10ms, retries: 3}", extra=NO_BREAKER))
    fired = cli("fire", "-r", rules, event_file(events_ndjson(COUNT)), "--quiet")
    assert fired.exit_code == 0, fired.stderr
    assert status_counts(db_file) == {"pending": COUNT}
    ids = {d["id"] for d in deliveries(db_file)}
    first_round = receiver.arrived()
    assert first_round == COUNT

    # Slow enough that one process alone could not take everything before the others start.
    receiver.status, receiver.delay = 200, 0.05
    wait_until_due(db_file)
    loops = [hookctl("retry-loop", "--json", "--concurrency", "10") for _ in range(4)]
    outputs = [loop.communicate(timeout=120) for loop in loops]
    for loop, (_, err) in zip(loops, outputs, strict=True):
        assert loop.returncode == 0, err

    sent_by = [{r["id"] for r in ndjson(out)} for out, _ in outputs]
    assert sum(len(s) for s in sent_by) == COUNT and set().union(*sent_by) == ids
    assert sum(1 for s in sent_by if s) >= 2, "the retry-loops did not overlap"
    at_receiver = receiver.ids(since=first_round)
    assert set(at_receiver) == ids and set(at_receiver.values()) == {1}
    rows = deliveries(db_file)
    assert {(d["attempts"], d["status"]) for d in rows} == {(2, "succeeded")}
    assert len(rows) == COUNT
    logged = attempts(db_file)
    assert len(logged) == 2 * COUNT and {a["delivery_id"] for a in logged} == ids
    assert [d["id"] for d in rows if d["lease_expires_at"] is not None] == []
    assert problems(db_file) == []


def test_fire_during_a_retry_loop(cli, rule_file, event_file, receiver: Receiver, db_file):
    receiver.status = 503
    rules = rule_file(rule_yaml(receiver.url, retry="{every: 10ms, retries: 3}", extra=NO_BREAKER))
    assert cli("fire", "-r", rules, event_file(events_ndjson(100)), "--quiet").exit_code == 0
    receiver.status, receiver.delay = 200, 0.02
    wait_until_due(db_file)
    loop = hookctl("retry-loop", "--concurrency", "5")
    more = hookctl("fire", "-r", rules, event_file(events_ndjson(100, start=100)), "--quiet")
    for proc in (loop, more):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert status_counts(db_file) == {"succeeded": 200}
    # The first 100 twice (a 503, then a 200), the new 100 once: nothing sent twice by mistake.
    counts = receiver.ids()
    assert len(counts) == 200 and sorted(counts.values()) == [1] * 100 + [2] * 100
    assert problems(db_file) == []
