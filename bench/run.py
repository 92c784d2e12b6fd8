"""Run hookctl's benchmark suite: each goal of issue 5 as a ratio against a baseline of the same run.

    python bench/run.py [--quick] [--only GOAL ...] [--src DIR] [--json PATH] [--keep]

Goals: latency (1), cpu (2), startup (3), memory (4), log (5), dead (6), transport.
Only loopback traffic; every server started here stops by itself. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from goals_profile import goal_cpu
from goals_scale import goal_dead_host, goal_log, goal_memory
from goals_send import goal_latency, goal_transport
from goals_startup import goal_startup
from harness import QUICK, Env, Row, Sizes

GOALS: dict[str, tuple[str, Callable[[Env, Sizes], list[Row]]]] = {
    "latency": ("1", goal_latency),
    "cpu": ("2", goal_cpu),
    "startup": ("3", goal_startup),
    "memory": ("4", goal_memory),
    "log": ("5", goal_log),
    "dead": ("6", goal_dead_host),
    "transport": ("t", goal_transport),
}


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "share":
        return f"{value:.1%}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def table(rows: list[Row]) -> str:
    """The figures as a Markdown table."""
    out = [
        "| goal | measure | baseline | hookctl | ratio | target | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = (
            "-"
            if r.ratio is None
            else (_fmt(r.ratio, "share") if r.baseline is None else f"{r.ratio:.2f}×")
        )
        sign = "≥" if r.higher_is_better else "≤"
        target = f"{sign} {r.target:.0%}" if r.baseline is None else f"{sign} {r.target}×"
        if r.value is None:
            target = "-"
        result = {True: "pass", False: "FAIL", None: "n/a"}[r.passed]
        out.append(
            f"| {r.goal} | {r.what} | {_fmt(r.baseline, r.unit)} | {_fmt(r.value, r.unit)} | {ratio} | {target} | {result} |"
        )
    return "\n".join(out)


def details(rows: list[Row], extra: dict[str, Any]) -> str:
    """Commands, notes, and the per-goal details (profiles, imports, plans, transport checks)."""
    out = ["", "## Commands and notes"]
    for r in rows:
        out.append(f"- {r.goal} / {r.what}: `{r.command}`")
        out += [f"    - {note}" for note in r.notes]
    for name, value in extra.items():
        out += ["", f"## {name}", "```", json.dumps(value, indent=2, ensure_ascii=False), "```"]
    return "\n".join(out)


def main() -> int:
    """Parse options, run the goals, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs, about 2 minutes")
    parser.add_argument("--only", action="append", choices=[*GOALS, *(g for g, _ in GOALS.values())],
                        help="run only this goal (repeatable; a name or its number)")  # fmt: skip
    parser.add_argument(
        "--src",
        type=Path,
        help="benchmark the hookctl package found in DIR (e.g. a prototype copy)",
    )
    parser.add_argument("--json", type=Path, help="also write the rows and details as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args()
    chosen = [
        name
        for name, (number, _) in GOALS.items()
        if not args.only or name in args.only or number in args.only
    ]
    sizes = Sizes(**QUICK) if args.quick else Sizes()
    work = Path(tempfile.mkdtemp(prefix="hookctl-bench-"))
    env = Env(work, args.src.resolve() if args.src else None)
    rows: list[Row] = []
    started = time.perf_counter()
    load = os.getloadavg()
    try:
        for name in chosen:
            number, goal = GOALS[name]
            t0 = time.perf_counter()
            sys.stderr.write(f"goal {number} ({name}) ...")
            sys.stderr.flush()
            try:
                rows += goal(env, sizes)
            except Exception as exc:
                failed = Row(number, f"{name}: could not be measured", None, None, "", 0, True)
                failed.notes.append(str(exc))
                rows.append(failed)
                sizes.details[f"{name} error"] = traceback.format_exc().splitlines()[-12:]
            sys.stderr.write(f" {time.perf_counter() - t0:.0f}s\n")
    finally:
        if args.keep:
            sys.stderr.write(f"working directory kept: {work}\n")
        else:
            shutil.rmtree(work, ignore_errors=True)
    src = f" (hookctl from {env.src})" if env.src else ""
    print(
        f"# hookctl benchmarks{' --quick' if args.quick else ''}{src}: {time.perf_counter() - started:.0f}s\n"
    )
    # Other processes on the machine skew absolute numbers; the interleaved ratios much less.
    print(
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f} before and {os.getloadavg()[0]:.2f} after\n"
    )
    print(table(rows))
    print(details(rows, sizes.details))
    if args.json:
        data = [{**vars(r), "ratio": r.ratio, "passed": r.passed} for r in rows]
        args.json.write_text(
            json.dumps({"rows": data, "details": sizes.details}, indent=2, default=str)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
