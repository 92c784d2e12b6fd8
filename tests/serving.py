"""Test helpers for `hookctl serve`: a real server process on a free port, and a client for it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.receivers import wait_for


class Serving:
    """A running `hookctl serve`: its process, URL, and everything it wrote to stderr."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.url = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def wait_listening(self, timeout: float = 60.0) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}:\n{self.stderr}")
            for line in self.lines:
                match = re.search(r"listening on (http://[^ ]+)", line)
                if match:
                    self.url = match[1].replace("0.0.0.0", "127.0.0.1")
                    return True
            return False

        wait_for(up, timeout, "serve to listen")

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, trust_env=False, timeout=30, **kwargs)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_line(self, pattern: str, timeout: float = 30.0) -> None:
        wait_for(lambda: any(re.search(pattern, line) for line in self.lines), timeout, pattern)


def start(*args: Any, env: dict[str, str] | None = None, **popen: Any) -> Serving:
    """Start `hookctl serve --port 0 ARGS` and wait until it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hookctl", "serve", "--port", "0", *map(str, args)],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )
    serving = Serving(proc)
    serving.wait_listening()
    return serving


def stop(serving: Serving) -> int:
    """SIGTERM, then the exit code (killed if it does not stop within 30 s)."""
    if serving.proc.poll() is None:
        serving.proc.send_signal(signal.SIGTERM)
        try:
            serving.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            serving.proc.kill()
            serving.proc.wait(timeout=10)
    for stream in (serving.proc.stdout, serving.proc.stderr):
        if stream is not None:
            stream.close()
    return serving.proc.returncode


@contextmanager
def serving(*args: Any, env: dict[str, str] | None = None, **popen: Any) -> Iterator[Serving]:
    """`hookctl serve` for the length of a with-block."""
    server = start(*args, env=env, **popen)
    try:
        yield server
    finally:
        stop(server)


def log_json(cli: Callable[..., Any], db: Path, *args: Any) -> list[dict[str, Any]]:
    """`hookctl log --json` rows."""
    from tests.conftest import ndjson

    result = cli("log", "--db", db, "--json", "--limit", "0", *args)
    assert result.exit_code in (0, 1), result.output
    return ndjson(result.stdout)
