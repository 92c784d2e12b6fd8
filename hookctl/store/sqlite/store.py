"""SQLite outbox and retry queue: enqueue, claim with a lease, complete, release, requeue, purge.

`Store` is the one interface the rest of hookctl uses; behind it, database.py opens the file,
migrations.py builds the schema, rows.py turns deliveries into rows and back, and history.py
holds the log's read queries. Several hookctl
processes share one file: every write is a `BEGIN IMMEDIATE` transaction, claims hand out a
lease token, and a result is applied only while its token still holds the lease.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from hookctl.store.records import (
    ID_CLOCK_SLACK,
    ID_PATTERN,
    AttemptResult,
    Claim,
    NewDelivery,
    id_floor,
    new_delivery_id,
)
from hookctl.store.sqlite import database, history
from hookctl.store.sqlite.history import STATUSES
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

__all__ = ["STATUSES", "AttemptResult", "Claim", "NewDelivery", "Store", "new_delivery_id"]

_PAGE = history.PAGE
_PURGE_CHUNK = 2000  # deleted per transaction, so purging a big log never stalls senders for long


class Store:
    """The delivery database: an outbox, a retry queue and an execution log in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        """Open (creating if needed) and migrate the database at `path`."""
        self.path = Path(path)
        self.conn = database.connect(self.path)

    def wait_when_busy(self, seconds: float) -> None:
        """How long a call waits for another process's write lock before it fails busy
        (default database.BUSY_TIMEOUT); 0 fails at once, and nothing of the call is done."""
        self.conn.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE takes the write lock up front, waiting if busy."""
        # Operational errors (busy past the timeout, disk full, read-only file) become a
        # StoreError the CLI can report; the sqlite3 error stays chained for --debug.
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            raise database.error(self.path, exc) from exc

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction, so several SELECTs see one snapshot."""
        try:
            self.conn.execute("BEGIN")
            try:
                yield self.conn
            finally:
                if self.conn.in_transaction:
                    self.conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raise database.error(self.path, exc) from exc

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
        # Encoded before the transaction, so the write lock is held only for the inserts.
        rows = [delivery_row(d, now, claim_token, lease_until, shared) for d in deliveries]
        results: list[tuple[str, bool]] = []
        new_rows = []
        with self._write() as conn:
            seen = self._existing_dedupe(conn, deliveries)
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
        return results

    @staticmethod
    def _existing_dedupe(
        conn: sqlite3.Connection, deliveries: Sequence[NewDelivery]
    ) -> dict[tuple[str, str | None], str]:
        """Ids already stored for the batch's (rule, dedupe_key) pairs."""
        keys_by_rule: dict[str, set[str]] = defaultdict(set)
        for d in deliveries:
            if d.dedupe_key is not None:
                keys_by_rule[d.rule].add(d.dedupe_key)
        found: dict[tuple[str, str | None], str] = {}
        for rule, keys in keys_by_rule.items():
            ordered = sorted(keys)
            for start in range(0, len(ordered), _PAGE):
                chunk = ordered[start : start + _PAGE]
                sql = (
                    "SELECT dedupe_key, id FROM deliveries WHERE rule = ? "
                    f"AND dedupe_key IN ({', '.join('?' * len(chunk))})"
                )
                for key, delivery_id in conn.execute(sql, [rule, *chunk]):
                    found[(rule, key)] = delivery_id
        return found

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
        bind: dict[str, Any] = {"now": now, "due": now if due_by is None else due_by}
        with self._write() as conn:
            if ids is None:
                sql = f"SELECT {CLAIM_COLUMNS} FROM {DUE} ORDER BY next_attempt_at LIMIT :limit"
                rows = dicts(conn.execute(sql, {**bind, "limit": limit}))
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
                "UPDATE deliveries SET lease_token = ?, lease_expires_at = ?, fence = fence + 1 "
                "WHERE id = ?",
                [(token, now + lease_seconds, row["id"]) for row in rows],
            )
        return [Claim(token=token, **row) for row in rows]

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
                }
            )
        if not params:
            return [], set()
        inserted: set[str] = set()
        with self._write() as conn:
            conn.executemany(INSERT_ATTEMPT, params)
            # One statement per row: executemany cannot say which rows the fence rejected.
            applied = [conn.execute(APPLY_RESULT, p).rowcount == 1 for p in params]
            for p, ok in zip(params, applied, strict=True):
                follow = follow_ups.get(str(p["id"])) if ok else None
                if follow is None:
                    continue
                row = delivery_row(follow, now, claim_token, lease_until, shared)
                if conn.execute(INSERT_DELIVERY_ONCE, row).rowcount == 1:
                    inserted.add(follow.id)
        return applied, inserted

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
        return held

    def release(self, ids: Sequence[str], *, token: str) -> int:
        """Give back claims `token` holds and has not attempted: due again, for any process."""
        with self._write() as conn:
            return sum(
                conn.execute(
                    "UPDATE deliveries SET lease_token = NULL, lease_expires_at = NULL "
                    "WHERE id = ? AND lease_token = ?",
                    (delivery_id, token),
                ).rowcount
                for delivery_id in ids
            )

    def due_count(self, now: float) -> int:
        """How many deliveries a claim at `now` could take."""
        (count,) = self.conn.execute(
            f"SELECT count(*) FROM {DUE}", {"now": now, "due": now}
        ).fetchone()
        return int(count)

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
        return history.query(
            self.conn, status=status, rule=rule, ticket=ticket, since=since, limit=limit
        )

    def get(self, delivery_id: str) -> dict[str, Any] | None:
        """One delivery by id or unique prefix, with its "attempts" in order; None if absent."""
        with self._read() as conn:
            return history.get(conn, delivery_id)

    def select(
        self,
        *,
        ids: Sequence[str] = (),
        status: str | None = None,
        rule: str | None = None,
        since: float | None = None,
    ) -> list[str]:
        """The full ids a replay selects: by ids (or unique prefixes), or by filters."""
        with self._read() as conn:
            return history.select_ids(conn, ids=ids, status=status, rule=rule, since=since)

    def statuses(self, ids: Sequence[str]) -> dict[str, str]:
        """The status of each of `ids` (a duplicate's earlier delivery, say)."""
        with self._read() as conn:
            return history.statuses(conn, ids)

    def unrendered(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Those of `ids` whose request could not be rendered, with their rule and event."""
        with self._read() as conn:
            return history.unrendered(conn, ids)

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
            bare = {row["id"] for row in history.unrendered(conn, selected)}
            shared: dict[int, str | None] = {}
            renewed = [
                request_columns(rendered[i], i, shared)
                for i in selected
                if i in bare and i in rendered
            ]
            conn.executemany(REPLACE_REQUEST, renewed)
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
                        (after, older_than, _PURGE_CHUNK),
                    )
                ]
                conn.executemany("DELETE FROM deliveries WHERE id = ?", ids)
            deleted += len(ids)
            if len(ids) < _PURGE_CHUNK:
                return deleted
            after = ids[-1][0]

    def stats(self, *, since: float | None = None) -> dict[str, Any]:
        """Counts by status and rule, attempt duration percentiles, slowest and failing URLs."""
        with self._read() as conn:
            return history.stats(conn, since=since)
