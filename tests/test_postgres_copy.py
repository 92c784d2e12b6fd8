"""`hookctl db copy`: SQLite to PostgreSQL and back, deliveries and attempts intact, pending still
due, stored events (for `plan`) and paused endpoints along."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hookctl.store import open_store
from hookctl.store.event_records import NewEvent
from hookctl.store.ids import EventIds
from tests.test_store import NOW, new, result

PAUSED = "https://paused.example:443"


def fill(store: Any) -> list[str]:
    """A succeeded, a failed-then-replayed, a pending retry and a never-tried delivery; the
    events the first three came from (and one that matched nothing); a paused endpoint."""
    done, replayed, retrying, fresh = (new(event={"n": k}, dedupe_key=f"k{k}") for k in range(4))
    done.request = {**done.request, "body": "binary\x00body"}
    ids = EventIds()
    events = [
        NewEvent(ids.next(NOW), NOW, "events.ndjson", k + 1, f"e{k}", "ticket.created", "42",
                 {"event": "ticket.created", "id": f"e{k}", "note": "ação"})
        for k in range(4)
    ]  # fmt: skip
    for d, e in zip((done, replayed, retrying), events, strict=False):
        d.event_ref = e.id
    store.enqueue([done, replayed, retrying], now=NOW, events=events)
    claims = {c.id: c for c in store.claim(now=NOW, limit=3, lease_seconds=60, token="t")}
    store.complete(
        [
            result(claims[done.id]),
            result(claims[replayed.id], status="failed", code=410),
            result(claims[retrying.id], status="pending", code=503, next_at=NOW + 30),
        ],
        now=NOW,
    )
    store.requeue(ids=[replayed.id], now=NOW + 1)
    store.enqueue([fresh], now=NOW + 2)
    assert store.pause_endpoint(PAUSED, now=NOW + 3, reason="their maintenance")
    return [d.id for d in (done, replayed, retrying, fresh)]


def snapshot(store: Any, ids: list[str]) -> list[Any]:
    """Everything a copy must carry, read through the contract."""
    return [
        [store.get(delivery_id) for delivery_id in ids],
        [store.event_of(delivery_id) for delivery_id in ids],
        list(store.stored_events()),
        store.stored_event_rules(),
        store.paused_endpoints(),
    ]


def test_sqlite_to_postgres_and_back(cli: Any, tmp_path: Path, pg_url: str) -> None:
    source = tmp_path / "source.db"
    with open_store(source) as store:
        ids = fill(store)
        before = snapshot(store, ids)
        due_before = store.due_count(NOW + 60)
    there = cli("db", "copy", source, pg_url)
    assert there.exit_code == 0, there.stderr
    assert there.stderr.startswith(
        "copied 4 deliveries, 3 attempts, 4 stored events and 1 paused endpoints to postgresql://"
    )
    assert before[2] and before[4] == {PAUSED: (NOW + 3, "their maintenance")}
    with open_store(pg_url) as store:
        assert snapshot(store, ids) == before
        assert store.due_count(NOW + 60) == due_before == 3  # pending ones are still due
    back = tmp_path / "back.db"
    returned = cli("db", "copy", pg_url, back)
    assert returned.exit_code == 0, returned.stderr
    with open_store(back) as store:
        assert snapshot(store, ids) == before
        claimed = store.claim(now=NOW + 60, limit=9, lease_seconds=9, token="x")
        assert sorted(c.id for c in claimed) == sorted(ids[1:])


def test_copy_refuses_a_destination_that_is_not_empty(cli: Any, tmp_path: Path) -> None:
    source, target = tmp_path / "a.db", tmp_path / "b.db"
    for path in (source, target):
        with open_store(path) as store:
            fill(store)
    refused = cli("db", "copy", source, target)
    assert refused.exit_code == 4  # a store error: that database cannot take the copy
    assert "Error: the destination already holds deliveries" in refused.stderr


def test_copy_refuses_a_destination_with_only_events_or_a_pause(
    cli: Any, tmp_path: Path, pg_url: str
) -> None:
    source = tmp_path / "a.db"
    with open_store(source) as store:
        fill(store)
    with open_store(pg_url) as store:
        store.pause_endpoint(PAUSED, now=NOW)
    refused = cli("db", "copy", source, pg_url)
    assert refused.exit_code == 4, refused.stderr
    assert "already holds deliveries, stored events or paused endpoints" in refused.stderr
    with open_store(pg_url) as store:  # nothing of the copy went in
        assert next(iter(store.query(limit=1)), None) is None


def test_ordered_deliveries_keep_their_places_across_a_copy(
    cli: Any, tmp_path: Path, pg_url: str
) -> None:
    """A key's waiting deliveries still wait, in order, on the copy; new ones go after them."""
    source = tmp_path / "ordered.db"
    with open_store(source) as store:
        ids = [i for i, _ in store.enqueue([new(order_key="t1") for _ in range(3)], now=NOW)]
    assert cli("db", "copy", source, pg_url).exit_code == 0
    with open_store(pg_url) as store:
        [(later, _)] = store.enqueue([new(order_key="t1", now=NOW + 1)], now=NOW + 1)
        sent = []
        for _ in range(4):
            [claim] = store.claim(now=NOW + 2, limit=9, lease_seconds=9, token="x")
            sent.append(claim.id)
            assert store.complete([result(claim)], now=NOW + 2) == [True]
        assert sent == [*ids, later]
