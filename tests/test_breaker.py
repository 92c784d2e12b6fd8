"""The circuit breaker per endpoint, end to end (issue 15): real receivers, a real store file.

Where the test would wait hours, the real pipeline runs in-process with a clock the test
advances (Options.clock and the sender's clock); elsewhere real `hookctl` processes race.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from hookctl.delivery.options import Options
from hookctl.delivery.pipeline import Pipeline
from hookctl.delivery.reports import Summary
from hookctl.delivery.storethread import StoreThread
from hookctl.events.read import Event
from hookctl.rules.load import load_rules
from hookctl.store import open_store
from hookctl.transport.http import Sender
from hookctl.transport.netguard import AllowList, Guard
from tests.conftest import ndjson
from tests.receivers import Receiver, event, events_ndjson, hookctl, rule_yaml, status_counts

LOOPBACK = Guard(allow=AllowList.parse(["127.0.0.1"]))


class Clock:
    """Simulated time: starts now, moves only when the test says."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _fire(db: Path, rules: list[Any], events: list[Event], clock: Clock) -> Summary:
    async def run() -> Summary:
        with open_store(db) as store, StoreThread(store) as thread:
            async with Sender(guard=LOOPBACK, clock=clock) as sender:
                pipeline = Pipeline(thread, Options(environ={}, clock=clock))
                return await pipeline.fire(events, rules, sender)

    return asyncio.run(run())


def _drain(db: Path, clock: Clock) -> Summary:
    """One retry-loop pass at the clock's time, as `hookctl retry-loop` runs it."""

    async def run() -> Summary:
        with open_store(db) as store, StoreThread(store) as thread:
            async with Sender(guard=LOOPBACK, clock=clock) as sender:
                return await Pipeline(thread, Options(environ={}, clock=clock)).drain(sender)

    return asyncio.run(run())


def test_a_receiver_down_for_two_hours_costs_a_few_probes_and_loses_nothing(
    tmp_path: Path, rule_file: Callable[..., Path]
) -> None:
    receiver = Receiver().start()
    try:
        receiver.status = 503
        # A retry window of 1 h, shorter than the outage: without the breaker every delivery
        # would use up its retries and fail for good an hour in.
        rules = load_rules([rule_file(rule_yaml(receiver.url, retry="{every: 10m, for: 1h}"))])
        events = [Event(event(n), "test", n + 1) for n in range(20)]
        db, clock = tmp_path / "outage.db", Clock()
        fired = _fire(db, rules, events, clock)
        assert fired.failed == 0 and fired.pending + fired.waiting == 20
        before_open = receiver.arrived()
        assert before_open <= 20  # the first batch, in flight together, before it opened
        # Two hours of retry-loop passes every 30 s, the receiver answering 503 throughout.
        for _ in range(240):
            clock.advance(30)
            summary = _drain(db, clock)
            assert summary.failed == 0
        probes = receiver.arrived() - before_open
        print(f"outage: {before_open} attempts before it opened, {probes} probes in 2 h")
        # The first probe 30 s after opening, then 1, 2, 4 min, then every 5 min: ~27 in 2 h
        # (instead of 20 deliveries x 7 attempts, and all of them failed for good).
        assert 1 <= probes <= 2 * 3600 / 300 + 5, probes
        with open_store(db) as store:
            (health,) = store.endpoint_health(since=0)
            assert health.breaker_state == "open" and health.pending == 20
            # Each delivery: its own attempts before the breaker opened, the probes free.
            assert all(d.status == "pending" for d in store.query(limit=None))
        # The receiver comes back: the next probe closes the breaker, the backlog drains.
        receiver.status = 200
        for _ in range(20):
            clock.advance(30)
            _drain(db, clock)
        assert status_counts(db) == {"succeeded": 20}
        delivered = {body_id for _, body_id in receiver.received[-20:]}
        assert len(delivered) == 20
        with open_store(db) as store:
            assert store.breaker_states() == {}
    finally:
        receiver.stop()


def test_invalid_breaker_settings_exit_3_naming_the_field(
    cli: Callable[..., Any], rule_file: Callable[..., Path], event_file: Callable[..., Path]
) -> None:
    cases = {
        "breaker: {failures: 0}\n": ("breaker.failures", "whole number"),
        "breaker: {probe: soon}\n": ("breaker.probe", ""),
        "breaker: {probe: 5m, probe_max: 1m}\n": ("breaker.probe_max", "shorter than probe"),
        "breaker: {on_gone: ignore}\n": ("breaker.on_gone", "pause or fail"),
        "breaker: {failure: 3}\n": ("breaker", "did you mean 'failures'"),
        "breaker: 7\n": ("breaker", "expected a mapping"),
    }
    for extra, (field, words) in cases.items():
        rules = rule_file(rule_yaml("https://example.com/hook", extra=extra))
        result = cli("fire", "-r", rules, event_file(event(1)))
        assert result.exit_code == 3, (extra, result.stderr)
        line = result.stderr.strip().splitlines()[0]
        assert field in line and words in line and str(rules) in line, line
        assert ":5" in line or ":4" in line, line  # the line of the breaker key


