"""Goal 3: start-up against a bare Typer twin, and what each command imports."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from harness import PYTHON, Env, Receiver, Row, Sizes, median, shell, write_events, write_rule

# What each command needs beyond the Typer twin's own imports (the Typer floor); anything else
# third-party, or heavy standard library, is flagged as not needed.
_CORE = {"hookctl", "yaml", "_yaml"}
_TEMPLATES = {"jinja2", "markupsafe"}
_HTTP = {"httpx", "httpcore", "h11", "anyio", "sniffio", "certifi", "idna", "httpx_aiohttp", "aiohttp",
         "aiohappyeyeballs", "aiosignal", "frozenlist", "multidict", "yarl", "propcache", "attr", "asyncio", "ssl",
         "_ssl", "socket", "selectors", "email", "http", "urllib", "concurrent", "logging", "contextvars"}  # fmt: skip
_STORE = {"sqlite3", "_sqlite3"}
_HEAVY_STDLIB = {"asyncio", "ssl", "email", "http", "sqlite3", "concurrent", "logging", "urllib", "socket",
                 "selectors", "uuid", "decimal", "zipfile", "tarfile", "xml", "html", "importlib", "ipaddress"}  # fmt: skip
NEEDED = {
    "--help": {"hookctl"},
    "validate": _CORE | _TEMPLATES,
    "retry-loop (nothing due)": _CORE | _STORE,
    "fire (one event)": _CORE | _TEMPLATES | _HTTP | _STORE,
    "log": _CORE | _STORE,
}


def import_costs(stderr: str) -> tuple[dict[str, float], dict[str, str]]:
    """Own import ms per top-level package from `-X importtime`, and which module pulled each in."""
    entries = []  # (depth, module, own microseconds), children listed before parents
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, _cumulative, name = line[len("import time:") :].split("|")
        depth = (len(name) - len(name.lstrip(" "))) // 2
        entries.append((depth, name.strip(), int(own)))
    costs: dict[str, float] = defaultdict(float)
    via: dict[str, str] = {}
    for i, (depth, module, own) in enumerate(entries):
        package = module.split(".")[0]
        costs[package] += own / 1000
        if package in via:
            continue
        for later_depth, parent, _ in entries[i + 1 :]:
            if later_depth < depth:
                if parent.split(".")[0] != package:
                    via[package] = parent
                    break
                depth = later_depth  # same package further up: keep climbing
    return dict(costs), via


def flagged(
    command: str, costs: dict[str, float], via: dict[str, str], floor: set[str]
) -> list[str]:
    """Packages the command imports beyond the Typer floor that it does not need, biggest first."""
    out = []
    for name, ms in sorted(costs.items(), key=lambda kv: -kv[1]):
        stdlib = name in sys.stdlib_module_names
        if (
            name in NEEDED[command]
            or name in floor
            or ms < 0.3
            or (stdlib and name not in _HEAVY_STDLIB)
        ):
            continue
        out.append(f"{name} {ms:.1f} ms" + (f" (via {via[name]})" if name in via else ""))
    return out


def goal_startup(env: Env, sizes: Sizes) -> list[Row]:
    """Goal 3: --help and an idle retry-loop vs a bare Typer twin; what each command imports."""
    twin = env.path("twin.py")
    env.python("typer_twin.py", str(twin))
    db = env.path("startup.db")
    pairs = {
        "--help": ([*env.hookctl, "--help"], [PYTHON, str(twin), "--help"]),
        "retry-loop, nothing due": ([*env.hookctl, "retry-loop", "--db", str(db)],
                                    [PYTHON, str(twin), "retry-loop", "--db", str(db)]),
    }  # fmt: skip
    env.run(pairs["retry-loop, nothing due"][0], timeout=60)  # creates and migrates the database
    times: dict[str, list[float]] = defaultdict(list)
    for i in range(sizes.rounds + 1):  # the first round warms the page cache and the .pyc files
        for what, (ours, base) in pairs.items():
            for tag, cmd in (("hookctl", ours), ("twin", base)):
                proc = env.run(cmd, timeout=60)
                if proc.returncode != 0:
                    raise RuntimeError(
                        f"{shell(cmd, env.work)} exited {proc.returncode}: {proc.stderr[-500:]}"
                    )
                if i:
                    times[f"{what} {tag}"].append(proc.seconds * 1000)
    rows = []
    for what, (ours, base) in pairs.items():
        row = Row("3 start-up", f"{what} (ms)", median(times[f"{what} twin"]), median(times[f"{what} hookctl"]),
                  "ms", 1.2, False, shell(ours, env.work))  # fmt: skip
        row.notes.append(
            f"baseline: {shell(base, env.work)} (generated Typer twin, same commands and options)"
        )
        rows.append(row)
    sizes.details["imports"] = imports(env, twin)
    return rows


def imports(env: Env, twin: Path) -> dict[str, Any]:
    """What each command imports (-X importtime) beyond the Typer twin, and what it need not import."""
    rule = write_rule(env.path("imports/rule.yaml"))
    one = write_events(env.path("one.ndjson"), 1)
    db = env.path("imports.db")
    ours = [
        PYTHON,
        "-X",
        "importtime",
        *(env.hookctl if len(env.hookctl) == 1 else ["-m", "hookctl"]),
    ]
    report: dict[str, Any] = {}
    env.run(
        [*env.hookctl, "retry-loop", "--db", str(db)], timeout=60
    )  # create and migrate it first
    with Receiver() as rx:
        commands = {
            "--help": ["--help"],
            "validate": ["validate", "-r", str(rule)],
            "retry-loop (nothing due)": ["retry-loop", "--db", str(db)],
            "fire (one event)": ["fire", "-r", str(rule), "--db", str(db), str(one)],
            "log": ["log", "--limit", "50", "--db", str(db)],
        }
        for what, args in commands.items():
            proc = env.run([*ours, *args], timeout=60, extra_env={"BENCH_PORT": str(rx.port)})
            costs, via = import_costs(proc.stderr)
            floor_proc = env.run([PYTHON, "-X", "importtime", str(twin), *args], timeout=60)
            floor, _ = import_costs(floor_proc.stderr)
            top = sorted(costs.items(), key=lambda kv: -kv[1])[:10]
            report[what] = {
                "import ms (hookctl / Typer twin)": f"{sum(costs.values()):.0f} / {sum(floor.values()):.0f}",
                "costliest": ", ".join(f"{name} {ms:.1f}" for name, ms in top),
                "not needed": flagged(what, costs, via, set(floor)),
                "httpx or jinja2 imported": sorted({"httpx", "jinja2"} & set(costs)),
            }
    return report
