"""Prepare and probe databases through hookctl's own library (run with hookctl importable).

python bench/seed.py due --db D --rules R --events E     # every event as a due delivery
python bench/seed.py bigdb --db D --rows N               # N finished deliveries, fast
python bench/seed.py query --db D [--status S] [--ticket T] [--repeat K]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from hookctl.delivery.prepare import order_key
from hookctl.events.intake import dedupe_key
from hookctl.render.webhook import render_request
from hookctl.rules.load import load_rules
from hookctl.rules.policy import PRESETS
from hookctl.store import open_store
from hookctl.store.ids import new_delivery_id
from hookctl.store.log_records import Delivery, DeliveryDetail
from hookctl.store.records import AttemptResult, NewDelivery
from hookctl.store.sqlite import bulk
from hookctl.store.sqlite.store import SQLiteStore

BATCH = 1000
T = TypeVar("T")
TICKETS = 100_000  # distinct tickets in the big database: ten deliveries each at 1M rows


def deliveries(rules: Path, events: Path) -> Iterator[NewDelivery]:
    """One delivery per event for the first rule, rendered as `fire` renders it."""
    (rule,) = load_rules([rules])[:1]
    # Secrets stay placeholders in the store; only their presence is checked while rendering.
    environ = {name: "0" for name in ("BENCH_PORT", "LIVE_PORT", "DEAD_PORT")}
    with open(events, encoding="utf-8") as lines:
        for line in lines:
            data = json.loads(line)
            request = render_request(
                rule.webhook, data, environ=environ, extra={"rule": {"name": rule.name}}
            )
            yield NewDelivery(
                id=new_delivery_id(time.time()),
                rule=rule.name,
                event_id=data.get("id"),
                event_name=data.get("event"),
                ticket=str(data["ticket"]["id"]),
                dedupe_key=dedupe_key(data),
                method=request.method,
                url=request.masked().url,
                request=request.to_dict(),
                policy=rule.retry.to_dict(),
                timeout=rule.timeout,
                accept=rule.accept,
                # An ordered rule's key, as fire renders it (to measure order_by's cost).
                order_key=order_key(rule, data),
            )


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def due(db: Path, rules: Path, events: Path) -> int:
    """Enqueue every event as a pending, due-now delivery, as a failed first attempt leaves it."""
    count = 0
    with open_store(db) as store:
        for batch in _batches(deliveries(rules, events), BATCH):
            count += len(store.enqueue(batch, now=time.time()))
    return count


def _succeeded(delivery_id: str, token: str) -> AttemptResult:
    now = time.time()
    return AttemptResult(
        delivery_id,
        token,
        now,
        1.0,
        200,
        None,
        {"content-length": "11"},
        '{"ok":true}',
        "succeeded",
        None,
    )


def bookkeeping(db: Path, rules: Path, events: Path, batch: int) -> dict[str, float]:
    """Seconds Store spends on n deliveries at a batch size: enqueue+complete (fire), claim+complete (drain)."""
    news = list(deliveries(rules, events))
    token = "b" * 32
    out: dict[str, float] = {"rows": len(news), "batch": batch}
    with open_store(db) as store:
        t0 = time.perf_counter()
        for chunk in _batches(news, batch):
            store.enqueue(chunk, now=time.time(), claim_token=token, lease_seconds=300)
        out["fire: enqueue"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for chunk in _batches(news, batch):
            store.complete([_succeeded(d.id, token) for d in chunk], now=time.time())
        out["fire: complete"] = time.perf_counter() - t0
        store.requeue(status="succeeded", now=time.time())  # all due again, for the drain half
        t0 = time.perf_counter()
        claimed = []
        while claims := store.claim(now=time.time(), limit=batch, lease_seconds=300, token=token):
            claimed += [c.id for c in claims]
        out["drain: claim"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for chunk in _batches(claimed, batch):
            store.complete([_succeeded(i, token) for i in chunk], now=time.time())
        out["drain: complete"] = time.perf_counter() - t0
    return out


def bigdb(db: Path, rows: int) -> str:
    """A database of `rows` deliveries in hookctl's current schema; reused while that matches."""
    probe = db.with_name(db.name + ".probe")
    _remove(probe)
    open_store(probe).close()
    key = f"{bulk.schema_key(probe)}:{rows}"
    _remove(probe)
    stamp = db.with_name(db.name + ".key")
    if db.exists() and stamp.exists() and stamp.read_text() == key:
        return "reused"
    tmp = db.with_name(db.name + ".tmp")
    _remove(tmp)
    bulk.load(tmp, _history(rows))
    _remove(db)
    os.replace(tmp, db)
    _remove(tmp)
    stamp.write_text(key)
    return "built"


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _history(rows: int) -> Iterator[DeliveryDetail]:
    """Finished deliveries spread over 30 days: 3% failed, 2% pending (not due), the rest succeeded."""
    now = time.time()
    start = now - 30 * 86400
    policy = PRESETS["eddydesk"].to_dict()
    request = {"method": "POST", "url": "http://127.0.0.1:9/hook", "headers": [], "body": "{}",
               "format": "json", "basic_auth": None, "secrets": [], "nonce": ""}  # fmt: skip
    step = (now - 60 - start) / max(rows, 1)
    for i in range(rows):
        t = start + i * step
        bucket = i % 100
        status = "failed" if bucket < 3 else "pending" if bucket < 5 else "succeeded"
        summary = Delivery(
            id=new_delivery_id(t), rule=f"rule-{i % 5}", status=status,  # type: ignore[arg-type]
            attempts=1 if status == "succeeded" else 3, replays=0, method="POST",
            url="http://127.0.0.1:9/hook", status_code=200 if status == "succeeded" else 500,
            error=None if status == "succeeded" else "HTTP 500", event_id=f"evt_{i}",
            ticket=str(100000 + (i * 7919) % TICKETS), event_name="ticket.created",
            dedupe_key=f"id:evt_{i}", created_at=t, updated_at=t + 1, first_attempt_at=t,
            next_attempt_at=now + 86400 if status == "pending" else None,
            lease_expires_at=None, unrendered=False,
        )  # fmt: skip
        yield DeliveryDetail(summary, request, policy, 3.0, "2xx-3xx", None, None)