def test_explain_shows_the_breaker(
    cli: Callable[..., Any], rule_file: Callable[..., Path], event_file: Callable[..., Path]
) -> None:
    rules = rule_file(
        rule_yaml(
            "https://example.com/hook",
            extra="breaker: {failures: 3, probe: 10s, disable_after: never, on_gone: pause}\n",
        )
    )
    shown = cli("explain", "-r", rules, event_file(event(1)))
    assert shown.exit_code == 0, shown.stderr
    assert "opens after 3 consecutive failures" in shown.stdout
    assert "never paused automatically" in shown.stdout and "410 pauses" in shown.stdout


def test_a_dead_host_beside_a_live_one_opens_and_the_live_one_is_not_held_up(
    rule_file: Callable[..., Path],
    event_file: Callable[..., Path],
    httpserver: HTTPServer,
    hanging_server: str,
    db_file: Path,
) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    dead = rule_file(
        rule_yaml(hanging_server, name="dead", retry="movidesk", extra="timeout: 1s\n")
    )
    live = rule_file(rule_yaml(httpserver.url_for("/hook"), name="live"))
    events = event_file(events_ndjson(30))
    fire = hookctl("fire", "--json", "-c", "4", "--per-host", "2", "-r", dead, "-r", live, events)
    out, err = fire.communicate(timeout=120)
    assert fire.returncode == 0, err
    reports = ndjson(out)
    live_reports = [r for r in reports if r["rule"] == "live"]
    assert len(live_reports) == 30 and {r["status"] for r in live_reports} == {"succeeded"}
    dead_reports = [r for r in reports if r["rule"] == "dead"]
    # Five timeouts opened the dead host's breaker (beside them, the attempts already under
    # way: two rounds of four): the rest wait for its probe, unsent, instead of each
    # holding a slot for its whole timeout.
    sent = [r for r in dead_reports if r["sent"]]
    waiting = [r for r in dead_reports if r["waiting"]]
    assert 5 <= len(sent) <= 12 and len(sent) + len(waiting) == 30, err
    assert {r["status"] for r in dead_reports} == {"pending"}
    assert all("open since" in r["waiting"] and r["attempts"] == 0 for r in waiting)
    assert "waiting for their endpoint's probe (breaker open)" in err
    # Every live request started before the first dead attempt had timed out.
    with open_store(db_file) as store:
        starts, dead_ends = [], []
        for d in store.query(limit=None):
            detail = store.get(d.id)
            assert detail is not None
            for a in detail.attempt_log:
                if d.rule == "live":
                    starts.append(a.started_at)
                else:
                    dead_ends.append(a.started_at + (a.duration_ms or 0) / 1000)
    assert len(starts) == 30 and max(starts) < min(dead_ends)


ALERT = (
    "on_failure:\n"
    "  url: '{alert}'\n"
    "  body:\n"
    "    endpoint: '{{{{ endpoint.name }}}}'\n"
    "    reason: '{{{{ endpoint.reason }}}}'\n"
    "    status: '{{{{ delivery.status }}}}'\n"
    "    rule: '{{{{ rule.name }}}}'\n"
)


def test_auto_disable_pauses_once_with_one_notice_while_two_retry_loops_race(
    cli: Callable[..., Any],
    rule_file: Callable[..., Path],
    event_file: Callable[..., Path],
    httpserver: HTTPServer,
    db_file: Path,
) -> None:
    receiver = Receiver().start()
    try:
        receiver.status = 503
        httpserver.expect_request("/alert").respond_with_data("noted")
        rules = rule_file(
            rule_yaml(
                receiver.url,
                retry="{every: 100ms, for: 1h}",
                extra="breaker: {failures: 1000, disable_after: 1s}\n",
            )
            + ALERT.format(alert=httpserver.url_for("/alert"))
        )
        fired = cli("fire", "-r", rules, event_file(events_ndjson(40)), "--json")
        assert fired.exit_code == 0, fired.stderr
        assert {r["status"] for r in ndjson(fired.stdout)} == {"pending"}
        time.sleep(1.1)  # failing (no success) for longer than disable_after
        loops = [hookctl("retry-loop", "--json", "-c", "4") for _ in range(2)]
        outputs = [loop.communicate(timeout=60) for loop in loops]
        for loop, (_, err) in zip(loops, outputs, strict=True):
            assert loop.returncode == 0, err
        # Paused once, by whichever loop's batch got there first; one notice, whatever raced.
        listed = ndjson(cli("endpoints", "--json").stdout)
        endpoint = next(e for e in listed if e["endpoint"].endswith(str(receiver.server.port)))
        assert endpoint["paused"] and endpoint["paused_reason"].startswith(
            "auto: no success for 1s"
        )
        notices = ndjson(cli("log", "--json", "--rule", "r1:on_failure").stdout)
        assert len(notices) == 1 and notices[0]["status"] == "succeeded"
        (alert,) = [request.get_json() for request, _ in httpserver.log]
        assert alert["endpoint"] == endpoint["endpoint"] and alert["status"] == "disabled"
        assert alert["reason"] == endpoint["paused_reason"] and alert["rule"] == "r1"
        # Nothing failed for good; the rest wait for someone to resume the endpoint.
        logged = ndjson(cli("log", "--json", "--rule", "r1", "--limit", "0").stdout)
        assert {d["status"] for d in logged} == {"pending"} and len(logged) == 40
        assert all("paused since" in d["waiting"] for d in logged)
        assert cli("retry-loop").stderr.strip() == "nothing due"
    finally:
        receiver.stop()


