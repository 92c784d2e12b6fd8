"""Ordered delivery per key (`order_by:`, issue 15), through the CLI, real processes and receivers.

Deliveries of one rule with the same rendered key are attempted in the order they were fired:
the next waits while an earlier one is pending; one that failed for good does not block.
"""

from __future__ import annotations

import json
import random
import signal
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from werkzeug import Request, Response

from hookctl.store import open_store
from tests.conftest import ndjson
from tests.receivers import Receiver, hookctl, rule_yaml, wait_for, wait_until_due

TICKETS, PER_TICKET = 20, 10


def update(ticket: int, seq: int) -> dict[str, Any]:
    """The seq-th update of a ticket (ticket.created events, as rule_yaml listens for)."""
    return {
        "event": "ticket.created",
        "id": f"evt_{ticket}_{seq}",
        "ticket": {"id": ticket, "seq": seq},
    }


class FlakyReceiver(Receiver):
    """Answers 503 to a random 30 % of requests (or to what `fail` says); records each request
    in arrival order: (webhook-id, ticket, seq, status answered)."""

    def __init__(self, fail: Callable[[dict[str, Any]], bool] | None = None) -> None:
        super().__init__()
        self.rng = random.Random(15)
        self.fail = fail
        self.log: list[tuple[str | None, int, int, int]] = []
        self._order_lock = threading.Lock()

    def _handle(self, request: Request) -> Response:
        body = request.get_json(silent=True) or {}
        ticket = body.get("ticket") or {}
        with self._order_lock:
            failing = self.fail(ticket) if self.fail else self.rng.random() < 0.3
            status = 503 if failing else 200
            self.log.append(
                (request.headers.get("webhook-id"), ticket["id"], ticket["seq"], status)
            )
        return Response("ok" if status == 200 else "try later", status=status)

    def first_successes(self) -> dict[int, list[int]]:
        """Per ticket, the seq of each delivery in the order its first success arrived."""
        seen: set[str | None] = set()
        order: dict[int, list[int]] = defaultdict(list)
        with self._order_lock:
            for webhook_id, ticket, seq, status in self.log:
                if status == 200 and webhook_id not in seen:
                    seen.add(webhook_id)
                    order[ticket].append(seq)
        return dict(order)

    def arrivals(self) -> dict[int, list[int]]:
        """Per ticket, the seq of every request in arrival order (retries included)."""
        order: dict[int, list[int]] = defaultdict(list)
        with self._order_lock:
            for _, ticket, seq, _ in self.log:
                order[ticket].append(seq)
        return dict(order)


@pytest.fixture
def flaky() -> Any:
    r = FlakyReceiver().start()
    yield r
    r.stop()


ORDERED = "order_by: '{{ ticket.id }}'\n"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, db_file: Path) -> str:
    """The database the processes share: the test's SQLite file, or a fresh PostgreSQL one."""
    if request.param == "sqlite":
        return str(db_file)
    return str(request.getfixturevalue("pg_url"))


