"""The SQLite store: migrations, outbox, claims with leases and fencing, the log, concurrency."""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hookctl.delivery.policy import DEFAULT_POLICY
from hookctl.errors import StoreError, UsageError
from hookctl.store.records import _encode
from hookctl.store.sqlite.store import (
    AttemptResult,
    Claim,
    NewDelivery,
    Store,
    new_delivery_id,
)

NOW = 1_700_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with Store(tmp_path / "store.db") as s:
        yield s


def new(now: float = NOW, **fields: Any) -> NewDelivery:
    values: dict[str, Any] = {
        "id": new_delivery_id(now),
        "rule": "urgent",
        "event_id": "evt_1",
        "event_name": "ticket.created",
        "ticket": "42",
        "dedupe_key": None,
        "method": "POST",
        "url": "https://hooks.example.com/***",
        "request": {"method": "POST", "headers": [["X-Token", "{{secret}}"]], "body": "{}"},
        "policy": DEFAULT_POLICY.to_dict(),
        "timeout": 3.0,
        "accept": "2xx-3xx",
    }
    values.update(fields)
    return NewDelivery(**values)


def result(
    claim: Claim,
    *,
    status: str = "succeeded",
    code: int | None = 200,
    next_at: float | None = None,
    token: str | None = None,
    started: float = NOW,
) -> AttemptResult:
    return AttemptResult(
        delivery_id=claim.id,
        token=token or claim.token,
        started_at=started,
        duration_ms=12.5,
        status_code=code,
        error=None if code == 200 else f"HTTP {code}",
        response_headers={"content-type": "text/plain"},
        response_body="ok",
        status=status,  # type: ignore[arg-type]
        next_attempt_at=next_at,
    )


def enqueue_one(store: Store, now: float = NOW, **fields: Any) -> str:
    [(delivery_id, inserted)] = store.enqueue([new(now, **fields)], now=now)
    assert inserted
    return delivery_id


