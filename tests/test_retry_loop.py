"""`hookctl retry-loop`: retries on the rule's schedule, Retry-After, 410, on_failure, signals."""

from __future__ import annotations

import email.utils
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.conftest import attempts, deliveries, ndjson
from tests.receivers import (
    NO_BREAKER,
    Receiver,
    event,
    events_ndjson,
    hookctl,
    rule_yaml,
    wait_for,
    wait_until_due,
)

ON_FAILURE = (
    "on_failure:\n"
    "  url: '{alert}'\n"
    "  body:\n"
    "    text: 'Webhook {{{{ delivery.rule }}}} failed: {{{{ delivery.error }}}}'\n"
    "    failed_id: '{{{{ delivery.id }}}}'\n"
    "    ticket: '{{{{ ticket.id }}}}'\n"
)


def test_receiver_that_fails_twice_then_succeeds(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file
):
    httpserver.expect_ordered_request("/hook").respond_with_data("down for a moment", status=500)
    httpserver.expect_ordered_request("/hook").respond_with_data("still down", status=502)
    httpserver.expect_ordered_request("/hook").respond_with_data("thanks", status=200)
    rules = rule_file(rule_yaml(httpserver.url_for("/hook"), retry="{schedule: [10ms, 10ms]}"))

    fired = cli("fire", "-r", rules, event_file(event(1)), "--json")
    assert fired.exit_code == 0, fired.stderr
    (first,) = ndjson(fired.stdout)
    assert first["status"] == "pending" and first["attempts"] == 1
    for expected in ("pending", "succeeded"):
        wait_until_due(db_file)
        result = cli("retry-loop", "--json")
        assert result.exit_code == 0, result.stderr
        (report,) = ndjson(result.stdout)
        assert (report["id"], report["status"]) == (first["id"], expected)

    assert [r.headers["webhook-id"] for r, _ in httpserver.log] == [first["id"]] * 3
    (row,) = deliveries(db_file)
    assert (row["id"], row["status"], row["attempts"]) == (first["id"], "succeeded", 3)
    assert [a["status_code"] for a in attempts(db_file)] == [500, 502, 200]

    shown = cli("log", first["id"][:20])
    assert shown.exit_code == 0, shown.stderr
    text = shown.stdout
    assert f"{first['id']}  succeeded" in text
    for number, outcome, body in (
        (1, "HTTP 500", "down for a moment"),
        (2, "HTTP 502", "still down"),
        (3, "HTTP 200", "thanks"),
    ):
        assert f"attempt {number}  " in text and outcome in text and body in text
        assert f"{outcome} - {outcome}" not in text
    (record,) = ndjson(cli("log", first["id"], "--json").stdout)
    assert record["attempts"] == 3
    assert [
        (a["number"], a["status_code"], a["error"], a["response_body"])
        for a in record["attempts_detail"]
    ] == [
        (1, 500, "HTTP 500", "down for a moment"),
        (2, 502, "HTTP 502", "still down"),
        (3, 200, None, "thanks"),
    ]


def test_dead_receiver_exhausts_a_short_policy_and_fails(
    cli, rule_file, event_file, free_port, db_file
):
    rules = rule_file(
        rule_yaml(f"http://127.0.0.1:{free_port}/hook", retry="{every: 10ms, retries: 2}")
    )
    fired = cli("fire", "-r", rules, event_file(event(1)), "--json")
    assert fired.exit_code == 0  # queued for retry is not a failure yet
    (report,) = ndjson(fired.stdout)
    assert report["status"] == "pending" and report["error"] == "connection refused"

    wait_until_due(db_file)
    second = cli("retry-loop")
    assert second.exit_code == 0
    assert "sent 1: 0 succeeded, 1 rescheduled, 0 failed" in second.stderr
    wait_until_due(db_file)
    third = cli("retry-loop")
    assert third.exit_code == 1  # a delivery failed for good
    assert "sent 1: 0 succeeded, 0 rescheduled, 1 failed" in third.stderr
    assert third.stdout.startswith("failed") and "after 3 attempts" in third.stdout

    (row,) = deliveries(db_file)
    assert row["status"] == "failed" and row["attempts"] == 3 and row["next_attempt_at"] is None
    assert [a["error"] for a in attempts(db_file)] == ["connection refused"] * 3
    again = cli("retry-loop")
    assert again.exit_code == 0 and "nothing due" in again.stderr
    (listed,) = ndjson(cli("log", "--status", "failed", "--json").stdout)
    assert listed["id"] == report["id"] and listed["error"] == "connection refused"


