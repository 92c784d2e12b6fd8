"""What people see: control characters from events and receivers neutralised, duplicates said
as they are, --quiet silent on success, plurals, the progress bar's rate and ETA."""

from __future__ import annotations

import io
import json
import re

from pytest_httpserver import HTTPServer

from tests.conftest import deliveries, ndjson
from tests.receivers import event, rule_yaml

# An OSC title change (ended by BEL), a clear-screen CSI, a one-byte C1 CSI, DEL, a
# right-to-left override: each makes a terminal do something instead of showing it.
HOSTILE = "A\x1b]0;pwned\x07B\x1b[2J\x1b[31mC\x9b31mD\x7fE\u202eF"
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def hostile_setup(rule_file, event_file, httpserver: HTTPServer):  # type: ignore[no-untyped-def]
    httpserver.expect_request("/hook").respond_with_data(f"echo {HOSTILE}", status=500)
    rules = rule_file(
        f"name: r\non: [ticket.created]\nticket: '{{{{ ticket.ref }}}}'\n"
        f"webhook:\n  url: {httpserver.url_for('/hook')!r}\n"
        "  body: {text: '{{ ticket.subject }}'}\nretry: none\n"
        "when:\n  - {field: ticket.subject, op: exists}\n"
    )
    events = event_file(event(1, ref=f"T-{HOSTILE}", subject=HOSTILE))
    return rules, events


def test_control_characters_from_events_and_receivers_are_shown_not_obeyed(
    cli, rule_file, event_file, httpserver: HTTPServer
):
    rules, events = hostile_setup(rule_file, event_file, httpserver)
    fired = cli("fire", "-r", rules, events)
    assert fired.exit_code == 1
    screens = {
        "fire": fired.stdout,
        "log": cli("log").stdout,
        "log ID": cli("log", deliveries_id(cli)).stdout,
        "dry run": cli("fire", "--dry-run", "-r", rules, events).stdout,
        "explain": cli("explain", "-r", rules, events).stdout,
    }
    for name, text in screens.items():
        assert not RAW.search(text), (name, text)
        assert "\\x1b]0;pwned\\x07" in text or "\\u001b]0;pwned" in text, (name, text)
    assert "echo A\\x1b]0;pwned\\x07B\\x1b[2J" in screens["log ID"]  # the receiver's reply
    assert "\\x9b31mD\\x7fE\\u202eF" in screens["log ID"]


def test_json_output_keeps_control_characters_escaped_by_json(
    cli, rule_file, event_file, httpserver: HTTPServer
):
    rules, events = hostile_setup(rule_file, event_file, httpserver)
    out = cli("fire", "-r", rules, events, "--json").stdout
    assert not RAW.search(out)
    (report,) = ndjson(out)
    assert report["ticket"] == f"T-{HOSTILE}"  # the very text, once parsed
    (record,) = ndjson(cli("log", report["id"], "--json").stdout)
    assert record["attempts_detail"][0]["response_body"] == f"echo {HOSTILE}"
    assert "\\u001b" in out and "\\u009b" in out and "\\u202e" in out


def deliveries_id(cli) -> str:  # type: ignore[no-untyped-def]
    return str(ndjson(cli("log", "--json").stdout)[0]["id"])


def test_listen_shows_control_characters_escaped(tmp_path):
    import subprocess
    import sys

    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "hookctl", "listen", "--port", "0", "--count", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        url = re.search(r"http://127\.0\.0\.1:\d+/", proc.stderr.readline())[0]  # type: ignore[index]
        with httpx.Client(trust_env=False) as http:
            answer = http.post(url + "x", content=HOSTILE.encode())
        assert answer.status_code == 200
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert not RAW.search(out)
    assert "A\\x1b]0;pwned\\x07B\\x1b[2J" in out and "\\x9b31mD" in out


# --- duplicates, --quiet, plurals ----------------------------------------------------------------


