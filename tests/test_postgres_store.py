"""PostgreSQL's own store tests; the contract (tests/contract/) runs on both backends already.

What is here: text PostgreSQL cannot hold as it is (NUL characters), both backends handing back
the same records, its migrations (once, under a lock; a newer or foreign database refused), a
connection that cannot be had, and LISTEN/NOTIFY wake-ups.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hookctl.store import open_store
from hookctl.store.errors import DatabaseUnusable, ForeignDatabase, NewerDatabase
from hookctl.store.postgres.migrations import MIGRATIONS
from hookctl.store.postgres.store import PostgresStore
from tests.test_store import NOW, new, result


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store lives: a SQLite file path or a PostgreSQL URL (a fresh database)."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(backend: str) -> Iterator[Any]:
    with open_store(backend) as s:
        yield s


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
    assert logged.request == with_body.request
    assert logged.attempt_log[0].response_body == "binary\x00reply"


# --- PostgreSQL only ----------------------------------------------------------------------------


def test_both_backends_return_the_same_rows(tmp_path: Path, pg_url: str) -> None:
    """The log reads the same records from either backend (the CLI prints them as they are)."""
    seen = []
    for where in (str(tmp_path / "same.db"), pg_url):
        with open_store(where) as s:
            d = new(event={"k": "v"}, on_failure={"url": "u"})
            s.enqueue([d], now=NOW)
            [claim] = s.claim(now=NOW, limit=1, lease_seconds=60, token="t")
            s.complete([result(claim, status="pending", code=503, next_at=NOW + 9)], now=NOW)
            row = s.get(d.id)
            listed = next(s.query())
            assert row is not None and listed.id == row.delivery.id == d.id
            detail = dataclasses.asdict(row)
            del detail["delivery"]["id"]
            for attempt in detail["attempt_log"]:
                del attempt["delivery_id"]
            summary = dataclasses.asdict(listed)
            del summary["id"]
            seen.append((detail, summary, s.stats()))
    assert seen[0] == seen[1]


def test_migrations_apply_once_and_a_newer_database_is_refused(pg_url: str) -> None:
    PostgresStore(pg_url).close()
    with PostgresStore(pg_url) as s:
        s.conn.execute("INSERT INTO hookctl_migrations VALUES ('m999_from_the_future', 0)")
    with pytest.raises(NewerDatabase, match=r"newer hookctl.*m999_from_the_future"):
        open_store(pg_url)


def test_someone_elses_deliveries_table_is_refused(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE deliveries (x int)")
    with pytest.raises(ForeignDatabase, match="did not create"):
        open_store(pg_url)


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
        applied = s.conn.execute("SELECT name FROM hookctl_migrations ORDER BY name").fetchall()
    assert applied == [(m.__name__,) for m in MIGRATIONS]


def test_cannot_connect_is_one_line_without_the_password(tmp_path: Path) -> None:
    url = f"postgresql://someone:s3cret@/nodb?host={tmp_path}&port=1"
    with pytest.raises(DatabaseUnusable) as caught:
        open_store(url)
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


def test_a_locked_row_is_busy_at_once_and_nothing_of_the_call_is_done(pg_url: str) -> None:
    import psycopg

    from hookctl.store.errors import DatabaseBusy

    with open_store(pg_url) as store:
        [(delivery_id, _)] = store.enqueue([new()], now=NOW)
        [claim] = store.claim(now=NOW, limit=1, lease_seconds=60, token="t")
        store.wait_when_busy(0)
        with psycopg.connect(pg_url) as other:  # holds the row in an open transaction
            other.execute("SELECT 1 FROM deliveries WHERE id = %s FOR UPDATE", (delivery_id,))
            with pytest.raises(DatabaseBusy, match="busy"):
                store.complete([result(claim)], now=NOW)
            other.rollback()
        # Rolled back whole: no attempt logged, the lease still the claim's, and it completes now.
        detail = store.get(delivery_id)
        assert detail is not None and detail.attempt_log == []
        assert store.complete([result(claim)], now=NOW) == [True]
        assert store.get(delivery_id).delivery.status == "succeeded"  # type: ignore[union-attr]


def test_location_and_db_path_mask_the_password(pg_url: str) -> None:
    with_password = pg_url.replace("postgresql://hookctl-ci@", "postgresql://hookctl-ci:pw@", 1)
    from hookctl.store import describe

    assert describe(with_password) == pg_url.replace("hookctl-ci@", "hookctl-ci:***@", 1)
    with open_store(pg_url) as store:
        assert store.location == pg_url  # no password in it: shown as it is
