"""Enqueue-to-send latency of a waiting `retry-loop --every` on PostgreSQL (issue 14's wake-up).

    python bench/wakeup.py [--every 5s] [--rounds 20] [--src DIR] [--url URL]

One `hookctl retry-loop --every E` process waits on an empty queue; each round enqueues one
due delivery through the store's public `enqueue` (a NOTIFY) and times from its commit to its
arrival at bench/receiver.py (stamped there). A worker that only polls sends it at its next
pass (uniform over the interval: about E/2 on average); one that wakes on the NOTIFY at once.
Rounds are spaced by a random fraction of E, so a polling worker is not caught in phase.
`--src DIR` measures another checkout's package (say main's, `git archive main`) the same
way. Without --url a throwaway cluster is started (tests/pg.py). Nothing asserts on timing.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

from harness import Receiver, write_events, write_rule  # noqa: E402
from seed import deliveries  # noqa: E402

from hookctl.durations import parse_duration  # noqa: E402
from hookctl.store import open_store  # noqa: E402


def measure(url: str, every: float, rounds: int, src: str | None, work: Path) -> list[float]:
    """Milliseconds from each enqueue's commit to the delivery's arrival at the receiver."""
    rules = write_rule(work / "rules" / "bench.yaml")
    events = write_events(work / "events.ndjson", rounds)
    latencies = []
    with Receiver() as receiver:
        env = {**os.environ, "BENCH_PORT": str(receiver.port), "HOOKCTL_ALLOW_NET": "127.0.0.1"}
        if src:
            env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
        worker = subprocess.Popen(
            [sys.executable, "-m", "hookctl", "retry-loop", "--db", url, "--every", f"{every}s"],
            env=env,
            cwd=work,  # not the checkout: `-m` puts the working directory first on sys.path
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert worker.stderr is not None
            if "until stopped" not in worker.stderr.readline():
                raise SystemExit("retry-loop did not start")
            with open_store(url) as store:
                for n, delivery in enumerate(deliveries(rules, events)):
                    time.sleep(random.uniform(0.1, every))
                    store.enqueue([delivery], now=time.time())
                    committed = time.time()
                    deadline = time.monotonic() + every * 2 + 10
                    while (stats := receiver.stats())["count"] <= n:
                        if time.monotonic() > deadline or worker.poll() is not None:
                            raise SystemExit(f"round {n}: the delivery never arrived")
                        time.sleep(0.002)
                    latencies.append((stats["last"] - committed) * 1000)
        finally:
            worker.terminate()
            worker.communicate(timeout=30)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--every", default="5s", help="retry-loop's --every (default 5s)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--src", help="a checkout whose hookctl/ package to measure instead")
    parser.add_argument("--url", help="a PostgreSQL database to use (default: a throwaway one)")
    args = parser.parse_args()
    every = parse_duration(args.every)
    with tempfile.TemporaryDirectory(prefix="hookctl-bench-wakeup-") as tmp:
        cluster = None
        url = args.url
        if url is None:
            from tests.pg import Cluster

            cluster = Cluster()
            cluster.start()
            url = cluster.create_database("wakeup")
        try:
            got = measure(url, every, args.rounds, args.src, Path(tmp))
        finally:
            if cluster is not None:
                cluster.stop()
    got.sort()
    print(f"retry-loop --every {args.every}, {len(got)} rounds ({args.src or 'this checkout'}):")
    print(
        f"enqueue -> send ms: median {statistics.median(got):.0f}, "
        f"p90 {got[int(len(got) * 0.9) - 1]:.0f}, max {got[-1]:.0f}, min {got[0]:.0f}"
    )


if __name__ == "__main__":
    main()
