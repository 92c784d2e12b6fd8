"""The store contract: what every backend must do, checked through the protocol alone.

No SQL here: each test drives a store from `open_store` (the `backend` fixture, one param per
backend) and reads state back through the same protocol. A second client from `backend()`
stands for another process on the same database.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import pytest

from hookctl.rules.policy import DEFAULT_POLICY
from hookctl.store import holder as holders
from hookctl.store.contract import Store, WorkSignal
from hookctl.store.errors import AmbiguousId, BadSelection, UnknownDelivery
from hookctl.store.ids import new_delivery_id
from hookctl.store.log_records import Delivery, DeliveryDetail, QueueLevels
from hookctl.store.records import STATUSES, AttemptResult, Claim, NewDelivery

NOW = 1_700_000_000.0
Backend = Callable[..., Store]


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


def outcome(
    claim: Claim,
    *,
    status: str = "succeeded",
    code: int | None = 200,
    next_at: float | None = None,
    token: str | None = None,
    started: float = NOW,
    sent: bool = True,
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
        sent=sent,
    )


def enqueue_one(store: Store, now: float = NOW, **fields: Any) -> str:
    [(delivery_id, inserted)] = store.enqueue([new(now, **fields)], now=now)
    assert inserted
    return delivery_id


def detail(store: Store, delivery_id: str) -> DeliveryDetail:
    found = store.get(delivery_id)
    assert found is not None, f"no delivery {delivery_id}"
    return found


def claim_one(store: Store, token: str, now: float = NOW, **options: Any) -> Claim:
    [claim] = store.claim(now=now, limit=1, lease_seconds=60, token=token, **options)
    return claim


# --- enqueue, dedupe, durability ---------------------------------------------------------------


def test_enqueue_stores_a_pending_delivery_due_now(store: Store) -> None:
    delivery_id = enqueue_one(store, event={"ticket": {"id": 42}}, on_failure={"url": "x"})
    found = detail(store, delivery_id)
    d = found.delivery
    assert isinstance(d, Delivery)
    assert (d.status, d.attempts, d.replays, d.next_attempt_at) == ("pending", 0, 0, NOW)
    assert d.created_at == d.updated_at == NOW and d.first_attempt_at is None
    assert (d.rule, d.ticket, d.event_id, d.event_name) == (
        "urgent",
        "42",
        "evt_1",
        "ticket.created",
    )
    assert found.attempt_log == []
    assert found.event == {"ticket": {"id": 42}} and found.on_failure == {"url": "x"}
    assert found.policy == DEFAULT_POLICY.to_dict()
    assert found.request == new().request
    assert store.due_count(NOW) == 1 and store.due_count(NOW - 1) == 0


def test_enqueue_dedupes_per_rule_and_within_a_batch(store: Store) -> None:
    first = enqueue_one(store, dedupe_key="ticket-42-opened")
    batch = [
        new(dedupe_key="ticket-42-opened"),  # already stored
        new(dedupe_key="ticket-43-opened"),
        new(dedupe_key="ticket-43-opened"),  # a duplicate within the batch
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
    assert store.enqueue([], now=NOW) == []


def test_what_enqueue_returned_is_there_for_another_client(backend: Backend) -> None:
    writer = backend()
    ids = [i for i, _ in writer.enqueue([new() for _ in range(3)], now=NOW)]
    writer.close()
    reader = backend()
    assert sorted(d.id for d in reader.query(limit=None)) == sorted(ids)


def test_ids_that_new_delivery_id_did_not_make_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="not made by new_delivery_id"):
        store.enqueue([new(id="d1")], now=NOW)
    with pytest.raises(ValueError, match="lease_seconds"):
        store.enqueue([new()], now=NOW, claim_token="fire")


# --- claims: order, leases, fencing, renewal, release -----------------------------------------


def test_claim_takes_due_deliveries_oldest_due_first(store: Store) -> None:
    late = enqueue_one(store, now=NOW - 10)
    early = enqueue_one(store, now=NOW - 20)
    future = enqueue_one(store, now=NOW + 10)
    claims = store.claim(now=NOW, limit=10, lease_seconds=60, token="a")
    assert [c.id for c in claims] == [early, late]
    assert store.claim(now=NOW, limit=10, lease_seconds=60, token="b") == []
    assert [c.id for c in store.claim(now=NOW + 10, limit=10, lease_seconds=60, token="b")] == [
        future
    ]


def test_claim_respects_limit_due_by_and_ids(store: Store) -> None:
    ids = [i for i, _ in store.enqueue([new() for _ in range(5)], now=NOW)]
    assert store.claim(now=NOW, limit=0, lease_seconds=60, token="a") == []
    two = store.claim(now=NOW, limit=2, lease_seconds=60, token="a", ids=ids[3:])
    assert sorted(c.id for c in two) == sorted(ids[3:])
    assert store.claim(now=NOW - 1, limit=9, lease_seconds=60, token="a") == []  # not due yet
    rest = store.claim(now=NOW + 5, limit=9, lease_seconds=60, token="b", due_by=NOW)
    assert sorted(c.id for c in rest) == sorted(ids[:3])


def test_a_claim_carries_what_the_sender_needs(store: Store) -> None:
    delivery_id = enqueue_one(store, event={"k": "v"}, on_failure={"url": "u"})
    claim = claim_one(store, "tok")
    assert claim == Claim(
        id=delivery_id,
        token="tok",
        rule="urgent",
        ticket="42",
        url="https://hooks.example.com/***",
        method="POST",
        request=new().request,
        policy=DEFAULT_POLICY.to_dict(),
        timeout=3.0,
        accept="2xx-3xx",
        attempts=0,
        first_attempt_at=None,
        on_failure={"url": "u"},
        event={"k": "v"},
        event_id="evt_1",
    )


def test_a_lease_keeps_other_clients_out_until_it_expires(backend: Backend) -> None:
    fire, loop = backend(), backend()
    [(delivery_id, _)] = fire.enqueue([new()], now=NOW, claim_token="fire", lease_seconds=60)
    assert loop.claim(now=NOW + 59, limit=10, lease_seconds=60, token="loop") == []
    assert loop.due_count(NOW + 59) == 0
    assert detail(loop, delivery_id).delivery.lease_expires_at == NOW + 60
    [taken] = loop.claim(now=NOW + 60, limit=10, lease_seconds=60, token="loop")
    assert taken.id == delivery_id


def test_a_stale_tokens_outcome_is_logged_but_not_applied(backend: Backend) -> None:
    slow_worker, fast_worker = backend(), backend()
    delivery_id = enqueue_one(slow_worker)
    slow = claim_one(slow_worker, "slow")
    fast = claim_one(fast_worker, "fast", now=NOW + 61)  # the slow one's lease ran out
    assert fast.id == slow.id == delivery_id

    assert slow_worker.complete([outcome(slow)], now=NOW + 70) == [False]
    found = detail(fast_worker, delivery_id)
    assert (found.delivery.status, found.delivery.attempts) == ("pending", 0)
    assert [a.number for a in found.attempt_log] == [1]  # the request did happen

    retry = outcome(fast, status="pending", code=500, next_at=NOW + 1800, started=NOW + 61)
    assert fast_worker.complete([retry], now=NOW + 71) == [True]
    found = detail(fast_worker, delivery_id)
    d = found.delivery
    assert (d.status, d.attempts, d.next_attempt_at) == ("pending", 1, NOW + 1800)
    assert (d.status_code, d.error, d.lease_expires_at) == (500, "HTTP 500", None)
    assert [(a.number, a.status_code) for a in found.attempt_log] == [(1, 200), (2, 500)]


def test_complete_reports_each_result_of_a_batch(store: Store) -> None:
    store.enqueue([new() for _ in range(3)], now=NOW)
    claims = store.claim(now=NOW, limit=3, lease_seconds=60, token="t")
    results = [outcome(claims[0]), outcome(claims[1], token="wrong"), outcome(claims[2])]
    assert store.complete(results, now=NOW) == [True, False, True]
    assert sum(len(detail(store, c.id).attempt_log) for c in claims) == 3
    with pytest.raises(ValueError, match="no next attempt"):
        store.complete([outcome(claims[1], status="pending", code=500)], now=NOW)


def test_success_is_recorded_in_full(store: Store) -> None:
    delivery_id = enqueue_one(store)
    claim = claim_one(store, "t")
    assert store.complete([outcome(claim, started=NOW + 0.5)], now=NOW + 1) == [True]
    found = detail(store, delivery_id)
    d = found.delivery
    assert (d.status, d.attempts, d.status_code, d.error) == ("succeeded", 1, 200, None)
    assert (d.next_attempt_at, d.first_attempt_at, d.updated_at) == (None, NOW + 0.5, NOW + 1)
    [attempt] = found.attempt_log
    assert (attempt.delivery_id, attempt.number, attempt.duration_ms) == (delivery_id, 1, 12.5)
    assert attempt.response_headers == {"content-type": "text/plain"}
    assert attempt.response_body == "ok"
    assert store.claim(now=NOW + 10**6, limit=10, lease_seconds=60, token="x") == []


def test_retries_keep_the_first_attempt_time(store: Store) -> None:
    delivery_id = enqueue_one(store)
    claim = claim_one(store, "t")
    store.complete([outcome(claim, status="pending", code=503, next_at=NOW + 30)], now=NOW)
    assert store.claim(now=NOW + 29, limit=1, lease_seconds=60, token="t2") == []
    again = claim_one(store, "t2", now=NOW + 30)
    assert (again.attempts, again.first_attempt_at) == (1, NOW)
    store.complete([outcome(again, status="failed", code=410, started=NOW + 30)], now=NOW + 31)
    d = detail(store, delivery_id).delivery
    assert (d.status, d.attempts, d.first_attempt_at, d.next_attempt_at) == ("failed", 2, NOW, None)


def test_a_held_delivery_is_no_attempt(store: Store) -> None:
    """AttemptResult(sent=False): nothing went out, so nothing is logged or counted."""
    delivery_id = enqueue_one(store)
    claim = claim_one(store, "t")
    held = outcome(claim, status="pending", code=None, next_at=NOW, sent=False)
    held.error = "held: environment variable TOKEN is not set"
    assert store.complete([held], now=NOW) == [True]
    found = detail(store, delivery_id)
    assert found.attempt_log == []
    d = found.delivery
    assert (d.status, d.attempts, d.first_attempt_at, d.status_code) == ("pending", 0, None, None)
    assert d.error == held.error
    again = claim_one(store, "t2", now=NOW)  # due again at once
    assert (again.attempts, again.run_attempts) == (0, 0)


def test_renewal_keeps_a_lease_and_only_its_token_can_renew(backend: Backend) -> None:
    mine, other = backend(), backend()
    mine.enqueue([new(), new()], now=NOW)
    ids = [c.id for c in mine.claim(now=NOW, limit=2, lease_seconds=30, token="t")]
    assert mine.extend_lease(ids, token="t", until=NOW + 300) == ids
    assert other.claim(now=NOW + 100, limit=10, lease_seconds=30, token="other") == []
    assert other.extend_lease(ids, token="other", until=NOW + 900) == []
    assert len(other.claim(now=NOW + 300, limit=10, lease_seconds=30, token="other")) == 2


def test_release_hands_claims_back_to_anyone(backend: Backend) -> None:
    mine, other = backend(), backend()
    mine.enqueue([new(), new()], now=NOW)
    ids = sorted(c.id for c in mine.claim(now=NOW, limit=2, lease_seconds=600, token="t"))
    assert other.release(ids, token="not-mine") == 0
    assert mine.release(ids, token="t") == 2
    assert other.due_count(NOW) == 2
    assert sorted(c.id for c in other.claim(now=NOW, limit=5, lease_seconds=60, token="o")) == ids
    assert mine.complete([outcome(c, token="t") for c in []], now=NOW) == []


def test_release_until_postpones_without_spending_an_attempt(backend: Backend) -> None:
    mine, other = backend(), backend()
    mine.enqueue([new(), new()], now=NOW)
    ids = sorted(c.id for c in mine.claim(now=NOW, limit=2, lease_seconds=600, token="t"))
    assert other.release(ids, token="not-mine", until=NOW + 60) == 0
    assert mine.release(ids, token="t", until=NOW + 60) == 2
    assert other.due_count(NOW + 59) == 0
    assert other.claim(now=NOW + 59, limit=5, lease_seconds=60, token="o") == []
    again = other.claim(now=NOW + 60, limit=5, lease_seconds=60, token="o")
    assert sorted(c.id for c in again) == ids
    assert all((c.attempts, c.run_attempts) == (0, 0) for c in again)
    # An `until` earlier than when a delivery was due never brings it forward.
    assert other.release(ids, token="o", until=NOW) == 2
    assert other.claim(now=NOW + 59, limit=5, lease_seconds=60, token="o2") == []


def test_another_client_never_claims_what_one_holds(backend: Backend) -> None:
    a, b = backend(), backend()
    a.enqueue([new() for _ in range(10)], now=NOW)
    first = a.claim(now=NOW, limit=6, lease_seconds=60, token="a")
    second = b.claim(now=NOW, limit=6, lease_seconds=60, token="b")
    assert len(first) == 6 and len(second) == 4
    assert not {c.id for c in first} & {c.id for c in second}


# --- dead lease holders on this machine ---------------------------------------------------------


def _dead_holder() -> holders.Holder:
    """The identity of a process on this machine that has exited."""
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    here = holders.this_process()
    return holders.Holder(machine=here.machine, pid=int(child.stdout), started="1")


@pytest.mark.skipif(not holders.this_process().started, reason="needs /proc (Linux)")
def test_claims_of_a_holder_whose_process_is_gone_are_taken_at_once(backend: Backend) -> None:
    dead = backend(holder=_dead_holder())
    [(delivery_id, _)] = dead.enqueue([new()], now=NOW, claim_token="dead", lease_seconds=600)
    alive = backend()
    assert alive.due_count(NOW) == 1  # due now, not in 10 minutes
    taken = claim_one(alive, "alive")
    assert taken.id == delivery_id
    # ...and the dead one's outcome, should it come after all, is fenced off.
    assert dead.complete([outcome(taken, token="dead")], now=NOW) == [False]


def test_a_holder_on_another_machine_keeps_its_lease(backend: Backend) -> None:
    elsewhere = holders.Holder(machine="other-host/boot/pid:[1]", pid=1, started="1")
    remote = backend(holder=elsewhere)
    remote.enqueue([new()], now=NOW, claim_token="remote", lease_seconds=600)
    local = backend()
    assert local.due_count(NOW) == 0
    assert local.claim(now=NOW + 599, limit=5, lease_seconds=60, token="local") == []
    assert len(local.claim(now=NOW + 600, limit=5, lease_seconds=60, token="local")) == 1


def test_a_live_holder_on_this_machine_keeps_its_lease(backend: Backend) -> None:
    here = holders.this_process()
    sibling = backend(holder=holders.Holder(here.machine, here.pid, here.started))
    sibling.enqueue([new()], now=NOW, claim_token="sibling", lease_seconds=600)
    other = backend(holder=holders.Holder(here.machine, here.pid, here.started + "x"))
    # A different start time is a different (dead) process; the same one is alive.
    assert backend().claim(now=NOW, limit=5, lease_seconds=60, token="t") == []
    assert other.due_count(NOW) == 0


# --- follow-ups -----------------------------------------------------------------------------


def test_an_on_failure_follow_up_is_enqueued_with_the_failure_exactly_once(
    backend: Backend,
) -> None:
    store, rival = backend(), backend()
    enqueue_one(store)
    claim = claim_one(store, "t1")
    notice = new(NOW, rule="urgent:on_failure", dedupe_key=f"on_failure:{claim.id}:1")
    failed = outcome(claim, status="failed", code=500)
    applied, inserted = store.complete_with_follow_ups(
        [failed], now=NOW, follow_ups={claim.id: notice}, claim_token="t1", lease_seconds=60
    )
    assert applied == [True] and inserted == {notice.id}
    # Claimed by the caller as it is inserted: nobody else sends it meanwhile.
    assert rival.claim(now=NOW, limit=10, lease_seconds=60, token="t2") == []
    again = new(NOW, rule="urgent:on_failure", dedupe_key=f"on_failure:{claim.id}:1")
    stale = outcome(claim, status="failed", code=500, token="someone-else")
    applied, inserted = rival.complete_with_follow_ups(
        [stale], now=NOW, follow_ups={claim.id: again}, claim_token="t3", lease_seconds=60
    )
    assert applied == [False] and inserted == set()
    # A second failure with the same key (another worker's) is not inserted twice either.
    other = enqueue_one(store)
    second = claim_one(store, "t4", ids=[other])
    same_key = new(NOW, rule="urgent:on_failure", dedupe_key=f"on_failure:{claim.id}:1")
    _, inserted = store.complete_with_follow_ups(
        [outcome(second, status="failed", code=500)], now=NOW, follow_ups={second.id: same_key}
    )
    assert inserted == set()
    notices = [d for d in store.query(limit=None) if d.rule == "urgent:on_failure"]
    assert [d.id for d in notices] == [notice.id]


# --- replay (requeue), select, unrendered -----------------------------------------------------


def test_requeue_keeps_the_id_and_restarts_the_schedule(store: Store) -> None:
    delivery_id = enqueue_one(store)
    claim = claim_one(store, "t")
    store.complete([outcome(claim, status="failed", code=410)], now=NOW)

    assert store.requeue(ids=[delivery_id[:20]], now=NOW + 100) == [delivery_id]
    found = detail(store, delivery_id)
    d = found.delivery
    assert (d.status, d.next_attempt_at, d.first_attempt_at) == ("pending", NOW + 100, None)
    assert (d.attempts, d.replays, len(found.attempt_log)) == (1, 1, 1)

    again = claim_one(store, "t2", now=NOW + 100)
    assert again.id == delivery_id
    assert (again.attempts, again.run_attempts, again.replays) == (1, 0, 1)
    store.complete([outcome(again, started=NOW + 100)], now=NOW + 101)
    found = detail(store, delivery_id)
    assert found.delivery.status == "succeeded"
    assert [a.number for a in found.attempt_log] == [1, 2]


def test_requeue_by_filter_and_a_live_lease_is_left_alone(store: Store) -> None:
    ids = [enqueue_one(store, rule=r) for r in ("a", "a", "b")]
    claims = store.claim(now=NOW, limit=3, lease_seconds=60, token="t")
    store.complete([outcome(c, status="failed", code=500) for c in claims], now=NOW)
    assert store.requeue(status="failed", rule="a", now=NOW + 5) == sorted(ids[:2])
    assert detail(store, ids[2]).delivery.status == "failed"
    assert store.due_count(NOW + 5) == 2
    busy = enqueue_one(store)
    claim_one(store, "busy", ids=[busy])
    assert store.requeue(ids=[busy], now=NOW + 1) == [busy]
    assert store.claim(now=NOW + 1, limit=9, lease_seconds=60, token="o", ids=[busy]) == []


def test_selection_errors_are_the_stores_own(store: Store) -> None:
    one = enqueue_one(store)
    enqueue_one(store)  # the same millisecond: the same first characters
    with pytest.raises(UnknownDelivery, match="no delivery 'msg_NOPE'"):
        store.requeue(ids=["msg_NOPE"], now=NOW)
    with pytest.raises(BadSelection):
        store.select()
    with pytest.raises(BadSelection):
        store.select(ids=[one], status="failed")
    with pytest.raises(AmbiguousId, match="more than one delivery"):
        store.get(one[:14])
    assert store.get("msg_ZZZZ") is None
    assert detail(store, one[4:20].lower()).delivery.id == one
    assert store.select(ids=[one[:20]]) == [one]
    assert store.statuses([one, "msg_NOPE"]) == {one: "pending"}


def test_an_unrendered_delivery_is_requeued_only_with_its_request_rendered_anew(
    store: Store,
) -> None:
    bare = enqueue_one(store, unrendered=True, event={"ticket": {"id": 7}})
    fine = enqueue_one(store)
    [found] = store.unrendered([bare, fine])
    assert (found.id, found.rule, found.event) == (bare, "urgent", {"ticket": {"id": 7}})
    assert store.requeue(ids=[bare, fine], now=NOW + 1) == [fine]
    again = new(rule="urgent", request={"method": "POST", "url": "https://x/", "body": "{}"})
    assert store.requeue(ids=[bare], now=NOW + 2, rendered={bare: again}) == [bare]
    found_again = detail(store, bare)
    assert found_again.request == again.request and not found_again.delivery.unrendered


# --- the log: query, stats, purge -------------------------------------------------------------


def test_query_filters_newest_first(store: Store) -> None:
    a = enqueue_one(store, now=NOW, rule="a", ticket="1")
    b = enqueue_one(store, now=NOW + 10, rule="b", ticket="1")
    c = enqueue_one(store, now=NOW + 20, rule="a", ticket="2")
    [claim] = store.claim(now=NOW + 30, limit=3, lease_seconds=9, token="t", ids=[b])
    store.complete([outcome(claim, status="failed", code=500)], now=NOW + 30)

    def ids(**filters: Any) -> list[str]:
        return [row.id for row in store.query(**filters)]

    assert ids() == [c, b, a]
    assert ids(rule="a") == [c, a]
    assert ids(ticket="1") == [b, a]
    assert ids(status="failed") == [b]
    assert ids(status="pending", rule="a") == [c, a]
    assert ids(status="failed", rule="a") == []
    assert ids(ticket="1", rule="b", status="failed") == [b]
    assert ids(since=NOW + 10) == [c, b]
    assert ids(since=NOW + 10, rule="a") == [c]
    assert ids(limit=2) == [c, b]
    row = next(store.query(status="failed"))
    assert (row.attempts, row.status_code, row.error) == (1, 500, "HTTP 500")


def test_query_pages_through_everything_and_allows_writes_meanwhile(store: Store) -> None:
    batch = [new(NOW + k / 1000) for k in range(1234)]
    store.enqueue(batch, now=NOW)
    expected = sorted((d.id for d in batch), reverse=True)
    assert [r.id for r in store.query(limit=None)] == expected
    assert [r.id for r in store.query(limit=700)] == expected[:700]
    seen = 0
    for row in store.query(limit=None):
        store.requeue(ids=[row.id], now=NOW + 1)
        seen += 1
    assert seen == 1234


def test_stats(store: Store) -> None:
    store.enqueue(
        [new(rule="a", url="https://slow/***") for _ in range(3)]
        + [new(rule="b", url="https://down/***") for _ in range(2)],
        now=NOW,
    )
    claims = store.claim(now=NOW, limit=5, lease_seconds=60, token="t")
    results = []
    for i, c in enumerate(claims):
        r = outcome(c) if c.rule == "a" else outcome(c, status="failed", code=500)
        r.duration_ms = 100.0 * (i + 1) if c.rule == "a" else 10.0
        results.append(r)
    store.complete(results, now=NOW)
    enqueue_one(store, now=NOW + 100, rule="a", url="https://slow/***")

    stats = store.stats(since=None)
    assert stats.deliveries == 6
    assert stats.by_status == {"pending": 1, "succeeded": 3, "failed": 2}
    assert list(stats.by_status) == list(STATUSES)
    assert stats.by_rule["a"] == {"pending": 1, "succeeded": 3, "failed": 0, "total": 4}
    assert stats.by_rule["b"]["failed"] == 2
    assert stats.attempts == 5 and stats.success_rate == 0.6
    assert stats.duration_ms["p50"] == 100.0
    assert stats.duration_ms["p99"] == max(r.duration_ms for r in results)
    assert stats.slowest_urls[0].url == "https://slow/***"
    [failing] = stats.failing_urls
    assert (failing.url, failing.deliveries, failing.failed, failing.failed_attempts) == (
        "https://down/***", 2, 2, 2,
    )  # fmt: skip
    recent = store.stats(since=NOW + 50)
    assert (recent.deliveries, recent.attempts, recent.success_rate) == (1, 0, None)
    assert recent.duration_ms == {"p50": None, "p95": None, "p99": None}


def test_queue_levels_and_rule_counts_agree_with_stats(store: Store) -> None:
    assert store.queue_levels(NOW) == QueueLevels(pending=0, due=0, oldest_due_at=None)
    assert store.rule_counts() == {}
    store.enqueue([new(rule="a") for _ in range(3)] + [new(rule="b") for _ in range(2)], now=NOW)
    claims = store.claim(now=NOW, limit=3, lease_seconds=60, token="t")
    store.complete(
        [outcome(claims[0]), outcome(claims[1], status="failed", code=500)], now=NOW + 1
    )  # claims[2] stays leased: pending, not due until its lease ends
    later = enqueue_one(store, now=NOW + 100, rule="b")
    levels = store.queue_levels(NOW + 10)
    assert (levels.pending, levels.due, levels.oldest_due_at) == (4, 2, NOW)
    assert store.queue_levels(NOW + 100).due == 4  # the lease ran out at NOW + 60
    assert store.queue_levels(NOW - 1) == QueueLevels(pending=4, due=0, oldest_due_at=None)
    stats = store.stats(since=None)
    counts = store.rule_counts()
    assert sum(c["pending"] for c in counts.values()) == stats.by_status["pending"] == 4
    for rule, by_status in counts.items():
        assert list(by_status) == list(STATUSES)
        assert by_status == {k: v for k, v in stats.by_rule[rule].items() if k != "total"}
    assert later in {c.id for c in store.claim(now=NOW + 100, limit=5, lease_seconds=60, token="u")}


def test_purge_deletes_only_old_finished_deliveries(store: Store) -> None:
    old_done = enqueue_one(store, now=NOW)
    old_pending = enqueue_one(store, now=NOW)
    old_claim = claim_one(store, "t", ids=[old_done])
    store.complete([outcome(old_claim)], now=NOW)
    recent_done = enqueue_one(store, now=NOW + 1000)
    recent = claim_one(store, "t", now=NOW + 1000, ids=[recent_done])
    store.complete([outcome(recent)], now=NOW + 1000)

    assert store.purge(older_than=NOW + 500) == 1
    assert store.get(old_done) is None
    assert store.get(old_pending) is not None and store.get(recent_done) is not None
    assert store.stats(since=None).attempts == 1  # the purged attempts went with it
    assert store.purge(older_than=NOW + 500) == 0
    assert store.check_integrity() == []


def test_records_have_one_name_per_field(store: Store) -> None:
    """`attempts` is the count everywhere; the attempts themselves are `attempt_log`."""
    delivery_id = enqueue_one(store)
    store.complete([outcome(claim_one(store, "t"))], now=NOW)
    found = detail(store, delivery_id)
    listed = next(store.query())
    assert listed == found.delivery and listed.attempts == len(found.attempt_log) == 1
    names = {f.name for f in fields(Delivery)}
    assert {"attempts", "status_code"} <= names and not names & {
        "attempt_count",
        "last_status_code",
    }


# --- endpoints: pause and resume (issue 15) ----------------------------------------------------

HOOKS = "https://hooks.example.com:443"


def test_a_paused_endpoints_deliveries_are_not_claimed_by_any_client(backend: Backend) -> None:
    one, other = backend(), backend()
    held = enqueue_one(one, url="https://HOOKS.example.com/a?x=1")
    free = enqueue_one(one, url="http://other.example:8080/b")
    assert one.pause_endpoint(HOOKS, now=NOW, reason="maintenance")
    assert other.paused_endpoints() == {HOOKS: (NOW, "maintenance")}
    assert other.due_count(NOW + 10) == 1
    assert [c.id for c in other.claim(now=NOW + 10, limit=10, lease_seconds=60, token="t")] == [
        free
    ]
    assert other.claim(now=NOW + 20, limit=10, lease_seconds=60, token="t2", ids=[held]) == []
    waiting = detail(one, held).delivery
    assert (waiting.status, waiting.attempts, waiting.next_attempt_at) == ("pending", 0, NOW)
    assert (waiting.endpoint, waiting.paused_since) == (HOOKS, NOW)
    assert [d.paused_since for d in one.query() if d.id == held] == [NOW]
    assert detail(one, free).delivery.paused_since is None


def test_resume_makes_a_paused_endpoints_deliveries_claimable_again(backend: Backend) -> None:
    one, other = backend(), backend()
    held = enqueue_one(one, url="https://hooks.example.com/a")
    assert one.pause_endpoint(HOOKS, now=NOW)
    assert not one.pause_endpoint(HOOKS, now=NOW + 5)  # already paused: since stays NOW
    assert one.paused_endpoints() == {HOOKS: (NOW, None)}
    assert other.claim(now=NOW + 1, limit=10, lease_seconds=60, token="t") == []
    assert other.resume_endpoint(HOOKS, now=NOW + 2)
    assert not other.resume_endpoint(HOOKS, now=NOW + 3)
    assert one.paused_endpoints() == {}
    assert claim_one(one, "t3", now=NOW + 4).id == held
    assert detail(one, held).delivery.paused_since is None


def test_an_endpoint_can_be_paused_before_it_has_deliveries(store: Store) -> None:
    assert store.pause_endpoint(HOOKS, now=NOW)
    later = enqueue_one(store, now=NOW + 1, url="https://hooks.example.com/new")
    assert store.claim(now=NOW + 2, limit=5, lease_seconds=60, token="t") == []
    assert detail(store, later).delivery.paused_since == NOW


def test_endpoint_health_counts_deliveries_and_attempts(store: Store) -> None:
    ok = enqueue_one(store, url="https://hooks.example.com/a")
    bad = enqueue_one(store, url="https://hooks.example.com/b")
    enqueue_one(store, url="http://other.example/c")
    store.complete([outcome(claim_one(store, "t", ids=[ok]))], now=NOW + 1)
    store.complete(
        [outcome(claim_one(store, "t", ids=[bad]), status="failed", code=500)], now=NOW + 1
    )
    store.pause_endpoint("http://paused.example:80", now=NOW)
    found = {h.endpoint: h for h in store.endpoint_health(since=NOW - 60)}
    assert sorted(found) == ["http://other.example:80", "http://paused.example:80", HOOKS]
    hooks = found[HOOKS]
    assert (hooks.pending, hooks.failed, hooks.attempts, hooks.successes) == (0, 1, 2, 1)
    assert hooks.success_rate == 0.5 and hooks.p95_ms == 12.5
    assert hooks.last_success_at == NOW + 1 and hooks.paused_since is None
    assert (
        found["http://other.example:80"].pending,
        found["http://other.example:80"].attempts,
    ) == (1, 0)
    assert found["http://paused.example:80"].paused_since == NOW
    assert store.endpoint_health(since=NOW + 3600)[-1].attempts == 0


# --- the optional work signal (retry-loop --every wakes on it) --------------------------------


def test_a_signalling_backend_wakes_a_waiter_whenever_deliveries_become_due(
    backend: Backend,
) -> None:
    waiting, other = backend(), backend()
    if not isinstance(waiting, WorkSignal):
        # SQLite: no signal, so retry-loop --every polls; nothing half-implements it.
        assert not hasattr(waiting, "wait_for_work")
        return
    assert waiting.wait_for_work(0) is False  # listening from here on; nothing yet
    # Each way another client makes deliveries due: enqueue, release, replay, resume. The
    # signal is kept until the next wait (none is lost between a pass and the wait after it).
    first = new()
    other.enqueue([first], now=NOW)
    assert waiting.wait_for_work(10) is True
    assert waiting.wait_for_work(0) is False  # one wake-up takes every signal queued
    [claim] = other.claim(now=NOW, limit=1, lease_seconds=60, token="t")
    assert other.release([claim.id], token="t") == 1
    assert waiting.wait_for_work(10) is True
    [claim] = other.claim(now=NOW, limit=1, lease_seconds=60, token="t")
    other.complete([outcome(claim, status="failed", code=410)], now=NOW)
    assert other.requeue(ids=[first.id], now=NOW + 1) == [first.id]
    assert waiting.wait_for_work(10) is True
    assert other.pause_endpoint(HOOKS, now=NOW)
    assert other.resume_endpoint(HOOKS, now=NOW + 1)
    assert waiting.wait_for_work(10) is True
    assert waiting.wait_for_work(0.05) is False  # and nothing more came


def test_a_split_write_is_seen_at_once_and_made_durable_from_any_thread(backend: Backend) -> None:
    import threading

    store, other = backend(), backend()
    d = new()
    result, sync = store.split_commit(store.enqueue, [d], now=NOW)
    assert result == [(d.id, True)]
    assert other.statuses([d.id]) == {d.id: "pending"}  # committed: only durability waits
    if sync is not None:
        worker = threading.Thread(target=sync)
        worker.start()
        worker.join()
    assert other.statuses([d.id]) == {d.id: "pending"}


def test_calls_go_on_before_the_sync_and_one_sync_covers_every_write(backend: Backend) -> None:
    store, other = backend(), backend()
    first, second = new(), new(event_id="evt_2")
    _, sync_first = store.split_commit(store.enqueue, [first], now=NOW)
    _, sync_second = store.split_commit(store.enqueue, [second], now=NOW)
    claims = store.claim(now=NOW, limit=10, lease_seconds=30, token="w")
    assert {c.id for c in claims} == {first.id, second.id}
    for sync in (sync_second, sync_first):  # in any order, after other calls: no error
        if sync is not None:
            sync()
    assert other.statuses([first.id, second.id]) == {first.id: "pending", second.id: "pending"}


def test_a_read_leaves_nothing_to_make_durable(store: Store) -> None:
    store.enqueue([new()], now=NOW)
    assert store.split_commit(store.due_count, NOW) == (1, None)
