"""The store contract for rate limits per endpoint (issue 15), on every backend.

Slots are handed out atomically across clients, the strictest rate recorded recently applies,
a Retry-After hold pushes the schedule, and claims skip an endpoint that has no slot to give.
"""

from __future__ import annotations

import itertools
import threading

from hookctl.store.endpoint_records import RATE_MEMORY

from .test_store_contract import NOW, Backend, Store, enqueue_one

HOOKS = "https://hooks.example.com:443"
OTHER = "http://other.example:8080"


def reserve(store: Store, count: int, now: float = NOW, **options: object) -> list[float]:
    values: dict[str, object] = {"rule": "urgent", "rate": "5/s", "interval": 0.2}
    values.update(options)
    return store.reserve_slots(
        HOOKS,
        count=count,
        now=now,
        horizon=values.pop("horizon", 2.0),  # type: ignore[arg-type]
        **values,  # type: ignore[arg-type]
    ).slots


def test_slots_are_spaced_by_the_interval_from_the_schedules_end(store: Store) -> None:
    got = store.reserve_slots(
        HOOKS, rule="urgent", rate="5/s", interval=0.2, count=3, now=NOW, horizon=2.0
    )
    assert got.slots == [NOW, NOW + 0.2, NOW + 0.4]
    assert abs(got.next_slot - (NOW + 0.6)) < 1e-6
    assert (got.rate, got.interval) == ("5/s", 0.2)
    # The next reservation starts where this one ended, and none is handed out past the horizon.
    later = reserve(store, 100, now=NOW + 0.1)
    assert abs(later[0] - (NOW + 0.6)) < 1e-6
    assert later[-1] <= NOW + 0.1 + 2.0 and len(later) == 8
    # Once the schedule is behind now, it restarts at now (no burst to catch up).
    assert reserve(store, 2, now=NOW + 60) == [NOW + 60, NOW + 60.2]


def test_two_clients_reserving_at_once_never_get_slots_closer_than_the_interval(
    backend: Backend,
) -> None:
    clients = [backend(), backend()]
    taken: list[float] = []
    lock = threading.Lock()

    def work(store: Store) -> None:
        for n in range(25):
            slots = reserve(store, 3, now=NOW + n * 0.01, horizon=3600.0)
            with lock:
                taken.extend(slots)

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    taken.sort()
    assert len(taken) == 150
    gaps = [b - a for a, b in itertools.pairwise(taken)]
    assert min(gaps) >= 0.2 - 1e-6


def test_the_strictest_rate_recorded_recently_applies_to_every_rule(backend: Backend) -> None:
    one, other = backend(), backend()
    reserve(one, 1, rule="digest", rate="1/s", interval=1.0)
    # Another rule (another process) naming 5/s for the same endpoint gets 1/s spacing.
    got = other.reserve_slots(
        HOOKS, rule="urgent", rate="5/s", interval=0.2, count=2, now=NOW + 1, horizon=5.0
    )
    assert (got.rate, got.interval) == ("1/s", 1.0)
    assert got.slots == [NOW + 1, NOW + 2]
    assert other.endpoint_limits(now=NOW + 2)[HOOKS].rate == "1/s"
    # A rule's new rate replaces its old one: loosened, the looser strictest applies at once.
    reserve(one, 1, now=NOW + 3, rule="digest", rate="2/s", interval=0.5)
    assert other.endpoint_limits(now=NOW + 3)[HOOKS].rate == "2/s"
    # A rate not named for RATE_MEMORY binds no more.
    later = NOW + 3 + RATE_MEMORY + 1
    got = other.reserve_slots(
        HOOKS, rule="urgent", rate="5/s", interval=0.2, count=2, now=later, horizon=5.0
    )
    assert (got.rate, got.interval) == ("5/s", 0.2)


def test_retry_after_pushes_the_endpoints_next_slot_and_holds_its_claims(
    backend: Backend,
) -> None:
    one, other = backend(), backend()
    held = enqueue_one(one, url="https://hooks.example.com/a")
    free = enqueue_one(one, url="http://other.example:8080/b")
    one.slow_endpoint(HOOKS, until=NOW + 30, now=NOW, reason="HTTP 429, Retry-After 30s")
    limit = other.endpoint_limits(now=NOW + 1)[HOOKS]
    assert (limit.not_before, limit.not_before_reason) == (NOW + 30, "HTTP 429, Retry-After 30s")
    assert limit.rate is None  # slowed without a rate: a hold alone
    # An earlier hold never shortens a later one.
    other.slow_endpoint(HOOKS, until=NOW + 10, now=NOW + 1, reason="HTTP 503, Retry-After 9s")
    assert other.endpoint_limits(now=NOW + 1)[HOOKS].not_before == NOW + 30
    assert other.due_count(NOW + 5) == 1
    assert [c.id for c in other.claim(now=NOW + 5, limit=10, lease_seconds=60, token="t")] == [free]
    assert reserve(other, 3, now=NOW + 5) == []  # nothing within the horizon
    assert reserve(other, 1, now=NOW + 29, horizon=2.0) == [NOW + 30]
    assert [c.id for c in other.claim(now=NOW + 31, limit=10, lease_seconds=60, token="t")] == [
        held
    ]
    assert other.endpoint_limits(now=NOW + 31)[HOOKS].not_before is None  # the hold is over


def test_claims_skip_an_endpoint_whose_schedule_is_full_beyond_the_horizon(
    backend: Backend,
) -> None:
    one, other = backend(), backend()
    waiting = enqueue_one(one, url="https://hooks.example.com/a")
    free = enqueue_one(one, url="http://other.example:8080/b")
    # 1/s, 30 slots wanted, horizon 2 s: 3 handed out; the schedule ends at NOW + 3.
    assert len(reserve(one, 30, rule="digest", rate="1/s", interval=1.0)) == 3
    assert other.due_count(NOW) == 1
    assert [c.id for c in other.claim(now=NOW, limit=10, lease_seconds=60, token="t")] == [free]
    # Once the schedule's end is within the horizon again, its deliveries are claimable.
    assert [c.id for c in other.claim(now=NOW + 1, limit=10, lease_seconds=60, token="t")] == [
        waiting
    ]
