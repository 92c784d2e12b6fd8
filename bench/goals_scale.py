"""Goals 4 (memory), 5 (the log on a big database) and 6 (a dead host)."""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path

from goals_send import check, fire_cmd
from harness import Env, Proc, Receiver, Row, Sizes, fresh, median, shell, write_events, write_rule


def goal_memory(env: Env, sizes: Sizes) -> list[Row]:
    """Goal 4: peak RSS of `fire` over many events vs ten times fewer (same rule, 0 ms receiver)."""
    rule = write_rule(env.path("memory/rule.yaml"))
    peaks: dict[int, Proc] = {}
    delivered: dict[int, int] = {}
    cmd: list[str] = []
    with Receiver() as rx:
        for n in (sizes.memory_small, sizes.memory_big):
            events = write_events(env.path(f"memory-{n}.ndjson"), n)
            db = fresh(env.path(f"memory-{n}.db"))
            cmd = fire_cmd(env, rule, db, events)
            rx.reset()
            # A run over its cap is killed; its peak RSS so far still counts (wait4 reports it).
            peaks[n] = env.run(
                cmd, timeout=sizes.memory_cap, extra_env={"BENCH_PORT": str(rx.port)}
            )
            delivered[n] = rx.stats()["count"]
            events.unlink()
            fresh(db)
    small, big = peaks[sizes.memory_small], peaks[sizes.memory_big]
    row = Row("4 memory", f"peak RSS, fire of {sizes.memory_big:,} vs {sizes.memory_small:,} events (MiB)",
              small.max_rss_kb / 1024, big.max_rss_kb / 1024, "MiB", 1.3, False,
              shell(cmd, env.work, {"BENCH_PORT": "…"}))  # fmt: skip
    for n, proc in peaks.items():
        state = (
            f"killed at the {proc.seconds:.0f}s cap" if proc.timed_out else f"{proc.seconds:.1f}s"
        )
        row.notes.append(
            f"{n:,} events: {delivered[n]:,} delivered, {state}, peak {proc.max_rss_kb / 1024:.0f} MiB"
        )
    return [row]


def goal_log(env: Env, sizes: Sizes) -> list[Row]:
    """Goal 5: `log --status failed --limit 50` and `log --ticket X` on 1M deliveries vs empty."""
    rows_wanted = sizes.log_rows
    cache = Path(tempfile.gettempdir()) / "hookctl-bench-cache"
    cache.mkdir(exist_ok=True)
    big = cache / f"big-{rows_wanted}.db"
    built = json.loads(
        env.python(
            "seed.py", "bigdb", "--db", str(big), "--rows", str(rows_wanted), timeout=600
        ).stdout
    )
    empty = env.path("empty.db")
    env.python("seed.py", "bigdb", "--db", str(empty), "--rows", "0")
    ticket = "100042"  # every ticket number exists once there are 100k+ rows (see seed.TICKETS)
    queries = {
        "log --status failed --limit 50": ["log", "--status", "failed", "--limit", "50"],
        f"log --ticket {ticket}": ["log", "--ticket", ticket],
        "retry-loop, nothing due (extra)": ["retry-loop"],
    }
    times: dict[str, list[float]] = defaultdict(list)
    for i in range(sizes.rounds + 1):  # the first round warms the page cache
        for what, args in queries.items():
            for tag, path in (("big", big), ("empty", empty)):
                proc = env.run([*env.hookctl, *args, "--db", str(path)], timeout=120)
                if proc.returncode != 0:
                    raise RuntimeError(
                        f"{what} on {tag}: exit {proc.returncode}: {proc.stderr[-500:]}"
                    )
                if i:
                    times[f"{what} {tag}"].append(proc.seconds * 1000)
    rows = []
    for what, args in queries.items():
        row = Row("5 log at scale", f"{what}, {rows_wanted:,} rows vs empty (ms)", median(times[f"{what} empty"]),
                  median(times[f"{what} big"]), "ms", 2.0, False, shell([*env.hookctl, *args, "--db", str(big)], env.work))  # fmt: skip
        row.notes.append(f"big database {built['bigdb']} at {big}")
        rows.append(row)
    plans = {}
    for what, flags in (
        ("status failed", ["--status", "failed"]),
        ("ticket", ["--ticket", ticket]),
    ):
        result = {tag: json.loads(env.python("seed.py", "query", "--db", str(path), *flags).stdout)
                  for tag, path in (("big", big), ("empty", empty))}  # fmt: skip
        plans[what] = {
            "in-process Store.query ms (big / empty)": f"{result['big']['median_ms']:.2f} / {result['empty']['median_ms']:.2f}",
            "plans": result["big"]["plans"],
        }
    sizes.details["log query plans"] = plans
    return rows


DEAD_RULES = """\
- name: live
  on: [ticket.created]
  webhook: {url: "http://127.0.0.1:{{ env.LIVE_PORT }}/hook", body: {ticket: "{{ ticket.id }}"}}
  timeout: 10s
  retry: none
"""
DEAD_RULE = """\
- name: dead
  on: [ticket.created]
  webhook: {url: "http://127.0.0.1:{{ env.DEAD_PORT }}/hook", body: {ticket: "{{ ticket.id }}"}}
  timeout: 1s
  retry: none
"""


def goal_dead_host(env: Env, sizes: Sizes) -> list[Row]:
    """Goal 6: with a rule at a host that never answers, the live host's deliveries are not held up."""
    n = sizes.dead_events
    events = write_events(env.path("dead.ndjson"), n)
    live_only, both = env.path("dead/live.yaml"), env.path("dead/both.yaml")
    live_only.parent.mkdir(exist_ok=True)
    live_only.write_text(DEAD_RULES, encoding="utf-8")
    both.write_text(DEAD_RULES + DEAD_RULE, encoding="utf-8")
    finish: dict[str, float] = {}
    totals: dict[str, float] = {}
    cmd: list[str] = []
    with Receiver(delay=0.02) as live, Receiver(hang=True) as dead:
        ports = {"LIVE_PORT": str(live.port), "DEAD_PORT": str(dead.port)}
        for name, rules in (("live only", live_only), ("live + dead", both)):
            db = fresh(env.path(f"dead-{name[:4]}.db"))
            cmd = [*env.hookctl, "fire", "-r", str(rules), "--db", str(db), "--quiet", str(events)]
            live.reset()
            # Dead attempts time out in parallel, --per-host (20) at a time: about n / 20 seconds.
            proc = env.run(cmd, timeout=60 + n / 5, extra_env=ports)
            stats = check(proc, live, n, f"dead-host run ({name})")
            finish[name] = stats["last"] - proc.started_at
            totals[name] = proc.seconds
    row = Row("6 dead host", f"time until {n} live deliveries are done (s)", finish["live only"],
              finish["live + dead"], "s", 1.25, False, shell(cmd, env.work, {"LIVE_PORT": "…", "DEAD_PORT": "…"}))  # fmt: skip
    row.notes.append(
        f"whole run: {totals['live only']:.1f}s without the dead rule, {totals['live + dead']:.1f}s with it "
        f"(default -c 50 --per-host 20; dead attempts in parallel with timeout 1s: about {n / 20:.0f}s)"
    )
    return [row]
