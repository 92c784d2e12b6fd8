"""The SQLite backend's own promises: the file, migrations, WAL, pages, indexes, processes.

What every backend must do is in tests/contract/ (run on SQLite too); these are SQLite's.
Tests marked `sqlite` set up state with raw SQL (a foreign schema, an old row); everything
is read back through the store.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hookctl.errors import StoreError
from hookctl.rules.policy import DEFAULT_POLICY
from hookctl.store import holder as holders
from hookctl.store import open_store
from hookctl.store.errors import DatabaseBusy, DatabaseDamaged, ForeignDatabase, NewerDatabase
from hookctl.store.ids import _encode
from hookctl.store.sqlite import migrations
from hookctl.store.sqlite.store import (
    AttemptResult,
    Claim,
    NewDelivery,
    SQLiteStore,
    new_delivery_id,
)

Store = SQLiteStore

NOW = 1_700_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with open_store(tmp_path / "store.db") as s:
        assert isinstance(s, SQLiteStore)
        yield s


def new(now: float = NOW, **fields: Any) -> NewDelivery:
    values: dict[str, Any] = {
        "id": new_delivery_id(now),
        "rule": "urgent",
        "event_id": "evt_1",
        "event_name": "ticket.created",
        "ticket": "42",
        "dedupe_key": None,
        "method": "POST",
        "url": "https://hooks.example.com/***",
        "request": {"method": "POST", "headers": [["X-Token", "{{secret}}"]], "body": "{}"},
        "policy": DEFAULT_POLICY.to_dict(),
        "timeout": 3.0,
        "accept": "2xx-3xx",
    }
    values.update(fields)
    return NewDelivery(**values)


def result(
    claim: Claim,
    *,
    status: str = "succeeded",
    code: int | None = 200,
    next_at: float | None = None,
    token: str | None = None,
    started: float = NOW,
) -> AttemptResult:
    return AttemptResult(
        delivery_id=claim.id,
        token=token or claim.token,
        started_at=started,
        duration_ms=12.5,
        status_code=code,
        error=None if code == 200 else f"HTTP {code}",
        response_headers={"content-type": "text/plain"},
        response_body="ok",
        status=status,  # type: ignore[arg-type]
        next_attempt_at=next_at,
    )


def enqueue_one(store: Store, now: float = NOW, **fields: Any) -> str:
    [(delivery_id, inserted)] = store.enqueue([new(now, **fields)], now=now)
    assert inserted
    return delivery_id


def setup_sql(path: Path, *statements: str) -> None:
    """Raw SQL to set up state only SQLite has (a foreign schema, an old row): never to read."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for sql in statements:
            conn.execute(sql)
    finally:
        conn.close()


# opening and migrations


