"""Shared fixtures: an isolated home and database per test, the CLI, rule and event files."""

from __future__ import annotations

import json
import socket
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import hookctl
from hookctl.cli import app
from tests.pg import pg_server, pg_url  # noqa: F401  (PostgreSQL fixtures)

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """The `sqlite` marker; and with HOOKCTL_TEST_INSTALLED=1 (CI's second run), refuse to test the source tree.

    That run must exercise the installed wheel: if `hookctl` came from this checkout, every test
    would pass against files the wheel may lack, which is how a wheel without `hookctl/cli/` once
    shipped with a green suite.
    """
    import os

    config.addinivalue_line(
        "markers",
        "sqlite: sets up SQLite-specific state with raw SQL (damage, an old or foreign schema); "
        "everything else reads state through the store or the CLI",
    )
    if os.environ.get("HOOKCTL_TEST_INSTALLED") == "1":
        where = Path(hookctl.__file__).resolve()
        if where.is_relative_to(ROOT):
            raise pytest.UsageError(
                f"HOOKCTL_TEST_INSTALLED=1 but hookctl was imported from the checkout ({where}); "
                "run pytest from outside the checkout with --import-mode=append"
            )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI (CI=true) a skipped test is a failure.

    A test that needs a real server (PostgreSQL, a browser) may skip on a laptop that cannot
    start one; CI installs and starts them, so a skip there means the test did not run.
    """
    import os

    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if os.environ.get("CI") == "true" and skipped and exitstatus == 0:
        if reporter:
            reporter.ensure_newline()
            reporter.write_line(
                f"CI=true: {skipped} test(s) skipped; CI must run them all", red=True
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test touches the user's files: home, database and rules all live in tmp_path."""
    monkeypatch.setenv("HOOKCTL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOOKCTL_DB", str(tmp_path / "hookctl.db"))
    monkeypatch.delenv("HOOKCTL_RULES", raising=False)
    monkeypatch.delenv("HOOKCTL_LEASE", raising=False)
    # The network guard refuses loopback; the test servers live there, and nowhere else.
    monkeypatch.setenv("HOOKCTL_ALLOW_NET", "127.0.0.1")
    monkeypatch.setenv("NO_COLOR", "1")
    # The root options --quiet/--verbose set these in os.environ; set-then-delete makes
    # monkeypatch restore "unset" after each test, so one test's flags never leak into the next.
    for name in ("HOOKCTL_QUIET", "HOOKCTL_VERBOSE", "HOOKCTL_DEBUG"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return tmp_path


def _children() -> dict[int, tuple[str, bool]]:
    """This process's child processes: command line, and whether it has exited unreaped (Linux)."""
    import os

    found: dict[int, tuple[str, bool]] = {}
    me = os.getpid()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) == me:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found[int(entry.name)] = (command, fields[0] == "Z")
        except (OSError, ValueError):
            continue
    return found


@pytest.fixture(autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """A test that starts a process stops it and waits for it: one left running outlives the
    test, and a Popen never waited for fails the whole run with a ResourceWarning when it is
    garbage collected, long after, with no test to blame."""
    import os
    import signal
    import time

    before = set(_children())
    yield
    deadline = time.monotonic() + 10
    while (left := {p: c for p, c in _children().items() if p not in before}) and (
        time.monotonic() < deadline and not all(exited for _, exited in left.values())
    ):
        time.sleep(0.05)
    for pid, (_, exited) in left.items():
        if not exited:
            os.kill(pid, signal.SIGKILL)
    assert not left, f"the test left processes running or never waited for: {sorted(left.values())}"


@pytest.fixture(scope="session")
def httpserver_listen_address() -> tuple[str, int]:
    """pytest-httpserver on 127.0.0.1 (not `localhost`, which may also mean ::1)."""
    return ("127.0.0.1", 0)


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    """The SQLite file the CLI writes to in this test."""
    return tmp_path / "hookctl.db"


@pytest.fixture
def cli() -> Callable[..., Result]:
    """Run hookctl in-process: cli("fire", "-r", path, input=...)."""
    runner = CliRunner()

    def run(
        *args: Any, input: str | bytes | None = None, env: dict[str, str] | None = None
    ) -> Result:
        return runner.invoke(
            app, [str(a) for a in args], input=input, env=env, catch_exceptions=False
        )

    return run


@pytest.fixture
def rule_file(tmp_path: Path) -> Callable[..., Path]:
    """Write a YAML rule (dedented) and return its path."""
    counter = iter(range(1000))

    def write(text: str, name: str | None = None) -> Path:
        path = tmp_path / "rules" / (name or f"rule{next(counter)}.yaml")
        path.parent.mkdir(exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def event_file(tmp_path: Path) -> Callable[..., Path]:
    """Write events: a dict (one object), a list (array) or a str (raw text, e.g. NDJSON)."""
    counter = iter(range(1000))

    def write(content: Any, name: str | None = None) -> Path:
        path = tmp_path / "events" / (name or f"events{next(counter)}.json")
        path.parent.mkdir(exist_ok=True)
        text = content if isinstance(content, str | bytes) else json.dumps(content)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path

    return write


def deliveries(db: Path) -> list[dict[str, Any]]:
    """Every delivery in the database, oldest first, as the store's Delivery records (dicts)."""
    from dataclasses import asdict

    from hookctl.store import open_store

    with open_store(db, create=False) as store:
        return [asdict(d) for d in reversed(list(store.query(limit=None)))]


def attempts(db: Path) -> list[dict[str, Any]]:
    """Every attempt in the database in the order they started, as the store's Attempt records."""
    from dataclasses import asdict

    from hookctl.store import open_store

    found = []
    with open_store(db, create=False) as store:
        for d in store.query(limit=None):
            detail = store.get(d.id)
            assert detail is not None
            found += [asdict(a) for a in detail.attempt_log]
    return sorted(found, key=lambda a: (a["started_at"], a["delivery_id"], a["number"]))


def ndjson(text: str) -> list[dict[str, Any]]:
    """Parse NDJSON output."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def free_port() -> int:
    """A port nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def hanging_server() -> Iterator[str]:
    """A server that accepts connections (kernel backlog) and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    try:
        yield f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    finally:
        s.close()
