"""The configuration file every command reads (allow_net), and deliveries held by this process's settings.

`fire --allow-net` once queued retries that a `retry-loop` from cron (no flag, no variable)
then failed for good as "refused by the network guard". The allowance now lives in a file
every command reads, the allow-list `fire` used is recorded with each delivery, and a process
that refuses what the delivery was fired allowed to reach holds it (pending, no attempt used).
These tests run hookctl as real processes against a real receiver on 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from tests.conftest import ndjson
from tests.receivers import event, hookctl, rule_yaml

RETRY = "{every: 10ms, retries: 5}"


def run(*args: Any, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """hookctl ARGS as a real process, to the end."""
    process = hookctl(*args, env=env)
    stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def shown(delivery_id: str) -> dict[str, Any]:
    """The delivery as `log ID --json` shows it."""
    result = run("log", delivery_id, "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


@pytest.fixture
def no_allowance(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing in the environment opens loopback: only flags and the config file may."""
    monkeypatch.delenv("HOOKCTL_ALLOW_NET")


@pytest.fixture
def config_file(isolated: Path) -> Path:
    """Where hookctl looks for its configuration in these tests ($HOOKCTL_HOME/config.toml)."""
    path = isolated / "home" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def fire_while_receiver_is_down(rule_file, event_file, port: int, retry: str = RETRY) -> str:  # type: ignore[no-untyped-def]
    """fire --allow-net 127.0.0.1 at a port nobody listens on: the delivery id."""
    rules = rule_file(rule_yaml(f"http://127.0.0.1:{port}/hook", retry=retry))
    fired = run("fire", "--json", "--allow-net", "127.0.0.1", "-r", rules, event_file(event(1)))
    (report,) = ndjson(fired.stdout)
    assert report["error"] == "connection refused", fired.stderr
    assert shown(report["id"])["allow_net"] == ["127.0.0.1"]  # recorded with the delivery
    return str(report["id"])


def receiver_on(port: int) -> HTTPServer:
    server = HTTPServer(host="127.0.0.1", port=port)
    server.expect_request("/hook").respond_with_data("ok")
    server.start()
    return server


def test_retry_loop_reads_the_allowance_from_the_config_file(
    rule_file, event_file, free_port: int, config_file: Path, no_allowance: None
) -> None:
    delivery_id = fire_while_receiver_is_down(rule_file, event_file, free_port)
    server = receiver_on(free_port)
    try:
        time.sleep(0.05)  # the retry is due after 10 ms
        config_file.write_text('allow_net = ["127.0.0.1"]\n')
        retried = run("retry-loop", "--json")
        assert retried.returncode == 0, retried.stderr
        assert [r["status"] for r in ndjson(retried.stdout)] == ["succeeded"]
        assert len(server.log) == 1
        assert shown(delivery_id)["status"] == "succeeded"
    finally:
        server.stop()


def test_without_the_allowance_a_retry_is_held_not_failed(
    rule_file, event_file, free_port: int, config_file: Path, no_allowance: None
) -> None:
    delivery_id = fire_while_receiver_is_down(rule_file, event_file, free_port)
    server = receiver_on(free_port)
    try:
        time.sleep(0.05)
        for _ in range(2):  # held again and again, never failed, no attempt spent
            held = run("retry-loop")
            assert held.returncode == 1  # documented: a held delivery needs attention
            assert "1 held (nothing sent)" in held.stderr
            assert (
                "held: refused by the network guard here: 127.0.0.1 is a loopback address, "
                "which the delivery was fired allowed to reach (allow_net 127.0.0.1)"
            ) in held.stdout
            record = shown(delivery_id)
            assert record["status"] == "pending" and record["attempts"] == 1
            assert record["error"].endswith(  # says how to allow it
                f"allow it for every command in allow_net in {config_file}, "
                "or with --allow-net 127.0.0.1"
            )
        assert not server.log
        config_file.write_text('allow_net = ["127.0.0.0/8"]\n')
        assert run("retry-loop").returncode == 0
        assert shown(delivery_id)["status"] == "succeeded" and len(server.log) == 1
    finally:
        server.stop()


def test_a_refusal_the_delivery_was_never_allowed_still_fails_for_good(
    rule_file, event_file, free_port: int, no_allowance: None
) -> None:
    # fired with no allowance at all: the rule's URL is the problem, not this process.
    rules = rule_file(rule_yaml(f"http://127.0.0.1:{free_port}/hook", retry=RETRY))
    fired = run("fire", "--json", "-r", rules, event_file(event(1)))
    (report,) = ndjson(fired.stdout)
    assert fired.returncode == 1 and report["status"] == "failed"
    assert report["error"].startswith("refused by the network guard")


def test_replay_now_holds_then_sends_with_the_config_file(
    rule_file, event_file, free_port: int, config_file: Path, no_allowance: None
) -> None:
    delivery_id = fire_while_receiver_is_down(rule_file, event_file, free_port, retry="none")
    assert shown(delivery_id)["status"] == "failed"
    server = receiver_on(free_port)
    try:
        held = run("replay", delivery_id, "--now", "--json")
        assert held.returncode == 1
        (report,) = ndjson(held.stdout)
        assert report["status"] == "pending" and report["held"] is True
        assert shown(delivery_id)["attempts"] == 1 and not server.log
        config_file.write_text('allow_net = ["127.0.0.1"]\n')
        sent = run("replay", delivery_id, "--now", "--json")
        assert sent.returncode == 0, sent.stderr
        assert [r["status"] for r in ndjson(sent.stdout)] == ["succeeded"]
        assert len(server.log) == 1
    finally:
        server.stop()


