"""The store contract's ordered delivery per key (issue 15), on every backend.

A delivery with an `order_key` is claimed only in its key's turn: none of its (rule, key)
pending before it, none of its key in flight. One failed for good does not block the next.
"""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from typing import Any

from hookctl.store.contract import Store
from tests.contract.test_store_contract import NOW, Backend, detail, new, outcome


def keyed(key: str | None, **fields: Any) -> Any:
    return new(order_key=key, **fields)


def claim_all(store: Store, token: str = "w", now: float = NOW) -> list[str]:
    return [c.id for c in store.claim(now=now, limit=100, lease_seconds=60, token=token)]


def test_a_key_is_claimed_in_enqueue_order_one_at_a_time(store: Store) -> None:
    batch = [keyed("a"), keyed("a"), keyed("b"), keyed(None), keyed("a")]
    ids = [i for i, _ in store.enqueue(batch, now=NOW)]
    a1, a2, b1, plain, a3 = ids
    assert store.due_count(NOW) == 3
    first = store.claim(now=NOW, limit=100, lease_seconds=60, token="w")
    assert sorted(c.id for c in first) == sorted([a1, b1, plain])
    # In flight, a1 holds a2 and a3 back (its lease runs 60 s).
    assert claim_all(store, "x", NOW + 30) == []
    results = [
        outcome(c, status="pending", code=500, next_at=NOW + 600) if c.id == a1 else outcome(c)
        for c in first
    ]
    assert store.complete(results, now=NOW) == [True] * 3
    # Waiting to be retried, it still does, whatever the time; then it goes first.
    assert claim_all(store, "x", NOW + 300) == []
    assert claim_all(store, "x", NOW + 600) == [a1]
    assert store.due_count(NOW + 600) == 0
    assert [detail(store, i).delivery.waiting_after for i in (a2, a3)] == [a1, a1]
    # Waiting, they are not due; the log shows the time they were due at (their own).
    listed = {d.id: d for d in store.query(limit=None)}
    assert listed[a2].next_attempt_at == listed[a3].next_attempt_at == NOW


def test_the_next_goes_once_the_one_before_has_succeeded(store: Store) -> None:
    a1, a2, a3 = (i for i, _ in store.enqueue([keyed("a") for _ in range(3)], now=NOW))
    for current, following in ((a1, a2), (a2, a3)):
        assert claim_all(store) == [current]
        finish_claimed(store, current)
        assert store.statuses([current]) == {current: "succeeded"}
        waiting = detail(store, following).delivery
        assert waiting.waiting_after is None and waiting.follows_failed is None
    assert claim_all(store) == [a3]


def finish_claimed(store: Store, delivery_id: str, token: str = "w", **result: Any) -> None:
    """Complete a claim `token` holds (re-read through the ids claim after a lease renewal)."""
    assert store.extend_lease([delivery_id], token=token, until=NOW + 60) == [delivery_id]
    claim = _claim_of(store, delivery_id, token)
    assert store.complete([outcome(claim, **result)], now=NOW) == [True]


def _claim_of(store: Store, delivery_id: str, token: str) -> Any:
    # A claim record for a delivery already leased to `token` (complete only needs id + token).
    from hookctl.store.records import Claim

    d = detail(store, delivery_id)
    return Claim(
        id=delivery_id, token=token, rule=d.delivery.rule, ticket=d.delivery.ticket,
        url=d.delivery.url, method=d.delivery.method, request=d.request, policy=d.policy,
        timeout=d.timeout, accept=d.accept, attempts=d.delivery.attempts,
        first_attempt_at=d.delivery.first_attempt_at, on_failure=None, event=None, event_id=None,
    )  # fmt: skip


