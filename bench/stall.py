"""A database stall mid-run: another process holds the write lock past the busy timeout while
`fire` sends (issue 11, item 3). Prints what was recorded, and what was lost or mis-measured.

    python bench/stall.py [--events 600] [--lock 40] [--at 100] [--delay 0.05] [--src DIR]

A bench/receiver.py answers after `--delay`; `fire -c 20` sends `--events`; once the receiver
has had `--at` requests, a second process takes `BEGIN IMMEDIATE` on the database and keeps it
`--lock` seconds (SQLite's busy timeout in hookctl is 30 s). Afterwards: fire's exit code and
last stderr lines, the deliveries by status, the requests the receiver got that have no
attempt on record (outcomes dropped: they would be sent again), the attempts whose recorded
duration is far beyond the receiver's latency, and the re-sends a following `retry-loop` makes.
`--src DIR` measures the hookctl package in DIR (an older checkout) the same way.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import PYTHON, Env, Receiver, write_events, write_rule

HOLD = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""

READ = """
import json, sys
from hookctl.store.contract import Store
store = Store(sys.argv[1])
out = {}
for row in store.query(limit=None):
    d = store.get(row["id"])
    out[row["id"]] = {"status": d["status"], "durations": [a["duration_ms"] for a in d["attempts"]]}
print(json.dumps(out))
"""


def main() -> int:
    """Parse options, run once, print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=600)
    parser.add_argument("--lock", type=float, default=40.0, help="seconds the lock is held")
    parser.add_argument(
        "--at", type=int, default=100, help="take the lock after this many requests"
    )
    parser.add_argument("--delay", type=float, default=0.05, help="receiver latency (seconds)")
    parser.add_argument("--src", type=Path, help="measure the hookctl package in DIR")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hookctl-stall-"))
    env = Env(work, args.src.resolve() if args.src else None)
    rule = write_rule(work / "rules" / "bench.yaml", retry="{every: 1m, retries: 3}")
    events = write_events(work / "events.ndjson", args.events)
    db = env.migrated(env.path("stall.db"))
    with Receiver(delay=args.delay) as rx:
        environ = {**env.environ, "BENCH_PORT": str(rx.port)}
        fire = subprocess.Popen(
            [*env.hookctl, "fire", "-c", "20", "-r", str(rule), "--db", str(db), str(events)],
            env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        while rx.stats()["count"] < args.at and fire.poll() is None:
            time.sleep(0.002)
        holder = subprocess.Popen(
            [PYTHON, "-c", HOLD, str(db), str(args.lock)], stdout=subprocess.PIPE, text=True
        )
        assert holder.stdout is not None
        locked = holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        _, err = fire.communicate(timeout=args.lock + 300)
        fire_seconds = time.monotonic() - t0
        holder.wait(timeout=args.lock + 60)
        received = rx.ids(every=True)["ids"]
        read = subprocess.run(
            [PYTHON, "-c", READ, str(db)], env=environ, capture_output=True, text=True, check=True
        )
        rows = json.loads(read.stdout)
        rx.reset()
        loop = subprocess.run(
            [*env.hookctl, "retry-loop", "--db", str(db), "--quiet"],
            env=environ, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        resent = sum(1 for i in rx.ids(every=True)["ids"] if i in received)
    by_status: dict[str, int] = {}
    for row in rows.values():
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
    durations = [d for row in rows.values() for d in row["durations"]]
    slow = [d for d in durations if d > 1000]
    lines = err.splitlines()
    print(
        json.dumps(
            {
                "src": str(args.src or "installed"),
                "lock_taken_mid_run": locked,
                "lock_seconds": args.lock,
                "fire_exit": fire.returncode,
                "fire_seconds_after_lock": round(fire_seconds, 1),
                "fire_stderr_lines": len(lines),
                "fire_stderr_last": lines[-2:],
                "deliveries_by_status": by_status,
                "received_by_receiver": len(received),
                "outcomes_dropped": sum(
                    1 for i in received if not rows.get(i, {}).get("durations")
                ),
                "attempts_recorded_over_1s": len(slow),
                "max_recorded_duration_ms": round(max(durations), 1) if durations else None,
                "receiver_latency_ms": args.delay * 1000,
                "retry_loop_after_exit": loop.returncode,
                "resent_by_retry_loop_after": resent,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
