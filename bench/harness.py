"""Shared machinery: run a measured process, start receivers, write inputs, hold results."""

from __future__ import annotations

import compileall
import http.client
import importlib.util
import json
import os
import re
import select
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
# The benchmark rule: a templated JSON body of about 1 KB, the port from the environment (so the
# secret placeholder path is exercised, as in real rules). reference.body_of mirrors it.
RULE = """\
name: {name}
on: [ticket.created]
webhook:
  method: POST
  url: "http://127.0.0.1:{{{{ env.{port_var} }}}}/hook"
  headers: {{X-Source: hookctl-bench}}
  body:
    event: "{{{{ event }}}}"
    id: "{{{{ id }}}}"
    ticket: "{{{{ ticket.id }}}}"
    subject: "{{{{ ticket.subject }}}}"
    urgency: "{{{{ ticket.urgency }}}}"
    tags: "{{{{ ticket.tags }}}}"
    requester: "{{{{ ticket.requester.email }}}}"
    text: "Ticket {{{{ ticket.id }}}} ({{{{ ticket.urgency }}}}): {{{{ ticket.subject }}}}"
    last_reply: "{{{{ ticket.actions[-1].body }}}}"
timeout: {timeout}
retry: {retry}
"""


@dataclass
class Proc:
    """A finished (or killed) measured process."""

    cmd: list[str]
    seconds: float
    returncode: int
    max_rss_kb: int
    timed_out: bool
    stdout: str
    stderr: str
    started_at: float  # time.time() just before the spawn, to compare with receiver stamps


@dataclass
class Sizes:
    """How much work each goal does; --quick shrinks it where the goals allow."""

    latency_events: int = 2000
    cpu_events: int = 20_000
    profile_events: int = 5000
    memory_small: int = 20_000
    memory_big: int = 200_000
    memory_cap: float = 180.0  # seconds; a bigger run is killed and reported with its peak so far
    log_rows: int = 1_000_000
    dead_events: int = 300
    transport_latency: int = 2000
    transport_cpu: int = 10_000
    repeats: int = 3  # runs per throughput measure (the median counts)
    rounds: int = 11  # runs per start-up or log timing (the median counts)
    slow: float = 8.0  # a throughput run longer than this is not repeated
    details: dict[str, Any] = field(default_factory=dict)


QUICK = {
    "cpu_events": 5000,
    "profile_events": 2000,
    "memory_small": 2000,
    "memory_big": 20_000,
    "memory_cap": 90.0,
    "log_rows": 200_000,
    "dead_events": 200,
    "transport_latency": 1000,
    "transport_cpu": 3000,
    "repeats": 1,
    "rounds": 5,
}


@dataclass
class Row:
    """One line of the figures table."""

    goal: str
    what: str
    baseline: float | None
    value: float | None
    unit: str
    target: float
    higher_is_better: bool
    command: str = ""
    notes: list[str] = field(default_factory=list)
    judged: bool = True  # False: shown for information, never pass or fail

    @property
    def ratio(self) -> float | None:
        """value / baseline; a row without a baseline compares its value itself to the target."""
        if self.value is None:
            return None
        if self.baseline is None:
            return self.value
        return self.value / self.baseline if self.baseline else None

    @property
    def passed(self) -> bool | None:
        """Whether the ratio meets the target (None when not measured or not judged)."""
        ratio = self.ratio
        if ratio is None or not self.judged:
            return None
        return ratio >= self.target if self.higher_is_better else ratio <= self.target