def test_replay_that_renders_again_keeps_the_recorded_allowance(
    rule_file, event_file, httpserver: HTTPServer, no_allowance: None
) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    rule_text = rule_yaml(httpserver.url_for("/hook"), extra="")
    broken = rule_text.replace("url: ", "body: {s: '{{ ticket.subjet }}'}, url: ")
    rules = rule_file(broken, "r.yaml")
    fired = run("fire", "--json", "--allow-net", "127.0.0.1", "-r", rules, event_file(event(1)))
    (report,) = ndjson(fired.stdout)
    assert report["status"] == "failed" and report["error"].startswith("cannot render")
    rule_file(rule_text, "r.yaml")  # the rule fixed
    held = run("replay", report["id"], "--now", "-r", rules)
    assert held.returncode == 1 and "re-rendered from rule r1" in held.stderr
    record = shown(report["id"])
    assert record["status"] == "pending" and record["allow_net"] == ["127.0.0.1"]
    assert "held: refused by the network guard here" in record["error"] and not httpserver.log
    assert run("retry-loop", "--allow-net", "127.0.0.1").returncode == 0
    assert shown(report["id"])["status"] == "succeeded" and len(httpserver.log) == 1


# --- the file itself --------------------------------------------------------------------------


def test_fire_reads_the_config_file(
    cli, rule_file, event_file, httpserver: HTTPServer, config_file: Path, no_allowance: None
) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    config_file.write_text('# intranet receivers\nallow_net = ["127.0.0.1"]\n')
    result = cli(
        "fire", "-r", rule_file(rule_yaml(httpserver.url_for("/hook"))), event_file(event(1))
    )
    assert result.exit_code == 0, result.stderr
    assert len(httpserver.log) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('alow_net = ["127.0.0.1"]\n', "unknown key 'alow_net' (known keys: allow_net)"),
        ('allow_net = "127.0.0.1"\n', "allow_net: expected a list of strings"),
        (
            'allow_net = ["10.0.0.0/33"]\n',
            "allow_net: not a network (CIDR), an address or a host name",
        ),
        ("allow_net = [\n", "not valid TOML: "),
    ],
)
def test_a_bad_config_file_is_a_one_line_error_naming_file_and_key(
    cli, rule_file, event_file, config_file: Path, text: str, message: str
) -> None:
    config_file.write_text(text)
    result = cli("fire", "-r", rule_file(rule_yaml("https://example.com/")), event_file(event(1)))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {config_file}: {message}")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_hookctl_config_names_the_file_and_it_must_exist(
    cli, rule_file, event_file, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere.toml"
    monkeypatch.setenv("HOOKCTL_CONFIG", str(missing))
    result = cli("fire", "-r", rule_file(rule_yaml("https://example.com/")), event_file(event(1)))
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"Error: {missing}: no such configuration file (named by $HOOKCTL_CONFIG)\n"
    )


def test_the_default_config_file_follows_xdg_config_home(
    cli,
    rule_file,
    event_file,
    httpserver: HTTPServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_allowance: None,
) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    monkeypatch.delenv("HOOKCTL_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    (tmp_path / "xdg" / "hookctl").mkdir(parents=True)
    (tmp_path / "xdg" / "hookctl" / "config.toml").write_text('allow_net = ["127.0.0.1"]\n')
    result = cli(
        "fire", "-r", rule_file(rule_yaml(httpserver.url_for("/hook"))), event_file(event(1))
    )
    assert result.exit_code == 0, result.stderr
    assert len(httpserver.log) == 1


def test_an_on_failure_notice_records_the_allowance_too(
    rule_file, event_file, free_port: int, no_allowance: None
) -> None:
    # The notice goes to an intranet alert endpoint that is down when fire runs.
    alert = HTTPServer(host="127.0.0.1", port=0)
    alert.expect_request("/alert").respond_with_data("noted")
    alert.start()
    alert_url = alert.url_for("/alert")
    alert.stop()
    rules = rule_file(
        rule_yaml(f"http://127.0.0.1:{free_port}/hook") + f"on_failure: {{url: '{alert_url}'}}\n"
    )
    fired = run("fire", "--json", "--allow-net", "127.0.0.1", "-r", rules, event_file(event(1)))
    notice = next(r for r in ndjson(fired.stdout) if r["rule"] == "r1:on_failure")
    assert notice["status"] == "failed" and notice["error"] == "connection refused"
    assert shown(notice["id"])["allow_net"] == ["127.0.0.1"]
    alert.start()
    try:
        held = run("replay", notice["id"], "--now")
        assert held.returncode == 1 and shown(notice["id"])["status"] == "pending"
        assert not alert.log
        assert run("replay", notice["id"], "--now", "--allow-net", "127.0.0.1").returncode == 0
        assert shown(notice["id"])["status"] == "succeeded" and len(alert.log) == 1
    finally:
        alert.stop()
