"""`hookctl plan` over many stored events, against `hookctl explain` on the same events (one run).

    python bench/plan.py [--events 100000] [--rounds 3] [--keep]

Builds a database through hookctl's Store API: N stored events (bench/harness.py's
ticket.created events, urgencies Low/High/Urgent in turn) and, for the two thirds that the
old rule (`urgency in [High, Urgent]`) matched, the delivery `fire` would have made, rendered
the same way and linked to its event. Then, in alternating rounds, times whole processes:

- `hookctl plan -r NEW --json --since 1d` (NEW tightens the condition to `eq Urgent`):
  read the window, match, render what the new rule matches, compare with the record;
- `hookctl explain -r NEW --json EVENTS.ndjson` over the same events: read, match (with the
  condition trace) and render what matches. That is the matching speed plan should keep.

Prints each median wall time, events/s and the ratio plan / explain. Nothing is sent; the
working directory (in /tmp/hookctl-bench-plan-*) is removed unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from harness import write_events, write_rule  # noqa: E402

from hookctl.delivery.prepare import Planner  # noqa: E402
from hookctl.events.event import Event  # noqa: E402
from hookctl.events.intake import dedupe_key, event_ticket  # noqa: E402
from hookctl.rules.load import load_rules  # noqa: E402
from hookctl.store.contract import Store  # noqa: E402
from hookctl.store.event_records import NewEvent  # noqa: E402
from hookctl.store.ids import EventIds  # noqa: E402

BATCH = 1000
CONDITION = "when: {{all: [{{field: ticket.urgency, op: {op}, value: {value}}}]}}\n"


def rules(work: Path) -> tuple[Path, Path]:
    """The old rule (High and Urgent) and the new one (Urgent only), same webhook."""
    old, new = work / "old" / "bench.yaml", work / "new" / "bench.yaml"
    for path, op, value in ((old, "in", "[High, Urgent]"), (new, "eq", "Urgent")):
        write_rule(path)
        text = path.read_text(encoding="utf-8")
        path.write_text(
            text.replace("webhook:", CONDITION.format(op=op, value=value) + "webhook:", 1),
            encoding="utf-8",
        )
    return old, new


def seed(db: Path, events: Path, old_rule: Path) -> tuple[int, int]:
    """Store every event, with a delivery for each the old rule matches; (events, deliveries)."""
    (rule,) = load_rules([old_rule])
    environ = {"BENCH_PORT": "0"}  # present, as for fire; only a placeholder is stored
    ids = EventIds()
    stored = made = 0
    with Store(db) as store, open(events, encoding="utf-8") as lines:
        planner = Planner(environ, time.time)
        batch: list[NewEvent] = []
        deliveries = []
        for n, line in enumerate(lines, 1):
            data = json.loads(line)
            now = time.time()
            kept = NewEvent(
                ids.next(now), now, str(events), n, data.get("id"), data.get("event"),
                event_ticket(data), data,
            )  # fmt: skip
            batch.append(kept)
            event = Event(data, str(events), n)
            if rule.matches(event.name, data):
                request, ticket, error = planner.render(rule, event)
                d = planner.delivery(rule, event, dedupe_key(data), request, ticket, error)
                d.event_ref = kept.id
                deliveries.append(d)
            if len(batch) >= BATCH:
                store.enqueue(deliveries, now=time.time(), events=batch)
                stored, made = stored + len(batch), made + len(deliveries)
                batch, deliveries = [], []
        if batch:
            store.enqueue(deliveries, now=time.time(), events=batch)
            stored, made = stored + len(batch), made + len(deliveries)
    return stored, made


def timed(cmd: list[str], env: dict[str, str], expect: tuple[int, ...]) -> tuple[float, str]:
    """Wall seconds of one whole process (its stdout to a file), and that output's last line."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.PIPE, timeout=1800)
        seconds = time.perf_counter() - start
        if done.returncode not in expect:
            raise SystemExit(f"{cmd[2]} exited {done.returncode}: {done.stderr.decode()[-500:]}")
        out.seek(0)
        last = out.read().decode().rstrip("\n").rsplit("\n", 1)[-1]
    return seconds, last


def main() -> int:
    """Seed, time plan and explain in alternating rounds, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hookctl-bench-plan-"))
    try:
        events = write_events(work / "events.ndjson", args.events)
        old, new = rules(work)
        db = work / "hookctl.db"
        t0 = time.perf_counter()
        stored, made = seed(db, events, old)
        seeded = time.perf_counter() - t0
        env = {**os.environ, "HOOKCTL_HOME": str(work / "home"), "NO_COLOR": "1"}
        env.pop("HOOKCTL_RULES", None)
        hookctl = [sys.executable, "-m", "hookctl"]
        plan_cmd = [*hookctl, "plan", "-r", str(new), "--db", str(db), "--json", "--since", "1d"]
        explain_cmd = [*hookctl, "explain", "-r", str(new), "--json", str(events)]
        plans, explains = [], []
        summary = ""
        for _ in range(args.rounds):
            seconds, summary = timed(plan_cmd, env, (0, 2))
            plans.append(seconds)
            explains.append(timed(explain_cmd, env, (0,))[0])
        plan_s, explain_s = statistics.median(plans), statistics.median(explains)
        load = os.getloadavg()
        print(f"# hookctl plan vs explain, {args.events:,} events, {args.rounds} rounds (median)")
        print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f} at the end")
        print(f"seeded {stored:,} stored events and {made:,} deliveries in {seeded:.1f}s")
        print(f"plan:    {plan_s:.2f}s  {args.events / plan_s:,.0f} events/s  (runs {plans})")
        print(
            f"explain: {explain_s:.2f}s  {args.events / explain_s:,.0f} events/s  (runs {explains})"
        )
        print(f"plan / explain time: {plan_s / explain_s:.2f}x")
        print(f"plan summary: {summary}")
        print(f"commands: {' '.join(plan_cmd[2:])}  |  {' '.join(explain_cmd[2:])}")
    finally:
        if args.keep:
            sys.stderr.write(f"working directory kept: {work}\n")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