def test_on_failure_fires_once_per_failed_delivery_across_concurrent_loops(
    cli, rule_file, event_file, free_port, httpserver: HTTPServer, db_file
):
    httpserver.expect_request("/alert").respond_with_data("noted")
    rules = rule_file(
        rule_yaml(
            f"http://127.0.0.1:{free_port}/hook", retry="{schedule: [10ms]}", extra=NO_BREAKER
        )
        + ON_FAILURE.format(alert=httpserver.url_for("/alert"))
    )
    fired = cli("fire", "-r", rules, event_file(events_ndjson(30)), "--json")
    assert fired.exit_code == 0
    pending = {r["id"]: r for r in ndjson(fired.stdout)}
    assert {r["status"] for r in pending.values()} == {"pending"}
    assert httpserver.log == []  # not failed yet: no notice

    wait_until_due(db_file)
    loops = [hookctl("retry-loop", "--json") for _ in range(2)]
    outputs = [loop.communicate(timeout=60) for loop in loops]
    for loop, (_, err) in zip(loops, outputs, strict=True):
        assert loop.returncode in (0, 1), err
    assert cli("retry-loop").stderr.strip() == "nothing due"

    alerts = [request.get_json() for request, _ in httpserver.log]
    assert sorted(a["failed_id"] for a in alerts) == sorted(pending)  # each exactly once
    for alert in alerts:
        assert alert["text"] == "Webhook r1 failed: connection refused"
        assert str(alert["ticket"]) == pending[alert["failed_id"]]["ticket"]
    notices = [d for d in deliveries(db_file) if d["rule"] == "r1:on_failure"]
    assert len(notices) == 30 and {d["status"] for d in notices} == {"succeeded"}
    reports = [r for out, _ in outputs for r in ndjson(out)]
    assert sorted(r["id"] for r in reports if r["rule"] == "r1") == sorted(pending)


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_retry_after_is_honoured(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file, status, form
):
    value = "120" if form == "seconds" else email.utils.formatdate(time.time() + 120, usegmt=True)
    httpserver.expect_request("/hook").respond_with_data(
        "slow down", status=status, headers={"Retry-After": value}
    )
    rules = rule_file(rule_yaml(httpserver.url_for("/hook"), retry="{every: 1s, retries: 2}"))
    fired = cli("fire", "-r", rules, event_file(event(1)), "--json")
    assert fired.exit_code == 0
    assert ndjson(fired.stdout)[0]["status"] == "pending"
    (row,) = deliveries(db_file)
    (attempt,) = attempts(db_file)
    assert row["next_attempt_at"] - attempt["started_at"] == pytest.approx(120, abs=3)
    assert cli("retry-loop").stderr.strip() == "nothing due"


def test_retry_after_stays_within_the_policy_window(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file
):
    httpserver.expect_request("/hook").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "7200"}
    )
    rules = rule_file(rule_yaml(httpserver.url_for("/hook"), retry="{every: 1s, for: 1m}"))
    assert cli("fire", "-r", rules, event_file(event(1))).exit_code == 0
    (row,) = deliveries(db_file)
    # The last attempt still happens, at the window's end rather than two hours out.
    assert row["next_attempt_at"] == pytest.approx(row["first_attempt_at"] + 60)


def test_gone_is_not_retried(cli, rule_file, event_file, httpserver: HTTPServer, db_file):
    httpserver.expect_request("/hook").respond_with_data("no such hook", status=410)
    rules = rule_file(rule_yaml(httpserver.url_for("/hook"), retry="movidesk"))
    fired = cli("fire", "-r", rules, event_file(event(1)), "--json")
    assert fired.exit_code == 1
    (report,) = ndjson(fired.stdout)
    assert report["status"] == "failed" and report["status_code"] == 410
    (row,) = deliveries(db_file)
    assert row["status"] == "failed" and row["attempts"] == 1
    assert cli("retry-loop").stderr.strip() == "nothing due"
    assert len(httpserver.log) == 1


def test_nothing_due_exits_zero_quietly(cli, db_file):
    result = cli("retry-loop")
    assert result.exit_code == 0
    assert result.stdout == "" and result.stderr == "nothing due\n"
    assert cli("retry-loop", "--quiet").stderr == ""


