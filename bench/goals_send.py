"""Goals 1 and 2 (throughput vs bare aiohttp) and the transport comparison."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import (
    BENCH,
    PYTHON,
    Env,
    Proc,
    Receiver,
    Row,
    Sizes,
    fresh,
    median,
    shell,
    write_events,
    write_rule,
)

CONCURRENCY = 50


def check(proc: Proc, rx: Receiver, n: int, what: str) -> dict[str, Any]:
    """The receiver's stats, after making sure it got exactly n requests."""
    stats = rx.stats()
    if proc.timed_out or stats["count"] != n:
        late = ", timed out" if proc.timed_out else ""
        raise RuntimeError(
            f"{what}: the receiver got {stats['count']} of {n} requests "
            f"(exit {proc.returncode}{late}): {proc.stderr[-600:]}"
        )
    return stats


def fire_cmd(
    env: Env, rule: Path, db: Path, events: Path, per_host: int = CONCURRENCY
) -> list[str]:
    """`hookctl fire` at concurrency 50 with the given per-host limit."""
    return [*env.hookctl, "fire", "-c", str(CONCURRENCY), "--per-host", str(per_host),
            "-r", str(rule), "--db", str(db), "--quiet", str(events)]  # fmt: skip


def drain_cmd(env: Env, db: Path) -> list[str]:
    """`hookctl retry-loop` at concurrency 50, per-host 50."""
    return [*env.hookctl, "retry-loop", "-c", str(CONCURRENCY), "--per-host", str(CONCURRENCY),
            "--db", str(db), "--quiet"]  # fmt: skip


def seed_due(env: Env, db: Path, rule: Path, events: Path) -> None:
    """Put one due delivery per event in a fresh database, through hookctl's Store API."""
    fresh(db)
    env.python(
        "seed.py",
        "due",
        "--db",
        str(db),
        "--rules",
        str(rule),
        "--events",
        str(events),
        timeout=300,
    )


@dataclass
class Measure:
    """One command timed several times: wall seconds and the receiver's first-to-last window."""

    label: str
    cmd: list[str]
    extra_env: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[], object] = lambda: None  # untimed, before each run
    seconds: list[float] = field(default_factory=list)
    windows: list[float] = field(default_factory=list)
    leads: list[float] = field(default_factory=list)  # start to first request
    tails: list[float] = field(default_factory=list)  # last request to exit


def interleave(env: Env, rx: Receiver, n: int, measures: list[Measure], sizes: Sizes) -> None:
    """Run the measures in rounds (A B C, A B C, ...) so machine noise hits them alike."""
    for round_number in range(sizes.repeats):
        for m in measures:
            if round_number and m.seconds[-1] >= sizes.slow:
                continue  # slow runs are stable enough once; the time goes to the others
            m.prepare()
            rx.reset()
            proc = env.run(m.cmd, timeout=600, extra_env=m.extra_env)
            stats = check(proc, rx, n, m.label)
            m.seconds.append(proc.seconds)
            m.windows.append(stats["last"] - stats["first"])
            m.leads.append(stats["first"] - proc.started_at)
            m.tails.append(proc.started_at + proc.seconds - stats["last"])


