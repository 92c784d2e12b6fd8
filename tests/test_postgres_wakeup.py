"""`retry-loop --every` on PostgreSQL wakes on LISTEN/NOTIFY, with polling as the backstop.

Real processes: a `retry-loop --every 30s` worker, `fire` and `replay` as separate commands,
a loopback receiver. A replay makes a delivery due now and NOTIFYs; the worker must send it
long before its next 30 s poll. No timing asserts beyond "before the poll would have".
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

from tests.conftest import ndjson
from tests.receivers import Receiver, event, hookctl, rule_yaml, wait_for

EVERY = 30.0  # the poll interval: anything sent well before it came from a wake-up


def _started(loop: Any) -> float:
    """Wait for the worker's start-up line (it listens before printing it); when it came."""
    line = loop.stderr.readline()
    assert "until stopped" in line, line + loop.stderr.read()
    return time.monotonic()


def test_a_replay_wakes_a_waiting_retry_loop_long_before_its_poll(
    cli: Any, pg_url: str, rule_file: Any, event_file: Any, monkeypatch: Any
) -> None:
    monkeypatch.setenv("HOOKCTL_DB", pg_url)
    receiver = Receiver().start()
    loop = hookctl("retry-loop", "--every", f"{EVERY:g}s", "--json")
    try:
        started = _started(loop)
        receiver.status = 503  # fails once: pending, next attempt an hour away
        rules = rule_file(rule_yaml(receiver.url, retry="{schedule: [1h]}"))
        fired = cli("fire", "-r", rules, event_file(json.dumps(event(1))), "--json")
        assert fired.exit_code == 0, fired.stderr
        [pending] = ndjson(fired.stdout)
        assert pending["status"] == "pending"
        receiver.status = 200
        replayed = cli("replay", pending["id"])  # due now, for retry-loop: a NOTIFY
        assert replayed.exit_code == 0, replayed.stderr
        wait_for(
            lambda: receiver.arrived() == 2 or loop.poll() is not None,
            timeout=EVERY - 5,
            what="the woken retry-loop to send the replayed delivery",
        )
        assert loop.poll() is None, loop.stderr.read()
        assert time.monotonic() - started < EVERY  # before the first poll after the start
    finally:
        loop.send_signal(signal.SIGTERM)
        out, err = loop.communicate(timeout=30)
        receiver.stop()
    assert loop.returncode == 0, err
    assert [(r["id"], r["status"]) for r in ndjson(out)] == [(pending["id"], "succeeded")]
    assert receiver.ids() == {pending["id"]: 2}  # the 503, then the woken send; once each


def test_a_resume_wakes_a_waiting_retry_loop(
    cli: Any, pg_url: str, rule_file: Any, event_file: Any, monkeypatch: Any
) -> None:
    monkeypatch.setenv("HOOKCTL_DB", pg_url)
    receiver = Receiver().start()
    rules = rule_file(rule_yaml(receiver.url))
    assert cli("endpoints", "pause", receiver.url).exit_code == 0
    held = cli("fire", "-r", rules, event_file(json.dumps(event(1))), "--json")
    assert [r["held"] for r in ndjson(held.stdout)] == [True]
    loop = hookctl("retry-loop", "--every", f"{EVERY:g}s", "--json")
    try:
        started = _started(loop)
        time.sleep(0.5)  # let its first pass skip the paused delivery, so only a wake sends it
        assert cli("endpoints", "resume", receiver.url).exit_code == 0
        wait_for(
            lambda: receiver.arrived() == 1 or loop.poll() is not None,
            timeout=EVERY - 5,
            what="the woken retry-loop to send the resumed endpoint's delivery",
        )
        assert time.monotonic() - started < EVERY
    finally:
        loop.send_signal(signal.SIGTERM)
        out, err = loop.communicate(timeout=30)
        receiver.stop()
    assert loop.returncode == 0, err
    assert [r["status"] for r in ndjson(out)] == ["succeeded"]


def test_polling_still_sends_what_falls_due_without_a_notify(
    cli: Any, pg_url: str, rule_file: Any, event_file: Any, monkeypatch: Any
) -> None:
    # A retry coming due sends no NOTIFY: the poll every --every finds it.
    monkeypatch.setenv("HOOKCTL_DB", pg_url)
    receiver = Receiver().start()
    loop = hookctl("retry-loop", "--every", "200ms", "--json")
    try:
        _started(loop)
        receiver.status = 503
        rules = rule_file(rule_yaml(receiver.url, retry="{schedule: [300ms]}"))
        assert cli("fire", "-r", rules, event_file(json.dumps(event(1)))).exit_code == 0
        receiver.status = 200
        wait_for(lambda: receiver.arrived() == 2 or loop.poll() is not None, what="the retry")
    finally:
        loop.send_signal(signal.SIGTERM)
        out, err = loop.communicate(timeout=30)
        receiver.stop()
    assert loop.returncode == 0, err
    assert [r["status"] for r in ndjson(out)] == ["succeeded"]


def test_sigterm_while_waiting_for_a_notify_exits_zero_at_once(pg_url: str) -> None:
    loop = hookctl("retry-loop", "--db", pg_url, "--every", f"{EVERY:g}s")
    try:
        _started(loop)
        time.sleep(0.5)  # inside the wait for a NOTIFY (the first pass found nothing)
        loop.send_signal(signal.SIGTERM)
        # Well inside the 30 s interval: the wait is cut short, not slept out.
        _, err = loop.communicate(timeout=EVERY / 3)
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.communicate()
    assert loop.returncode == 0, err
    assert "sent 0" in err
