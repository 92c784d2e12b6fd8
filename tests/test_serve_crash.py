"""SIGKILL `serve` while 1,000 events are being posted: every 202 is delivered after a restart;
no event that got an error answer (or never reached the server) is."""

from __future__ import annotations

import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.receivers import Receiver, event, rule_yaml, wait_for
from tests.serving import log_json, start, stop

EVENTS = 1000
POSTERS = 24


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def test_killed_while_taking_events_loses_no_202(cli, rule_file, receiver, db_file):
    rules = rule_file(rule_yaml(receiver.url, retry="{every: 200ms, retries: 100}"))
    # A short lease: what the killed process had claimed is taken over two seconds later.
    env = {"HOOKCTL_LEASE": "2s"}
    args = ("-r", rules, "--max-pending", "16", "--retry-every", "200ms")
    server = start(*args, env=env)
    outcome: dict[
        str, str
    ] = {}  # event id -> "202" | "error" (an HTTP answer) | "unsent" | "unknown"
    lock = threading.Lock()
    killed = threading.Event()

    def post(n: int) -> None:
        eid = f"evt_{n}"
        try:
            r = http.post("/events", json=event(n))
            result = "202" if r.status_code == 202 else "error"
        except httpx.ConnectError:
            result = "unsent"  # refused before a byte was sent: nothing can have been stored
        except httpx.TransportError:
            result = "unknown"  # cut off mid-request: stored or not, either is right
        with lock:
            outcome[eid] = result
            accepted = sum(v == "202" for v in outcome.values())
        if accepted >= 300 and not killed.is_set():
            killed.set()
            server.proc.send_signal(signal.SIGKILL)

    # One client shared by the posters (it is thread-safe): a client per post spends the
    # test's time building TLS contexts.
    limits = httpx.Limits(max_connections=POSTERS, max_keepalive_connections=POSTERS)
    with (
        httpx.Client(base_url=server.url, trust_env=False, timeout=30, limits=limits) as http,
        ThreadPoolExecutor(POSTERS) as pool,
    ):
        list(pool.map(post, range(EVENTS)))
    assert stop(server) == -signal.SIGKILL and killed.is_set()
    accepted = {e for e, v in outcome.items() if v == "202"}
    refused = {e for e, v in outcome.items() if v in ("error", "unsent")}
    assert len(accepted) >= 300 and refused, outcome

    restarted = start(*args, env=env)

    def all_succeeded() -> bool:
        rows = {r["event_id"]: r["status"] for r in log_json(cli, db_file)}
        return all(rows.get(e) == "succeeded" for e in accepted)

    try:
        # Recorded as succeeded, not just seen by the receiver: one sent just before the kill
        # arrived, but only the restarted server can record it (by sending it again).
        wait_for(all_succeeded, timeout=120, what="every accepted event delivered after restart")
    finally:
        assert stop(restarted) == 0
    delivered = {i for _, i in receiver.received}
    assert accepted <= delivered
    assert not delivered & refused, sorted(delivered & refused)[:10]
    assert delivered <= accepted | {e for e, v in outcome.items() if v == "unknown"}
