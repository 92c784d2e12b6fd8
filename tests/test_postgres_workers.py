"""Many `retry-loop` processes on one PostgreSQL queue: scale and faults, with real processes.

The queue is seeded through the store's public `enqueue` (requests rendered as `fire` renders
them); everything after is real: `python -m hookctl retry-loop --db postgresql://...` processes,
a loopback receiver counting every request by `webhook-id`, and state read back through the
store's public methods. Leases are 1 s (HOOKCTL_LEASE) so recovery does not wait minutes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hookctl.events.intake import dedupe_key
from hookctl.render.webhook import render_request
from hookctl.rules.load import load_rules
from hookctl.store import open_store
from hookctl.store.ids import new_delivery_id
from hookctl.store.log_records import Stats
from hookctl.store.records import NewDelivery
from tests.pg import Cluster
from tests.receivers import event, hookctl, rule_yaml, wait_for

LEASE = {"HOOKCTL_LEASE": "1s"}

# An aiohttp receiver in its own process (10,000 requests outrun a threaded test server on two
# cores): counts requests by webhook-id; /_ids, /_status/N and /_delay/S drive it.
RECEIVER = """
import asyncio, collections, json, sys
from aiohttp import web
seen, state = collections.Counter(), {"status": 200, "delay": 0.0}
async def hook(request):
    await request.read()
    seen[request.headers.get("webhook-id")] += 1
    status, delay = state["status"], state["delay"]
    if delay:
        await asyncio.sleep(delay)
    return web.Response(status=status, text="ok")
async def ids(request):
    return web.json_response(seen)
async def status(request):
    state["status"] = int(request.match_info["n"]); return web.Response(text="ok")
async def delay(request):
    state["delay"] = float(request.match_info["s"]); return web.Response(text="ok")