def test_four_workers_deliver_each_tickets_updates_in_order(
    db_url: str, flaky: FlakyReceiver, rule_file: Any, event_file: Any
) -> None:
    """200 events for 20 tickets, a receiver failing 30 % of requests, 4 retry-loop processes:
    per ticket the receiver sees the updates in order, and every delivery ends succeeded."""
    rules = rule_file(rule_yaml(flaky.url, retry="{every: 10ms, retries: 40}", extra=ORDERED))
    # Interleaved as a helpdesk sends them: update 0 of every ticket, then update 1, ...
    events = [update(t, k) for k in range(PER_TICKET) for t in range(TICKETS)]
    lines = "".join(json.dumps(e) + "\n" for e in events)
    loops = [
        hookctl("retry-loop", "--db", db_url, "--every", "50ms", "--quiet", "-c", "5")
        for _ in range(4)
    ]
    try:
        fire = hookctl("fire", "--db", db_url, "-r", rules, event_file(lines), "--json")
        out, err = fire.communicate(timeout=120)
        assert fire.returncode in (0, 1), err
        reports = ndjson(out)
        assert len(reports) == len(events)
        # fire sent at most the first of each ticket; the rest waited their turn.
        assert sum(1 for r in reports if r["sent"]) <= TICKETS
        assert sum(1 for r in reports if r["waiting"]) >= len(events) - TICKETS

        def all_succeeded() -> bool:
            with open_store(db_url) as store:
                return store.stats().by_status["succeeded"] == len(events)

        wait_for(all_succeeded, timeout=240, what="every delivery to succeed")
    finally:
        for loop in loops:
            loop.send_signal(signal.SIGTERM)
        for loop in loops:
            _, err = loop.communicate(timeout=60)
            assert loop.returncode == 0, err
    with open_store(db_url) as store:
        assert store.stats().by_status == {"pending": 0, "succeeded": len(events), "failed": 0}
    expected = {t: list(range(PER_TICKET)) for t in range(TICKETS)}
    assert flaky.first_successes() == expected
    # Stronger: never an update sent before the one before it had succeeded.
    assert {t: sorted(seqs) for t, seqs in flaky.arrivals().items()} == flaky.arrivals()
    failures = sum(1 for *_, status in flaky.log if status != 200)
    assert failures > 20, "the receiver did not fail often enough to test anything"


def test_a_predecessor_that_failed_for_good_does_not_block(
    cli: Any, rule_file: Any, event_file: Any, db_file: Path
) -> None:
    receiver = FlakyReceiver(fail=lambda ticket: ticket["seq"] == 0).start()
    try:
        rules = rule_file(rule_yaml(receiver.url, retry="{every: 10ms, retries: 1}", extra=ORDERED))
        events = "".join(json.dumps(update(7, k)) + "\n" for k in range(3))
        fired = cli("fire", "-r", rules, event_file(events), "--json")
        assert fired.exit_code == 0, fired.stderr
        by_event = {r["event_id"]: r for r in ndjson(fired.stdout)}
        first, second, third = (by_event[f"evt_7_{k}"] for k in range(3))
        assert first["status"] == "pending" and first["attempts"] == 1
        for waiting in (second, third):
            assert waiting["status"] == "pending" and waiting["sent"] is False
            assert waiting["waiting"] and not waiting["held"]
        assert "2 waiting their turn (order_by)" in fired.stderr

        # While the first is retried, the others say what they wait for.
        shown = cli("log", second["id"])
        assert f"waiting: after {first['id']} (pending, 1 attempt)" in shown.stdout
        assert "order_by key: 7" in shown.stdout
        [listed] = [r for r in ndjson(cli("log", "--json").stdout) if r["id"] == third["id"]]
        assert listed["waiting"] == f"after {first['id']} (pending, 1 attempt)"
        assert listed["order_key"] == "7"

        for _ in range(6):  # each pass sends the one whose turn it is
            wait_until_due(db_file)
            assert cli("retry-loop", "--quiet").exit_code in (0, 1)
        assert [seq for _, _, seq, _ in receiver.log] == [0, 0, 1, 2]
        records = {r["id"]: r for r in ndjson(cli("log", "--json").stdout)}
        assert [records[r["id"]]["status"] for r in (first, second, third)] == [
            "failed",
            "succeeded",
            "succeeded",
        ]
        assert records[second["id"]]["follows_failed"] == first["id"]
        assert records[third["id"]]["follows_failed"] is None
        detail = cli("log", second["id"]).stdout
        assert f"order: follows {first['id']}, which failed for good" in detail
        table = cli("log").stdout
        assert f"follows {first['id'][:12]}" in table or "follows msg_" in table
    finally:
        receiver.stop()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[1, 2]", "expected a template string such as '{{ ticket.id }}'"),
        ("''", "expected a template string"),
        ("'{{ ticket.id '", "template error"),
        ("'{{ tickt.id }}'", "unknown variable 'tickt'"),
    ],
)
def test_an_invalid_order_by_is_refused_with_its_place(
    cli: Any, rule_file: Any, event_file: Any, value: str, message: str
) -> None:
    rules = rule_file(rule_yaml("http://127.0.0.1:9/hook", extra=f"\norder_by: {value}\n"))
    result = cli("fire", "-r", rules, event_file(update(1, 0)))
    assert result.exit_code == 3
    assert f"{rules}:6" in result.stderr and "order_by" in result.stderr
    assert message in result.stderr