def test_json_records_and_the_stderr_summary(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file
):
    calls = {"/ok": 0}

    def flaky(request: Request) -> Response:
        calls["/ok"] += 1
        return Response(
            "ok" if calls["/ok"] > 1 else "not yet", status=200 if calls["/ok"] > 1 else 500
        )

    httpserver.expect_request("/ok").respond_with_handler(flaky)
    httpserver.expect_request("/down").respond_with_data("down", status=500)
    rules = [
        rule_file(rule_yaml(httpserver.url_for("/ok"), name="ok", retry="{schedule: [10ms]}")),
        rule_file(
            rule_yaml(httpserver.url_for("/down"), name="again", retry="{every: 10ms, retries: 5}")
        ),
        rule_file(rule_yaml(httpserver.url_for("/down"), name="done", retry="{schedule: [10ms]}")),
    ]
    rule_args = [arg for path in rules for arg in ("-r", path)]
    assert cli("fire", *rule_args, event_file(event(7))).exit_code == 0

    wait_until_due(db_file)
    result = cli("retry-loop", "--json")
    assert result.exit_code == 1  # `done` failed for good
    records = {r["rule"]: r for r in ndjson(result.stdout)}
    assert {rule: r["status"] for rule, r in records.items()} == {
        "ok": "succeeded",
        "again": "pending",
        "done": "failed",
    }
    for r in records.values():
        assert r["attempts"] == 2 and r["ticket"] == "7" and r["event_id"] == "evt_7"
        assert r["id"].startswith("msg_") and r["url"].startswith("http://")
    assert records["again"]["next_attempt_at"] and records["again"]["status_code"] == 500
    assert "sent 3: 1 succeeded, 1 rescheduled, 1 failed" in result.stderr


def test_one_pass_sends_each_due_delivery_once(cli, rule_file, event_file, db_file):
    # A pass that outlasts a short schedule must not pick up what it has just rescheduled.
    receiver = Receiver().start()
    try:
        receiver.status, receiver.delay = 500, 0.15
        rules = rule_file(
            rule_yaml(receiver.url, retry="{every: 10ms, retries: 20}", extra=NO_BREAKER)
        )
        assert cli("fire", "-r", rules, event_file(events_ndjson(4))).exit_code == 0
        wait_until_due(db_file)
        result = cli("retry-loop", "--concurrency", "1")
        assert result.exit_code == 0, result.stderr
    finally:
        receiver.stop()
    assert "sent 4: 0 succeeded, 4 rescheduled, 0 failed" in result.stderr
    assert {d["attempts"] for d in deliveries(db_file)} == {2}
    assert set(receiver.ids().values()) == {2}


def stopped_while_retrying(
    cli, rule_file, event_file, db_file, count: int, *args: str
) -> tuple[subprocess.Popen[str], str, str, int]:
    """`count` deliveries failed once; a retry-loop (args) at a 1 s receiver, SIGTERMed as the
    first retry arrives. Returns the process, its stdout and stderr, and the retries sent."""
    receiver = Receiver().start()
    try:
        receiver.status = 503
        rules = rule_file(rule_yaml(receiver.url, retry="{schedule: [10ms]}", extra=NO_BREAKER))
        assert cli("fire", "-r", rules, event_file(events_ndjson(count))).exit_code == 0
        receiver.status, receiver.delay = 200, 1.0
        wait_until_due(db_file)
        loop = hookctl("retry-loop", "--json", *args)
        wait_for(lambda: receiver.arrived() > count or loop.poll() is not None, what="a retry")
        loop.send_signal(signal.SIGTERM)
        out, err = loop.communicate(timeout=30)
        return loop, out, err, receiver.arrived() - count
    finally:
        receiver.stop()


def test_sigterm_finishes_the_attempt_in_flight(cli, rule_file, event_file, db_file):
    loop, out, err, _ = stopped_while_retrying(
        cli, rule_file, event_file, db_file, 1, "--every", "200ms"
    )
    assert loop.returncode == 0, err
    (report,) = ndjson(out)
    assert report["status"] == "succeeded" and report["attempts"] == 2
    (row,) = deliveries(db_file)
    assert row["status"] == "succeeded" and row["lease_expires_at"] is None
    assert [a["status_code"] for a in attempts(db_file)] == [503, 200]
    assert "sent 1: 1 succeeded, 0 rescheduled, 0 failed" in err


def test_sigterm_hands_back_claims_not_yet_started(cli, rule_file, event_file, db_file):
    # A slow host with a per-host limit of 1: most claims wait behind it. Stopping must not
    # send them all first (systemd would kill the process meanwhile), but give them back.
    loop, out, err, sent = stopped_while_retrying(
        cli, rule_file, event_file, db_file, 12, "--per-host", "1", "--concurrency", "4"
    )
    assert loop.returncode == 0, err
    # The attempt in flight, and at most one more already under way: not all 12.
    assert 1 <= sent <= 2
    rows = deliveries(db_file)
    assert sum(r["status"] == "succeeded" for r in rows) == sent == len(ndjson(out))
    waiting = [r for r in rows if r["status"] == "pending"]
    assert len(waiting) == 12 - sent
    assert all(r["attempts"] == 1 and r["lease_expires_at"] is None for r in waiting)
    assert f"{12 - sent} claimed but not yet sent, handed back" in err


