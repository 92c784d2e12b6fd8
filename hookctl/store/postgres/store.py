"""PostgreSQL outbox and retry queue: the SQLite store's methods, for many workers at once.

`PostgresStore` has exactly the public methods (names, arguments, results, errors) of
`hookctl.store.sqlite.store.Store`. What differs is underneath: claims are
`FOR NO KEY UPDATE SKIP LOCKED` (workers never wait on each other's claims), a batch of outcomes
is one transaction of a few statements, and a lost connection is got back with backoff and the
operation run again. Every write is safe to run twice: ids are the primary key, an attempt is
logged once per (delivery, lease token, start), and an outcome is applied only while its token
still holds the lease, so a retried batch never applies an outcome for a lease it lost.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from hookctl.errors import StoreError
from hookctl.store.postgres import connection, history, migrations
from hookctl.store.postgres.rows import (
    CLAIM_COLUMNS,
    INSERT_DELIVERY,
    REPLACE_REQUEST,
    claims,
    delivery_params,
    request_params,
    result_columns,
    text,
)
from hookctl.store.records import (
    ID_CLOCK_SLACK,
    ID_PATTERN,
    AttemptResult,
    Claim,
    NewDelivery,
    id_floor,
)

__all__ = ["CHANNEL", "PostgresStore"]

T = TypeVar("T")
CHANNEL = "hookctl_due"  # NOTIFY channel: deliveries became due (enqueued, released, replayed)
_PURGE_CHUNK = 2000  # deleted per transaction, so purging a big log never stalls senders for long
_RETRY_SQLSTATES = ("40001", "40P01")  # serialization failure, deadlock: run the transaction again

_CLAIM_SET = (
    "UPDATE deliveries AS d SET lease_token = %(token)s, lease_expires_at = %(until)s, "
    "fence = d.fence + 1 FROM chosen WHERE d.id = chosen.id "
    f"RETURNING {CLAIM_COLUMNS}, d.next_attempt_at, d.seq"
)
# Expired leases (a crashed worker's) through deliveries_leased, the rest through
# deliveries_due; the oldest due of both are taken. SKIP LOCKED: rows another worker is
# claiming right now are passed over, never waited for.
CLAIM_DUE = f"""
WITH expired AS (
    SELECT id, next_attempt_at, seq FROM deliveries
    WHERE lease_token IS NOT NULL AND lease_expires_at <= %(now)s
        AND status = 'pending' AND next_attempt_at <= %(due)s
    ORDER BY next_attempt_at, seq LIMIT %(limit)s FOR NO KEY UPDATE SKIP LOCKED
), fresh AS (
    SELECT id, next_attempt_at, seq FROM deliveries
    WHERE status = 'pending' AND lease_token IS NULL AND next_attempt_at <= %(due)s
    ORDER BY next_attempt_at, seq LIMIT %(limit)s FOR NO KEY UPDATE SKIP LOCKED
), chosen AS (
    SELECT id FROM (SELECT * FROM expired UNION ALL SELECT * FROM fresh) AS both_kinds
    ORDER BY next_attempt_at, seq LIMIT %(limit)s
)
{_CLAIM_SET}
"""
CLAIM_IDS = f"""
WITH chosen AS (
    SELECT id FROM deliveries
    WHERE id = ANY(%(ids)s) AND status = 'pending' AND next_attempt_at <= %(due)s
        AND (lease_token IS NULL OR lease_expires_at <= %(now)s)
    ORDER BY next_attempt_at, seq LIMIT %(limit)s FOR NO KEY UPDATE SKIP LOCKED
)
{_CLAIM_SET}
"""
DUE_COUNT = """
SELECT (SELECT count(*) FROM deliveries
        WHERE status = 'pending' AND lease_token IS NULL AND next_attempt_at <= %(due)s)
     + (SELECT count(*) FROM deliveries
        WHERE lease_token IS NOT NULL AND lease_expires_at <= %(now)s
            AND status = 'pending' AND next_attempt_at <= %(due)s)
"""
_RESULTS = """
unnest(%(id)s::text[], %(token)s::text[], %(started_at)s::float8[], %(duration_ms)s::float8[],
    %(status_code)s::int[], %(error)s::text[], %(headers)s::text[], %(body)s::bytea[],
    %(status)s::text[], %(next_at)s::float8[], %(sent)s::bool[], %(applied)s::bool[])
    WITH ORDINALITY AS r(id, token, started_at, duration_ms, status_code, error, headers, body,
        status, next_at, sent, applied, n)