def test_a_duplicate_says_what_the_earlier_delivery_really_is(
    cli, rule_file, event_file, httpserver: HTTPServer
):
    httpserver.expect_request("/gone").respond_with_data("gone", status=410)
    httpserver.expect_request("/ok").respond_with_data("ok")
    failing = rule_file(rule_yaml(httpserver.url_for("/gone"), name="failing"))
    fine = rule_file(rule_yaml(httpserver.url_for("/ok"), name="fine"))
    events = event_file(event(1))
    assert cli("fire", "-r", failing, "-r", fine, events).exit_code == 1
    again = cli("fire", "-r", failing, "-r", fine, events)
    lines = {line.split()[1]: line for line in again.stdout.splitlines()}
    failed_id = re.search(r"msg_\w+", lines["failing"])[0]  # type: ignore[index]
    assert (
        f"already recorded: failed ({failed_id}); `hookctl replay {failed_id}` sends it again, "
        "--force makes a new delivery"
    ) in lines["failing"]
    assert "already recorded: succeeded (msg_" in lines["fine"]
    assert "already delivered" not in again.stdout
    assert "1 event, 2 deliveries: 2 duplicates" in again.stderr
    records = {r["rule"]: r for r in ndjson(cli("fire", "-r", failing, events, "--json").stdout)}
    assert records["failing"]["recorded_status"] == "failed"
    single = cli("fire", "-r", fine, events)
    assert "1 event, 1 delivery: 1 duplicate\n" in single.stderr  # not "1 duplicates"


def test_quiet_prints_nothing_on_success_and_only_what_needs_attention(
    cli, rule_file, event_file, httpserver: HTTPServer, db_file
):
    httpserver.expect_request("/ok").respond_with_data("ok")
    httpserver.expect_request("/busy").respond_with_data("busy", status=503)
    ok = rule_file(rule_yaml(httpserver.url_for("/ok"), name="ok"))
    busy = rule_file(rule_yaml(httpserver.url_for("/busy"), name="busy", retry="movidesk"))
    quiet = cli("fire", "--quiet", "-r", ok, event_file(event(1)))
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")
    # A retry that is rescheduled is not news either; a failure for good is.
    rescheduled = cli("fire", "--quiet", "-r", busy, event_file(event(2)))
    assert (rescheduled.stdout, rescheduled.stderr) == ("", "")
    gone = rule_file(rule_yaml(httpserver.url_for("/busy"), name="gone", retry="none"))
    failed = cli("fire", "--quiet", "-r", gone, event_file(event(3)))
    assert failed.exit_code == 1 and failed.stdout.startswith("failed    gone ")
    assert len(failed.stdout.splitlines()) == 1 and failed.stderr == ""
    assert {d["status"] for d in deliveries(db_file)} == {"succeeded", "pending", "failed"}


def test_stats_says_one_failed_delivery(cli, rule_file, event_file, httpserver: HTTPServer):
    httpserver.expect_request("/gone").respond_with_data("gone", status=410)
    cli("fire", "-r", rule_file(rule_yaml(httpserver.url_for("/gone"))), event_file(event(1)))
    result = cli("stats", "--max-failed", "0")
    assert result.exit_code == 1
    assert "Error: 1 failed delivery in the last 24h (more than --max-failed 0)" in result.stderr


# --- the progress bar --------------------------------------------------------------------------


def test_the_progress_bar_shows_the_rate_and_the_time_left():
    from rich.console import Console
    from rich.progress import Progress

    from hookctl.cli.progress import progress_columns

    now = [0.0]
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120, color_system=None)
    with Progress(*progress_columns(400), console=console, get_time=lambda: now[0]) as bar:
        task = bar.add_task("retrying", total=400)
        for _ in range(100):
            now[0] += 0.01
            bar.advance(task)
        bar.refresh()
    text = screen.getvalue()
    assert "100/400" in text and "100/s" in text and re.search(r"eta 0:00:0[34]\b", text)
    # Without a total (fire reads a stream): the rate and the time so far.
    counted = io.StringIO()
    console = Console(file=counted, force_terminal=True, width=120, color_system=None)
    now[0] = 0.0
    with Progress(*progress_columns(None), console=console, get_time=lambda: now[0]) as bar:
        task = bar.add_task("sending", total=None)
        for _ in range(50):
            now[0] += 0.02
            bar.advance(task)
        bar.refresh()
    assert "50/s" in counted.getvalue() and "0:00:01" in counted.getvalue()
    json.dumps(text)  # printable