def raw(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# opening and migrations


def test_open_twice_migrates_once(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "hookctl.db"  # parent directories are created
    Store(path).close()
    with Store(path) as store:
        enqueue_one(store)
    assert [name for (name,) in raw(path, "SELECT name FROM _migrations")] == [
        "m001_initial",
        "m002_request_body",
        "m005_replays",
        "m007_events",
    ]
    assert raw(path, "PRAGMA journal_mode") == [("wal",)]
    assert len(raw(path, "SELECT id FROM deliveries")) == 1


def test_an_already_migrated_database_opens_without_sqlite_utils(tmp_path: Path) -> None:
    # sqlite-utils is slow to import; only a pending migration needs it (idle retry-loop start-up).
    db = tmp_path / "q.db"
    code = (
        "import sys\n"
        "from hookctl.store.sqlite.store import Store\n"
        "Store(sys.argv[1]).close()\n"
        "print('sqlite_utils' in sys.modules)\n"
    )
    run = [sys.executable, "-c", code, str(db)]
    first = subprocess.run(run, capture_output=True, text=True, timeout=60, check=True)
    again = subprocess.run(run, capture_output=True, text=True, timeout=60, check=True)
    assert (first.stdout.strip(), again.stdout.strip()) == ("True", "False")


def test_database_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "hookctl.db"
    Store(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are not the rows you are looking for\n" * 200)
    with pytest.raises(StoreError, match="is not a SQLite database"):
        Store(path)


def test_someone_elses_sqlite_database(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="is a SQLite database but not a hookctl database"):
        Store(path)
    assert raw(path, "SELECT name FROM sqlite_master") == [("notes",)]  # left untouched


def test_database_from_a_newer_hookctl(tmp_path: Path) -> None:
    path = tmp_path / "hookctl.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO _migrations VALUES ('m999_from_the_future', 0)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer hookctl"):
        Store(path)


def test_directory_is_not_a_database(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        Store(tmp_path)


def test_busy_database_is_a_store_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hookctl.store.sqlite.database.BUSY_TIMEOUT", 0.2)
    path = tmp_path / "hookctl.db"
    with Store(path) as store:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process mid-write, for longer than we wait
        try:
            with pytest.raises(StoreError, match="is busy: another hookctl process held it"):
                store.enqueue([new()], now=NOW)
            assert list(store.query()) == []  # readers are never blocked (WAL)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        enqueue_one(store)


# delivery ids


def test_ids_sort_by_creation_time() -> None:
    ids = [new_delivery_id(NOW + k * 0.001) for k in range(100)]
    assert ids == sorted(ids)
    assert all(len(i) == 30 and i.startswith("msg_") for i in ids)
    assert len(set(new_delivery_id(NOW) for _ in range(1000))) == 1000


def test_enqueue_rejects_ids_not_from_new_delivery_id(store: Store) -> None:
    with pytest.raises(ValueError, match="not made by new_delivery_id"):
        store.enqueue([new(id="d1")], now=NOW)
    with pytest.raises(ValueError, match="too far from now"):
        store.enqueue([new(id=new_delivery_id(NOW - 86400))], now=NOW)


# enqueue


def test_enqueue_inserts_pending_due_now(store: Store) -> None:
    delivery_id = enqueue_one(store, event={"ticket": {"id": 42}}, on_failure={"url": "x"})
    row = store.get(delivery_id)
    assert row is not None
    assert row["status"] == "pending"
    assert row["next_attempt_at"] == NOW
    assert row["created_at"] == row["updated_at"] == NOW
    assert row["attempts"] == []
    assert row["attempt_count"] == 0
    assert row["first_attempt_at"] is None
    assert row["event"] == {"ticket": {"id": 42}}
    assert row["on_failure"] == {"url": "x"}
    assert row["policy"] == DEFAULT_POLICY.to_dict()
    assert row["request"]["headers"] == [["X-Token", "{{secret}}"]]
    assert store.due_count(NOW) == 1
    assert store.due_count(NOW - 1) == 0


def test_enqueue_detects_duplicates(store: Store) -> None:
    first = enqueue_one(store, dedupe_key="ticket-42-opened")
    batch = [
        new(dedupe_key="ticket-42-opened"),  # already stored
        new(dedupe_key="ticket-43-opened"),
        new(dedupe_key="ticket-43-opened"),  # duplicate within the batch
        new(dedupe_key="ticket-42-opened", rule="other"),  # keys are per rule
        new(dedupe_key=None),
        new(dedupe_key=None),  # no key: never a duplicate
    ]
    results = store.enqueue(batch, now=NOW)
    assert results[0] == (first, False)
    assert results[1] == (batch[1].id, True)
    assert results[2] == (batch[1].id, False)
    assert [inserted for _, inserted in results[3:]] == [True, True, True]
    assert len(list(store.query(limit=None))) == 5


def test_enqueue_empty_batch(store: Store) -> None:
    assert store.enqueue([], now=NOW) == []


# claims, leases and fencing


def test_claim_takes_due_rows_oldest_first(store: Store) -> None:
    early = enqueue_one(store, now=NOW - 20)
    late = enqueue_one(store, now=NOW - 10)
    future = enqueue_one(store, now=NOW + 10)
    claims = store.claim(now=NOW, limit=10, lease_seconds=60, token="a")
    assert [c.id for c in claims] == [early, late]
    assert store.claim(now=NOW, limit=10, lease_seconds=60, token="b") == []
    assert [c.id for c in store.claim(now=NOW + 10, limit=10, lease_seconds=60, token="b")] == [
        future
    ]


def test_claim_respects_limit(store: Store) -> None:
    store.enqueue([new() for _ in range(5)], now=NOW)
    assert len(store.claim(now=NOW, limit=3, lease_seconds=60, token="a")) == 3
    assert len(store.claim(now=NOW, limit=3, lease_seconds=60, token="b")) == 2


def test_claim_due_by_leaves_later_rows_for_the_next_pass(store: Store) -> None:
    early, late = enqueue_one(store), enqueue_one(store)
    [claim] = store.claim(now=NOW, limit=2, lease_seconds=60, token="t", ids=[late])
    store.complete([result(claim, status="pending", code=500, next_at=NOW + 5)], now=NOW)
    # A pass that started at NOW does not retake `late`, due at NOW + 5, even at NOW + 10.
    taken = store.claim(now=NOW + 10, limit=5, lease_seconds=60, token="t", due_by=NOW)
    assert [c.id for c in taken] == [early]
    assert [c.id for c in store.claim(now=NOW + 10, limit=5, lease_seconds=60, token="u")] == [late]


def test_claim_by_ids(store: Store) -> None:
    ids = [i for i, _ in store.enqueue([new() for _ in range(1200)], now=NOW)]
    wanted = ids[::2]  # more than one IN (...) page
    taken = store.claim(now=NOW, limit=1000, lease_seconds=60, token="a", ids=wanted)
    assert len(taken) == 600 and {c.id for c in taken} == set(wanted)
    assert store.claim(now=NOW, limit=10, lease_seconds=60, token="b", ids=wanted) == []  # leased
    few = store.claim(now=NOW, limit=3, lease_seconds=60, token="b", ids=ids[1:9])
    assert len(few) == 3 and {c.id for c in few} <= set(ids[1:9:2])
    assert store.claim(now=NOW, limit=3, lease_seconds=60, token="b", ids=["msg_nope"]) == []
    assert store.claim(now=NOW - 1, limit=3, lease_seconds=60, token="b", ids=ids[3:4]) == []


def test_claim_returns_what_the_sender_needs(store: Store) -> None:
    delivery_id = enqueue_one(store, event={"k": "v"}, on_failure={"url": "u"})
    [claim] = store.claim(now=NOW, limit=1, lease_seconds=60, token="tok")
    assert claim == Claim(
        id=delivery_id,
        token="tok",
        rule="urgent",
        ticket="42",
        url="https://hooks.example.com/***",
        method="POST",
        request={"method": "POST", "headers": [["X-Token", "{{secret}}"]], "body": "{}"},
        policy=DEFAULT_POLICY.to_dict(),
        timeout=3.0,
        accept="2xx-3xx",
        attempts=0,
        first_attempt_at=None,
        on_failure={"url": "u"},
        event={"k": "v"},
        event_id="evt_1",
    )


def test_claimed_on_enqueue_is_not_claimable_until_lease_expires(store: Store) -> None:
    [(delivery_id, _)] = store.enqueue([new()], now=NOW, claim_token="fire", lease_seconds=60)
    assert store.claim(now=NOW, limit=10, lease_seconds=60, token="loop") == []
    assert store.claim(now=NOW + 59, limit=10, lease_seconds=60, token="loop") == []
    assert store.due_count(NOW + 59) == 0
    [claim] = store.claim(now=NOW + 60, limit=10, lease_seconds=60, token="loop")
    assert claim.id == delivery_id
    assert raw(store.path, "SELECT fence FROM deliveries") == [(2,)]


def test_fire_completes_its_own_enqueue_claim(store: Store) -> None:
    [(delivery_id, _)] = store.enqueue([new()], now=NOW, claim_token="fire", lease_seconds=60)
    done = AttemptResult(delivery_id, "fire", NOW, 5.0, 200, None, None, "ok", "succeeded", None)
    assert store.complete([done], now=NOW + 1) == [True]
    assert store.get(delivery_id)["status"] == "succeeded"  # type: ignore[index]


def test_claim_on_enqueue_needs_a_lease(store: Store) -> None:
    with pytest.raises(ValueError, match="lease_seconds"):
        store.enqueue([new()], now=NOW, claim_token="fire")


def test_stale_token_records_attempt_but_does_not_change_delivery(store: Store) -> None:
    delivery_id = enqueue_one(store)
    [slow] = store.claim(now=NOW, limit=1, lease_seconds=30, token="slow")
    [fast] = store.claim(now=NOW + 31, limit=1, lease_seconds=30, token="fast")  # lease expired
    assert fast.id == slow.id == delivery_id

    assert store.complete([result(slow, started=NOW)], now=NOW + 40) == [False]
    row = store.get(delivery_id)
    assert row is not None
    assert row["status"] == "pending"
    assert row["attempt_count"] == 0
    assert row["lease_token"] == "fast"
    assert [a["number"] for a in row["attempts"]] == [1]  # the request did happen

    failed = result(fast, status="pending", code=500, next_at=NOW + 1800, started=NOW + 31)
    assert store.complete([failed], now=NOW + 41) == [True]
    row = store.get(delivery_id)
    assert row is not None
    assert row["attempt_count"] == 1
    assert row["status"] == "pending"
    assert row["next_attempt_at"] == NOW + 1800
    assert row["last_status_code"] == 500
    assert row["error"] == "HTTP 500"
    assert row["lease_token"] is None
    assert [(a["number"], a["status_code"]) for a in row["attempts"]] == [(1, 200), (2, 500)]


def test_complete_success(store: Store) -> None:
    delivery_id = enqueue_one(store)
    [claim] = store.claim(now=NOW, limit=1, lease_seconds=60, token="t")
    assert store.complete([result(claim, started=NOW + 0.5)], now=NOW + 1) == [True]
    row = store.get(delivery_id)
    assert row is not None
    assert row["status"] == "succeeded"
    assert row["attempt_count"] == 1
    assert row["next_attempt_at"] is None
    assert row["first_attempt_at"] == NOW + 0.5
    assert row["updated_at"] == NOW + 1
    assert row["last_status_code"] == 200
    assert row["error"] is None
    assert row["lease_token"] is None and row["lease_expires_at"] is None
    [attempt] = row["attempts"]
    assert attempt["response_headers"] == {"content-type": "text/plain"}
    assert attempt["response_body"] == "ok"
    assert attempt["duration_ms"] == 12.5
    assert store.claim(now=NOW + 10**6, limit=10, lease_seconds=60, token="x") == []


def test_retry_then_fail_keeps_first_attempt_time(store: Store) -> None:
    delivery_id = enqueue_one(store)
    [claim] = store.claim(now=NOW, limit=1, lease_seconds=60, token="t")
    store.complete([result(claim, status="pending", code=503, next_at=NOW + 30)], now=NOW)
    assert store.claim(now=NOW + 29, limit=1, lease_seconds=60, token="t2") == []
    [again] = store.claim(now=NOW + 30, limit=1, lease_seconds=60, token="t2")
    assert again.attempts == 1
    assert again.first_attempt_at == NOW
    store.complete([result(again, status="failed", code=410, started=NOW + 30)], now=NOW + 31)
    row = store.get(delivery_id)
    assert row is not None
    assert (row["status"], row["attempt_count"], row["first_attempt_at"]) == ("failed", 2, NOW)
    assert row["next_attempt_at"] is None


def test_complete_rejects_pending_without_next_attempt(store: Store) -> None:
    enqueue_one(store)
    [claim] = store.claim(now=NOW, limit=1, lease_seconds=60, token="t")
    with pytest.raises(ValueError, match="no next attempt"):
        store.complete([result(claim, status="pending", code=500)], now=NOW)


def test_complete_batch_reports_each_result(store: Store) -> None:
    store.enqueue([new() for _ in range(3)], now=NOW)
    claims = store.claim(now=NOW, limit=3, lease_seconds=60, token="t")
    results = [result(claims[0]), result(claims[1], token="wrong"), result(claims[2])]
    assert store.complete(results, now=NOW) == [True, False, True]
    assert len(raw(store.path, "SELECT id FROM attempts")) == 3


def test_extend_lease(store: Store) -> None:
    store.enqueue([new(), new()], now=NOW)
    claims = store.claim(now=NOW, limit=2, lease_seconds=30, token="t")
    ids = [c.id for c in claims]
    assert store.extend_lease(ids, token="t", until=NOW + 300) == ids
    assert store.claim(now=NOW + 100, limit=10, lease_seconds=30, token="other") == []
    assert store.extend_lease(ids, token="other", until=NOW + 900) == []


# replay, purge


def test_requeue_keeps_the_id_and_restarts_the_schedule(store: Store) -> None:
    delivery_id = enqueue_one(store)
    [claim] = store.claim(now=NOW, limit=1, lease_seconds=60, token="t")
    store.complete([result(claim, status="failed", code=410)], now=NOW)

    assert store.requeue(ids=[delivery_id[:20]], now=NOW + 100) == [delivery_id]
    row = store.get(delivery_id)
    assert row is not None
    assert row["status"] == "pending"
    assert row["next_attempt_at"] == NOW + 100
    # Attempts count over the delivery's life; the policy counts from the replay.
    assert (row["attempt_count"], row["replays"], row["attempts_at_replay"]) == (1, 1, 1)
    assert row["first_attempt_at"] is None
    assert len(row["attempts"]) == 1  # history kept

    [again] = store.claim(now=NOW + 100, limit=1, lease_seconds=60, token="t2")
    assert again.id == delivery_id
    assert (again.attempts, again.run_attempts, again.replays) == (1, 0, 1)
    store.complete([result(again, started=NOW + 100)], now=NOW + 101)
    row = store.get(delivery_id)
    assert row is not None
    assert [a["number"] for a in row["attempts"]] == [1, 2]
    assert row["status"] == "succeeded"


def test_requeue_by_filter(store: Store) -> None:
    ids = [enqueue_one(store, rule=r) for r in ("a", "a", "b")]
    claims = store.claim(now=NOW, limit=3, lease_seconds=60, token="t")
    store.complete([result(c, status="failed", code=500) for c in claims], now=NOW)
    assert store.requeue(status="failed", rule="a", now=NOW + 5) == sorted(ids[:2])
    assert store.get(ids[2])["status"] == "failed"  # type: ignore[index]
    assert store.due_count(NOW + 5) == 2


def test_requeue_leaves_an_in_flight_lease_alone(store: Store) -> None:
    delivery_id = enqueue_one(store)
    store.claim(now=NOW, limit=1, lease_seconds=60, token="busy")
    assert store.requeue(ids=[delivery_id], now=NOW + 1) == [delivery_id]
    assert store.claim(now=NOW + 1, limit=1, lease_seconds=60, token="other") == []


def test_requeue_unknown_id(store: Store) -> None:
    enqueue_one(store)
    with pytest.raises(UsageError, match="no delivery 'msg_NOPE'"):
        store.requeue(ids=["msg_NOPE"], now=NOW)


def test_requeue_needs_a_selection(store: Store) -> None:
    with pytest.raises(UsageError):
        store.requeue(now=NOW)
    with pytest.raises(UsageError):
        store.requeue(ids=["x"], status="failed", now=NOW)


def test_purge_keeps_pending_and_recent(store: Store) -> None:
    old_done = enqueue_one(store, now=NOW)
    old_pending = enqueue_one(store, now=NOW)
    claims = {c.id: c for c in store.claim(now=NOW, limit=2, lease_seconds=60, token="t")}
    store.complete([result(claims[old_done])], now=NOW)
    recent_done = enqueue_one(store, now=NOW + 1000)
    [claim] = store.claim(now=NOW + 1000, limit=1, lease_seconds=60, token="t")
    assert claim.id == old_pending  # still due, so claimed first; give it back as pending
    store.complete([result(claim, status="pending", code=500, next_at=NOW + 5000)], now=NOW + 1000)
    [claim] = store.claim(now=NOW + 1000, limit=1, lease_seconds=60, token="t")
    store.complete([result(claim)], now=NOW + 1000)

    assert store.purge(older_than=NOW + 500) == 1
    assert store.get(old_done) is None
    assert store.get(old_pending) is not None
    assert store.get(recent_done) is not None
    assert raw(store.path, "SELECT count(*) FROM attempts WHERE delivery_id = ?", old_done) == [
        (0,)
    ]
    assert store.purge(older_than=NOW + 500) == 0


def test_purge_in_chunks(store: Store) -> None:
    store.enqueue([new() for _ in range(4500)], now=NOW)
    for _ in range(5):
        claims = store.claim(now=NOW, limit=1000, lease_seconds=60, token="t")
        store.complete([result(c) for c in claims], now=NOW)
    assert store.purge(older_than=NOW + 1) == 4500
    assert list(store.query(limit=None)) == []


# the log


def test_query_filters_and_newest_first(store: Store) -> None:
    a = enqueue_one(store, now=NOW, rule="a", ticket="1")
    b = enqueue_one(store, now=NOW + 10, rule="b", ticket="1")
    c = enqueue_one(store, now=NOW + 20, rule="a", ticket="2")
    [claim] = [
        x for x in store.claim(now=NOW + 30, limit=3, lease_seconds=9, token="t") if x.id == b
    ]
    store.complete([result(claim, status="failed", code=500)], now=NOW + 30)

    def ids(**filters: Any) -> list[str]:
        return [row["id"] for row in store.query(**filters)]

    assert ids() == [c, b, a]
    assert ids(rule="a") == [c, a]
    assert ids(ticket="1") == [b, a]
    assert ids(ticket=1) == [b, a]  # type: ignore[arg-type]
    assert ids(status="failed") == [b]
    assert ids(status="pending", rule="a") == [c, a]
    assert ids(status="failed", rule="a") == []
    assert ids(ticket="1", rule="b", status="failed") == [b]
    assert ids(since=NOW + 10) == [c, b]
    assert ids(since=NOW + 10, rule="a") == [c]
    assert ids(limit=2) == [c, b]
    row = next(store.query(status="failed"))
    assert row["request"]["method"] == "POST"  # JSON columns parsed
    assert row["attempts"] == 1
    with pytest.raises(ValueError, match="unknown status"):
        list(store.query(status="faild"))


def test_query_all_pages_through_everything(store: Store) -> None:
    batch = [new(NOW + k / 1000) for k in range(1234)]
    store.enqueue(batch, now=NOW)
    expected = sorted((d.id for d in batch), reverse=True)
    assert [r["id"] for r in store.query(limit=None)] == expected
    assert [r["id"] for r in store.query(limit=0)] == expected
    assert [r["id"] for r in store.query(limit=700)] == expected[:700]


def test_query_allows_writes_while_iterating(store: Store) -> None:
    store.enqueue([new(NOW + k / 1000) for k in range(1200)], now=NOW)
    seen = 0
    for row in store.query(limit=None):
        store.requeue(ids=[row["id"]], now=NOW + 1)
        seen += 1
    assert seen == 1200


def test_get_by_prefix(store: Store) -> None:
    one = enqueue_one(store, now=NOW)
    enqueue_one(store, now=NOW)  # same millisecond: the same first 14 characters
    assert store.get(one)["id"] == one  # type: ignore[index]
    assert store.get(one[:20])["id"] == one  # type: ignore[index]
    assert store.get(one[4:20].lower())["id"] == one  # type: ignore[index]
    assert store.get("msg_ZZZZ") is None
    with pytest.raises(UsageError, match="more than one delivery"):
        store.get(one[:14])


def test_stats(store: Store) -> None:
    store.enqueue(
        [new(rule="a", url="https://slow/***") for _ in range(3)]
        + [new(rule="b", url="https://down/***") for _ in range(2)],
        now=NOW,
    )
    claims = store.claim(now=NOW, limit=5, lease_seconds=60, token="t")
    results = []
    for i, c in enumerate(claims):
        if c.rule == "a":
            r = result(c)
            r.duration_ms = 100.0 * (i + 1)
        else:
            r = result(c, status="failed", code=500)
            r.duration_ms = 10.0
        results.append(r)
    store.complete(results, now=NOW)
    enqueue_one(store, now=NOW + 100, rule="a", url="https://slow/***")

    stats = store.stats(since=None)
    assert stats["deliveries"] == 6
    assert stats["by_status"] == {"pending": 1, "succeeded": 3, "failed": 2}
    assert stats["by_rule"]["a"] == {"pending": 1, "succeeded": 3, "failed": 0, "total": 4}
    assert stats["by_rule"]["b"]["failed"] == 2
    assert stats["attempts"] == 5
    assert stats["duration_ms"]["p50"] == 100.0
    assert stats["duration_ms"]["p99"] == max(r.duration_ms for r in results)
    assert stats["slowest_urls"][0]["url"] == "https://slow/***"
    assert stats["failing_urls"] == [
        {"url": "https://down/***", "deliveries": 2, "failed": 2, "failed_attempts": 2}
    ]
    recent = store.stats(since=NOW + 50)
    assert recent["deliveries"] == 1
    assert recent["attempts"] == 0
    assert recent["duration_ms"] == {"p50": None, "p95": None, "p99": None}


def test_log_queries_use_indexes(store: Store) -> None:
    """No log, claim or lookup query may scan the deliveries table (1M rows in production)."""
    store.enqueue(
        [new(NOW + k / 1000, rule=f"r{k % 3}", ticket=str(k)) for k in range(50)], now=NOW
    )
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    filters: list[dict[str, Any]] = [
        {"status": "failed"},
        {"status": "succeeded"},
        {"status": "pending"},
        {"rule": "r1"},
        {"ticket": "7"},
        {"since": NOW - 3600},
        {"status": "failed", "rule": "r1"},
        {"status": "succeeded", "rule": "r1"},
        {"status": "failed", "ticket": "7"},
        {"rule": "r1", "ticket": "7"},
        {"status": "failed", "since": NOW - 3600},
        {"rule": "r1", "since": NOW - 3600},
    ]
    for f in filters:
        list(store.query(**f))
    list(store.query())
    store.claim(now=NOW, limit=5, lease_seconds=60, token="t")
    store.claim(now=NOW, limit=5, lease_seconds=60, token="t", ids=["msg_a", "msg_b"])
    store.due_count(NOW)
    store.get("msg_0123")
    store.enqueue([new(dedupe_key="k")], now=NOW)
    store.requeue(status="failed", since=NOW - 60, now=NOW)
    store.purge(older_than=NOW)
    store.conn.set_trace_callback(None)

    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) >= len(filters) + 6
    for sql in selects:
        plan = [row[3] for row in store.conn.execute("EXPLAIN QUERY PLAN " + sql)]
        scans = [step for step in plan if step.startswith("SCAN")]
        if "WHERE" in sql:
            assert not scans, f"{sql}\n{plan}"
        else:  # the unfiltered log: walk the id index backwards and stop at the limit
            assert scans == ["SCAN deliveries USING INDEX sqlite_autoindex_deliveries_1"], plan
        assert not any("TEMP B-TREE" in step for step in plan), f"{sql}\n{plan}"


# several processes


WORKER = """
import json, sys, time
from pathlib import Path
from hookctl.store.sqlite.store import AttemptResult, Store

path, token, now, go = sys.argv[1], sys.argv[2], float(sys.argv[3]), Path(sys.argv[4])
store = Store(path)
(go.parent / token).touch()  # ready
while not go.exists():
    time.sleep(0.001)
taken = []
while True:
    claims = store.claim(now=now, limit=5, lease_seconds=600, token=token)
    if not claims:
        break
    time.sleep(0.002)  # "send" outside any transaction, as the real loop does
    results = [
        AttemptResult(c.id, token, now, 1.0, 200, None, None, token, "succeeded", None)
        for c in claims
    ]
    assert all(store.complete(results, now=now))
    taken.extend(c.id for c in claims)
store.close()
print(json.dumps(taken))
"""


def test_processes_never_claim_the_same_delivery(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    with Store(path) as store:
        ids = [i for i, _ in store.enqueue([new() for _ in range(500)], now=NOW)]
    go = tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), f"worker{n}", str(NOW), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"worker{n}").exists() for n in range(4)):
        assert time.monotonic() < deadline, "workers did not start"
        for worker in workers:
            assert worker.poll() is None, worker.communicate()[1]
        time.sleep(0.01)
    go.touch()  # all four start claiming together
    taken: list[list[str]] = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        taken.append(json.loads(out))

    everything = [i for t in taken for i in t]
    assert sorted(everything) == sorted(ids)  # every delivery claimed exactly once
    assert sum(1 for t in taken if t) >= 2, "the workers did not overlap"
    assert raw(path, "SELECT count(*) FROM attempts") == [(500,)]
    assert raw(path, "SELECT count(DISTINCT delivery_id) FROM attempts") == [(500,)]
    assert raw(path, "SELECT DISTINCT attempts, status FROM deliveries") == [(1, "succeeded")]
    assert raw(path, "PRAGMA integrity_check") == [("ok",)]
    assert raw(path, "PRAGMA foreign_key_check") == []