def query(db: Path, status: str | None, ticket: str | None, repeat: int) -> dict[str, object]:
    """Time Store.query(limit=50) in process and show the plans of the SQL it ran."""
    with open_store(db, create=False) as store:
        assert isinstance(store, SQLiteStore)  # query plans are SQLite's
        with store.traced() as statements:
            list(store.query(status=status, ticket=ticket, limit=50))
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            found = len(list(store.query(status=status, ticket=ticket, limit=50)))
            times.append((time.perf_counter() - t0) * 1000)
        plans = {}
        for sql in statements:
            if sql.lstrip().upper().startswith("SELECT"):
                plans[sql] = store.query_plan(sql)
    times.sort()
    return {"rows": found, "median_ms": times[len(times) // 2], "plans": plans}


def main() -> None:
    """Parse the subcommand and run it; results go to stdout as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("due")
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--rules", type=Path, required=True)
    p.add_argument("--events", type=Path, required=True)
    p = sub.add_parser("bookkeeping")
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--rules", type=Path, required=True)
    p.add_argument("--events", type=Path, required=True)
    p.add_argument("--batch", type=int, default=256)
    p = sub.add_parser("bigdb")
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--rows", type=int, required=True)
    p = sub.add_parser("query")
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--status")
    p.add_argument("--ticket")
    p.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    if args.what == "due":
        out: object = {"enqueued": due(args.db, args.rules, args.events)}
    elif args.what == "bookkeeping":
        out = bookkeeping(args.db, args.rules, args.events, args.batch)
    elif args.what == "bigdb":
        out = {"bigdb": bigdb(args.db, args.rows)}
    else:
        out = query(args.db, args.status, args.ticket, args.repeat)
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
