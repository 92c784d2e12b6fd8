"""The store tests on both backends: tests/test_store.py's public-method tests, and PostgreSQL's own.

`backend` is the seam for the contract suite: point its `store` fixture at this `backend`
fixture and every contract test runs on SQLite and on a real PostgreSQL server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hookctl.errors import StoreError
from hookctl.store.postgres.store import PostgresStore
from hookctl.store.sqlite.store import Store
from tests import test_store as sqlite_tests
from tests.test_store import NOW, enqueue_one, new, result

# tests/test_store.py's tests that use only the store's public methods (the rest read SQLite's
# tables or connection); each runs here on both backends.
PUBLIC = [
    "test_enqueue_rejects_ids_not_from_new_delivery_id",
    "test_enqueue_inserts_pending_due_now",
    "test_enqueue_detects_duplicates",
    "test_enqueue_empty_batch",
    "test_claim_takes_due_rows_oldest_first",
    "test_claim_respects_limit",
    "test_claim_due_by_leaves_later_rows_for_the_next_pass",
    "test_claim_by_ids",
    "test_claim_returns_what_the_sender_needs",
    "test_fire_completes_its_own_enqueue_claim",
    "test_claim_on_enqueue_needs_a_lease",
    "test_stale_token_records_attempt_but_does_not_change_delivery",
    "test_complete_success",
    "test_retry_then_fail_keeps_first_attempt_time",
    "test_complete_rejects_pending_without_next_attempt",
    "test_extend_lease",
    "test_requeue_keeps_the_id_and_restarts_the_schedule",
    "test_requeue_by_filter",
    "test_requeue_leaves_an_in_flight_lease_alone",
    "test_requeue_unknown_id",
    "test_requeue_needs_a_selection",
    "test_purge_in_chunks",
    "test_query_filters_and_newest_first",
    "test_query_all_pages_through_everything",
    "test_query_allows_writes_while_iterating",
    "test_get_by_prefix",
    "test_stats",
    "test_follow_up_with_an_existing_dedupe_key_is_not_inserted_twice",
]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store lives: a SQLite file path or a PostgreSQL URL (a fresh database)."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    return str(request.getfixturevalue("pg_url"))


def open_backend(where: str) -> Any:
    return PostgresStore(where) if where.startswith("postgresql://") else Store(where)


@pytest.fixture
def store(backend: str) -> Iterator[Any]:
    with open_backend(backend) as s:
        yield s


@pytest.mark.parametrize("name", PUBLIC)
def test_store_contract(name: str, store: Any) -> None:
    getattr(sqlite_tests, name)(store)


# --- what the SQLite-only tests check, through public methods ----------------------------------


def test_claimed_on_enqueue_waits_for_its_lease(store: Any) -> None:
    [(delivery_id, _)] = store.enqueue([new()], now=NOW, claim_token="fire", lease_seconds=60)
    assert store.claim(now=NOW + 59, limit=10, lease_seconds=60, token="loop") == []
    assert store.due_count(NOW + 59) == 0
    assert store.due_count(NOW + 60) == 1
    [claim] = store.claim(now=NOW + 60, limit=10, lease_seconds=60, token="loop")
    assert claim.id == delivery_id
    assert store.get(delivery_id)["fence"] == 2


def test_complete_batch_reports_each_result_and_logs_every_attempt(store: Any) -> None:
    store.enqueue([new() for _ in range(3)], now=NOW)
    claims = store.claim(now=NOW, limit=3, lease_seconds=60, token="t")
    results = [result(claims[0]), result(claims[1], token="wrong"), result(claims[2])]
    assert store.complete(results, now=NOW) == [True, False, True]
    assert store.stats()["attempts"] == 3
    assert store.get(claims[1].id)["status"] == "pending"


def test_purge_keeps_pending_and_recent(store: Any) -> None:
    old_done, old_pending = enqueue_one(store), enqueue_one(store)
    claims = {c.id: c for c in store.claim(now=NOW, limit=2, lease_seconds=60, token="t")}
    store.complete([result(claims[old_done])], now=NOW)
    store.complete(
        [result(claims[old_pending], status="pending", code=500, next_at=NOW + 5000)], now=NOW
    )
    recent = enqueue_one(store, now=NOW + 1000)
    [claim] = store.claim(now=NOW + 1000, limit=1, lease_seconds=60, token="t")
    store.complete([result(claim)], now=NOW + 1000)
    assert store.purge(older_than=NOW + 500) == 1
    assert store.get(old_done) is None
    assert store.get(old_pending) is not None and store.get(recent) is not None
    assert store.stats()["attempts"] == 2  # the purged delivery's attempt went with it
    assert store.purge(older_than=NOW + 500) == 0


def test_follow_up_is_enqueued_with_the_failure_and_only_once(store: Any) -> None:
    enqueue_one(store)
    (claim,) = store.claim(now=NOW, limit=1, lease_seconds=60, token="t1")
    notice = new(NOW, rule="urgent:on_failure", dedupe_key=f"on_failure:{claim.id}:1")
    applied, inserted = store.complete_with_follow_ups(
        [result(claim, status="failed", code=500)],
        now=NOW,
        follow_ups={claim.id: notice},
        claim_token="t1",
        lease_seconds=60,
    )
    assert applied == [True] and inserted == {notice.id}
    assert store.claim(now=NOW, limit=10, lease_seconds=60, token="t2") == []
    again = new(NOW, rule="urgent:on_failure", dedupe_key=f"on_failure:{claim.id}:1")
    stale = result(claim, status="failed", code=500, token="someone-else")
    applied, inserted = store.complete_with_follow_ups(
        [stale], now=NOW, follow_ups={claim.id: again}, claim_token="t3", lease_seconds=60
    )
    assert applied == [False] and inserted == set()
    assert [r["id"] for r in store.query(rule="urgent:on_failure")] == [notice.id]


def test_a_body_comes_back_in_its_request_nul_characters_included(store: Any) -> None:
    body = '{"text": "a \\"quoted\\" reply with a NUL \\u0000 and \x00"}'
    with_body = new(request={"method": "POST", "url": "https://x.example/h", "body": body})
    no_body = new(request={"method": "GET", "url": "https://x.example/h", "body": None})
    store.enqueue([with_body, no_body], now=NOW)
    claims = {c.id: c for c in store.claim(now=NOW, limit=10, lease_seconds=60, token="t")}
    assert claims[with_body.id].request == with_body.request
    assert claims[no_body.id].request == no_body.request
    done = result(claims[with_body.id])
    done.response_body = "binary\x00reply"
    assert store.complete([done], now=NOW) == [True]
    logged = store.get(with_body.id)
    assert logged["request"] == with_body.request
    assert logged["attempts"][0]["response_body"] == "binary\x00reply"


# --- PostgreSQL only ----------------------------------------------------------------------------


def test_both_backends_return_the_same_rows(tmp_path: Path, pg_url: str) -> None:
    """The log reads the same dicts from either backend (the CLI prints them as they are)."""
    seen = []
    for where in (str(tmp_path / "same.db"), pg_url):
        with open_backend(where) as s:
            d = new(event={"k": "v"}, on_failure={"url": "u"})
            s.enqueue([d], now=NOW)
            [claim] = s.claim(now=NOW, limit=1, lease_seconds=60, token="t")
            s.complete([result(claim, status="pending", code=503, next_at=NOW + 9)], now=NOW)
            row = s.get(d.id)
            listed = next(s.query())
            row.pop("id"), listed.pop("id")
            for attempt in row["attempts"]:
                attempt.pop("id"), attempt.pop("delivery_id")
            seen.append((row, listed, s.stats()))
    assert seen[0] == seen[1]


def test_migrations_apply_once_and_a_newer_database_is_refused(pg_url: str) -> None:
    PostgresStore(pg_url).close()
    with PostgresStore(pg_url) as s:
        s.conn.execute("INSERT INTO hookctl_migrations VALUES ('m999_from_the_future', 0)")
    with pytest.raises(StoreError, match=r"newer hookctl.*m999_from_the_future"):
        PostgresStore(pg_url)


def test_someone_elses_deliveries_table_is_refused(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE deliveries (x int)")
    with pytest.raises(StoreError, match="did not create"):
        PostgresStore(pg_url)


def test_processes_starting_together_migrate_once(pg_url: str) -> None:
    import subprocess
    import sys

    code = "import sys; from hookctl.store.postgres.store import PostgresStore as S; S(sys.argv[1]).close()"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, pg_url], stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    with PostgresStore(pg_url) as s:
        assert s.conn.execute("SELECT name FROM hookctl_migrations").fetchall() == [
            ("m001_initial",)
        ]


def test_cannot_connect_is_one_line_without_the_password(tmp_path: Path) -> None:
    url = f"postgresql://someone:s3cret@/nodb?host={tmp_path}&port=1"
    with pytest.raises(StoreError) as caught:
        PostgresStore(url)
    message = str(caught.value)
    assert "s3cret" not in message and "\n" not in message
    assert message.startswith("cannot connect to PostgreSQL at postgresql://someone:***@")


def test_wait_for_work_wakes_on_enqueue_and_times_out_otherwise(pg_url: str) -> None:
    import threading

    with PostgresStore(pg_url) as waiting, PostgresStore(pg_url) as writer:
        assert waiting.wait_for_work(0.05) is False  # starts listening; nothing came
        timer = threading.Timer(0.2, lambda: writer.enqueue([new()], now=NOW))
        timer.start()
        try:
            assert waiting.wait_for_work(30) is True
        finally:
            timer.join()