def throughput(
    env: Env, sizes: Sizes, goal: str, delay: float, n: int, target: float, tag: str
) -> list[Row]:
    """fire and retry-loop vs the bare aiohttp client, interleaved against one receiver."""
    events = write_events(env.path(f"{tag}.ndjson"), n)
    rule = write_rule(env.path(f"{tag}/rule.yaml"))
    fire_db, due_db = env.path(f"{tag}.db"), env.path(f"{tag}-due.db")
    with Receiver(delay=delay) as rx:
        port = {"BENCH_PORT": str(rx.port)}
        ref = Measure("reference", [PYTHON, str(BENCH / "reference.py"), "--url", rx.url,
                                    "--events", str(events), "-c", str(CONCURRENCY)])  # fmt: skip
        fire = Measure(
            "hookctl fire",
            fire_cmd(env, rule, fire_db, events),
            port,
            lambda: env.migrated(fire_db),
        )
        drain = Measure(
            "hookctl retry-loop",
            drain_cmd(env, due_db),
            port,
            lambda: seed_due(env, due_db, rule, events),
        )
        interleave(env, rx, n, [ref, fire, drain], sizes)
    rows = []
    ref_s, ref_w = median(ref.seconds), median(ref.windows)
    for what, m in (("fire", fire), ("retry-loop", drain)):
        s, w = median(m.seconds), median(m.windows)
        row = Row(goal, f"{what}, {n} deliveries (req/s)", n / ref_s, n / s, "req/s", target, True,
                  shell(m.cmd, env.work, {"BENCH_PORT": "…"}))  # fmt: skip
        row.notes.append(f"baseline: {shell(ref.cmd, env.work)}")
        row.notes.append(
            f"runs: baseline {len(ref.seconds)}, hookctl {len(m.seconds)} (median; wall clock, start-up included)"
        )
        row.notes.append(
            f"send window only (first to last request at the receiver): baseline {n / ref_w:.0f} req/s, "
            f"hookctl {n / w:.0f} req/s, ratio {ref_w / w:.2f}"
        )
        row.notes.append(
            f"start to first request: baseline {median(ref.leads) * 1000:.0f} ms, hookctl {median(m.leads) * 1000:.0f} ms; "
            f"last request to exit: baseline {median(ref.tails) * 1000:.0f} ms, hookctl {median(m.tails) * 1000:.0f} ms"
        )
        rows.append(row)
    return rows


def goal_latency(env: Env, sizes: Sizes) -> list[Row]:
    """Goal 1: receiver answering after 20 ms, 2,000 deliveries at concurrency 50."""
    return throughput(env, sizes, "1 latency-bound", 0.02, sizes.latency_events, 0.8, "latency")


def goal_transport(env: Env, sizes: Sizes) -> list[Row]:
    """hookctl's Sender alone (aiohttp, through the guard), against the bare aiohttp client."""
    rows = []
    script = str(BENCH / "transport.py")
    for label, delay, n in (
        ("20 ms", 0.02, sizes.transport_latency),
        ("0 ms", 0.0, sizes.transport_cpu),
    ):
        events = write_events(env.path(f"transport-{n}.ndjson"), n)
        with Receiver(delay=delay) as rx:
            ref = Measure("reference", [PYTHON, str(BENCH / "reference.py"), "--url", rx.url,
                                        "--events", str(events), "-c", str(CONCURRENCY)])  # fmt: skip
            pair = [
                Measure("aiohttp", [PYTHON, script, "throughput", "--url", rx.url, "-n", str(n)])
            ]
            inner: dict[str, list[float]] = {"aiohttp": []}
            for round_number in range(sizes.repeats):
                for m in [ref, *pair]:
                    rx.reset()
                    proc = env.run(m.cmd, timeout=300)
                    stats = check(proc, rx, n, f"transport {m.label}")
                    m.windows.append(stats["last"] - stats["first"])
                    if m is not ref:
                        inner[m.label].append(json.loads(proc.stdout)["seconds"])
                if round_number == 0 and inner["aiohttp"][0] > sizes.slow:
                    break
        for m in pair:
            # Both sides from the first request to the last answer: start-up excluded.
            row = Row("transport", f"Sender + {m.label}, {label} receiver (req/s)", n / median(ref.windows),
                      n / median(inner[m.label]), "req/s", 0.8 if delay else 0.3, True, shell(m.cmd, env.work))  # fmt: skip
            row.notes.append(
                "baseline: bare aiohttp send window; hookctl: a Sender.send loop in process, no store"
            )
            rows.append(row)
    with Receiver() as rx, Receiver(hang=True) as hang:
        proc = env.run(
            [PYTHON, script, "checks", "--base", rx.base, "--hang", hang.url], timeout=120
        )
        sizes.details["transport checks"] = {
            "results": [json.loads(line) for line in proc.stdout.splitlines() if line.strip()],
            "stderr": proc.stderr.strip() or "(empty)",
        }
    return rows
