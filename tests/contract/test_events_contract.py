"""The stored-events part of the store contract (issue 17), through the protocol alone.

Every backend keeps the events `fire` and `serve` hand to `enqueue(events=...)` in the same
transaction as their deliveries, reads them back by time window, links deliveries and events
both ways, and purges them by age. No SQL here: state is read back through the protocol.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from hookctl.store.contract import Store
from hookctl.store.event_records import NewEvent
from hookctl.store.ids import EventIds, new_delivery_id
from hookctl.store.records import NewDelivery

from .test_store_contract import NOW, new

Backend = Callable[..., Store]
DAY = 86400.0


def event(ids: EventIds, at: float = NOW, n: int = 1, **data: Any) -> NewEvent:
    payload = {"event": "ticket.created", "id": f"e{n}", "ticket": {"id": n}, **data}
    return NewEvent(
        ids.next(at), at, "events.ndjson", n, f"e{n}", "ticket.created", str(n), payload
    )


def linked(kept: NewEvent, now: float = NOW, **fields: Any) -> NewDelivery:
    d = new(now, event_id=kept.event_id, ticket=kept.ticket, **fields)
    d.event_ref = kept.id
    return d


def test_events_are_stored_with_their_deliveries_matched_or_not(store: Store) -> None:
    ids = EventIds()
    first, second, unmatched = event(ids, n=1), event(ids, n=2), event(ids, n=3)
    deliveries = [linked(first), linked(first, rule="audit"), linked(second)]
    results = store.enqueue(deliveries, now=NOW, events=[first, second, unmatched])
    assert all(inserted for _, inserted in results)
    back = list(store.stored_events())
    assert [e.id for e in back] == [first.id, second.id, unmatched.id]  # read order kept
    a, b, c = back
    assert (a.source, a.line, a.event_id, a.event_name, a.ticket) == (
        "events.ndjson", 1, "e1", "ticket.created", "1",
    )  # fmt: skip
    assert a.received_at == NOW and a.data == first.data and not a.truncated
    assert a.deliveries == {"urgent": results[0][0], "audit": results[1][0]}
    assert b.deliveries == {"urgent": results[2][0]} and c.deliveries == {}
    assert store.stored_event(b.id) == b
    assert store.stored_event("evt_01NOSUCHEVENT000000000000") is None
    event_of = store.event_of(results[2][0])
    assert event_of is not None and event_of.id == second.id
    assert store.stored_event_rules() == {"urgent", "audit"}


def test_a_duplicate_points_at_the_earlier_delivery(store: Store) -> None:
    ids = EventIds()
    once, again = event(ids, n=1), event(ids, n=1)
    [(earlier, _)] = store.enqueue([linked(once, dedupe_key="id:e1")], now=NOW, events=[once])
    [(same, inserted)] = store.enqueue([linked(again, dedupe_key="id:e1")], now=NOW, events=[again])
    assert (same, inserted) == (earlier, False)
    assert [e.deliveries for e in store.stored_events()] == [{"urgent": earlier}] * 2
    found = store.event_of(earlier)
    assert found is not None and found.id == once.id  # the delivery names its own event


def test_events_alone_are_stored_and_another_client_sees_them(backend: Backend) -> None:
    ids = EventIds()
    writer, reader = backend(), backend()
    assert writer.enqueue([], now=NOW, events=[event(ids, n=n) for n in range(3)]) == []
    assert [e.event_id for e in reader.stored_events()] == ["e0", "e1", "e2"]


def test_a_refused_batch_stores_neither_events_nor_deliveries(store: Store) -> None:
    ids = EventIds()
    kept = event(ids)
    bad = linked(kept)
    bad.id = "msg_not-a-real-id"
    with pytest.raises(ValueError):
        store.enqueue([linked(kept), bad], now=NOW, events=[kept])
    assert list(store.stored_events()) == []
    assert list(store.query(limit=None)) == []


def test_a_time_window_is_half_open_and_pages_through_many(store: Store) -> None:
    ids = EventIds()
    at = [NOW - 10 * DAY, NOW - 5 * DAY, NOW - DAY]
    store.enqueue([], now=NOW, events=[event(ids, when, n) for n, when in enumerate(at)])
    assert [e.event_id for e in store.stored_events(since=NOW - 7 * DAY)] == ["e1", "e2"]
    assert [e.event_id for e in store.stored_events(until=NOW - 5 * DAY)] == ["e0"]
    assert [e.event_id for e in store.stored_events(since=at[1], until=at[2])] == ["e1"]
    many = [event(ids, NOW, n) for n in range(1200)]  # more than one page of a read
    store.enqueue([], now=NOW, events=many)
    assert [e.id for e in store.stored_events(since=NOW)] == [e.id for e in many]


def test_recorded_requests_are_the_stored_ones(store: Store) -> None:
    ids = EventIds()
    kept = event(ids)
    [(delivery_id, _)] = store.enqueue([linked(kept)], now=NOW, events=[kept])
    found = store.recorded_requests([delivery_id, new_delivery_id(NOW)])
    assert list(found) == [delivery_id]
    recorded = found[delivery_id]
    assert (recorded.rule, recorded.status, recorded.ticket, recorded.unrendered) == (
        "urgent", "pending", "1", False,
    )  # fmt: skip
    assert recorded.request == new().request


def test_purge_events_removes_only_those_received_before_the_cutoff(store: Store) -> None:
    ids = EventIds()
    old = [event(ids, NOW - 40 * DAY + n, n) for n in range(3)]
    recent = event(ids, NOW, 9)
    store.enqueue([], now=NOW, events=[*old, recent])
    assert store.purge_events(older_than=NOW - 30 * DAY) == 3
    assert [e.id for e in store.stored_events()] == [recent.id]
    assert store.purge_events(older_than=NOW - 30 * DAY) == 0


def test_restored_events_come_back_exactly_and_a_stored_id_is_kept(store: Store) -> None:
    from hookctl.store.sqlite.events import MAX_STORED_EVENT_BYTES

    ids = EventIds()
    first = event(ids, n=1, note="ação ✓")
    huge = event(ids, n=2, blob="x" * MAX_STORED_EVENT_BYTES)
    results = store.enqueue([linked(first)], now=NOW, events=[first, huge])
    read = list(store.stored_events())
    assert read[1].truncated and read[1].data is None  # restored cut, as it was kept
    assert read[0].deliveries == {"urgent": results[0][0]}
    # As `db copy` fills an empty database: here the same one, its events purged first.
    assert store.purge_events(older_than=NOW + 1) == 2
    assert store.restore_events(read) == 2
    assert list(store.stored_events()) == read
    assert store.stored_event(read[0].id) == read[0]
    assert store.stored_event_rules() == {"urgent"}
    event_of = store.event_of(results[0][0])
    assert event_of is not None and event_of.id == first.id
    changed = [dataclasses.replace(read[0], source="elsewhere"), read[1]]
    assert store.restore_events(changed) == 0  # already there: left as it was
    assert store.stored_event(read[0].id) == read[0]
    assert store.restore_events([]) == 0


def searched(store: Store, **filters: Any) -> list[str | None]:
    return [e.event_id for e in store.find_events(**filters)]


def test_find_events_is_newest_first_filtered_and_limited(store: Store) -> None:
    ids = EventIds()
    kept = []
    for n in range(6):
        e = event(ids, NOW - (6 - n) * DAY, n)
        if n % 2:
            e.source, e.event_name = "http:crm", "ticket.updated"
        kept.append(e)
    kept[4].ticket = "<script>"
    store.enqueue([], now=NOW, events=kept)
    assert searched(store) == ["e5", "e4", "e3", "e2", "e1", "e0"]
    assert searched(store, limit=2) == ["e5", "e4"]
    assert searched(store, source="http:crm") == ["e5", "e3", "e1"]
    assert searched(store, event_name="ticket.created") == ["e4", "e2", "e0"]
    assert searched(store, ticket="<script>") == ["e4"]
    assert searched(store, ticket="2") == ["e2"] and searched(store, ticket="99") == []
    assert searched(store, event_id="e3") == ["e3"]
    assert searched(store, since=NOW - 3.5 * DAY) == ["e5", "e4", "e3"]
    assert searched(store, source="http:crm", since=NOW - 3.5 * DAY, limit=1) == ["e5"]
    assert searched(store, source="http:crm", event_id="e2") == []  # filters combine
    assert searched(store, source="events.ndjson", event_name="ticket.created", ticket="0") == [
        "e0"
    ]
    [found] = store.find_events(event_id="e1")
    assert found == store.stored_event(kept[1].id)


def test_event_deliveries_lists_every_delivery_made_for_an_event(store: Store) -> None:
    ids = EventIds()
    kept, other = event(ids, n=1), event(ids, n=2)
    [(first, _), (_, _)] = store.enqueue(
        [linked(kept), linked(other)], now=NOW, events=[kept, other]
    )
    # Fired again later: a new delivery naming the same stored event, no new event row.
    [(again, inserted)] = store.enqueue([linked(kept, NOW + 1)], now=NOW + 1)
    assert inserted and again != first
    found = store.event_deliveries(kept.id)
    assert [d.id for d in found] == [again, first]  # newest first
    assert {d.rule for d in found} == {"urgent"} and found[0].status == "pending"
    assert [d.id for d in store.event_deliveries(kept.id, limit=1)] == [again]
    assert store.event_deliveries("evt_01NOSUCHEVENT000000000000") == []
    assert store.stored_event(kept.id).deliveries == {"urgent": first}  # the first firing's map
    event_of = store.event_of(again)
    assert event_of is not None and event_of.id == kept.id