async def main():
    app = web.Application()
    app.add_routes([web.post("/hook", hook), web.get("/_ids", ids),
                    web.post("/_status/{n}", status), web.post("/_delay/{s}", delay)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes
asyncio.run(main())
"""


class Receiver:
    """The receiver process, and what it has counted."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RECEIVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.base = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"
        self.url = self.base + "/hook"

    def _call(self, method: str, path: str) -> Any:
        with urllib.request.urlopen(
            urllib.request.Request(self.base + path, method=method), timeout=30
        ) as answer:
            return json.loads(answer.read()) if method == "GET" else None

    def ids(self) -> Counter[str]:
        """How often each webhook-id arrived."""
        return Counter(self._call("GET", "/_ids"))

    def arrived(self) -> int:
        return sum(self.ids().values())

    def answer(self, *, status: int | None = None, delay: float | None = None) -> None:
        if status is not None:
            self._call("POST", f"/_status/{status}")
        if delay is not None:
            self._call("POST", f"/_delay/{delay}")

    def stop(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def seed_due(url: str, rules: Path, count: int) -> list[str]:
    """`count` due deliveries for the rule in `rules`, enqueued in batches of 1,000."""
    (rule,) = load_rules([rules])
    ids: list[str] = []
    with open_store(url) as store:
        for start in range(0, count, 1000):
            batch = []
            for n in range(start, min(count, start + 1000)):
                data = event(n)
                request = render_request(rule.webhook, data, environ={})
                batch.append(
                    NewDelivery(
                        id=new_delivery_id(time.time()),
                        rule=rule.name,
                        event_id=data["id"],
                        event_name=data["event"],
                        ticket=str(n),
                        dedupe_key=dedupe_key(data),
                        method=request.method,
                        url=request.masked().url,
                        request=request.to_dict(),
                        policy=rule.retry.to_dict(),
                        timeout=rule.timeout,
                        accept=rule.accept,
                    )
                )
            ids += [i for i, inserted in store.enqueue(batch, now=time.time()) if inserted]
    return ids


def workers(
    url: str, count: int, *, concurrency: int = 10, env: dict[str, str] | None = None
) -> list[Any]:
    """`count` retry-loop processes, half as "machine a" and half as "machine b"."""
    return [
        hookctl(
            "retry-loop",
            "--db",
            url,
            "--json",
            "--quiet",
            "-c",
            str(concurrency),
            env={**(env or {}), "PGAPPNAME": f"hookctl-machine-{'ab'[k % 2]}-{k}"},
        )
        for k in range(count)
    ]


def finish(procs: list[Any], timeout: float = 300) -> list[tuple[int, list[dict[str, Any]], str]]:
    """Wait for every process: (exit code, its NDJSON reports, its stderr)."""
    done = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        done.append((p.returncode, [json.loads(line) for line in out.splitlines()], err))
    return done


def check_all_succeeded(
    url: str, ids: list[str], receiver: Receiver, *, unrecorded: int = 0
) -> Stats:
    """Every seeded delivery succeeded, and the attempt log holds what was sent: all of it, but
    for at most `unrecorded` requests a killed worker sent and could not record."""
    with open_store(url) as store:
        stats = store.stats()
        assert store.due_count(time.time() + 3600) == 0
    assert stats.by_status == {"pending": 0, "succeeded": len(ids), "failed": 0}
    sent = receiver.ids()
    assert set(sent) == set(ids)
    # Attempts recorded == requests sent (less what a killed worker never got to record).
    assert 0 <= sum(sent.values()) - stats.attempts <= unrecorded
    return stats


def test_eight_workers_on_two_machines_send_each_delivery_exactly_once(
    pg_url: str, receiver: Receiver, rule_file: Any
) -> None:
    # The longest timeout a rule may have: on a starved machine (2 cores shared) a slow answer
    # must not time out and be sent again, which would be right but not "exactly once".
    ids = seed_due(pg_url, rule_file(rule_yaml(receiver.url, extra="timeout: 120s\n")), 10_000)
    assert len(ids) == 10_000
    results = finish(workers(pg_url, 8))
    for code, reports, err in results:
        assert code == 0, (
            err,
            [(r["error"], r.get("status_code")) for r in reports if r["status"] != "succeeded"][:3],
        )
    reported = [r["id"] for _, reports, _ in results for r in reports]
    assert sorted(reported) == sorted(ids)  # each reported by exactly one worker
    assert sum(1 for _, reports, _ in results if reports) >= 2, "the workers did not share"
    assert set(receiver.ids().values()) == {1}  # every delivery sent exactly once
    check_all_succeeded(pg_url, ids, receiver)


def test_a_worker_killed_mid_drain_loses_nothing(
    pg_url: str, receiver: Receiver, rule_file: Any
) -> None:
    ids = seed_due(pg_url, rule_file(rule_yaml(receiver.url, extra="timeout: 10s\n")), 300)
    receiver.answer(delay=0.5)
    victim, *others = workers(pg_url, 3, env=LEASE)
    wait_for(lambda: receiver.arrived() >= 30, what="requests in flight")
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    # Unrecorded: its requests in flight (-c 10) and answers not yet flushed (every 50 ms).
    in_flight = 20
    for code, _, err in finish(others):
        assert code == 0, err
    receiver.answer(delay=0.0)
    time.sleep(1.1)  # the victim's leases run out
    # A rerun takes over the dead worker's claims (re-sent under the same webhook-id).
    for code, _, err in finish(workers(pg_url, 1, env=LEASE)):
        assert code == 0, err
    check_all_succeeded(pg_url, ids, receiver, unrecorded=in_flight)
    # Only what the victim had in flight went out twice.
    assert sum(n - 1 for n in receiver.ids().values()) <= in_flight


def test_postgres_restarted_mid_drain(
    pg_server: Any, pg_url: str, receiver: Receiver, rule_file: Any
) -> None:
    if not isinstance(pg_server, Cluster):
        pytest.skip("restarts only the throwaway cluster, not HOOKCTL_TEST_PG_URL's server")
    ids = seed_due(pg_url, rule_file(rule_yaml(receiver.url, extra="timeout: 10s\n")), 600)
    receiver.answer(delay=0.02)
    procs = workers(pg_url, 4, env=LEASE)
    wait_for(lambda: receiver.arrived() >= 100, what="the drain to start")
    pg_server.restart(down_for=1.0)
    # Work was left when the server went away: the workers had to live through it.
    assert receiver.arrived() < len(ids)
    receiver.answer(delay=0.0)
    for code, _, err in finish(procs):
        # Each worker got its connection back, or said clearly why not and exited non-zero.
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 0 or (code != 0 and lines and lines[-1].startswith("Error: ")), err
        assert "Traceback" not in err
    time.sleep(1.1)  # claims a worker held when its transaction was cut run out
    for code, _, err in finish(workers(pg_url, 1, env=LEASE)):
        assert code == 0, err
    check_all_succeeded(pg_url, ids, receiver)


def test_a_stale_worker_is_fenced_off(pg_url: str, receiver: Receiver, rule_file: Any) -> None:
    ids = seed_due(
        pg_url,
        rule_file(rule_yaml(receiver.url, retry="{every: 1h, retries: 3}", extra="timeout: 30s\n")),
        20,
    )
    # What the stale worker will hear, after it is stopped: "retry later".
    receiver.answer(status=503, delay=0.5)
    [stale] = workers(pg_url, 1, concurrency=20, env=LEASE)
    wait_for(lambda: receiver.arrived() >= 20, what="the stale worker's requests")
    stale.send_signal(signal.SIGSTOP)  # its 503s arrive and wait in its socket buffers
    try:
        time.sleep(0.6)
        receiver.answer(status=200, delay=0)
        time.sleep(1.2)  # its leases run out
        for code, _, err in finish(workers(pg_url, 1, env=LEASE)):
            assert code == 0, err
    finally:
        stale.send_signal(signal.SIGCONT)
    code, reports, err = finish([stale])[0]
    assert code == 0, err
    assert reports == []  # none of its outcomes was applied (or reported as applied)
    with open_store(pg_url) as store:
        for delivery_id in ids:
            row = store.get(delivery_id)
            assert row is not None
            assert (row.delivery.status, row.delivery.status_code, row.delivery.attempts) == (
                "succeeded",
                200,
                1,
            )
            # Both requests happened and are logged; only the live lease's outcome counted.
            assert sorted(a.status_code for a in row.attempt_log) == [200, 503]
