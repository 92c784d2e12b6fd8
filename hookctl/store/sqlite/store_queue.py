"""SQLiteStore's queue: enqueue, claim with a lease, complete, extend, release, requeue, purge.

A mixin of `SQLiteStore` (store.py), which owns the connection, the transactions and the
lease-holder registration these methods run in; the SQL they share is in queue.py and rows.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hookctl.store.event_records import NewEvent
from hookctl.store.ids import ID_CLOCK_SLACK, ID_PATTERN, id_floor
from hookctl.store.log_records import QueueLevels
from hookctl.store.records import STATUSES, AttemptResult, Claim, NewDelivery
from hookctl.store.sqlite import endpoints as endpoint_state
from hookctl.store.sqlite import events as stored_events
from hookctl.store.sqlite import history, ordering, queue
from hookctl.store.sqlite.rows import (
    APPLY_RESULT,
    CLAIM_COLUMNS,
    DUE,
    INSERT_ATTEMPT,
    INSERT_DELIVERY,
    INSERT_DELIVERY_ONCE,
    READY,
    REPLACE_REQUEST,
    delivery_row,
    dicts,
    dumps,
    request_columns,
)
from hookctl.store.sqlite.store_base import PURGE_CHUNK, StoreBase, locked

_PAGE = history.PAGE


class QueueMethods(StoreBase):
    """The outbox and retry queue of the store contract, over SQLiteStore's transactions."""

    @locked
    def enqueue(
        self,
        deliveries: Sequence[NewDelivery],
        *,
        now: float,
        claim_token: str | None = None,
        lease_seconds: float = 0,
        events: Sequence[NewEvent] = (),
    ) -> list[tuple[str, bool]]:
        """Durably add deliveries as pending, in one transaction; (id, False) for a duplicate.

        With claim_token they are inserted already leased to the caller, so a concurrent
        retry-loop leaves them alone while this process sends them. `events` are the events
        read (matched or not) to keep, in the same transaction: a delivery names its event
        in `event_ref`.
        """
        if claim_token is not None and lease_seconds <= 0:
            raise ValueError("claiming on enqueue needs lease_seconds greater than 0")
        if not deliveries and not events:
            return []
        lowest, beyond = id_floor(now - ID_CLOCK_SLACK), id_floor(now + ID_CLOCK_SLACK + 0.001)
        for d in deliveries:
            if not ID_PATTERN.match(d.id):
                raise ValueError(f"delivery id {d.id!r} was not made by new_delivery_id()")
            if not lowest <= d.id < beyond:
                raise ValueError(f"delivery id {d.id!r} was minted too far from now={now!r}")
        lease_until = now + lease_seconds if claim_token is not None else None
        shared: dict[int, str | None] = {}
        # Encoded before the transaction, so the write lock is held only for the inserts.
        holder = self._holder.key
        rows = [delivery_row(d, now, claim_token, lease_until, shared, holder) for d in deliveries]
        event_rows = [stored_events.encode(e) for e in events]
        results: list[tuple[str, bool]] = []
        new_rows = []
        with self._write() as conn:
            if claim_token is not None:
                self._register(conn, now)
            seen = queue.existing_dedupe(conn, deliveries)
            for d, row in zip(deliveries, rows, strict=True):
                key = (d.rule, d.dedupe_key)
                if d.dedupe_key is not None:
                    if key in seen:
                        results.append((seen[key], False))
                        continue
                    seen[key] = d.id
                results.append((d.id, True))
                new_rows.append(row)
            conn.executemany(INSERT_DELIVERY, new_rows)
            keyed = ordering.keyed(
                (i, d)
                for d, (i, inserted) in zip(deliveries, results, strict=True)
                if inserted and d.order_key is not None
            )
            waiting = (
                ordering.place(conn, keyed, now=now, leased=claim_token is not None)
                if keyed
                else set()
            )
            if event_rows:
                stored_events.insert(conn, event_rows, deliveries, results)
        if claim_token is not None:
            self._registered = True
            self._leased.update(i for i, inserted in results if inserted and i not in waiting)
        return results

    @locked
    def claim(
        self,
        *,
        now: float,
        limit: int,
        lease_seconds: float,
        token: str,
        due_by: float | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[Claim]:
        """Lease up to `limit` due deliveries to `token`, oldest due first.

        Due means next attempt at or before `due_by` (default `now`): a pass that fixes it at
        its start never retakes what it has just rescheduled. `ids` claims only those. The
        claims of a holder on this machine whose process is gone are due at once: their
        leases are not waited out.
        """
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be greater than 0")
        if limit <= 0:
            return []
        bind: dict[str, Any] = {"now": now, "due": now if due_by is None else due_by}
        with self._write() as conn:
            self._register(conn, now)
            gone = self._gone_holders(conn)
            if gone:
                self._reap(conn, gone, now)
            probes: list[str] = []
            if ids is None:
                # An open endpoint's one probe first (its breaker, store/breaker.py).
                probes = endpoint_state.take_probes(
                    conn, now=now, due=bind["due"], limit=limit, token=token,
                    until=now + lease_seconds,
                )  # fmt: skip
                rows = []
                for probe in probes:
                    rows += dicts(
                        conn.execute(
                            f"SELECT {CLAIM_COLUMNS} FROM deliveries WHERE id = ?", (probe,)
                        )
                    )
                sql = f"SELECT {CLAIM_COLUMNS} FROM {DUE} ORDER BY next_attempt_at LIMIT :limit"
                if limit > len(rows):
                    rows += dicts(conn.execute(sql, {**bind, "limit": limit - len(rows)}))
            else:
                rows = []
                for start in range(0, len(ids), _PAGE):
                    chunk = {f"id{k}": i for k, i in enumerate(ids[start : start + _PAGE])}
                    sql = (
                        f"SELECT {CLAIM_COLUMNS} FROM deliveries WHERE id IN "
                        f"({', '.join(':' + k for k in chunk)}) AND {READY} LIMIT :limit"
                    )
                    rows += dicts(conn.execute(sql, {**bind, **chunk, "limit": limit - len(rows)}))
                    if len(rows) >= limit:
                        break
            conn.executemany(
                "UPDATE deliveries SET lease_token = ?, lease_expires_at = ?, fence = fence + 1, "
                "lease_holder = ? WHERE id = ?",
                [(token, now + lease_seconds, self._holder.key, row["id"]) for row in rows],
            )
        self._registered = True
        self._leased.update(row["id"] for row in rows)
        return [Claim(token=token, **row, probe=row["id"] in probes) for row in rows]

    def complete(self, results: Sequence[AttemptResult], *, now: float) -> list[bool]:
        """Record attempts and apply them where the lease still holds; False = lease was lost."""
        return self.complete_with_follow_ups(results, now=now)[0]

    @locked
    def complete_with_follow_ups(
        self,
        results: Sequence[AttemptResult],
        *,
        now: float,
        follow_ups: Mapping[str, NewDelivery] | None = None,
        claim_token: str | None = None,
        lease_seconds: float = 0,
        endpoint_notices: Mapping[str, NewDelivery | None] | None = None,
    ) -> tuple[list[bool], set[str]]:
        """Like complete(), and in the same transaction enqueue a follow-up (an `on_failure`
        notice) for each applied result that has one, so a crash cannot lose it.

        The same transaction advances each endpoint's breaker (store/breaker.py) and pauses
        an endpoint failing too long, enqueuing its notice from `endpoint_notices`.
        Returns the applied flags and the ids of the follow-ups inserted (a duplicate is not).
        """
        follow_ups = follow_ups or {}
        endpoint_notices = endpoint_notices or {}
        lease_until = now + lease_seconds if claim_token is not None else None
        shared: dict[int, str | None] = {}
        params = []
        for r in results:
            if r.status not in STATUSES:
                raise ValueError(f"unknown delivery status {r.status!r}")
            if r.status == "pending" and r.next_attempt_at is None:
                raise ValueError(f"delivery {r.delivery_id} stays pending but has no next attempt")
            params.append(
                {
                    "id": r.delivery_id,
                    "token": r.token,
                    "started_at": r.started_at,
                    "duration_ms": r.duration_ms,
                    "status_code": r.status_code,
                    "error": r.error,
                    "response_headers": dumps(r.response_headers),
                    "response_body": r.response_body,
                    "status": r.status,
                    "next_attempt_at": r.next_attempt_at if r.status == "pending" else None,
                    "now": now,
                    "sent": int(r.sent),
                    "free": int(r.sent and r.free),
                }
            )
        if not params:
            return [], set()
        inserted: set[str] = set()
        holder = self._holder.key
        with self._write() as conn:
            if claim_token is not None and (follow_ups or endpoint_notices):
                self._register(conn, now)
            conn.executemany(INSERT_ATTEMPT, params)
            # One statement per row: executemany cannot say which rows the fence rejected.
            applied = [conn.execute(APPLY_RESULT, p).rowcount == 1 for p in params]
            # A finished ordered delivery lets the next of its key go (ordering.py).
            ordering.unpark_next(
                conn,
                [
                    str(p["id"])
                    for p, ok in zip(params, applied, strict=True)
                    if ok and p["status"] != "pending"
                ],
            )
            for p, ok in zip(params, applied, strict=True):
                follow = follow_ups.get(str(p["id"])) if ok else None
                if follow is None:
                    continue
                row = delivery_row(follow, now, claim_token, lease_until, shared, holder)
                if conn.execute(INSERT_DELIVERY_ONCE, row).rowcount == 1:
                    inserted.add(follow.id)

            def disable(endpoint: str) -> bool:
                # Called once, in the transaction that auto-pauses the endpoint: its notice.
                if endpoint not in endpoint_notices:
                    return False
                notice = endpoint_notices[endpoint]
                if notice is not None:
                    row = delivery_row(notice, now, claim_token, lease_until, shared, holder)
                    if conn.execute(INSERT_DELIVERY_ONCE, row).rowcount == 1:
                        inserted.add(notice.id)
                return True

            endpoint_state.record_outcomes(conn, results, now=now, disable=disable)
        self._leased.difference_update(r.delivery_id for r in results)
        if claim_token is not None and inserted:
            self._registered = True
            self._leased.update(inserted)
        return applied, inserted

    @locked
    def extend_lease(self, ids: Sequence[str], *, token: str, until: float) -> list[str]:
        """Push out the lease on deliveries `token` still holds; returns those ids."""
        held = []
        with self._write() as conn:
            for delivery_id in ids:
                cursor = conn.execute(
                    "UPDATE deliveries SET lease_expires_at = ? WHERE id = ? AND lease_token = ?",
                    (until, delivery_id, token),
                )
                if cursor.rowcount == 1:
                    held.append(delivery_id)
        self._leased.difference_update(set(ids) - set(held))
        return held

    @locked
    def release(self, ids: Sequence[str], *, token: str, until: float | None = None) -> int:
        """Give back claims `token` holds and has not attempted: due again, for any process
        (not before `until`, if given: postponed without spending an attempt)."""
        with self._write() as conn:
            released = sum(
                conn.execute(
                    "UPDATE deliveries SET lease_token = NULL, lease_expires_at = NULL, "
                    "next_attempt_at = max(next_attempt_at, coalesce(?, next_attempt_at)) "
                    "WHERE id = ? AND lease_token = ?",
                    (until, delivery_id, token),
                ).rowcount
                for delivery_id in ids
            )
            endpoint_state.drop_probes(conn, ids, token=token)
        self._leased.difference_update(ids)
        return released

    @locked
    def due_count(self, now: float) -> int:
        """How many deliveries a claim at `now` could take (dead holders' claims included)."""
        with self._read() as conn:
            gone = self._gone_holders(conn)
        if gone:
            # Rare (after a crash): make them due, so a cron retry-loop does not say
            # "nothing due" and leave them for the lease to run out.
            with self._write() as conn:
                self._reap(conn, gone, now)
        with self._read() as conn:
            (count,) = conn.execute(
                f"SELECT count(*) FROM {DUE}", {"now": now, "due": now}
            ).fetchone()
        return int(count)

    @locked
    def queue_levels(self, now: float) -> QueueLevels:
        """Pending (the status index), due now, and the oldest due time (the due index)."""
        due = self.due_count(now)
        with self._read() as conn:
            (pending,) = conn.execute(
                "SELECT count(*) FROM deliveries WHERE status = 'pending'"
            ).fetchone()
            # The due index in order: the first pending row found is the oldest; the walk stops.
            first = conn.execute(
                "SELECT next_attempt_at FROM deliveries INDEXED BY deliveries_due "
                "WHERE next_attempt_at <= ? AND status = 'pending' ORDER BY next_attempt_at LIMIT 1",
                (now,),
            ).fetchone()
        return QueueLevels(pending=int(pending), due=due, oldest_due_at=first and first[0])

    @locked
    def requeue(
        self,
        *,
        ids: Sequence[str] = (),
        status: str | None = None,
        rule: str | None = None,
        since: float | None = None,
        now: float,
        rendered: Mapping[str, NewDelivery] | None = None,
    ) -> list[str]:
        """Replay deliveries under the same id: pending again, due now, with a fresh schedule.

        Select by ids (or unique prefixes) or by filters. Finished deliveries restart their
        retry policy (counted from here, first_attempt_at reset) and count one more replay;
        `attempts` and the attempt log keep counting over the delivery's life. Pending ones
        are just made due now, and a live lease is left alone. A delivery whose request could
        not be rendered is requeued only with its request rendered anew in `rendered` (keyed by
        id: the request, policy, timeout and the rest replace the stored ones); without one it
        is left as it is, never sent bare. Returns the ids requeued.
        """
        rendered = rendered or {}
        with self._write() as conn:
            selected = history.select_ids(conn, ids=ids, status=status, rule=rule, since=since)
            bare = {row.id for row in history.unrendered(conn, selected)}
            shared: dict[int, str | None] = {}
            renewed = [
                request_columns(rendered[i], i, shared)
                for i in selected
                if i in bare and i in rendered
            ]
            conn.executemany(REPLACE_REQUEST, renewed)
            # Rendered anew with a key it lacked: it takes the next place of that key.
            ordering.place(
                conn,
                ordering.keyed((i, rendered[i]) for i in selected if i in bare and i in rendered),
                now=now,
                leased=False,
            )
            selected = [i for i in selected if i not in bare or i in rendered]
            conn.executemany(
                """
                UPDATE deliveries SET
                    attempts_at_replay = CASE WHEN status = 'pending' THEN attempts_at_replay
                        ELSE attempts END,
                    replays = CASE WHEN status = 'pending' THEN replays ELSE replays + 1 END,
                    first_attempt_at = CASE WHEN status = 'pending' THEN first_attempt_at END,
                    lease_token = CASE WHEN status = 'pending' THEN lease_token END,
                    lease_expires_at = CASE WHEN status = 'pending' THEN lease_expires_at END,
                    status = 'pending', next_attempt_at = :now, updated_at = :now
                WHERE id = :id
                """,
                [{"id": i, "now": now} for i in selected],
            )
        return selected

    @locked
    def purge(self, *, older_than: float) -> int:
        """Delete finished deliveries last updated before `older_than`, with their attempts."""
        deleted = 0
        after = ""
        while True:
            with self._write() as conn:
                ids = [
                    (row[0],)
                    for row in conn.execute(
                        "SELECT id FROM deliveries WHERE id > ? AND status != 'pending' "
                        "AND updated_at < ? ORDER BY id LIMIT ?",
                        (after, older_than, PURGE_CHUNK),
                    )
                ]
                conn.executemany("DELETE FROM deliveries WHERE id = ?", ids)
            deleted += len(ids)
            if len(ids) < PURGE_CHUNK:
                return deleted
            after = ids[-1][0]
