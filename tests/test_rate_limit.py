"""Rate limits per endpoint and Retry-After (issue 15), with real processes and a real receiver.

The receiver is an aiohttp process that answers 429 (Retry-After: 1) to a request arriving when
5 or more arrived in the second before it, and records every arrival; workers are real
`retry-loop --every` processes on SQLite and on PostgreSQL (tests/pg.py). State is read back
through the CLI and the store's public methods.

The documented slack (README "Rate limits"): slots are spaced 5% wider than the rate, so at
most 5 requests land in any one-second window while the delays between a slot and its
request's arrival differ by less than 50 ms. On a machine busier than that (these workers,
the receiver and whatever else share two cores) a request can arrive later than that, and a
second then holds one request more: the receiver answers it 429 and it is retried. So the test
allows what the slack allows: never more than 6 in any one-second window, at most 2 requests
over the limit (each answered 429) in the whole run, and no delivery fails. Without the rate
limit the same run sends dozens over.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hookctl.delivery.prepare import Planner
from hookctl.events.read import Event
from hookctl.rules.load import load_rules
from hookctl.store import open_store
from tests.receivers import event, events_ndjson, hookctl, wait_for

RECEIVER = """
import asyncio, json, sys, time
from aiohttp import web
arrivals = []  # [time, path, webhook-id, status]
state = {"limit": 5, "first": []}  # "first": answers for the first requests, e.g. [[503, "30"]]
async def hook(request):
    await request.read()
    now = time.time()
    recent = sum(1 for a in arrivals if now - a[0] < 1.0)
    retry_after = "1"
    if state["first"]:
        status, retry_after = state["first"].pop(0)
    else:
        status = 429 if state["limit"] and recent >= state["limit"] else 200
    arrivals.append([now, request.path, request.headers.get("webhook-id"), status])
    headers = {"Retry-After": retry_after} if status in (429, 503) else {}
    return web.Response(status=status, text="ok", headers=headers)
async def log(request):
    return web.json_response(arrivals)
async def set_state(request):
    state.update(await request.json())
    return web.json_response(state)
