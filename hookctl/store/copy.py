"""Copy a whole delivery database between backends (SQLite -> PostgreSQL and back), as it is.

Deliveries keep their ids, states, schedules, counts and replays; every attempt comes along;
pending ones stay due when they were due; stored events (for `plan`) and paused endpoints
(with their since and reason) come along through the contract (`stored_events` then
`restore_events`, `paused_endpoints` then `pause_endpoint`). Leases are dropped: a copy is made with the workers
stopped, so nothing is in flight, and a lease left over would only delay a pending delivery.
The source is read through the store's public reads (`query`, `get`), plus one column the
records do not carry (`attempts_at_replay`, where a replayed delivery's retry policy counts
from), read per backend; the destination is written row for row by a small writer per backend,
since no public method stores a finished delivery with its history (the contract has no
"import"). The destination must be empty: no deliveries, stored events or paused endpoints.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from hookctl.errors import StoreError

BATCH = 500  # deliveries per destination transaction

_DELIVERY = (
    "id", "rule", "event_id", "event_name", "ticket", "dedupe_key", "status", "attempts", "url",
    "method", "request", "body", "policy", "timeout", "accept", "on_failure", "event",
    "created_at", "updated_at", "first_attempt_at", "next_attempt_at", "last_status_code",
    "error", "fence", "replays", "attempts_at_replay", "unrendered", "endpoint", "event_ref",
)  # fmt: skip
_ATTEMPT = (
    "delivery_id", "number", "started_at", "duration_ms", "status_code", "error",
    "response_headers", "response_body",
)  # fmt: skip
_JSON = ("request", "policy", "on_failure", "event", "response_headers")


@dataclass
class Copied:
    """What a copy moved."""

    deliveries: int
    attempts: int
    events: int = 0
    paused: int = 0  # paused endpoints


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _replay_marks(source: Any, ids: list[str]) -> dict[str, int]:
    """`attempts_at_replay` of each of `ids` (not in the records: read from the backend)."""
    from hookctl.store.postgres.store import PostgresStore

    if isinstance(source, PostgresStore):
        rows = source.conn.execute(
            "SELECT id, attempts_at_replay FROM deliveries WHERE id = ANY(%s)", (ids,)
        ).fetchall()
    else:
        marks = ", ".join("?" * len(ids))
        rows = source._conn.execute(
            f"SELECT id, attempts_at_replay FROM deliveries WHERE id IN ({marks})", ids
        ).fetchall()
    return {delivery_id: int(mark) for delivery_id, mark in rows}


def _rows(source: Any) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each delivery of `source` with its attempts, through the store's public reads."""
    listed = [d.id for d in source.query(limit=None)]
    for start in range(0, len(listed), BATCH):
        chunk = listed[start : start + BATCH]
        marks = _replay_marks(source, chunk)
        for delivery_id in chunk:
            full = source.get(delivery_id)
            if full is None:  # purged meanwhile
                continue
            d = full.delivery
            row = {
                **dataclasses.asdict(d),
                "last_status_code": d.status_code,
                "request": full.request,
                "policy": full.policy,
                "timeout": full.timeout,
                "accept": full.accept,
                "on_failure": full.on_failure,
                "event": full.event,
                "event_ref": full.event_ref,
                "fence": 0,
                "attempts_at_replay": marks.get(d.id, 0),
            }
            yield row, [dataclasses.asdict(a) for a in full.attempt_log]


def _delivery_values(row: dict[str, Any]) -> dict[str, Any]:
    values = dict(row)
    request = dict(values["request"])
    body = request.get("body")
    values["body"] = None
    if isinstance(body, str):  # kept in a column of its own, as both stores keep it
        values["body"] = body
        del request["body"]
    values["request"] = request
    values["unrendered"] = int(bool(values["unrendered"]))
    for column in _JSON:
        if column in values:
            values[column] = _json(values[column])
    return {name: values.get(name) for name in _DELIVERY}


def _attempt_values(attempt: dict[str, Any]) -> dict[str, Any]:
    values = {name: attempt.get(name) for name in _ATTEMPT}
    values["response_headers"] = _json(values["response_headers"])
    return values