"""
# The fence: an outcome changes its delivery only while its token still holds the lease.
APPLY_RESULTS = f"""
UPDATE deliveries AS d SET
    attempts = d.attempts + r.sent::int, status = r.status, next_attempt_at = r.next_at,
    last_status_code = CASE WHEN r.sent THEN r.status_code ELSE d.last_status_code END,
    error = r.error, updated_at = %(now)s,
    first_attempt_at = CASE WHEN r.sent THEN COALESCE(d.first_attempt_at, r.started_at)
        ELSE d.first_attempt_at END,
    lease_token = NULL, lease_expires_at = NULL
FROM {_RESULTS}
WHERE d.id = r.id AND d.lease_token = r.token
RETURNING r.n
"""
# Logged even when the lease was lost: the request did happen. Numbers run over the delivery's
# life; the delivery rows are locked first, so two workers never take the same number.
INSERT_ATTEMPTS = f"""
INSERT INTO attempts (
    delivery_id, number, started_at, duration_ms, status_code, error, response_headers,
    response_body, token, applied
)
SELECT r.id,
    COALESCE((SELECT max(number) FROM attempts AS a WHERE a.delivery_id = r.id), 0)
        + row_number() OVER (PARTITION BY r.id ORDER BY r.n),
    r.started_at, r.duration_ms, r.status_code, r.error, r.headers, r.body, r.token, r.applied
FROM {_RESULTS}
WHERE r.sent AND EXISTS (SELECT 1 FROM deliveries AS d WHERE d.id = r.id)
"""
REQUEUE = """
UPDATE deliveries SET
    attempts_at_replay = CASE WHEN status = 'pending' THEN attempts_at_replay ELSE attempts END,
    replays = CASE WHEN status = 'pending' THEN replays ELSE replays + 1 END,
    first_attempt_at = CASE WHEN status = 'pending' THEN first_attempt_at END,
    lease_token = CASE WHEN status = 'pending' THEN lease_token END,
    lease_expires_at = CASE WHEN status = 'pending' THEN lease_expires_at END,
    status = 'pending', next_attempt_at = %(now)s, updated_at = %(now)s