def test_a_key_that_cannot_be_rendered_is_never_sent_unordered(
    cli: Any, rule_file: Any, event_file: Any, db_file: Path
) -> None:
    receiver = FlakyReceiver(fail=lambda ticket: False).start()
    try:
        rules = rule_file(rule_yaml(receiver.url, extra="order_by: '{{ ticket.parent }}'\n"))
        fired = cli("fire", "-r", rules, event_file(update(1, 0)), "--json")
        assert fired.exit_code == 1
        [report] = ndjson(fired.stdout)
        assert report["status"] == "failed" and report["sent"] is False
        assert "order_by" in report["error"]
        assert receiver.log == []
    finally:
        receiver.stop()


def test_explain_shows_a_rules_order_by_and_the_key(cli: Any, rule_file: Any, event_file: Any):
    rules = rule_file(rule_yaml("http://127.0.0.1:9/hook", extra=ORDERED))
    shown = cli("explain", "-r", rules, event_file(update(4711, 0)))
    assert shown.exit_code == 0, shown.stderr
    assert "order_by: {{ ticket.id }} -> key '4711'" in shown.stdout
    [record] = ndjson(cli("explain", "-r", rules, event_file(update(4711, 0)), "--json").stdout)
    assert (record["order_by"], record["order_key"]) == ("{{ ticket.id }}", "4711")


def test_one_retry_loop_pass_sends_a_keys_waiting_deliveries_in_turn(
    cli: Any, rule_file: Any, event_file: Any, db_file: Path
) -> None:
    """fire sends the first of a ticket; one retry-loop pass sends the rest, one after the
    other (the next is claimed once the one before is recorded), and a second ticket's too."""
    receiver = FlakyReceiver(fail=lambda ticket: False).start()
    try:
        rules = rule_file(rule_yaml(receiver.url, extra=ORDERED))
        events = "".join(json.dumps(update(t, k)) + "\n" for k in range(5) for t in (1, 2))
        fired = cli("fire", "-r", rules, event_file(events), "--json")
        assert fired.exit_code == 0, fired.stderr
        assert sum(1 for r in ndjson(fired.stdout) if r["waiting"]) == 8
        drained = cli("retry-loop", "--json")
        assert drained.exit_code == 0, drained.stderr
        assert len(ndjson(drained.stdout)) == 8
        assert receiver.first_successes() == {1: list(range(5)), 2: list(range(5))}
        assert {r["status"] for r in ndjson(cli("log", "--json").stdout)} == {"succeeded"}
    finally:
        receiver.stop()


def test_the_turn_is_decided_by_index_seeks_not_by_walking_a_keys_backlog(db_file: Path) -> None:
    """SQLite's plans: the claim's two checks are range seeks in the ordering indexes, and a
    place and the log's notes are seeks too (none walks the deliveries behind a key)."""
    from hookctl.store.sqlite.store import SQLiteStore
    from tests.test_store import NOW, new

    with SQLiteStore(db_file) as store:
        with store.traced() as statements:
            store.enqueue([new(order_key="t1") for _ in range(3)], now=NOW)
            store.claim(now=NOW, limit=5, lease_seconds=60, token="t")
            store.due_count(NOW)
            list(store.query())
        plans = {sql: store.query_plan(sql) for sql in statements if "order_seq" in sql}
    steps = [step for plan in plans.values() for step in plan]
    assert (
        "SEARCH o USING INDEX deliveries_order_pending (rule=? AND order_key=? AND order_seq<?)"
        in steps
    )
    assert (
        "SEARCH o USING INDEX deliveries_order_leased (rule=? AND order_key=? AND lease_expires_at>?)"
        in steps
    )
    for sql, plan in plans.items():
        assert not [s for s in plan if s.startswith("SCAN") and "endpoints" not in s], (sql, plan)
        assert not any("TEMP B-TREE" in s for s in plan), (sql, plan)