async def main():
    app = web.Application()
    app.add_routes([web.post("/hook", hook), web.get("/_log", log), web.post("/_state", set_state)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes
asyncio.run(main())
"""


class LimitedReceiver:
    """The receiver process: 429 past `limit` requests a second; every arrival recorded."""

    def __init__(self, limit: int = 5) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RECEIVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.base = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"
        self.url = self.base + "/hook"
        self.set(limit=limit)

    def set(self, **state: Any) -> None:
        request = urllib.request.Request(
            self.base + "/_state", data=json.dumps(state).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=30):
            pass

    def arrivals(self) -> list[tuple[float, str, str, int]]:
        with urllib.request.urlopen(self.base + "/_log", timeout=30) as answer:
            return [tuple(a) for a in json.loads(answer.read())]  # type: ignore[misc]

    def stop(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


@pytest.fixture
def receiver() -> Iterator[LimitedReceiver]:
    r = LimitedReceiver()
    yield r
    r.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database the workers share: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "rate.db")
    return str(request.getfixturevalue("pg_url"))


def most_in_a_window(times: list[float], width: float) -> int:
    """The most arrivals in any window [t, t + width)."""
    times = sorted(times)
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= width:
            start += 1
        most = max(most, end - start + 1)
    return most


def seed(db: str, rules: Path, count: int) -> list[str]:
    """`count` due deliveries, made as `fire` makes them (the rule's rate stored with each)."""
    (rule,) = load_rules([rules])
    planner = Planner({}, time.time)
    batch = []
    for n in range(count):
        item = Event(data=event(n), source="-", line=n + 1)
        request, ticket, error = planner.render(rule, item)
        batch.append(planner.delivery(rule, item, None, request, ticket, error))
    with open_store(db) as store:
        return [i for i, inserted in store.enqueue(batch, now=time.time()) if inserted]


def counts(db: str) -> dict[str, int]:
    with open_store(db) as store:
        return {k: v for k, v in store.stats(since=None).by_status.items() if v}


def test_four_workers_keep_an_endpoint_under_its_rate_and_nothing_fails(
    db_url: str, receiver: LimitedReceiver, rule_file: Callable[..., Path]
) -> None:
    rules = rule_file(
        f"""
        name: limited
        on: [ticket.created]
        rate: 5/s
        webhook: {{method: POST, url: "{receiver.url}"}}
        retry: {{every: 1s, retries: 30}}
        """
    )
    ids = seed(db_url, rules, 60)
    args = ["retry-loop", "--db", db_url, "--every", "0.5s", "--json", "--quiet", "-c", "10"]
    workers = [hookctl(*args) for _ in range(4)]
    try:
        wait_for(lambda: "pending" not in counts(db_url), timeout=120, what="every one decided")
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        ended = [w.communicate(timeout=60) for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0, 0], [err for _, err in ended]
    assert counts(db_url) == {"succeeded": 60}
    arrivals = receiver.arrivals()
    assert {a[2] for a in arrivals} == set(ids)
    times = [a[0] for a in arrivals]
    # Under its limit at the receiver, but for the slack: one request over in a second, on a
    # busy machine, rarely (the receiver answers 429 to each); no delivery failed (above).
    over = [a for a in arrivals if a[3] == 429]
    assert most_in_a_window(times, 1.0) <= 5 + 1, sorted(times)
    assert len(over) <= 2, over
    achieved = (len(times) - 1) / (max(times) - min(times))
    print(
        f"\n{len(arrivals)} requests for 60 deliveries, {len(over)} answered 429; "
        f"most in a 1 s window {most_in_a_window(times, 1.0)}; achieved {achieved:.2f}/s of 5/s"
    )


def test_retry_after_from_a_503_holds_the_endpoint_for_the_other_deliveries(
    receiver: LimitedReceiver,
    cli: Callable[..., Any],
    rule_file: Callable[..., Path],
    event_file: Callable[..., Path],
    db_file: Path,
) -> None:
    receiver.set(limit=0, first=[[503, "30"]])
    rules = rule_file(
        f"""
        name: no-rate
        on: [ticket.created]
        webhook: {{method: POST, url: "{receiver.url}"}}
        retry: {{every: 1s, retries: 5}}
        """
    )
    first = cli("fire", "-r", rules, event_file(events_ndjson(1)), "--json")
    assert [r["status"] for r in map(json.loads, first.stdout.splitlines())] == ["pending"]
    # Another process, other deliveries: none is sent while the endpoint is held.
    more = hookctl("fire", "-r", rules, event_file(events_ndjson(3, start=1)), "--json")
    _, err = more.communicate(timeout=60)
    assert more.returncode == 0, err
    assert "3 waiting for their endpoint's rate limit" in err
    assert len(receiver.arrivals()) == 1
    pass_ = hookctl("retry-loop")
    _, err = pass_.communicate(timeout=60)
    assert pass_.returncode == 0, err
    assert len(receiver.arrivals()) == 1  # claims skip the held endpoint: nothing due
    log = [json.loads(line) for line in cli("log", "--json").stdout.splitlines()]
    assert [r["status"] for r in log] == ["pending"] * 4
    waiting = [r["waiting"] for r in log if r["attempts"] == 0]
    assert len(waiting) == 3
    for note in waiting:
        assert note.startswith("endpoint slowed by Retry-After until ")
        assert note.endswith("(HTTP 503, Retry-After 30s)")
    one = cli("log", log[0]["id"]).stdout
    assert "waiting: endpoint slowed by Retry-After until" in one
    [listed] = map(json.loads, cli("endpoints", "--json").stdout.splitlines())
    assert listed["not_before_reason"] == "HTTP 503, Retry-After 30s"
    assert listed["not_before"] is not None and listed["rate"] is None
    assert "slowed until" in cli("endpoints").stdout


def test_a_rate_limited_endpoint_does_not_slow_an_unlimited_one_and_binds_every_rule_on_it(
    receiver: LimitedReceiver,
    cli: Callable[..., Any],
    rule_file: Callable[..., Path],
    event_file: Callable[..., Path],
    db_file: Path,
) -> None:
    receiver.set(limit=0)
    unlimited = LimitedReceiver(limit=0)
    try:
        rule_file(
            f"""
            - name: slow
              on: [ticket.created]
              rate: 1/s
              webhook: {{method: POST, url: "{receiver.url}"}}
            - name: same-endpoint-no-rate
              on: [ticket.created]
              webhook: {{method: POST, url: "{receiver.base}/other"}}
            - name: elsewhere
              on: [ticket.created]
              webhook: {{method: POST, url: "{unlimited.url}"}}
            """,
            name="rules.yaml",
        )
        result = hookctl("fire", "-r", db_file.parent / "rules", event_file(events_ndjson(10)))
        _, err = result.communicate(timeout=120)
        assert result.returncode == 0, err
        by_rule: dict[str, list[str]] = {}
        for line in cli("log", "--json", "-n", "0").stdout.splitlines():
            record = json.loads(line)
            by_rule.setdefault(record["rule"], []).append(record["status"])
        # The unlimited endpoint got all ten at once, as without any rate.
        assert by_rule["elsewhere"] == ["succeeded"] * 10
        assert len(unlimited.arrivals()) == 10
        # The limited one: a slot or two within the 2 s horizon, the rest wait their turn,
        # those of the rule without a rate too (the strictest rate on an endpoint binds all).
        sent = receiver.arrivals()
        assert 1 <= len(sent) <= 4, sent
        assert "pending" in by_rule["slow"] and "pending" in by_rule["same-endpoint-no-rate"]
        assert by_rule["slow"].count("succeeded") + by_rule["same-endpoint-no-rate"].count(
            "succeeded"
        ) == len(sent)
        assert "waiting for their endpoint's rate limit (pending)" in err
        pending = [
            json.loads(line)
            for line in cli("log", "--json", "--status", "pending", "-n", "0").stdout.splitlines()
        ]
        assert {r["waiting"].partition(": next slot ")[0] for r in pending} == {"rate 1/s"}
        assert "waiting: rate 1/s: next slot " in cli("log", pending[0]["id"]).stdout
        listed = {
            r["endpoint"]: r
            for r in map(json.loads, cli("endpoints", "--json").stdout.splitlines())
        }
        assert listed[receiver.base.replace("http://", "http://")]["rate"] == "1/s"
        assert listed[unlimited.base]["rate"] is None
    finally:
        unlimited.stop()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("fast", "expected a rate such as 5/s or 30/m"),
        ("0/s", "sends nothing"),
        ("5/h", "expected a rate such as 5/s or 30/m"),
        ("5", "expected a rate such as 5/s or 30/m"),
        ("2000/s", "faster than 1000/s"),
    ],
)
def test_an_invalid_rate_is_a_rule_error_naming_file_line_and_field(
    cli: Callable[..., Any], rule_file: Callable[..., Path], value: str, message: str
) -> None:
    path = rule_file(
        f"""
        name: bad
        on: [ticket.created]
        webhook: {{url: "https://hooks.example.com/a"}}
        rate: {value}
        """
    )
    result = cli("validate", "-r", path)
    assert result.exit_code == 3
    assert f"{path}:5: rule 'bad': rate: " in result.stderr
    assert message in result.stderr


def test_explain_and_rules_show_a_rules_rate(
    cli: Callable[..., Any], rule_file: Callable[..., Path], event_file: Callable[..., Path]
) -> None:
    path = rule_file(
        """
        name: telegram
        on: [ticket.created]
        rate: 30/m
        webhook: {url: "https://api.telegram.org/bot1/sendMessage"}
        """
    )
    events = event_file(event(1))
    [explained] = map(json.loads, cli("explain", "-r", path, events, "--json").stdout.splitlines())
    assert explained["rate"] == "30/m"
    text = cli("explain", "-r", path, events).stdout
    assert "rate: 30/m to https://api.telegram.org:443" in text
    [listed] = map(json.loads, cli("rules", "-r", path, "--json").stdout.splitlines())
    assert listed["rate"] == "30/m"


def test_a_long_retry_after_holds_the_endpoint_five_minutes_at_most(
    receiver: LimitedReceiver,
    cli: Callable[..., Any],
    rule_file: Callable[..., Path],
    event_file: Callable[..., Path],
) -> None:
    receiver.set(limit=0, first=[[429, "7200"]])
    rules = rule_file(
        f"""
        name: no-rate
        on: [ticket.created]
        webhook: {{method: POST, url: "{receiver.url}"}}
        retry: {{every: 1s, retries: 5}}
        """
    )
    before = time.time()
    cli("fire", "-r", rules, event_file(event(1)))
    after = time.time()
    [listed] = map(json.loads, cli("endpoints", "--json").stdout.splitlines())
    assert listed["not_before_reason"] == "HTTP 429, Retry-After 300s"
    held = datetime.fromisoformat(listed["not_before"].replace("Z", "+00:00")).timestamp()
    assert before + 300 - 1 <= held <= after + 300 + 1
    # The delivery itself keeps its policy's Retry-After handling (at most an hour later).
    [record] = map(json.loads, cli("log", "--json").stdout.splitlines())
    due = datetime.fromisoformat(record["next_attempt_at"].replace("Z", "+00:00")).timestamp()
    assert due >= before + 3600 - 1