class Env:
    """Where hookctl comes from, and the working directory of one run."""

    def __init__(self, work: Path, src: Path | None) -> None:
        self.work = work
        self.src = src
        self.environ = dict(os.environ)
        self.environ.pop("HOOKCTL_RULES", None)
        self.environ.pop("HOOKCTL_DB", None)
        self.environ["HOOKCTL_HOME"] = str(work / "home")
        self.environ["NO_COLOR"] = "1"
        # Every receiver is on loopback, which hookctl's network guard refuses unless allowed.
        self.environ["HOOKCTL_ALLOW_NET"] = "127.0.0.1"
        if src is not None:
            # PYTHONPATH comes before site-packages and the editable-install finder.
            self.environ["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(src), os.environ.get("PYTHONPATH", "")) if p
            )
        # An installed tool runs from bytecode (pip compiles it; an editable install writes it on
        # first run). Compile it here, or PYTHONDONTWRITEBYTECODE would have every measured run
        # compile hookctl from source (about 40 ms).
        package = src / "hookctl" if src is not None else _installed_package()
        compileall.compile_dir(str(package), quiet=1)
        script = Path(PYTHON).parent / "hookctl"
        self.hookctl = [str(script)] if script.exists() else [PYTHON, "-m", "hookctl"]

    def migrated(self, db: Path) -> Path:
        """An empty database at `db` that hookctl has already created and migrated, as users have."""
        template = self.path("migrated.db")
        if not template.exists():
            proc = self.run(
                [*self.hookctl, "retry-loop", "--quiet", "--db", str(template)], timeout=60
            )
            if proc.returncode != 0:
                raise RuntimeError(f"could not create a database: {proc.stderr[-500:]}")
        shutil.copyfile(template, fresh(db))
        return db

    def path(self, name: str) -> Path:
        """A file in the working directory."""
        return self.work / name

    def run(
        self,
        cmd: Sequence[str],
        *,
        timeout: float,
        extra_env: dict[str, str] | None = None,
        stdin: Path | None = None,
    ) -> Proc:
        """Run cmd to completion (killed after timeout), measuring wall time and peak RSS."""
        env = {**self.environ, **(extra_env or {})}
        out, err = self.path(".stdout"), self.path(".stderr")
        with (
            open(out, "w+b") as fout,
            open(err, "w+b") as ferr,
            open(stdin or os.devnull, "rb") as fin,
        ):
            started_at = time.time()
            t0 = time.perf_counter()
            # cwd: `python -m hookctl` must not pick up a hookctl/ folder from the caller's cwd.
            proc = subprocess.Popen(
                list(cmd), stdin=fin, stdout=fout, stderr=ferr, env=env, cwd=self.work
            )
            timed_out = not _wait_ready(proc.pid, timeout)
            if timed_out:
                proc.kill()  # not yet reaped, so the pid is still ours
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
            fout.seek(0)
            ferr.seek(0)
            stdout = fout.read().decode("utf-8", "replace")
            stderr = ferr.read().decode("utf-8", "replace")
        # ru_maxrss is in KiB on Linux.
        return Proc(
            list(cmd),
            seconds,
            proc.returncode,
            usage.ru_maxrss,
            timed_out,
            stdout,
            stderr,
            started_at,
        )

    def python(self, script: str, *args: str, timeout: float = 120) -> Proc:
        """Run one of the bench scripts with hookctl importable; raise when it fails."""
        proc = self.run([PYTHON, str(BENCH / script), *args], timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{script} {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
        return proc


def _installed_package() -> Path:
    spec = importlib.util.find_spec("hookctl")
    if spec is None or spec.origin is None:
        raise RuntimeError("hookctl is not installed: pip install -e '.[test]'")
    return Path(spec.origin).parent


def _wait_ready(pid: int, timeout: float) -> bool:
    """Wait until the child exits (without reaping it); False on timeout."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd: poll instead
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
            time.sleep(0.002)
        return False
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


class Receiver:
    """A bench/receiver.py process; `with Receiver(delay=0.02) as r: r.url`."""

    def __init__(self, *, delay: float = 0.0, hang: bool = False, max_seconds: float = 900) -> None:
        args = [
            PYTHON,
            str(BENCH / "receiver.py"),
            "--delay",
            str(delay),
            "--max-seconds",
            str(max_seconds),
        ]
        if hang:
            args.append("--hang")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip():
            self.close()
            raise RuntimeError("the receiver did not start")
        self.port = int(line)
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/hook"

    def _call(self, method: str, path: str) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path)
            return json.loads(conn.getresponse().read() or b"null")
        finally:
            conn.close()

    def stats(self) -> dict[str, Any]:
        """Requests counted since the last reset, with first/last arrival times."""
        return self._call("GET", "/_bench/stats")

    def ids(self, *, every: bool = False) -> dict[str, Any]:
        """Distinct webhook-ids received since the last reset and the re-sends among them;
        `every`: also each id's arrivals."""
        return self._call("GET", "/_bench/ids/all" if every else "/_bench/ids")

    def reset(self) -> None:
        """Zero the counters."""
        self._call("POST", "/_bench/reset")

    def set_status(self, status: int) -> None:
        """Answer with this status from now on."""
        self._call("POST", f"/_bench/status/{status}")

    def close(self) -> None:
        """Close its stdin (it exits on EOF); kill it if it lingers."""
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_events(path: Path, count: int, *, start: int = 0) -> Path:
    """NDJSON ticket.created events with unique ids; each carries a ~600-byte reply."""
    reply = "The printer on the third floor is smoking again; " * 12
    urgencies = ("Low", "High", "Urgent")
    with open(path, "w", encoding="utf-8") as f:
        for i in range(start, start + count):
            event = {
                "event": "ticket.created",
                "id": f"evt_{i}",
                "ticket": {
                    "id": 100000 + i,
                    "subject": f"Printer {i} on fire <again> & smoking",
                    "urgency": urgencies[i % 3],
                    "status": "new",
                    "tags": ["hardware", "vip"],
                    "requester": {"name": "Ana Souza", "email": f"ana{i}@example.com"},
                    "actions": [
                        {"id": 1, "type": "reply", "author": {"type": "end_user"}, "body": reply}
                    ],
                },
            }
            f.write(json.dumps(event) + "\n")
    return path


def write_rule(
    path: Path,
    *,
    name: str = "bench",
    port_var: str = "BENCH_PORT",
    timeout: str = "10s",
    retry: str = "none",
) -> Path:
    """A rule file in the benchmark's shape (see RULE)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        RULE.format(name=name, port_var=port_var, timeout=timeout, retry=retry), encoding="utf-8"
    )
    return path


def fresh(path: Path) -> Path:
    """Remove a database (and its WAL files) so a run starts empty."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def median(values: Sequence[float]) -> float:
    """The median, or NaN for nothing."""
    return statistics.median(values) if values else float("nan")


def shell(cmd: Sequence[str], work: Path, env: dict[str, str] | None = None) -> str:
    """A readable form of a command for the report: $WORK/ and bench/ instead of long paths."""

    def short(word: str) -> str:
        for root, name in ((work, "$WORK"), (BENCH, "bench")):
            if word.startswith(f"{root}/"):
                return f"{name}/{word[len(str(root)) + 1 :]}"
        return word

    words = [
        Path(cmd[0]).name,
        *(re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:$PORT", short(str(w))) for w in cmd[1:]),
    ]
    prefix = " ".join(f"{k}={v}" for k, v in (env or {}).items())
    return (prefix + " " if prefix else "") + " ".join(words)
