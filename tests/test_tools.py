"""`hookctl rules` and `hookctl stats`, and what output looks like on a terminal: tables, trees,
colour (`--no-color`, NO_COLOR) and the progress bar."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from hookctl.devserver import Behaviour, Receiver
from tests.conftest import ndjson

COLOR = re.compile(r"\x1b\[(?:\d+;)*(?:3[0-8]|9[0-7])(?:;\d+)*m")  # foreground colours
ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
EVENT = {"event": "ticket.created", "id": "evt_1", "ticket": {"id": 7, "urgency": "Urgent"}}


def rule(name: str, url: str, **extra: str) -> str:
    lines = [f"name: {name}", "on: [ticket.created]", f"webhook: {{url: {url!r}}}"]
    lines += [f"{key}: {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


# --- rules ---------------------------------------------------------------------------------


def test_rules_lists_every_rule_tab_separated_when_piped(cli, rule_file):
    first = rule_file(
        rule("alpha", "https://a.example/{{ ticket.id }}", retry="movidesk"), "a.yaml"
    )
    rule_file(
        "name: beta\nenabled: false\nwebhook: {method: PUT, url: 'https://b.example', format: xml}\nretry: {every: 1m, retries: 2}\n",
        "b.yaml",
    )
    result = cli("rules", "-r", first.parent)
    assert result.exit_code == 0, result.stderr
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert lines[0] == ["Name", "Events", "Method", "URL", "Format", "Retry", "Enabled", "Source"]
    assert lines[1] == [
        "alpha",
        "ticket.created",
        "POST",
        "https://a.example/{{ ticket.id }}",
        "json",
        "movidesk: 4 retries every 30s",
        "yes",
        f"{first}:1",
    ]
    assert lines[2][:3] == ["beta", "*", "PUT"]
    assert lines[2][4:7] == ["xml", "custom: 2 retries every 1m", "no"]


def test_rules_json(cli, rule_file):
    path = rule_file(rule("alpha", "https://a.example/x", retry="exponential", timeout="5s"))
    result = cli("rules", "-r", path, "--json")
    (record,) = ndjson(result.stdout)
    assert record["name"] == "alpha" and record["on"] == ["ticket.created"]
    assert record["retry_policy"] == "exponential" and record["retry"].startswith("5s, 5m, 30m")
    assert record["timeout"] == "5s" and record["enabled"] is True
    assert record["source"] == str(path) and record["line"] == 1
    assert record["tests"] == 0 and record["on_failure"] is False


def test_rules_with_invalid_rules_exit_3(cli, rule_file):
    path = rule_file("name: bad\nwebhook: {url: 'https://a.example', format: jsn}\n")
    result = cli("rules", "-r", path)
    assert result.exit_code == 3
    assert "webhook.format: expected json, xml or form, got 'jsn'" in result.stderr


# --- stats ---------------------------------------------------------------------------------


@pytest.fixture
def busy_db(cli, rule_file, event_file, httpserver: HTTPServer) -> Path:
    """Two deliveries each: succeeded (ok), failed for good (broken), pending retry (flaky)."""
    httpserver.expect_request("/ok").respond_with_data("ok")
    httpserver.expect_request("/bad").respond_with_data("no", status=500)
    rule_file(rule("ok", httpserver.url_for("/ok")))
    rule_file(rule("broken", httpserver.url_for("/bad"), retry="none"))
    path = rule_file(rule("flaky", httpserver.url_for("/bad"), retry="movidesk"))
    events = event_file(json.dumps(EVENT) + "\n" + json.dumps({**EVENT, "id": "evt_2"}) + "\n")
    result = cli("fire", "-r", path.parent, events)
    assert result.exit_code == 1  # the broken deliveries failed for good
    return Path(os.environ["HOOKCTL_DB"])


def test_stats_json(cli, busy_db, httpserver: HTTPServer):
    result = cli("stats", "--json")
    assert result.exit_code == 0, result.stderr
    (data,) = ndjson(result.stdout)
    assert data["deliveries"] == 6
    assert data["by_status"] == {"pending": 2, "succeeded": 2, "failed": 2}
    assert data["success_rate"] == 0.5
    assert data["by_rule"]["broken"]["failed"] == 2 and data["by_rule"]["ok"]["succeeded"] == 2
    assert data["attempts"] == 6
    assert all(data["duration_ms"][p] is not None for p in ("p50", "p95", "p99"))
    assert data["failing_urls"][0]["url"] == httpserver.url_for("/bad")
    assert data["failing_urls"][0]["failed"] == 2
    assert {row["url"] for row in data["slowest_urls"]} == {
        httpserver.url_for("/ok"),
        httpserver.url_for("/bad"),
    }
    assert data["window"] == "24h" and data["since"].endswith("Z")


def test_stats_text(cli, busy_db, httpserver: HTTPServer):
    result = cli("stats")
    assert result.exit_code == 0
    out = result.stdout
    assert "deliveries in the last 24h: 6 (2 pending, 2 succeeded, 2 failed)\n" in out
    assert "success rate: 50.0% of finished deliveries\n" in out
    assert re.search(r"attempts: 6; latency p50 \d+ ms, p95 \d+ ms, p99 \d+ ms\n", out)
    assert "\nby rule\nRule\tTotal\tPending\tSucceeded\tFailed\nbroken\t2\t0\t0\t2\n" in out
    assert (
        f"\nmost failing endpoints\nURL\tDeliveries\tFailed\tFailed attempts\n{httpserver.url_for('/bad')}\t4\t2\t4\n"
        in out
    )


def test_stats_max_failed_for_monitoring(cli, busy_db):
    over = cli("stats", "--max-failed", "1")
    assert over.exit_code == 1
    assert over.stderr == "Error: 2 failed deliveries in the last 24h (more than --max-failed 1)\n"
    assert cli("stats", "--max-failed", "2").exit_code == 0


def test_stats_without_a_database(cli, tmp_path):
    result = cli("stats", "--db", tmp_path / "none.db")
    assert result.exit_code == 2 and "no database" in result.stderr


def test_stats_of_an_empty_window(cli, busy_db):
    result = cli("stats", "--since", "0s", "--json")
    (data,) = ndjson(result.stdout)
    assert data["deliveries"] == 0 and data["success_rate"] is None
    assert data["duration_ms"] == {"p50": None, "p95": None, "p99": None}


# --- on a terminal ---------------------------------------------------------------------------


def in_terminal(
    args: list[str], *, env: dict[str, str] | None = None, stdout_file: Path | None = None
) -> str:
    """Run hookctl with stderr (and stdout, unless a file is given) on a 120-column terminal."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    environ = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    environ.update({"TERM": "xterm-256color", **(env or {})})
    out = stdout_file.open("w") if stdout_file else slave
    proc = subprocess.Popen(
        [sys.executable, "-m", "hookctl", *args], stdout=out, stderr=slave, env=environ
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal is gone once the process exits
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    proc.wait(timeout=60)
    if stdout_file:
        out.close()  # type: ignore[union-attr]
    return b"".join(chunks).decode("utf-8", errors="replace")


@pytest.fixture
def example_rule(rule_file) -> Path:  # type: ignore[no-untyped-def]
    return rule_file(
        "name: tree\non: [ticket.created]\nwhen:\n  any:\n    - {field: ticket.urgency, op: eq, value: Urgent}\n"
        "webhook: {url: 'https://a.example/x'}\n"
    )


def test_explain_draws_a_coloured_tree_on_a_terminal(example_rule, event_file):
    screen = in_terminal(["explain", "-r", str(example_rule), str(event_file(EVENT))])
    assert "└── " in screen and "pass  any:" in screen
    assert COLOR.search(screen)


@pytest.mark.parametrize("way", ["flag", "env"])
def test_no_color_flag_and_env(example_rule, event_file, way):
    args = ["explain", "-r", str(example_rule), str(event_file(EVENT))]
    screen = (
        in_terminal(["--no-color", *args])
        if way == "flag"
        else in_terminal(args, env={"NO_COLOR": "1"})
    )
    assert "└── " in screen  # still a tree, only without colour
    assert not COLOR.search(screen)


def test_rules_table_on_a_terminal(example_rule):
    screen = in_terminal(["rules", "-r", str(example_rule)])
    assert "\t" not in screen
    assert re.search(r"Name +Events +Method +URL", ESCAPE.sub("", screen))


@pytest.fixture
def slow_receiver() -> Iterator[Receiver]:
    receiver = Receiver("127.0.0.1", 0, Behaviour(delay=0.04), lambda request: None)
    thread = threading.Thread(target=receiver.serve, daemon=True)
    thread.start()
    yield receiver
    receiver.shutdown()


def fire_many(tmp_path: Path, rule_file, event_file, port: int) -> list[str]:  # type: ignore[no-untyped-def]
    """fire args for 20 events to the slow receiver, one at a time: at least 0.8 s, past PROGRESS_AFTER."""
    path = rule_file(f"name: many\nwebhook: {{url: 'http://127.0.0.1:{port}/x'}}\nretry: none\n")
    events = event_file("".join(json.dumps({"id": n}) + "\n" for n in range(20)))
    return ["fire", "-c", "1", "--per-host", "1", "-r", str(path), str(events)]


def test_progress_bar_on_stderr_when_it_is_a_terminal(
    tmp_path, rule_file, event_file, slow_receiver
):
    args = fire_many(tmp_path, rule_file, event_file, slow_receiver.port)
    stdout = tmp_path / "out.txt"
    screen = in_terminal(args, stdout_file=stdout)
    assert "sending" in screen and "20" in screen
    assert "20 events, 20 deliveries: 20 succeeded" in screen
    lines = stdout.read_text().splitlines()
    assert len(lines) == 20 and all(
        line.startswith("succeeded") for line in lines
    )  # data stays clean


def test_no_progress_bar_when_stderr_is_not_a_terminal(
    tmp_path, rule_file, event_file, slow_receiver
):
    args = fire_many(tmp_path, rule_file, event_file, slow_receiver.port)
    done = subprocess.run(
        [sys.executable, "-m", "hookctl", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "20 events, 20 deliveries: 20 succeeded\n"


def test_no_progress_bar_with_quiet(tmp_path, rule_file, event_file, slow_receiver):
    args = fire_many(tmp_path, rule_file, event_file, slow_receiver.port)
    screen = in_terminal([*args, "--quiet"], stdout_file=tmp_path / "out.txt")
    assert "sending" not in screen