def test_a_predecessor_failed_for_good_does_not_block_and_the_log_says_so(store: Store) -> None:
    a1, a2, a3 = (i for i, _ in store.enqueue([keyed("a") for _ in range(3)], now=NOW))
    assert claim_all(store) == [a1]
    waiting = detail(store, a2).delivery
    assert (waiting.waiting_after, waiting.waiting_after_attempts) == (a1, 0)
    assert detail(store, a3).delivery.waiting_after == a1  # the first one it waits for
    finish_claimed(store, a1, status="pending", code=503, next_at=NOW)
    assert detail(store, a2).delivery.waiting_after_attempts == 1
    assert claim_all(store) == [a1]
    finish_claimed(store, a1, status="failed", code=503)
    follower = detail(store, a2).delivery
    assert follower.follows_failed == a1 and follower.waiting_after is None
    assert claim_all(store) == [a2]
    listed = {d.id: d for d in store.query(limit=None)}
    assert listed[a2].follows_failed == a1 and listed[a3].waiting_after == a2
    assert listed[a1].follows_failed is None and listed[a3].follows_failed is None


def test_enqueue_leases_only_the_first_of_each_key(backend: Backend) -> None:
    store, other = backend(), backend()
    [(old, _)] = store.enqueue([keyed("a")], now=NOW)  # pending, unleased, in the store
    batch = [keyed("a"), keyed("b"), keyed("b"), keyed(None)]
    a2, b1, b2, plain = (
        i for i, _ in store.enqueue(batch, now=NOW, claim_token="f", lease_seconds=60)
    )
    held = store.extend_lease([a2, b1, b2, plain], token="f", until=NOW + 60)
    assert held == [b1, plain]
    assert claim_all(other, "x") == [old]  # the waiting ones stay for their turn
    assert claim_all(other, "x") == []


def test_dedupe_is_unaffected_and_a_duplicate_takes_no_place(store: Store) -> None:
    first = store.enqueue([keyed("a", dedupe_key="e1")], now=NOW)
    again = store.enqueue([keyed("a", dedupe_key="e1"), keyed("a", dedupe_key="e2")], now=NOW)
    assert again[0] == (first[0][0], False) and again[1][1]
    assert claim_all(store) == [first[0][0]]
    finish_claimed(store, first[0][0])
    assert claim_all(store) == [again[1][0]]


def test_a_replay_keeps_its_place_and_waits_for_one_in_flight(store: Store) -> None:
    a1, a2, a3 = (i for i, _ in store.enqueue([keyed("a") for _ in range(3)], now=NOW))
    assert claim_all(store) == [a1]
    finish_claimed(store, a1)
    assert claim_all(store) == [a2]  # a2 in flight
    assert store.requeue(ids=[a1], now=NOW) == [a1]
    assert claim_all(store, "x") == []  # a1 waits for a2 to finish
    finish_claimed(store, a2)
    assert claim_all(store, "x") == [a1]  # its old place: before a3
    finish_claimed(store, a1, token="x")
    assert claim_all(store, "x") == [a3]


def test_concurrent_clients_never_hold_two_of_one_key(backend: Backend) -> None:
    """Four clients claim and complete at once; per key, claims never overlap and go in order."""
    setup = backend()
    order: dict[str, list[str]] = defaultdict(list)
    for _ in range(4):
        batch = [keyed(f"k{n}") for n in range(10)]
        for d, (i, _) in zip(batch, setup.enqueue(batch, now=NOW), strict=True):
            order[d.order_key or ""].append(i)
    key_of = {i: k for k, ids in order.items() for i in ids}
    lock = threading.Lock()
    in_flight: dict[str, str] = {}
    done: dict[str, list[str]] = defaultdict(list)
    problems: list[str] = []

    def work(n: int) -> None:
        store = backend()
        rng = random.Random(n)
        idle = 0
        while idle < 50:
            claims = store.claim(now=NOW, limit=3, lease_seconds=60, token=f"w{n}")
            if not claims:
                idle += 1
                continue
            idle = 0
            with lock:
                for c in claims:
                    key = key_of[c.id]
                    if key in in_flight:
                        problems.append(f"{key}: {c.id} claimed while {in_flight[key]} held")
                    in_flight[key] = c.id
            results = []
            for c in claims:
                if rng.random() < 0.3:
                    results.append(outcome(c, status="pending", code=500, next_at=NOW))
                else:
                    results.append(outcome(c))
            with lock:
                for c, r in zip(claims, results, strict=True):
                    in_flight.pop(key_of[c.id], None)
                    if r.status == "succeeded":
                        done[key_of[c.id]].append(c.id)
                assert all(store.complete(results, now=NOW))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert problems == []
    assert dict(done) == dict(order)