def test_retry_loop_does_not_need_rules(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file
):
    httpserver.expect_ordered_request("/hook").respond_with_data("no", status=500)
    httpserver.expect_ordered_request("/hook").respond_with_data("yes")
    rules = rule_file(rule_yaml(httpserver.url_for("/hook"), retry="{schedule: [10ms]}"))
    assert cli("fire", "-r", rules, event_file(event(1))).exit_code == 0
    rules.unlink()  # the stored request is complete
    wait_until_due(db_file)
    result = cli("retry-loop", "--json")
    assert result.exit_code == 0, result.stderr
    assert ndjson(result.stdout)[0]["status"] == "succeeded"
    assert json.loads(httpserver.log[1][0].data) == event(1)


def test_claims_waiting_or_in_flight_keep_their_lease(cli, rule_file, event_file, db_file):
    # Leases shorter than the work: a claim waiting for a free slot, or an attempt still in
    # flight, must not be taken again (here, by the same process) while its holder is alive.
    receiver = Receiver().start()
    try:
        receiver.status = 500
        rules = rule_file(rule_yaml(receiver.url, retry="{schedule: [10ms]}"))
        assert cli("fire", "-r", rules, event_file(events_ndjson(3))).exit_code == 0
        receiver.status, receiver.delay = 200, 0.6
        wait_until_due(db_file)
        result = cli("retry-loop", "--concurrency", "1", "--lease", "500ms")
        assert result.exit_code == 0, result.stderr
    finally:
        receiver.stop()
    assert "sent 3: 3 succeeded, 0 rescheduled, 0 failed" in result.stderr
    assert set(receiver.ids().values()) == {2}  # the 500, then exactly one 200
    assert {(d["attempts"], d["status"]) for d in deliveries(db_file)} == {(2, "succeeded")}


def test_every_keeps_polling_and_a_stopped_service_exits_zero(
    cli, rule_file, event_file, free_port, db_file
):
    rules = rule_file(
        rule_yaml(f"http://127.0.0.1:{free_port}/hook", retry="{every: 100ms, retries: 2}")
    )
    assert cli("fire", "-r", rules, event_file(event(1))).exit_code == 0
    loop = hookctl("retry-loop", "--every", "50ms", "--json")
    wait_for(
        lambda: [d["status"] for d in deliveries(db_file)] == ["failed"] or loop.poll() is not None,
        what="the retries to run out",
    )
    loop.send_signal(signal.SIGINT)
    out, err = loop.communicate(timeout=30)
    assert loop.returncode == 0, err  # failures are in the log; stopping is not an error
    assert [r["status"] for r in ndjson(out)] == ["pending", "failed"]  # polled, not one pass
    assert "sent 2: 0 succeeded, 1 rescheduled, 1 failed" in err
    # Issue 12: it says once that it is running, and how to stop it.
    assert err.splitlines()[0] == (
        f"retry-loop: sending due deliveries every 50ms until stopped (Ctrl-C, or kill -TERM "
        f"{loop.pid}); attempts in flight finish first"
    )
    assert err.count("until stopped") == 1


def test_a_pass_without_notices_imports_no_templates_or_yaml(cli, rule_file, event_file, free_port):
    # Start-up counts for a retry-loop run by cron: rendering and rules are fire's business.
    rules = rule_file(rule_yaml(f"http://127.0.0.1:{free_port}/hook", retry="{schedule: [10ms]}"))
    assert cli("fire", "-r", rules, event_file(event(1))).exit_code == 0
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('loaded:', [m for m in ('jinja2', 'yaml') if m in sys.modules]))\n"
        "sys.argv = ['hookctl', 'retry-loop', '--quiet']\n"
        "from hookctl.cli import main\n"
        "main()\n"
    )
    wait_until_due(Path(os.environ["HOOKCTL_DB"]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "failed after 2 attempts" in done.stdout, done.stderr  # it did send
    assert done.stdout.splitlines()[-1] == "loaded: []"


def test_a_quiet_pass_prints_nothing_when_all_goes_well(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file
):
    """Cron mails whatever a job prints: --quiet must print nothing for retries that work."""
    calls = []

    def answer(request: Request) -> Response:
        calls.append(request)
        return Response("down", status=503) if len(calls) == 1 else Response("ok")

    httpserver.expect_request("/hook").respond_with_handler(answer)
    rules = rule_file(rule_yaml(httpserver.url_for("/hook"), retry="{schedule: [1ms]}"))
    assert cli("fire", "--quiet", "-r", rules, event_file(event(1))).stdout == ""
    wait_until_due(db_file)
    quiet = cli("retry-loop", "--quiet")
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")
    assert [d["status"] for d in deliveries(db_file)] == ["succeeded"]
    assert cli("retry-loop", "--quiet").stderr == ""  # nothing due: silent too