def test_follow_up_is_enqueued_with_the_failure_and_only_once(store: Store) -> None:
    """An on_failure notice lands in the same transaction as the failure: a crash cannot split them."""
    enqueue_one(store)
    (claim,) = store.claim(now=NOW, limit=1, lease_seconds=60, token="t1")
    notice = new(NOW, rule="urgent:on_failure", dedupe_key=f"on_failure:{claim.id}:1")
    failed = result(claim, status="failed", code=500)
    applied, inserted = store.complete_with_follow_ups(
        [failed], now=NOW, follow_ups={claim.id: notice}, claim_token="t1", lease_seconds=60
    )
    assert applied == [True] and inserted == {notice.id}
    # Claimed by the caller on insert, so another process leaves it alone until the lease ends.
    assert store.claim(now=NOW, limit=10, lease_seconds=60, token="t2") == []
    again = new(NOW, rule="urgent:on_failure", dedupe_key=f"on_failure:{claim.id}:1")
    stale = result(claim, status="failed", code=500, token="someone-else")
    applied, inserted = store.complete_with_follow_ups(
        [stale], now=NOW, follow_ups={claim.id: again}, claim_token="t3", lease_seconds=60
    )
    assert applied == [False] and inserted == set()
    rows = raw(store.path, "SELECT count(*) FROM deliveries WHERE rule = 'urgent:on_failure'")
    assert rows == [(1,)]


