"""A throwaway PostgreSQL cluster for the tests: initdb in a temp dir, a Unix socket, no TCP.

`Cluster.start()` runs Debian's initdb/pg_ctl (PATH or /usr/lib/postgresql/*/bin). They refuse
to run as root, so as root they run as an unprivileged user (HOOKCTL_PG_OS_USER, else
`hookctl-ci` or `postgres`, whichever exists; `.ci/run` creates `hookctl-ci`) via runuser, in a
temp dir that user owns. Trust authentication is safe here: the socket lives in a 0700
directory only that user (and root) can enter, and nothing listens on TCP.

`HOOKCTL_TEST_PG_URL` points the tests at a server you run yourself instead (each test still
gets a fresh database in it).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CANDIDATE_USERS = ("hookctl-ci", "postgres")


class Unavailable(Exception):
    """No PostgreSQL server could be started here (the reason is the message)."""


def _bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    matches = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not matches:
        raise Unavailable(f"{name} not found (apt-get install -y postgresql)")
    return matches[-1]


def _os_user() -> str | None:
    """Who runs the server: None for the current user, else an unprivileged account."""
    if os.geteuid() != 0:
        return None
    wanted = os.environ.get("HOOKCTL_PG_OS_USER")
    for name in (wanted,) if wanted else CANDIDATE_USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise Unavailable(
        f"running as root and none of {', '.join(CANDIDATE_USERS)} exists "
        "(useradd --system hookctl-ci)"
    )


class Cluster:
    """One PostgreSQL server in a temp dir, listening only on a Unix socket there."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable  # fsync and synchronous_commit on, as a production server runs
        self.user = _os_user()
        self.dir = Path(tempfile.mkdtemp(prefix="hookctl-pg-"))
        self.data = self.dir / "data"
        self.socket_dir = self.dir / "sock"
        self.port = 5432
        self.role = self.user or pwd.getpwuid(os.getuid()).pw_name
        self._started = False

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        return subprocess.run(
            [*prefix, *argv], capture_output=True, text=True, timeout=timeout, check=False
        )

    def start(self) -> None:
        """initdb and start; Unavailable with the tool's own words when that fails."""
        initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
        self.socket_dir.mkdir()
        if self.user:
            entry = pwd.getpwnam(self.user)
            for path in (self.dir, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        os.chmod(self.dir, 0o700)
        done = self._run(
            initdb, "-D", str(self.data), "--auth=trust", "--encoding=UTF8", "--no-sync",
            "-U", self.role,
        )  # fmt: skip
        if done.returncode:
            raise Unavailable(f"initdb failed: {(done.stderr or done.stdout).strip()[-500:]}")
        self._pg_ctl_start(pg_ctl)
        self._started = True

    def _pg_ctl_start(self, pg_ctl: str) -> None:
        options = (
            f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}' "
            f"-c port={self.port} -c max_connections=200"
        )
        if not self.durable:
            # A test cluster needs speed, not durability across a power cut.
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        done = self._run(
            pg_ctl, "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w", "-t", "60",
            "-o", options, "start",
        )  # fmt: skip
        if done.returncode:
            log = (self.dir / "server.log").read_text(errors="replace")[-800:]
            raise Unavailable(f"pg_ctl start failed: {done.stderr.strip()} {log}")

    def restart(self, *, down_for: float = 0.0) -> None:
        """Stop the server (fast: connections are cut) and start it again, as a fault."""
        pg_ctl = _bin("pg_ctl")
        self._run(pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")
        time.sleep(down_for)
        self._pg_ctl_start(pg_ctl)

    def stop(self) -> None:
        """Stop the server and delete its files."""
        if self._started:
            self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self._started = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, dbname: str = "postgres") -> str:
        """A postgresql:// URL to database `dbname` over the socket (no password: trust)."""
        return f"postgresql://{self.role}@/{dbname}?host={self.socket_dir}&port={self.port}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def external_database(base_url: str, name: str) -> str:
    """A fresh database named `name` on a server the developer runs (HOOKCTL_TEST_PG_URL)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(base_url)
    params["dbname"] = name
    return make_conninfo(**params)


# --- pytest fixtures (conftest.py imports them) -----------------------------------------------

_names = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str | Cluster]:
    """A PostgreSQL server for the session: HOOKCTL_TEST_PG_URL, else a throwaway cluster.

    Skips (which CI=true turns into a failure) when psycopg is missing or no server starts.
    """
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[test,postgres]')")
    external = os.environ.get("HOOKCTL_TEST_PG_URL")
    if external:
        yield external
        return
    cluster = Cluster()
    try:
        cluster.start()
    except (Unavailable, OSError, subprocess.SubprocessError) as exc:
        cluster.stop()
        pytest.skip(f"no PostgreSQL server for the tests: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_server: str | Cluster) -> str:
    """A URL to a new, empty database on the session's server, one per test."""
    name = f"hookctl_test_{os.getpid()}_{next(_names)}"
    if isinstance(pg_server, Cluster):
        return pg_server.create_database(name)
    return external_database(pg_server, name)
