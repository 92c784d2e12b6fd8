"""A disk that fills up mid-`fire`: what the user sees on stderr (issue 11, item 3).

    python bench/diskfull.py [--events 3000] [--room 600000] [--src DIR]

A first `fire` creates the database; a second one, of `--events`, runs under a file-size limit
(RLIMIT_FSIZE) of the database's size plus `--room` bytes, so its writes start failing partway,
as on a full disk. Prints its exit code, how many stderr lines it wrote, how many of them are
asyncio noise (`Session is closed`, `Task was destroyed`, `Task exception was never
retrieved`), and the first and last lines. `--src DIR` runs the hookctl package in DIR.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import Env, Receiver, write_events, write_rule

NOISE = ("Session is closed", "Task was destroyed", "never retrieved")


def main() -> int:
    """Parse options, run once, print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--room", type=int, default=600_000, help="bytes a file may grow by")
    parser.add_argument("--src", type=Path, help="measure the hookctl package in DIR")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hookctl-diskfull-"))
    env = Env(work, args.src.resolve() if args.src else None)
    rule = write_rule(work / "rules" / "bench.yaml")
    first = write_events(work / "first.ndjson", 5)
    events = write_events(work / "events.ndjson", args.events, start=5)
    db = work / "full.db"
    with Receiver() as rx:
        environ = {**env.environ, "BENCH_PORT": str(rx.port)}
        base = [*env.hookctl, "fire", "-r", str(rule), "--db", str(db), "--quiet"]
        subprocess.run([*base, str(first)], env=environ, check=True, capture_output=True)
        limit = db.stat().st_size + args.room

        def cap() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        done = subprocess.run(
            [*base, str(events)], env=environ, capture_output=True, text=True, preexec_fn=cap,
            timeout=300,
        )  # fmt: skip
        received = rx.stats()["count"]
    lines = done.stderr.splitlines()
    print(
        json.dumps(
            {
                "src": str(args.src or "installed"),
                "exit": done.returncode,
                "stderr_lines": len(lines),
                "noise_lines": sum(1 for line in lines if any(n in line for n in NOISE)),
                "first_line": lines[0] if lines else None,
                "last_line": lines[-1] if lines else None,
                "requests_received": received,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