def test_open_twice_migrates_once(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "hookctl.db"  # parent directories are created
    open_store(path).close()
    with open_store(path) as store:
        enqueue_one(store)
        settings = store.file_settings()
        assert len(list(store.query())) == 1
    assert settings["migrations"] == [m.__name__ for m in migrations.MIGRATIONS]
    assert settings["migrations"][:3] == ["m001_initial", "m002_request_body", "m005_replays"]
    assert settings["journal_mode"] == "wal"


def test_an_already_migrated_database_opens_without_sqlite_utils(tmp_path: Path) -> None:
    # sqlite-utils is slow to import; only a pending migration needs it (idle retry-loop start-up).
    db = tmp_path / "q.db"
    code = (
        "import sys\n"
        "from hookctl.store import open_store\n"
        "open_store(sys.argv[1]).close()\n"
        "print('sqlite_utils' in sys.modules)\n"
    )
    run = [sys.executable, "-c", code, str(db)]
    first = subprocess.run(run, capture_output=True, text=True, timeout=60, check=True)
    again = subprocess.run(run, capture_output=True, text=True, timeout=60, check=True)
    assert (first.stdout.strip(), again.stdout.strip()) == ("True", "False")


def test_database_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "hookctl.db"
    open_store(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are not the rows you are looking for\n" * 200)
    with pytest.raises(DatabaseDamaged, match="is not a SQLite database"):
        open_store(path)
    assert path.read_text() == "these are not the rows you are looking for\n" * 200


@pytest.mark.sqlite
def test_someone_elses_sqlite_database(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    setup_sql(path, "CREATE TABLE notes (body TEXT)", "INSERT INTO notes VALUES ('keep me')")
    before = path.read_bytes()
    with pytest.raises(ForeignDatabase, match="is a SQLite database but not a hookctl database"):
        open_store(path)
    assert path.read_bytes() == before  # left untouched


@pytest.mark.sqlite
def test_database_from_a_newer_hookctl(tmp_path: Path) -> None:
    path = tmp_path / "hookctl.db"
    open_store(path).close()
    setup_sql(path, "INSERT INTO _migrations VALUES ('m999_from_the_future', 0)")
    with pytest.raises(NewerDatabase, match="newer hookctl"):
        open_store(path)


def test_directory_is_not_a_database(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        open_store(tmp_path)


@pytest.mark.sqlite
def test_busy_database_is_a_store_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hookctl.store.sqlite.database.BUSY_TIMEOUT", 0.2)
    path = tmp_path / "hookctl.db"
    with open_store(path) as store:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process mid-write, for longer than we wait
        try:
            with pytest.raises(DatabaseBusy, match="is busy: another hookctl process held it"):
                store.enqueue([new()], now=NOW)
            assert list(store.query()) == []  # readers are never blocked (WAL)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        enqueue_one(store)


# delivery ids


def test_ids_sort_by_creation_time() -> None:
    ids = [new_delivery_id(NOW + k * 0.001) for k in range(100)]
    assert ids == sorted(ids)
    assert all(len(i) == 30 and i.startswith("msg_") for i in ids)
    assert len(set(new_delivery_id(NOW) for _ in range(1000))) == 1000


def test_enqueue_rejects_ids_minted_far_from_now(store: Store) -> None:
    # The id's clock bounds `since` scans of the id index (see history.filters).
    with pytest.raises(ValueError, match="too far from now"):
        store.enqueue([new(id=new_delivery_id(NOW - 86400))], now=NOW)


def test_claim_by_ids(store: Store) -> None:
    ids = [i for i, _ in store.enqueue([new() for _ in range(1200)], now=NOW)]
    wanted = ids[::2]  # more than one IN (...) page
    taken = store.claim(now=NOW, limit=1000, lease_seconds=60, token="a", ids=wanted)
    assert len(taken) == 600 and {c.id for c in taken} == set(wanted)
    assert store.claim(now=NOW, limit=10, lease_seconds=60, token="b", ids=wanted) == []  # leased
    few = store.claim(now=NOW, limit=3, lease_seconds=60, token="b", ids=ids[1:9])
    assert len(few) == 3 and {c.id for c in few} <= set(ids[1:9:2])
    assert store.claim(now=NOW, limit=3, lease_seconds=60, token="b", ids=["msg_nope"]) == []
    assert store.claim(now=NOW - 1, limit=3, lease_seconds=60, token="b", ids=ids[3:4]) == []


def test_purge_in_chunks(store: Store) -> None:
    store.enqueue([new() for _ in range(4500)], now=NOW)
    for _ in range(5):
        claims = store.claim(now=NOW, limit=1000, lease_seconds=60, token="t")
        store.complete([result(c) for c in claims], now=NOW)
    assert store.purge(older_than=NOW + 1) == 4500
    assert list(store.query(limit=None)) == []


# the log


def test_log_queries_use_indexes(store: Store) -> None:
    """No log, claim or lookup query may scan the deliveries table (1M rows in production)."""
    store.enqueue(
        [new(NOW + k / 1000, rule=f"r{k % 3}", ticket=str(k)) for k in range(50)], now=NOW
    )
    filters: list[dict[str, Any]] = [
        {"status": "failed"},
        {"status": "succeeded"},
        {"status": "pending"},
        {"rule": "r1"},
        {"ticket": "7"},
        {"since": NOW - 3600},
        {"status": "failed", "rule": "r1"},
        {"status": "succeeded", "rule": "r1"},
        {"status": "failed", "ticket": "7"},
        {"rule": "r1", "ticket": "7"},
        {"status": "failed", "since": NOW - 3600},
        {"rule": "r1", "since": NOW - 3600},
    ]
    with store.traced() as statements:
        for f in filters:
            list(store.query(**f))
        list(store.query())
        store.claim(now=NOW, limit=5, lease_seconds=60, token="t")
        store.claim(now=NOW, limit=5, lease_seconds=60, token="t", ids=["msg_a", "msg_b"])
        store.due_count(NOW)
        store.get("msg_0123")
        store.enqueue([new(dedupe_key="k")], now=NOW)
        store.requeue(status="failed", since=NOW - 60, now=NOW)
        store.purge(older_than=NOW)

    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) >= len(filters) + 6
    for sql in selects:
        plan = store.query_plan(sql)
        # `endpoints` has a row per receiving server (a handful): read whole, never a scan that grows.
        scans = [step for step in plan if step.startswith("SCAN") and step != "SCAN endpoints"]
        if "WHERE" in sql:
            assert not scans, f"{sql}\n{plan}"
        else:  # the unfiltered log: walk the id index backwards and stop at the limit
            assert scans == ["SCAN deliveries USING INDEX sqlite_autoindex_deliveries_1"], plan
        assert not any("TEMP B-TREE" in step for step in plan), f"{sql}\n{plan}"


# several processes


WORKER = """
import json, sys, time
from pathlib import Path
from hookctl.store import holder as holders
from hookctl.store import open_store
from hookctl.store.records import AttemptResult

path, token, now, go = sys.argv[1], sys.argv[2], float(sys.argv[3]), Path(sys.argv[4])
store = open_store(path)
(go.parent / token).touch()  # ready
while not go.exists():
    time.sleep(0.001)
taken = []
while True:
    claims = store.claim(now=now, limit=5, lease_seconds=600, token=token)
    if not claims:
        break
    time.sleep(0.002)  # "send" outside any transaction, as the real loop does
    results = [
        AttemptResult(c.id, token, now, 1.0, 200, None, None, token, "succeeded", None)
        for c in claims
    ]
    assert all(store.complete(results, now=now))
    taken.extend(c.id for c in claims)
store.close()
print(json.dumps(taken))
"""


def test_processes_never_claim_the_same_delivery(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    with open_store(path) as store:
        ids = [i for i, _ in store.enqueue([new() for _ in range(500)], now=NOW)]
    go = tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), f"worker{n}", str(NOW), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"worker{n}").exists() for n in range(4)):
        assert time.monotonic() < deadline, "workers did not start"
        for worker in workers:
            assert worker.poll() is None, worker.communicate()[1]
        time.sleep(0.01)
    go.touch()  # all four start claiming together
    taken: list[list[str]] = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        taken.append(json.loads(out))

    everything = [i for t in taken for i in t]
    assert sorted(everything) == sorted(ids)  # every delivery claimed exactly once
    assert sum(1 for t in taken if t) >= 2, "the workers did not overlap"
    with open_store(path) as store:
        rows = list(store.query(limit=None))
        assert {(d.attempts, d.status) for d in rows} == {(1, "succeeded")}
        assert store.stats(since=None).attempts == 500
        assert store.check_integrity() == []


@pytest.mark.sqlite
def test_a_new_file_gets_large_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    open_store(tmp_path / "new.db").close()
    old = tmp_path / "old.db"
    setup_sql(old, "PRAGMA page_size = 4096", "VACUUM")
    with open_store(old) as store:
        store.enqueue([new()], now=NOW)
        assert len(list(store.query(limit=None))) == 1
    for path, size in ((tmp_path / "new.db", 8192), (old, 4096)):
        with open_store(path) as store:
            settings = store.file_settings()
        assert (settings["page_size"], settings["journal_mode"]) == (size, "wal")


def test_ids_are_crockford_base32_of_time_and_randomness() -> None:
    def reference(value: int) -> str:  # the plain definition: 26 digits, most significant first
        digits = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
        return "".join(digits[(value >> (5 * k)) & 31] for k in reversed(range(26)))

    for value in (0, 1, 31, 32, 2**80 - 1, 2**128 - 1, 2**130 - 1, 0x1234_5678_9ABC_DEF0 << 60):
        assert _encode(value) == reference(value)
    for now in (0.0, 1.0, NOW, (2**48 - 1) / 1000):
        # The first 10 digits are the milliseconds (48 bits under 2 zero bits).
        assert new_delivery_id(now)[4:14] == reference(int(now * 1000) << 80)[:10]


@pytest.mark.sqlite
def test_a_body_is_stored_apart_and_comes_back_in_its_request(tmp_path: Path) -> None:
    db = tmp_path / "body.db"
    body = '{"text": "a \\"quoted\\" reply"}'
    with_body = new(request={"method": "POST", "url": "https://x.example/h", "body": body})
    no_body = new(request={"method": "GET", "url": "https://x.example/h", "body": None})
    no_key = new(request={"method": "GET", "url": "https://x.example/h"})
    with open_store(db) as store:
        store.enqueue([with_body, no_body, no_key], now=NOW)
        # A row written before migration m002 keeps its body inside the request's JSON.
        old = new(request={"method": "POST", "url": "https://x.example/h", "body": "old"})
        store.enqueue([old], now=NOW)
        setup_sql(
            db,
            "UPDATE deliveries SET request = '"
            + json.dumps(old.request).replace("'", "''")
            + f"', body = NULL WHERE id = '{old.id}'",
        )
        claims = {
            c.id: c.request for c in store.claim(now=NOW, limit=10, lease_seconds=60, token="t")
        }
        logged = store.get(with_body.id)
    for d in (with_body, no_body, no_key, old):
        assert claims[d.id] == d.request
    assert logged is not None and logged.request == with_body.request


# --- a damaged or unwritable database: one line, what to do, a documented exit code ---------
# Issue 12.3 and 11.7. The damage is real: a page of a database `fire` made is overwritten, a
# directory or the WAL files are made unwritable. As root (CI) permission bits stop nothing, so
# there the files are made immutable (chattr +i), which stops root too.

EXIT_DATABASE = 4


def _made_by_fire(tmp_path: Path, count: int = 200) -> tuple[Path, Path, Path]:
    """A database of `count` pending deliveries (their receiver refused), the rule, the events."""
    from tests.receivers import events_ndjson, rule_yaml

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = tmp_path / "data" / "hookctl.db"
    rules = tmp_path / "rule.yaml"
    rules.write_text(rule_yaml(f"http://127.0.0.1:{port}/hook", retry="{schedule: [1ms]}"))
    events = tmp_path / "events.ndjson"
    events.write_text(events_ndjson(count))
    fired = _run("fire", "-r", rules, events, "--db", db, "--quiet")
    assert fired.returncode == 0, fired.stderr
    return db, rules, events


def _run(*args: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hookctl", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@contextmanager
def _unwritable(*paths: Path) -> Iterator[None]:
    """Make `paths` unwritable for this process: mode bits, and the immutable flag as root."""
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in paths}
    try:
        for p in paths:
            p.chmod(0o555 if p.is_dir() else 0o444)
            if os.geteuid() == 0:
                subprocess.run(["chattr", "+i", str(p)], check=True, capture_output=True)
            assert not os.access(p, os.W_OK), f"{p} is still writable"
        yield
    finally:
        for p, mode in modes.items():
            if os.geteuid() == 0:
                subprocess.run(["chattr", "-i", str(p)], check=False, capture_output=True)
            p.chmod(mode)


@pytest.mark.sqlite
@pytest.mark.parametrize("command", ["log", "fire", "stats", "retry-loop"])
def test_an_overwritten_page_is_one_line_saying_what_to_do(tmp_path: Path, command: str) -> None:
    db, rules, events = _made_by_fire(tmp_path)
    # Setup only: where the deliveries table starts, then that page overwritten.
    conn = sqlite3.connect(db)
    ((root, page_size),) = conn.execute(
        "SELECT rootpage, (SELECT page_size FROM pragma_page_size) FROM sqlite_master "
        "WHERE name = 'deliveries'"
    ).fetchall()
    conn.close()
    with db.open("r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(os.urandom(page_size))
    args = {
        "log": ["log", "--limit", "0"],
        "fire": ["fire", "-r", rules, events],
        "stats": ["stats"],
        "retry-loop": ["retry-loop"],
    }[command]
    result = _run(*args, "--db", db)
    assert result.returncode == EXIT_DATABASE, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: database {db} is damaged")
    assert f'sqlite3 {db} ".recover"' in line and "restore a backup" in line
    assert result.stdout == ""


@pytest.mark.sqlite
def test_a_database_in_a_read_only_directory_says_the_directory_must_be_writable(
    tmp_path: Path,
) -> None:
    db, rules, events = _made_by_fire(tmp_path, count=3)
    with _unwritable(db.parent):
        for args in (["log"], ["stats"], ["retry-loop"], ["fire", "-r", rules, events]):
            result = _run(*args, "--db", db)
            assert result.returncode == EXIT_DATABASE, (args, result.stderr)
            (line,) = result.stderr.splitlines()
            assert line.startswith(f"Error: database {db} cannot be opened: its directory"), line
            assert f"{db.parent} must be writable" in line and "hookctl.db-wal" in line
    assert _run("log", "--db", db).returncode == 0  # writable again: nothing was lost
    assert len(_run("log", "--db", db, "--json").stdout.splitlines()) == 3


@pytest.mark.sqlite
def test_wal_files_left_read_only_are_named_with_the_chmod_that_fixes_them(
    tmp_path: Path,
) -> None:
    db, rules, events = _made_by_fire(tmp_path, count=3)
    wal, shm = Path(f"{db}-wal"), Path(f"{db}-shm")
    # What a read-only episode leaves: SQLite gave them the read-only database's mode 0444.
    wal.touch()
    shm.touch()
    with _unwritable(wal, shm):
        assert _run("log", "--db", db).returncode == 0  # readers still read
        for args in (["retry-loop"], ["fire", "-r", rules, events, "--force"]):
            result = _run(*args, "--db", db)
            assert result.returncode == EXIT_DATABASE, (args, result.stderr)
            (line,) = result.stderr.splitlines()
            assert line.startswith(f"Error: database {db} cannot be written:"), line
            assert "hookctl.db-wal has mode 0444" in line and "hookctl.db-shm has mode 0444" in line
            assert f"chmod u+w {wal} {shm}" in line
    assert _run("retry-loop", "--db", db).returncode in (0, 1)  # writable again


# --- lease holders: who is provably gone ------------------------------------------------------


@pytest.mark.skipif(not holders.this_process().started, reason="needs /proc (Linux)")
def test_a_holder_is_gone_only_when_its_process_provably_is() -> None:
    here = holders.this_process()
    assert not holders.is_gone(here, here)
    # A pid that was reused: same pid, another start time.
    assert holders.is_gone(holders.Holder(here.machine, here.pid, "1"), here)
    # Another machine: nothing here can tell, so never gone.
    assert not holders.is_gone(holders.Holder("elsewhere/boot/pid:[1]", 1, "1"), here)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        started = holders.start_time(child.pid)
        assert started is not None
        alive = holders.Holder(here.machine, child.pid, started)
        assert not holders.is_gone(alive, here)
        child.kill()
        deadline = time.monotonic() + 10
        # Killed but not yet reaped (a zombie) already counts as gone...
        while not holders.is_gone(alive, here):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        child.kill()
        child.wait()
    assert holders.is_gone(alive, here)  # ...and so does a reaped one
    assert len(here.key) == 16 and here.key != alive.key


# --- open_store: the one place a store is made ------------------------------------------------


def test_a_sqlite_url_and_a_path_open_the_same_database(tmp_path: Path) -> None:
    db = tmp_path / "url.db"
    with open_store(f"sqlite://{db}") as store:  # sqlite:///abs/path
        enqueue_one(store)
    with open_store(db, create=False) as store:
        assert len(list(store.query())) == 1
    assert _run("log", "--db", f"sqlite://{db}", "--json").stdout.count("\n") == 1


# postgresql:// opens PostgresStore now (tests/test_postgres_*.py, tests/contract/).
@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://root@localhost/hookctl", "unknown database URL scheme 'mysql'"),
        ("redis://localhost/0", "unknown database URL scheme 'redis'"),
    ],
)
def test_a_backend_this_version_lacks_is_one_line_and_exit_2(
    tmp_path: Path, url: str, says: str
) -> None:
    for args in (["log"], ["stats"], ["retry-loop"], ["db", "path"]):
        result = _run(*args, "--db", url)
        assert result.returncode == 2, (args, result.stderr)
        (line,) = result.stderr.splitlines()
        assert line.startswith("Error: ") and says in line
    with pytest.raises(StoreError, match=says):
        open_store(url)