def test_gone_with_on_gone_pause_pauses_the_endpoint_and_resume_sends_it_again(
    cli: Callable[..., Any],
    rule_file: Callable[..., Path],
    event_file: Callable[..., Path],
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_ordered_request("/hook").respond_with_data("gone", status=410)
    httpserver.expect_ordered_request("/hook").respond_with_data("ok")
    rules = rule_file(
        rule_yaml(
            httpserver.url_for("/hook"), retry="movidesk", extra="breaker: {on_gone: pause}\n"
        )
    )
    fired = cli("fire", "-r", rules, event_file(event(1)), "--json")
    assert fired.exit_code == 0, fired.stderr
    (report,) = ndjson(fired.stdout)
    assert report["status"] == "pending" and report["status_code"] == 410
    (listed,) = ndjson(cli("endpoints", "--json").stdout)
    assert listed["paused"] and listed["paused_reason"].startswith("410 Gone from ")
    shown = json.loads(cli("log", report["id"], "--json").stdout)
    assert shown["status"] == "pending" and "paused since" in shown["waiting"]
    assert [a["status_code"] for a in shown["attempts_detail"]] == [410]
    assert cli("retry-loop").stderr.strip() == "nothing due"  # paused: nothing goes
    resumed = cli("endpoints", "resume", listed["endpoint"])
    assert resumed.exit_code == 0, resumed.stderr
    sent = cli("retry-loop", "--json")
    assert sent.exit_code == 0, sent.stderr
    (again,) = ndjson(sent.stdout)
    assert (again["id"], again["status"], again["attempts"]) == (report["id"], "succeeded", 2)
    assert len(httpserver.log) == 2


def test_gone_fails_the_delivery_by_default(
    cli: Callable[..., Any],
    rule_file: Callable[..., Path],
    event_file: Callable[..., Path],
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_request("/hook").respond_with_data("gone", status=410)
    rules = rule_file(rule_yaml(httpserver.url_for("/hook"), retry="movidesk"))
    fired = cli("fire", "-r", rules, event_file(event(1)), "--json")
    assert fired.exit_code == 1
    assert ndjson(fired.stdout)[0]["status"] == "failed"
    assert ndjson(cli("endpoints", "--json").stdout)[0]["paused"] is False


@pytest.mark.parametrize("form", ["table", "json"])
def test_endpoints_and_log_show_an_open_breaker(
    cli: Callable[..., Any],
    rule_file: Callable[..., Path],
    event_file: Callable[..., Path],
    free_port: int,
    form: str,
) -> None:
    rules = rule_file(
        rule_yaml(
            f"http://127.0.0.1:{free_port}/hook",
            retry="{every: 1m, for: 1h}",
            extra="breaker: {failures: 2}\n",
        )
    )
    fired = cli("fire", "-c", "1", "-r", rules, event_file(events_ndjson(4)), "--json")
    assert fired.exit_code == 0, fired.stderr
    if form == "json":
        (listed,) = ndjson(cli("endpoints", "--json").stdout)
        assert listed["breaker"] == "open" and listed["consecutive_failures"] >= 2
        assert listed["open_since"] and listed["next_probe_at"] and listed["failing_since"]
        logged = ndjson(cli("log", "--json").stdout)
        assert all("open since" in d["waiting"] and "next probe" in d["waiting"] for d in logged)
        (stats,) = ndjson(cli("stats", "--json").stdout)
        assert [e["endpoint"] for e in stats["open_endpoints"]] == [listed["endpoint"]]
    else:
        table = cli("endpoints").stdout
        assert "open since" in table and "next probe" in table
        one = cli("log", ndjson(fired.stdout)[0]["id"]).stdout
        assert "waiting: endpoint http://127.0.0.1:" in one and "next probe" in one
        assert "open endpoints (breaker): http://127.0.0.1:" in cli("stats").stdout