def test_follow_up_with_an_existing_dedupe_key_is_not_inserted_twice(store: Store) -> None:
    for token in ("a", "b"):
        delivery_id = enqueue_one(store)
        (claim,) = store.claim(now=NOW, limit=1, lease_seconds=60, token=token, ids=[delivery_id])
        notice = new(NOW, rule="r:on_failure", dedupe_key="on_failure:same")
        _, inserted = store.complete_with_follow_ups(
            [result(claim, status="failed", code=500)], now=NOW, follow_ups={claim.id: notice}
        )
        assert inserted == ({notice.id} if token == "a" else set())


def test_a_new_file_gets_large_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    Store(tmp_path / "new.db").close()
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.execute("PRAGMA page_size = 4096")
    conn.execute("VACUUM")
    conn.close()
    with Store(old) as store:
        store.enqueue([new()], now=NOW)
        assert len(list(store.query(limit=None))) == 1
    for path, size in ((tmp_path / "new.db", 8192), (old, 4096)):
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA page_size").fetchone()[0] == size
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()


def test_ids_are_crockford_base32_of_time_and_randomness() -> None:
    def reference(value: int) -> str:  # the plain definition: 26 digits, most significant first
        digits = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
        return "".join(digits[(value >> (5 * k)) & 31] for k in reversed(range(26)))

    for value in (0, 1, 31, 32, 2**80 - 1, 2**128 - 1, 2**130 - 1, 0x1234_5678_9ABC_DEF0 << 60):
        assert _encode(value) == reference(value)
    for now in (0.0, 1.0, NOW, (2**48 - 1) / 1000):
        # The first 10 digits are the milliseconds (48 bits under 2 zero bits).
        assert new_delivery_id(now)[4:14] == reference(int(now * 1000) << 80)[:10]