WHERE id = ANY(%(ids)s)
"""


class PostgresStore:
    """The delivery database on a PostgreSQL server: outbox, retry queue and execution log."""

    def __init__(
        self, url: str, *, reconnect_seconds: float = connection.RECONNECT_SECONDS
    ) -> None:
        """Connect to `url` and apply any migrations the database lacks."""
        self.url = url
        self.masked_url = connection.masked_url(url)
        self.reconnect_seconds = reconnect_seconds
        self._listener: Any = None
        self.conn: Any = connection.connect(url)
        try:
            self._run(lambda cur, retry: migrations.migrate(self.conn, self.masked_url))
        except BaseException:
            self.conn.close()
            raise

    def close(self) -> None:
        """Close the connections."""
        for conn in (self.conn, self._listener):
            if conn is not None:
                conn.close()
        self._listener = None

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- transactions, errors, reconnects -----------------------------------------------------

    def _run(self, work: Callable[[Any, bool], T]) -> T:
        """Run `work(cursor, retry)` in one transaction; after a lost connection, reconnect with
        backoff and run it again (retry=True), until reconnect_seconds have passed."""
        psycopg = connection.driver()
        deadline: float | None = None
        retry = False
        while True:
            try:
                with self.conn.transaction(), self.conn.cursor() as cur:
                    return work(cur, retry)
            except psycopg.Error as exc:
                if getattr(exc, "sqlstate", None) in _RETRY_SQLSTATES:
                    retry = True
                    continue
                if not connection.is_connection_lost(exc, self.conn):
                    raise connection.error(self.url, exc) from exc
                if deadline is None:
                    deadline = time.monotonic() + self.reconnect_seconds
                self.conn.close()
                self.conn = connection.reconnect(self.url, deadline=deadline)
                retry = True

    # --- the queue ----------------------------------------------------------------------------

    def enqueue(
        self,
        deliveries: Sequence[NewDelivery],
        *,
        now: float,
        claim_token: str | None = None,
        lease_seconds: float = 0,
    ) -> list[tuple[str, bool]]:
        """Durably add deliveries as pending, in one transaction; (id, False) for a duplicate.

        With claim_token they are inserted already leased to the caller, so a concurrent
        retry-loop leaves them alone while this process sends them.
        """
        if claim_token is not None and lease_seconds <= 0:
            raise ValueError("claiming on enqueue needs lease_seconds greater than 0")
        if not deliveries:
            return []
        lowest, beyond = id_floor(now - ID_CLOCK_SLACK), id_floor(now + ID_CLOCK_SLACK + 0.001)
        for d in deliveries:
            if not ID_PATTERN.match(d.id):
                raise ValueError(f"delivery id {d.id!r} was not made by new_delivery_id()")
            if not lowest <= d.id < beyond:
                raise ValueError(f"delivery id {d.id!r} was minted too far from now={now!r}")
        lease_until = now + lease_seconds if claim_token is not None else None
        shared: dict[int, str | None] = {}
        rows = [delivery_params(d, now, claim_token, lease_until, shared) for d in deliveries]
        keys = [(text(d.rule), text(d.dedupe_key)) for d in deliveries]

        def work(cur: Any, retry: bool) -> list[tuple[str, bool]]:
            seen = _owners(cur, [k for k in keys if k[1] is not None])
            results: list[tuple[str, bool]] = []
            new_rows, new_at = [], []
            for d, key, row in zip(deliveries, keys, rows, strict=True):
                if key[1] is not None:
                    owner = seen.get(key)
                    if owner is not None and owner != d.id:  # ours after a retry: inserted
                        results.append((owner, False))
                        continue
                    seen[key] = d.id
                results.append((d.id, True))
                new_rows.append(row)
                new_at.append(len(results) - 1)
            if not new_rows:
                return results
            cur.executemany(INSERT_DELIVERY, new_rows, returning=True)
            lost: list[int] = []  # a concurrent enqueue took the dedupe key first
            for k in new_at:
                if cur.fetchone() is None and (not retry or not _exists(cur, results[k][0])):
                    lost.append(k)
                cur.nextset()
            if lost:
                owners = _owners(cur, [keys[k] for k in lost])
                for k in lost:
                    results[k] = (owners.get(keys[k], results[k][0]), False)
            if claim_token is None:
                cur.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
            return results

        return self._run(work)

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
        its start never retakes what it has just rescheduled. `ids` claims only those.
        """
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be greater than 0")
        if limit <= 0:
            return []
        bind: dict[str, Any] = {
            "now": now,
            "due": now if due_by is None else due_by,
            "limit": limit,
            "token": token,
            "until": now + lease_seconds,
        }
        if ids is not None:
            bind["ids"] = list(ids)

        # A claim committed just before a lost connection is not seen again here: those rows
        # stay leased to `token` until the lease ends, then any worker takes them (nothing lost).
        def work(cur: Any, retry: bool) -> list[Claim]:
            cur.execute(CLAIM_DUE if ids is None else CLAIM_IDS, bind)
            return claims(token, cur.fetchall())

        return self._run(work)

    def complete(self, results: Sequence[AttemptResult], *, now: float) -> list[bool]:
        """Record attempts and apply them where the lease still holds; False = lease was lost."""
        return self.complete_with_follow_ups(results, now=now)[0]

    def complete_with_follow_ups(
        self,
        results: Sequence[AttemptResult],
        *,
        now: float,
        follow_ups: Mapping[str, NewDelivery] | None = None,
        claim_token: str | None = None,
        lease_seconds: float = 0,
    ) -> tuple[list[bool], set[str]]:
        """Like complete(), and in the same transaction enqueue a follow-up (an `on_failure`
        notice) for each applied result that has one, so a crash cannot lose it.

        Returns the applied flags and the ids of the follow-ups inserted (a duplicate is not).
        """
        follow_ups = follow_ups or {}
        for r in results:
            if r.status not in history.STATUSES:
                raise ValueError(f"unknown delivery status {r.status!r}")
            if r.status == "pending" and r.next_attempt_at is None:
                raise ValueError(f"delivery {r.delivery_id} stays pending but has no next attempt")
        if not results:
            return [], set()
        lease_until = now + lease_seconds if claim_token is not None else None
        shared: dict[int, str | None] = {}
        columns = result_columns(results)

        def work(cur: Any, retry: bool) -> tuple[list[bool], set[str]]:
            ids = sorted(set(columns["id"]))
            # Locked in id order (no deadlocks between batches): attempt numbers stay unique.
            cur.execute(
                "SELECT id FROM deliveries WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE",
                (ids,),
            )
            logged: dict[tuple[str, str, float], bool] = {}
            if retry:  # this batch may have committed before the connection went
                cur.execute(
                    "SELECT delivery_id, token, started_at, applied FROM attempts "
                    "WHERE delivery_id = ANY(%s) AND token = ANY(%s)",
                    (ids, sorted(set(columns["token"]))),
                )
                logged = {(i, t, s): a for i, t, s, a in cur.fetchall()}
            keys = list(zip(columns["id"], columns["token"], columns["started_at"], strict=True))
            todo = [k for k, key in enumerate(keys) if key not in logged]
            batch = {name: [values[k] for k in todo] for name, values in columns.items()}
            batch["applied"] = [False] * len(todo)
            applied = [logged.get(key, False) for key in keys]
            if todo:
                cur.execute(APPLY_RESULTS, {**batch, "now": now})
                for (n,) in cur.fetchall():
                    applied[todo[n - 1]] = True
                    batch["applied"][n - 1] = True
                cur.execute(INSERT_ATTEMPTS, batch)
            inserted: set[str] = set()
            wanted = [
                follow_ups[r.delivery_id]
                for r, ok in zip(results, applied, strict=True)
                if ok and r.delivery_id in follow_ups
            ]
            if wanted:
                cur.executemany(
                    INSERT_DELIVERY,
                    [delivery_params(f, now, claim_token, lease_until, shared) for f in wanted],
                )
                # Present under its own id: inserted now, or by this batch before a reconnect.
                cur.execute(
                    "SELECT id FROM deliveries WHERE id = ANY(%s)", ([f.id for f in wanted],)
                )
                inserted = {row[0] for row in cur.fetchall()}
            return applied, inserted

        return self._run(work)

    def extend_lease(self, ids: Sequence[str], *, token: str, until: float) -> list[str]:
        """Push out the lease on deliveries `token` still holds; returns those ids."""
        if not ids:
            return []

        def work(cur: Any, retry: bool) -> list[str]:
            cur.execute(
                "UPDATE deliveries SET lease_expires_at = %s "
                "WHERE id = ANY(%s) AND lease_token = %s RETURNING id",
                (until, sorted(ids), token),
            )
            held = {row[0] for row in cur.fetchall()}
            return [i for i in ids if i in held]

        return self._run(work)

    def release(self, ids: Sequence[str], *, token: str) -> int:
        """Give back claims `token` holds and has not attempted: due again, for any process."""
        if not ids:
            return 0

        def work(cur: Any, retry: bool) -> int:
            cur.execute(
                "UPDATE deliveries SET lease_token = NULL, lease_expires_at = NULL "
                "WHERE id = ANY(%s) AND lease_token = %s",
                (sorted(ids), token),
            )
            count = int(cur.rowcount)
            if count:
                cur.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
            return count

        return self._run(work)

    def due_count(self, now: float) -> int:
        """How many deliveries a claim at `now` could take."""

        def work(cur: Any, retry: bool) -> int:
            cur.execute(DUE_COUNT, {"now": now, "due": now})
            return int(cur.fetchone()[0])

        return self._run(work)

    def wait_for_work(self, timeout: float) -> bool:
        """Block until deliveries may have become due (a NOTIFY on CHANNEL) or `timeout` passes.

        True when woken by a notification, False on timeout. For `retry-loop --every`: call it
        between passes instead of sleeping the whole interval; polling stays the backstop, since
        a notification is only a hint (deliveries rescheduled for later send none when due).
        The listening connection is separate from the store's and opened on first use.
        """
        psycopg = connection.driver()
        try:
            if self._listener is None or self._listener.closed or self._listener.broken:
                self._listener = connection.connect(self.url)
                self._listener.execute(f"LISTEN {CHANNEL}")
            woken = False
            for _ in self._listener.notifies(timeout=timeout, stop_after=1):
                woken = True
            if woken:
                # Several NOTIFYs may be queued: take them all, one wake-up is enough. (After
                # the loop above: the generator holds the connection. A timeout of 0 would mean
                # "none" to psycopg, hence a short one.)
                for _ in self._listener.notifies(timeout=0.001):
                    pass
            return woken
        except psycopg.Error:
            # The server went away: sleep out the wait (the next pass reconnects and reports).
            if self._listener is not None:
                self._listener.close()
            self._listener = None
            time.sleep(timeout)
        except StoreError:
            time.sleep(timeout)
        return False

    # --- the log --------------------------------------------------------------------------------

    def query(
        self,
        *,
        status: str | None = None,
        rule: str | None = None,
        ticket: str | None = None,
        since: float | None = None,
        limit: int | None = 50,
    ) -> Iterator[dict[str, Any]]:
        """Deliveries newest first, filtered; `since` is creation time; limit None or 0 = all."""
        where, params = history.filters(status=status, rule=rule, ticket=ticket, since=since)
        return self._pages(where, params, limit or None)

    def _pages(
        self, where: list[str], params: list[Any], remaining: int | None
    ) -> Iterator[dict[str, Any]]:
        # Keyset pages, each its own short transaction: nothing stays open between yields, so
        # the caller may write to the store while iterating.
        before: str | None = None
        while remaining is None or remaining > 0:
            size = history.PAGE if remaining is None else min(history.PAGE, remaining)
            rows = self._run(functools.partial(_page, where, params, before, size))
            yield from rows
            if len(rows) < size:
                return
            before = rows[-1]["id"]
            if remaining is not None:
                remaining -= len(rows)

    def get(self, delivery_id: str) -> dict[str, Any] | None:
        """One delivery by id or unique prefix, with its "attempts" in order; None if absent."""
        return self._run(lambda cur, retry: history.get(cur, delivery_id))

    def select(
        self,
        *,
        ids: Sequence[str] = (),
        status: str | None = None,
        rule: str | None = None,
        since: float | None = None,
    ) -> list[str]:
        """The full ids a replay selects: by ids (or unique prefixes), or by filters."""
        return self._run(
            lambda cur, retry: history.select_ids(
                cur, ids=ids, status=status, rule=rule, since=since
            )
        )

    def statuses(self, ids: Sequence[str]) -> dict[str, str]:
        """The status of each of `ids` (a duplicate's earlier delivery, say)."""
        return self._run(lambda cur, retry: history.statuses(cur, ids))

    def unrendered(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Those of `ids` whose request could not be rendered, with their rule and event."""
        return self._run(lambda cur, retry: history.unrendered(cur, ids))

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

        The SQLite store's semantics exactly (see its docstring): finished ones restart their
        policy and count a replay, pending ones are made due now, a live lease is left alone,
        an unrendered one is requeued only with its request rendered anew in `rendered`.
        """
        rendered = rendered or {}

        def work(cur: Any, retry: bool) -> list[str]:
            selected = history.select_ids(cur, ids=ids, status=status, rule=rule, since=since)
            bare = {row["id"] for row in history.unrendered(cur, selected)}
            shared: dict[int, str | None] = {}
            renewed = [
                request_params(rendered[i], i, shared)
                for i in selected
                if i in bare and i in rendered
            ]
            if renewed:
                cur.executemany(REPLACE_REQUEST, renewed)
            selected = [i for i in selected if i not in bare or i in rendered]
            if selected:
                cur.execute(REQUEUE, {"ids": selected, "now": now})
                cur.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
            return selected

        return self._run(work)

    def purge(self, *, older_than: float) -> int:
        """Delete finished deliveries last updated before `older_than`, with their attempts."""
        deleted = 0
        while True:

            def work(cur: Any, retry: bool) -> int:
                cur.execute(
                    "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries "
                    "WHERE status IN ('succeeded', 'failed') AND updated_at < %s LIMIT %s "
                    "FOR UPDATE SKIP LOCKED) RETURNING id",
                    (older_than, _PURGE_CHUNK),
                )
                ids = [row[0] for row in cur.fetchall()]
                # Their attempts in the same transaction (there is no cascading foreign key).
                cur.execute("DELETE FROM attempts WHERE delivery_id = ANY(%s)", (ids,))
                return len(ids)

            count = self._run(work)
            deleted += count
            if count < _PURGE_CHUNK:
                return deleted

    def stats(self, *, since: float | None = None) -> dict[str, Any]:
        """Counts by status and rule, attempt duration percentiles, slowest and failing URLs."""
        return self._run(lambda cur, retry: history.stats(cur, since=since))


def _owners(cur: Any, keys: Sequence[tuple[str | None, str | None]]) -> dict[Any, str]:
    """Ids already stored for these (rule, dedupe_key) pairs."""
    if not keys:
        return {}
    rules, dedupe = [k[0] for k in keys], [k[1] for k in keys]
    cur.execute(
        "SELECT rule, dedupe_key, id FROM deliveries WHERE (rule, dedupe_key) IN "
        "(SELECT * FROM unnest(%s::text[], %s::text[]))",
        (rules, dedupe),
    )
    return {(rule, key): delivery_id for rule, key, delivery_id in cur.fetchall()}


def _page(
    where: list[str], params: list[Any], before: str | None, size: int, cur: Any, retry: bool
) -> list[dict[str, Any]]:
    return history.page(cur, where, params, before, size)


def _exists(cur: Any, delivery_id: str) -> bool:
    cur.execute("SELECT 1 FROM deliveries WHERE id = %s", (delivery_id,))
    return cur.fetchone() is not None