def _sqlite_writer(
    store: Any,
) -> Callable[[list[tuple[dict[str, Any], list[dict[str, Any]]]]], None]:
    conn = store._conn
    insert_delivery = (
        f"INSERT INTO deliveries ({', '.join(_DELIVERY)}) "
        f"VALUES ({', '.join(':' + n for n in _DELIVERY)})"
    )
    insert_attempt = (
        f"INSERT INTO attempts ({', '.join(_ATTEMPT)}) "
        f"VALUES ({', '.join(':' + n for n in _ATTEMPT)})"
    )

    def write(batch: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(insert_delivery, [_delivery_values(d) for d, _ in batch])
            conn.executemany(insert_attempt, [_attempt_values(a) for _, a_s in batch for a in a_s])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    return write


def _postgres_writer(
    store: Any,
) -> Callable[[list[tuple[dict[str, Any], list[dict[str, Any]]]]], None]:
    from hookctl.store.postgres.rows import blob, text

    conn = store.conn
    insert_delivery = (
        f"INSERT INTO deliveries ({', '.join(_DELIVERY)}) "
        f"VALUES ({', '.join(f'%({n})s' for n in _DELIVERY)})"
    )
    insert_attempt = (
        f"INSERT INTO attempts ({', '.join(_ATTEMPT)}) "
        f"VALUES ({', '.join(f'%({n})s' for n in _ATTEMPT)})"
    )

    def delivery(row: dict[str, Any]) -> dict[str, Any]:
        values = _delivery_values(row)
        values["body"] = blob(values["body"])
        values["unrendered"] = bool(values["unrendered"])
        for name in ("rule", "event_id", "event_name", "ticket", "dedupe_key", "url", "error"):
            values[name] = text(values[name])
        return values

    def attempt(row: dict[str, Any]) -> dict[str, Any]:
        values = _attempt_values(row)
        values["response_body"] = blob(values["response_body"])
        values["error"] = text(values["error"])
        return values

    def write(batch: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> None:
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(insert_delivery, [delivery(d) for d, _ in batch])
            cur.executemany(insert_attempt, [attempt(a) for _, a_s in batch for a in a_s])

    return write


def copy(source: Any, destination: Any, *, progress: Callable[[int], None] | None = None) -> Copied:
    """Copy every delivery, attempt, stored event and endpoint pause from `source` into the
    empty store `destination`."""
    from hookctl.store.postgres.store import PostgresStore

    if (
        next(iter(destination.query(limit=1)), None) is not None
        or next(iter(destination.stored_events()), None) is not None
        or destination.paused_endpoints()
    ):
        raise StoreError(
            "the destination already holds deliveries, stored events or paused endpoints; "
            "copy into an empty database"
        )
    write = (
        _postgres_writer(destination)
        if isinstance(destination, PostgresStore)
        else _sqlite_writer(destination)
    )
    copied = Copied(0, 0)
    batch: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for item in _rows(source):
        batch.append(item)
        if len(batch) >= BATCH:
            write(batch)
            copied.deliveries += len(batch)
            copied.attempts += sum(len(a) for _, a in batch)
            batch = []
            if progress is not None:
                progress(copied.deliveries)
    if batch:
        write(batch)
        copied.deliveries += len(batch)
        copied.attempts += sum(len(a) for _, a in batch)
    read = _copy_events(source, destination, copied)
    paused = source.paused_endpoints()
    for endpoint, (since, reason) in sorted(paused.items()):
        destination.pause_endpoint(endpoint, now=since, reason=reason)
    copied.paused = len(paused)
    # Checked against the source's own counts: a copy that lost a row says so.
    want, got = source.stats(), destination.stats()
    if (want.deliveries, want.attempts) != (got.deliveries, got.attempts):
        raise StoreError(
            f"copy incomplete: source has {want.deliveries} deliveries and "
            f"{want.attempts} attempts, destination {got.deliveries} and {got.attempts}"
        )
    if copied.events != read or destination.paused_endpoints() != paused:
        raise StoreError(
            f"copy incomplete: source has {read} stored events and {len(paused)} paused "
            f"endpoints, {copied.events} events were added"
        )
    return copied


def _copy_events(source: Any, destination: Any, copied: Copied) -> int:
    """Every stored event, oldest first, BATCH per destination transaction; how many read."""
    read = 0
    chunk = []
    for event in source.stored_events():
        chunk.append(event)
        if len(chunk) >= BATCH:
            copied.events += destination.restore_events(chunk)
            read += len(chunk)
            chunk = []
    if chunk:
        copied.events += destination.restore_events(chunk)
        read += len(chunk)
    return read