def test_a_reading_command_never_creates_the_database(tmp_path: Path) -> None:
    from hookctl.store.errors import DatabaseMissing

    with pytest.raises(DatabaseMissing, match="no database at"):
        open_store(tmp_path / "nowhere.db", create=False)
    assert not (tmp_path / "nowhere.db").exists()


def test_split_writes_skip_only_their_own_fsync(tmp_path):
    """Inside split_commit a write commits with synchronous=NORMAL (the caller fsyncs the WAL
    after); every other call, and every other process, still commits with FULL."""
    store = open_store(tmp_path / "sync.db")
    seen: list[int] = []

    def enqueue_and_look(deliveries):  # type: ignore[no-untyped-def]
        seen.append(store._conn.execute("PRAGMA synchronous").fetchone()[0])
        return store.enqueue(deliveries, now=NOW)

    try:
        result, sync = store.split_commit(enqueue_and_look, [new(NOW)])
        assert seen == [1] and result[0][1] is True  # NORMAL while split
        assert sync is not None
        sync()
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again
        assert store.split_commit(store.due_count, NOW + 1)[1] is None  # a read: no fsync
    finally:
        store.close()


def test_the_store_thread_answers_a_write_only_after_an_fsync_that_followed_it(tmp_path):
    """StoreThread.call returns a write's result once an fsync of the WAL that started after
    the write has ended; the loop runs other calls meanwhile; a failed fsync is the caller's
    StoreError and the next write goes through."""
    import asyncio
    import threading

    from hookctl.delivery.storethread import StoreThread

    order: list[str] = []
    release = threading.Event()
    fail = {"next": False}
    with open_store(tmp_path / "sync.db") as store:
        real_sync = store._sync_wal

        def watched_sync() -> None:
            order.append("fsync starts")
            release.wait(10)  # held until the test has seen a read go through meanwhile
            if fail["next"]:
                fail["next"] = False
                raise StoreError("simulated: the disk refused the fsync")
            real_sync()
            order.append("fsync ends")

        store._sync_wal = watched_sync

        async def scenario() -> None:
            with StoreThread(store) as db:
                d = new(time.time())
                write = asyncio.ensure_future(db.call(store.enqueue, [d], now=time.time()))
                while "fsync starts" not in order:
                    await asyncio.sleep(0.001)
                # The write is committed and its fsync running: other calls are not held up.
                assert await db.call(store.statuses, [d.id]) == {d.id: "pending"}
                order.append("read answered")
                assert not write.done()
                release.set()
                assert (await write)[0] == (d.id, True)
                order.append("write answered")
                release.clear()
                fail["next"] = True
                failing = asyncio.ensure_future(
                    db.call(store.enqueue, [new(time.time(), event_id="evt_2")], now=time.time())
                )
                while order.count("fsync starts") < 2:
                    await asyncio.sleep(0.001)
                release.set()
                with pytest.raises(StoreError, match="refused the fsync"):
                    await failing
                later = new(time.time(), event_id="evt_3")
                assert (await db.call(store.enqueue, [later], now=time.time()))[0][1] is True

        asyncio.run(scenario())
    assert order[:4] == ["fsync starts", "read answered", "fsync ends", "write answered"]
