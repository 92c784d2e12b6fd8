"""PostgreSQL against SQLite, in the same run on the same machine (issue 14's performance goals).

    python bench/postgres.py [--count 20000] [--workers 1,2,4] [--log-rows 1000000] [--url URL]

1. retry-loop drain: `--count` due deliveries (seeded through each store's `enqueue`), drained
   by N `hookctl retry-loop -c 50 --per-host 50` processes at once against bench/receiver.py
   answering at once; throughput (deliveries/s, whole commands) and PostgreSQL / SQLite.
2. bookkeeping: the store alone, claim + complete per delivery at batch 256 (as seed.py
   measures SQLite), microseconds per delivery on each backend.
3. `log --status failed --limit 50` on `--log-rows` rows vs an empty database (PostgreSQL).

Without --url a throwaway cluster is started (tests/pg.py: initdb in a temp dir, a Unix socket),
durable by default (fsync and synchronous_commit on, as SQLite runs with synchronous=FULL);
--fast turns both off. Prints a Markdown table; nothing asserts on timing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

from harness import Receiver, write_events, write_rule  # noqa: E402
from seed import _batches, _succeeded, deliveries  # noqa: E402

from hookctl.store import open_store  # noqa: E402


def seed(where: str, rules: Path, events: Path) -> int:
    count = 0
    with open_store(where) as store:
        for batch in _batches(deliveries(rules, events), 1000):
            count += len(store.enqueue(batch, now=time.time()))
    return count


def drain(where: str, workers: int, port: int) -> float:
    """Seconds until `workers` retry-loop processes have drained the queue."""
    env = {**os.environ, "BENCH_PORT": str(port), "HOOKCTL_ALLOW_NET": "127.0.0.1"}
    command = [sys.executable, "-m", "hookctl", "retry-loop", "--db", where, "-q"]
    command += ["-c", "50", "--per-host", "50"]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(command, env=env) for _ in range(workers)]
    codes = [p.wait(timeout=900) for p in procs]
    elapsed = time.perf_counter() - t0
    if any(codes):
        raise SystemExit(f"retry-loop failed: exit codes {codes}")
    return elapsed


def bookkeeping(where: str, rules: Path, events: Path, batch: int = 256) -> float:
    """Microseconds per delivery the store spends to claim and complete it, alone."""
    news = list(deliveries(rules, events))
    token = "b" * 32
    with open_store(where) as store:
        for chunk in _batches(news, 1000):
            store.enqueue(chunk, now=time.time())
        t0 = time.perf_counter()
        while claims := store.claim(now=time.time(), limit=batch, lease_seconds=300, token=token):
            store.complete([_succeeded(c.id, token) for c in claims], now=time.time())
        return (time.perf_counter() - t0) / len(news) * 1e6


def big_log(url: str, rows: int) -> None:
    """`rows` finished deliveries (1% failed) straight in SQL: seeding through enqueue is slow."""
    import psycopg

    open_store(url).close()  # the schema
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO deliveries (id, rule, event_id, ticket, status, attempts, url, method,
                request, policy, timeout, accept, created_at, updated_at, last_status_code, error)
            SELECT 'msg_0' || upper(lpad(to_hex(g), 25, '0')), 'bench', 'evt_' || g,
                (g %% 100000)::text, CASE WHEN g %% 100 = 0 THEN 'failed' ELSE 'succeeded' END,
                1, 'http://127.0.0.1/hook', 'POST', '{"method":"POST"}', '{}', 3, '2xx',
                1.7e9 + g, 1.7e9 + g, CASE WHEN g %% 100 = 0 THEN 500 ELSE 200 END,
                CASE WHEN g %% 100 = 0 THEN 'HTTP 500' END
            FROM generate_series(1, %s) AS g
            """,
            (rows,),
        )
        conn.execute("VACUUM ANALYZE deliveries")


def timed(command: Sequence[str], repeat: int = 7) -> float:
    """Median milliseconds of a whole command."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--log-rows", type=int, default=1_000_000)
    parser.add_argument("--url", help="a PostgreSQL server to use (a database per run is made)")
    parser.add_argument("--skip", action="append", default=[], help="drain, bookkeeping or log")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="the throwaway cluster with fsync and synchronous_commit off (default: on, as "
        "SQLite's synchronous=FULL is: a fair comparison)",
    )
    args = parser.parse_args()

    from tests.pg import Cluster, external_database

    cluster = None
    if args.url:
        make: Callable[[str], str] = lambda name: external_database(args.url, name)  # noqa: E731
    else:
        cluster = Cluster(durable=not args.fast)
        cluster.start()
        make = cluster.create_database
    rows: list[tuple[str, str, str, str]] = []
    work = Path(tempfile.mkdtemp(prefix="hookctl-bench-pg-"))
    try:
        events = write_events(work / "events.ndjson", args.count)
        with Receiver() as receiver:
            rules = write_rule(work / "rules" / "bench.yaml")
            if "drain" not in args.skip:
                for n in (int(w) for w in args.workers.split(",")):
                    rates = {}
                    for kind in ("sqlite", "postgres"):
                        where = (
                            str(work / f"drain-{n}.db") if kind == "sqlite" else make(f"drain_{n}")
                        )
                        seeded = seed(where, rules, events)
                        rates[kind] = seeded / drain(where, n, receiver.port)
                    rows.append(
                        (
                            f"retry-loop drain, {args.count:,} due, {n} worker(s) (deliveries/s)",
                            f"{rates['sqlite']:,.0f}",
                            f"{rates['postgres']:,.0f}",
                            f"{rates['postgres'] / rates['sqlite']:.2f}x",
                        )
                    )
                    print(rows[-1], flush=True)
        if "bookkeeping" not in args.skip:
            small = write_events(work / "small.ndjson", 5000)
            rules = write_rule(work / "rules" / "bench.yaml")
            lite = bookkeeping(str(work / "book.db"), rules, small)
            pg = bookkeeping(make("book"), rules, small)
            rows.append(
                (
                    "claim + complete bookkeeping, 5,000 at batch 256 (µs/delivery)",
                    f"{lite:.1f}",
                    f"{pg:.1f}",
                    f"{pg / lite:.2f}x",
                )
            )
            print(rows[-1], flush=True)
        if "log" not in args.skip:
            empty, big = make("log_empty"), make("log_big")
            open_store(empty).close()
            big_log(big, args.log_rows)
            command = [sys.executable, "-m", "hookctl", "log", "--status", "failed", "--limit"]
            ms_empty = timed([*command, "50", "--db", empty])
            ms_big = timed([*command, "50", "--db", big])
            rows.append(
                (
                    f"log --status failed --limit 50, {args.log_rows:,} rows vs empty (ms, PG)",
                    f"{ms_empty:.1f}",
                    f"{ms_big:.1f}",
                    f"{ms_big / ms_empty:.2f}x",
                )
            )
    finally:
        if cluster is not None:
            cluster.stop()
    print("\n| measure | SQLite (or empty) | PostgreSQL (or 1M rows) | ratio |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\n{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
