"""The store contract's circuit breaker (store/breaker.py), on every backend.

Outcomes carry the breaker's reading (`health`) of their endpoint; the store advances the
endpoint's breaker in the transaction that records them, and every client sees one breaker:
claims skip an open endpoint except for its one probe, the probe wait doubles to its cap, a
success closes it, and auto-disable pauses it and enqueues its notice exactly once.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from hookctl.store.contract import Store
from hookctl.store.endpoint_records import Breaker
from hookctl.store.records import AttemptResult, Claim
from tests.contract.test_store_contract import (
    NOW,
    Backend,
    claim_one,
    detail,
    enqueue_one,
    new,
    outcome,
)

HOOKS = "https://hooks.example.com:443"
OTHER = "http://other.example:80"
SETTINGS = Breaker(failures=3, probe=10.0, probe_max=35.0, disable_after=3600.0)


def reading(
    claim: Claim,
    health: str,
    *,
    at: float,
    settings: Breaker = SETTINGS,
    free: bool = False,
    **options: Any,
) -> AttemptResult:
    """An attempt's outcome as the pipeline records it, with the breaker's reading."""
    down = health == "down"
    result = outcome(
        claim,
        status="pending" if down or free else "succeeded",
        code=503 if down else 200,
        next_at=at + 1 if down or free else None,
        started=at,
        **options,
    )
    return replace(result, endpoint=HOOKS, health=health, breaker=settings, free=free)  # type: ignore[arg-type]


def fail_until_open(store: Store, count: int = 3, at: float = NOW) -> list[str]:
    """`count` deliveries to HOOKS, each attempted once and failing: the breaker opens at 3."""
    ids = [enqueue_one(store, now=at, url="https://hooks.example.com/a") for _ in range(count)]
    for n, delivery_id in enumerate(ids):
        claim = claim_one(store, f"t{n}", now=at, ids=[delivery_id])
        store.complete([reading(claim, "down", at=at)], now=at)
    return ids


def test_an_endpoint_opens_after_its_rules_consecutive_failures(backend: Backend) -> None:
    one, other = backend(), backend()
    ids = fail_until_open(one, count=2)
    assert other.breaker_states()[HOOKS].open_since is None  # two failures: still closed
    assert other.breaker_states()[HOOKS].failures == 2
    ids += fail_until_open(one, count=1, at=NOW + 1)
    state = other.breaker_states()[HOOKS]
    assert (state.failures, state.open_since, state.next_probe_at) == (3, NOW + 1, NOW + 11)
    free = enqueue_one(one, now=NOW + 1, url="http://other.example/b")
    # Before the probe is due, nobody claims HOOKS' deliveries, nor counts them due.
    assert other.due_count(NOW + 5) == 1
    assert [c.id for c in other.claim(now=NOW + 5, limit=10, lease_seconds=60, token="x")] == [free]
    held = detail(other, ids[0]).delivery
    assert (held.open_since, held.next_probe_at, held.attempts) == (NOW + 1, NOW + 11, 1)
    assert [d.open_since for d in other.query() if d.id == ids[0]] == [NOW + 1]
    health = {h.endpoint: h for h in other.endpoint_health(since=NOW - 60)}
    assert health[HOOKS].breaker_state == "open" and health[HOOKS].failing_since == NOW
    assert health[OTHER].breaker_state == "closed"


def test_an_answer_between_failures_resets_the_count(store: Store) -> None:
    ids = [enqueue_one(store, url="https://hooks.example.com/a") for _ in range(4)]
    claims = store.claim(now=NOW, limit=4, lease_seconds=60, token="t")
    assert sorted(c.id for c in claims) == sorted(ids)
    a, b, c, d = claims
    store.complete(
        [reading(a, "down", at=NOW), reading(b, "down", at=NOW), reading(c, "up", at=NOW)],
        now=NOW,
    )
    assert HOOKS not in store.breaker_states()  # the success came last: closed, no failures
    store.complete([reading(d, "down", at=NOW + 1)], now=NOW + 1)
    assert store.breaker_states()[HOOKS].failures == 1


def test_one_probe_at_a_time_across_clients(backend: Backend) -> None:
    one, other = backend(), backend()
    ids = fail_until_open(one, count=3)
    assert other.claim(now=NOW + 9, limit=10, lease_seconds=60, token="early") == []
    probe = one.claim(now=NOW + 10, limit=10, lease_seconds=60, token="p1")
    assert [c.probe for c in probe] == [True] and probe[0].id in ids
    # The probe is out: no other client gets a second one, nor the rest of the backlog.
    assert other.claim(now=NOW + 11, limit=10, lease_seconds=60, token="p2") == []
    assert one.claim(now=NOW + 12, limit=10, lease_seconds=60, token="p3") == []
    # A prober that died: its probe's lease runs out, and one more probe may go.
    again = other.claim(now=NOW + 71, limit=10, lease_seconds=60, token="p4")
    assert [c.probe for c in again] == [True]


def test_probes_racing_from_two_threads_hand_out_one(backend: Backend) -> None:
    one, other = backend(), backend()
    fail_until_open(one, count=3)
    start = threading.Barrier(2)
    got: dict[str, list[Claim]] = {}

    def take(name: str, store: Store) -> None:
        start.wait()
        got[name] = store.claim(now=NOW + 10, limit=5, lease_seconds=60, token=name)

    threads = [threading.Thread(target=take, args=(n, s)) for n, s in (("a", one), ("b", other))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(c) for c in got.values()) == [0, 1]


def test_a_failed_probe_doubles_the_wait_up_to_the_cap(store: Store) -> None:
    fail_until_open(store, count=3)
    due, waits = NOW + 10, []
    for n in range(4):
        [probe] = store.claim(now=due, limit=5, lease_seconds=60, token=f"probe{n}")
        assert probe.probe
        store.complete([reading(probe, "down", at=due, free=True)], now=due)
        state = store.breaker_states()[HOOKS]
        waits.append(round(state.next_probe_at - due, 3))  # type: ignore[operator]
        due = state.next_probe_at  # type: ignore[assignment]
    assert waits == [20.0, 35.0, 35.0, 35.0]


def test_a_successful_probe_closes_it_for_every_client(backend: Backend) -> None:
    one, other = backend(), backend()
    ids = fail_until_open(one, count=3)
    [probe] = one.claim(now=NOW + 10, limit=5, lease_seconds=60, token="p")
    one.complete([reading(probe, "up", at=NOW + 10)], now=NOW + 10)
    assert HOOKS not in other.breaker_states()
    rest = other.claim(now=NOW + 11, limit=10, lease_seconds=60, token="drain")
    assert sorted(c.id for c in rest) == sorted(set(ids) - {probe.id})
    assert not any(c.probe for c in rest)
    health = {h.endpoint: h for h in other.endpoint_health(since=NOW - 60)}
    assert health[HOOKS].last_success_at == NOW + 10 and health[HOOKS].breaker_state == "closed"


def test_time_open_spends_neither_retries_nor_the_retry_window(store: Store) -> None:
    [first, *_] = fail_until_open(store, count=3)  # each attempted once, at NOW
    before = store.get(first)
    assert before is not None and before.delivery.first_attempt_at == NOW
    # A failed probe is logged, but its retry policy does not count it.
    [probe] = store.claim(now=NOW + 10, limit=5, lease_seconds=60, token="p", ids=None)
    store.complete([reading(probe, "down", at=NOW + 10, free=True)], now=NOW + 10)
    logged = detail(store, probe.id)
    assert logged.delivery.attempts == 2 and len(logged.attempt_log) == 2
    # Open for an hour; the next probe succeeds and closes it.
    [closing] = store.claim(now=NOW + 3600, limit=5, lease_seconds=60, token="q")
    store.complete([reading(closing, "up", at=NOW + 3600)], now=NOW + 3600)
    later = store.claim(now=NOW + 3601, limit=5, lease_seconds=60, token="r")
    by_id = {c.id: c for c in later}
    assert probe.id in by_id or probe.id == closing.id
    if probe.id in by_id:
        assert by_id[probe.id].run_attempts == 1  # the free attempt is not counted
    # Opened at NOW, closed at NOW + 3600: their window starts that much later.
    for c in later:
        assert c.first_attempt_at == NOW + 3600


def test_a_free_attempt_does_not_start_the_retry_window(store: Store) -> None:
    delivery_id = enqueue_one(store, url="https://hooks.example.com/a")
    claim = claim_one(store, "t", ids=[delivery_id])
    store.complete([reading(claim, "gone", at=NOW + 1, free=True)], now=NOW + 1)
    shown = detail(store, delivery_id).delivery
    assert (shown.status, shown.attempts, shown.first_attempt_at) == ("pending", 1, None)


def test_gone_pauses_the_endpoint(backend: Backend) -> None:
    one, other = backend(), backend()
    delivery_id = enqueue_one(one, url="https://hooks.example.com/a")
    claim = claim_one(one, "t", ids=[delivery_id])
    one.complete([reading(claim, "gone", at=NOW, free=True)], now=NOW)
    [(endpoint, (since, reason))] = other.paused_endpoints().items()
    assert (endpoint, since) == (HOOKS, NOW)
    assert reason is not None and reason.startswith("410 Gone") and delivery_id in reason
    assert other.claim(now=NOW + 5, limit=5, lease_seconds=60, token="x") == []
    assert other.resume_endpoint(HOOKS, now=NOW + 6)
    assert claim_one(other, "y", now=NOW + 7).id == delivery_id


def test_auto_disable_pauses_once_and_enqueues_one_notice_with_two_clients_racing(
    backend: Backend,
) -> None:
    one, other = backend(), backend()
    settings = replace(SETTINGS, failures=100, disable_after=100.0)
    ids = [enqueue_one(one, url="https://hooks.example.com/a") for _ in range(3)]
    first = claim_one(one, "t0", ids=[ids[0]])
    one.complete([reading(first, "down", at=NOW, settings=settings)], now=NOW)
    # No success for 200 s (over disable_after): both clients record a failure at once, each
    # with the notice its pause would enqueue.
    claims = {
        "a": claim_one(one, "ta", ids=[ids[1]]),
        "b": claim_one(other, "tb", ids=[ids[2]]),
    }
    notices = {name: new(NOW + 200, rule="urgent:on_failure") for name in claims}
    start = threading.Barrier(2)
    inserted: dict[str, set[str]] = {}

    def record(name: str, store: Store) -> None:
        start.wait()
        result = reading(claims[name], "down", at=NOW + 200, settings=settings)
        _, inserted[name] = store.complete_with_follow_ups(
            [result], now=NOW + 200, endpoint_notices={HOOKS: notices[name]}
        )

    threads = [threading.Thread(target=record, args=(n, s)) for n, s in (("a", one), ("b", other))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(found) for found in inserted.values()) == [0, 1]
    [notice_id] = inserted["a"] | inserted["b"]
    assert notice_id in {n.id for n in notices.values()}
    [(endpoint, (since, reason))] = one.paused_endpoints().items()
    assert endpoint == HOOKS and since == NOW + 200
    assert reason is not None and reason.startswith("auto: no success for 1m40s")
    notices_stored = [d for d in one.query(rule="urgent:on_failure")]
    assert [d.id for d in notices_stored] == [notice_id]


def test_auto_disable_waits_for_a_batch_that_carries_its_notice(store: Store) -> None:
    settings = replace(SETTINGS, failures=100, disable_after=100.0)
    ids = [enqueue_one(store, url="https://hooks.example.com/a") for _ in range(2)]
    store.complete(
        [reading(claim_one(store, "a", ids=[ids[0]]), "down", at=NOW, settings=settings)], now=NOW
    )
    late = reading(claim_one(store, "b", ids=[ids[1]]), "down", at=NOW + 200, settings=settings)
    store.complete([late], now=NOW + 200)  # nobody offered a notice: not paused yet
    assert store.paused_endpoints() == {}


def test_a_healthy_endpoint_gets_no_breaker_row(store: Store) -> None:
    delivery_id = enqueue_one(store, url="https://hooks.example.com/a")
    store.complete([reading(claim_one(store, "t"), "up", at=NOW)], now=NOW)
    assert store.breaker_states() == {}
    assert detail(store, delivery_id).delivery.status == "succeeded"


def test_the_probe_is_never_a_delivery_out_of_its_order_by_turn(store: Store) -> None:
    # Three keys' first deliveries fail (retries far off) and open the endpoint; a later one of
    # key t0, replayed so it is due, is the endpoint's only due delivery, but not its turn.
    url = "https://hooks.example.com/a"
    firsts = [enqueue_one(store, url=url, order_key=f"t{n}") for n in range(3)]
    for n, delivery_id in enumerate(firsts):
        claim = claim_one(store, f"t{n}", ids=[delivery_id])
        failed = replace(reading(claim, "down", at=NOW), next_attempt_at=NOW + 1000)
        assert store.complete([failed], now=NOW) == [True]
    later = enqueue_one(store, now=NOW + 1, url=url, order_key="t0")
    assert store.requeue(ids=[later], now=NOW + 1) == [later]
    assert store.breaker_states()[HOOKS].next_probe_at == NOW + 10
    assert store.claim(now=NOW + 10, limit=10, lease_seconds=60, token="probe") == []