def test_a_body_is_stored_apart_and_comes_back_in_its_request(tmp_path: Path) -> None:
    db = tmp_path / "body.db"
    body = '{"text": "a \\"quoted\\" reply"}'
    with_body = new(request={"method": "POST", "url": "https://x.example/h", "body": body})
    no_body = new(request={"method": "GET", "url": "https://x.example/h", "body": None})
    no_key = new(request={"method": "GET", "url": "https://x.example/h"})
    with Store(db) as store:
        store.enqueue([with_body, no_body, no_key], now=NOW)
        # A row written before migration m002 keeps its body inside the request's JSON.
        old = new(request={"method": "POST", "url": "https://x.example/h", "body": "old"})
        store.enqueue([old], now=NOW)
        store.conn.execute(
            "UPDATE deliveries SET request = ?, body = NULL WHERE id = ?",
            (json.dumps(old.request), old.id),
        )
        claims = {
            c.id: c.request for c in store.claim(now=NOW, limit=10, lease_seconds=60, token="t")
        }
        logged = store.get(with_body.id)
    for d in (with_body, no_body, no_key, old):
        assert claims[d.id] == d.request
    assert logged is not None and logged["request"] == with_body.request and "body" not in logged
    (stored,) = raw(db, f"SELECT request, body FROM deliveries WHERE id = '{with_body.id}'")
    assert "body" not in json.loads(stored[0]) and stored[1] == body
