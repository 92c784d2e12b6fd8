"""Re-sends after a crash: `kill -9` a `fire` at a random point, recover, count what the receiver
got twice (issue 11, item 7).

    python bench/crash_resends.py [--runs 10] [--events 2000] [--delay 0.02] [--seed 1] [--src DIR]

Each run: a fresh database, a bench/receiver.py answering after `--delay`, `fire` of
`--events` at concurrency 50 with 1 s leases; SIGKILL once the receiver has had a random number
of its requests (10-80 % of them); then, after the leases ran out, `retry-loop` and the same
`fire` again (it sends only what was never stored). The receiver counts arrivals per
webhook-id: every arrival beyond a delivery's first is a re-send (the same id, so a receiver
can drop it). Requests that were on the wire when the process died are re-sent whatever
hookctl does; answers that came back but were not yet recorded are the part hookctl can shrink.
`--src DIR` measures the hookctl package in DIR (an older checkout, say) in the same way.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import Env, Receiver, write_events, write_rule


def one_run(env: Env, rx: Receiver, rule: Path, events: Path, count: int, at: int) -> dict:
    """One kill at the `at`-th request; the re-sends it caused."""
    db = env.migrated(env.path("crash.db"))
    environ = {**env.environ, "BENCH_PORT": str(rx.port), "HOOKCTL_LEASE": "1s"}
    rx.reset()
    fire = [*env.hookctl, "fire", "-c", "50", "--per-host", "50", "-r", str(rule),
            "--db", str(db), "--quiet", str(events)]  # fmt: skip
    victim = subprocess.Popen(fire, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while rx.stats()["count"] < at and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    killed_at = rx.stats()["count"]
    time.sleep(1.2)  # the dead process's leases run out
    for cmd in (
        [*env.hookctl, "retry-loop", "-c", "50", "--db", str(db), "--quiet"],
        fire,
    ):
        done = subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"recovery failed: {done.stderr[-500:]}")
    ids = rx.ids()
    if ids["distinct"] != count:
        raise RuntimeError(f"the receiver got {ids['distinct']} of {count} deliveries")
    return {"killed_at": killed_at, "resent": ids["repeats"]}


def main() -> int:
    """Parse options, run, print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--delay", type=float, default=0.02, help="receiver latency (seconds)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--src", type=Path, help="measure the hookctl package in DIR")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hookctl-crash-"))
    env = Env(work, args.src.resolve() if args.src else None)
    rule = write_rule(work / "rules" / "bench.yaml")
    events = write_events(work / "events.ndjson", args.events)
    rng = random.Random(args.seed)
    runs = []
    with Receiver(delay=args.delay) as rx:
        for _ in range(args.runs):
            at = rng.randint(args.events // 10, args.events * 8 // 10)
            runs.append(one_run(env, rx, rule, events, args.events, at))
            sys.stderr.write(f"killed at {runs[-1]['killed_at']}: {runs[-1]['resent']} re-sent\n")
    resent = [r["resent"] for r in runs]
    print(
        json.dumps(
            {
                "src": str(args.src or "installed"),
                "events": args.events,
                "receiver_delay_s": args.delay,
                "runs": runs,
                "resent_mean": statistics.mean(resent),
                "resent_max": max(resent),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
