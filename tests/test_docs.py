"""Docs that cannot drift: README vs the CLI, generated reference and completions, examples, CI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from werkzeug import Response

from hookctl.cli import app
from hookctl.rules.conditions import OPERATORS
from hookctl.rules.load import RULE_KEYS, load_rules
from hookctl.rules.policy import PRESETS
from hookctl.rules.webhook import WEBHOOK_KEYS
from tests.conftest import ndjson
from tests.receivers import wait_until_due

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLES = ROOT / "examples"
GEN_DOCS = ROOT / "scripts" / "gen_docs.py"
BIN = Path(sys.executable).parent
# Every secret the example rules read, with a harmless value, for dry runs.
EXAMPLE_ENV = {
    "TELEGRAM_TOKEN": "123:abc",
    "TELEGRAM_CHAT_ID": "42",
    "DESK_HOST": "acme.eddydesk.example",
    "DESK_USER": "api",
    "DESK_PASSWORD": "pw",
    "CRM_HOST": "crm.example.com",
    "CRM_API_KEY": "k",
    "SMS_GATEWAY_HOST": "sms.example.com",
    "SMS_API_KEY": "k",
    "RELAY_HOST": "erp.example.com",
    "PARTNER_MOVIDESK_TOKEN": "t",
    "SURVEY_HOST": "survey.example.com",
    "ALERTS_HOST": "alerts.example.com",
    "DEMO_PORT": "8765",
    "ERP_HOST": "erp.example.com",
    "ERP_WEBHOOK_SECRET": "whsec_w0q5P6HO8hj2s3qh22KTwCjgJMAewSrx",
}


def hand_written_readme() -> str:
    """The README without its generated CLI reference."""
    return re.sub(
        r"<!-- cli-reference:start -->.*<!-- cli-reference:end -->", "", README, flags=re.S
    )


def commands() -> list[str]:
    """Every visible command, as typed: 'fire', 'retry-loop', ..., 'db path'."""
    root = typer.main.get_command(app)
    found = []

    def walk(command, path):  # type: ignore[no-untyped-def]
        if hasattr(command, "list_commands"):
            ctx = typer.Context(command)
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if not sub.hidden:
                    walk(sub, [*path, name])
        else:
            found.append(" ".join(path))

    walk(root, [])
    return found


# --- the README and the CLI --------------------------------------------------------------------


def test_there_are_commands_to_check():
    assert {"fire", "explain", "test", "rules", "stats", "listen", "db path"} <= set(commands())


@pytest.mark.parametrize("command", commands())
def test_readme_mentions_every_command(command):
    assert f"`hookctl {command}" in hand_written_readme(), (
        f"README does not describe `hookctl {command}`"
    )


@pytest.mark.parametrize("command", commands())
def test_every_command_help_has_an_example(cli, command):
    result = cli(*command.split(), "--help", env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Example: hookctl " + command in result.stdout, (
        f"`hookctl {command} --help` has no example"
    )


def test_readme_covers_every_rule_key_operator_and_preset():
    text = hand_written_readme()
    for key in set(RULE_KEYS) - {"webhook"}:  # webhook is its keys, below
        assert f"| `{key}` |" in text, f"rule key {key!r} is not in the README's rule table"
    for key in WEBHOOK_KEYS:
        assert f"`webhook.{key}`" in text, f"webhook key {key!r} is not in the README"
    for op in OPERATORS:
        assert f"`{op}`" in text, f"operator {op!r} is not in the README"
    for preset in PRESETS:
        assert f"`{preset}`" in text, f"retry preset {preset!r} is not in the README"


def test_generated_reference_and_completions_are_fresh():
    done = subprocess.run(
        [sys.executable, str(GEN_DOCS), "--check"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_the_freshness_check_catches_stale_files(tmp_path):
    copy = tmp_path / "repo"
    (copy / "scripts").mkdir(parents=True)
    shutil.copy(GEN_DOCS, copy / "scripts")
    shutil.copy(ROOT / "README.md", copy)
    shutil.copytree(ROOT / "completions", copy / "completions")
    stale = copy / "completions" / "hookctl.fish"
    stale.write_text("# old\n")
    readme = copy / "README.md"
    readme.write_text(readme.read_text().replace("Usage: hookctl fire", "Usage: hookctl fyre"))

    command = [sys.executable, str(copy / "scripts" / "gen_docs.py")]
    check = subprocess.run([*command, "--check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 1
    assert "README.md" in check.stderr and "completions/hookctl.fish" in check.stderr
    assert subprocess.run(command, capture_output=True, timeout=120).returncode == 0
    assert subprocess.run([*command, "--check"], capture_output=True, timeout=120).returncode == 0
    assert stale.read_text() == (ROOT / "completions" / "hookctl.fish").read_text()


def test_readme_test_command_is_the_one_ci_runs():
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands_in_readme = re.findall(r"```sh\n(.*?)\n```", quick_start, flags=re.S)
    test_command = next(c for c in commands_in_readme if "pytest" in c)
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines


def test_readme_explain_example_is_real_output(cli):
    block = re.search(r"```console\n\$ (hookctl explain [^\n]*)\n(.*?)```", README, flags=re.S)
    assert block, "the README's explain example is gone"
    args = block[1].split()[1:]
    os.chdir(ROOT)
    result = cli(*args)
    assert result.stdout == block[2]


# --- completions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("hookctl ex", {"explain"}),
        ("hookctl re", {"retry-loop", "replay"}),
        ("hookctl fire --dr", {"--dry-run"}),
        ("hookctl log --status ", {"pending", "succeeded", "failed"}),
        ("hookctl log --status f", {"failed"}),
        ("hookctl replay -s p", {"pending"}),
    ],
)
def test_bash_completion_script_completes(words, expected):
    script = ROOT / "completions" / "hookctl.bash"
    # A trailing space: completing a new, empty word.
    typed = words.split() + ([""] if words.endswith(" ") else [])
    program = (
        f"source {script}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in typed)}); COMP_CWORD={len(typed) - 1}\n"
        "_hookctl_completion hookctl\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-c", program], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == expected


def test_completion_scripts_say_they_are_generated():
    names = sorted(p.name for p in (ROOT / "completions").iterdir())
    assert names == ["_hookctl", "hookctl.bash", "hookctl.fish"]
    assert (ROOT / "completions" / "_hookctl").read_text().startswith("#compdef hookctl\n")
    assert "completions/_hookctl" in README and "completions/hookctl.fish" in README


# --- examples --------------------------------------------------------------------------------


def test_example_rules_are_valid(cli):
    result = cli("validate", "-r", EXAMPLES / "rules")
    assert result.exit_code == 0, result.stderr
    files = {p.name for p in (EXAMPLES / "rules").glob("*.yaml")}
    assert {
        Path(line.split("(")[1].split(":")[0]).name for line in result.stdout.splitlines()
    } == files


def test_every_example_event_dry_runs_against_every_rule(cli):
    events = sorted(p for p in (EXAMPLES / "events").iterdir() if p.is_file())
    result = cli("fire", "--dry-run", "--json", "-r", EXAMPLES / "rules", *events, env=EXAMPLE_ENV)
    assert result.exit_code == 0, result.output
    reports = ndjson(result.stdout)
    assert reports and all(r["status"] == "dry-run" for r in reports)
    fired = {r["rule"] for r in reports}
    assert fired == {rule.name for rule in load_rules([EXAMPLES / "rules"])}, (
        "some example rule never fires"
    )
    assert "123:abc" not in result.stdout  # secrets stay masked


def test_example_rule_tests_pass(cli):
    result = cli("test", "-r", EXAMPLES / "rules")
    assert result.exit_code == 0, result.stdout
    assert "rules without cases" not in result.stderr


def test_examples_cover_every_format_auth_preset_and_on_failure():
    rules = load_rules([EXAMPLES / "rules"])
    assert {r.webhook.format for r in rules} == {"json", "xml", "form"}
    auth = {(r.webhook.auth or {}).get("type") for r in rules}
    assert {"basic", "api_key", "bearer"} <= auth
    api_keys = [r.webhook.auth for r in rules if (r.webhook.auth or {}).get("type") == "api_key"]
    assert any(a.get("header") for a in api_keys) and any(a.get("query") for a in api_keys)  # type: ignore[union-attr]
    assert {r.retry.name for r in rules} >= {*PRESETS, "custom"}
    assert any(r.on_failure for r in rules)
    assert all(r.tests for r in rules)


def test_quickstart_shows_a_real_delivery(tmp_path, free_port):
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "DEMO_PORT": str(free_port),
        "HOOKCTL_DB": str(tmp_path / "quickstart.db"),
    }
    env.pop("HOOKCTL_ALLOW_NET", None)  # the script must allow its own receiver
    proc = subprocess.Popen(
        ["sh", str(EXAMPLES / "quickstart.sh")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)  # the script and its receiver
            proc.communicate()
    assert proc.returncode == 0, err
    assert "#1 POST /tickets -> 200" in out
    assert "succeeded demo-local ticket 4711" in out
    # The rule lists DEMO_PORT in public_env: the log shows the URL that was used (issue 12).
    assert re.search(rf"succeeded\t1\thttp://127\.0\.0\.1:{free_port}/tickets", out), out


@pytest.mark.parametrize("command", commands())
def test_help_paragraphs_wrap_to_the_terminal_not_to_the_source(cli, command):
    # Typer's rich help keeps a docstring's line breaks; a wide terminal must show each
    # paragraph on one line, not broken where the source line happened to end.
    result = cli(*command.split(), "--help", env={"COLUMNS": "1000"})
    doc = typer.main.get_command(app)
    for name in command.split():
        doc = doc.get_command(typer.Context(doc), name)  # type: ignore[attr-defined]
    assert doc is not None and doc.help
    for paragraph in doc.help.split("\n\n"):
        assert paragraph.replace("\n", " ") in result.stdout


def test_dash_h_is_help_everywhere(cli):
    for path in (["-h"], ["fire", "-h"], ["db", "path", "-h"], ["listen", "-h"]):
        short, long = cli(*path), cli(*[p if p != "-h" else "--help" for p in path])
        assert short.exit_code == 0, (path, short.output)
        assert short.stdout == long.stdout and "Usage: " in short.stdout


# --- the cron recipe -------------------------------------------------------------------------


def cron_block() -> list[str]:
    """The lines of the README's cron recipe."""
    match = re.search(r"```cron\n(.*?)```", README, flags=re.S)
    assert match, "the README has a ```cron block"
    return [line for line in match[1].splitlines() if line.strip()]


def test_the_cron_recipe_works_as_written(tmp_path, rule_file, event_file, httpserver):
    """Each line run as cron runs it: /bin/sh, a bare environment, the variables the block
    sets; with the README's paths pointed at this test's files. A retry goes out, silently."""
    lines = cron_block()
    settings = dict(line.split("=", 1) for line in lines if re.match(r"^[A-Z_]+=", line))
    jobs = [re.split(r"\s+", line, maxsplit=5)[5] for line in lines if line[0] in "*0123456789"]
    assert set(settings) >= {"HOOKCTL_DB", "HOOKCTL_CONFIG"} and len(jobs) == 2
    installed = re.search(r"(/\S+)/hookctl retry-loop", jobs[0])
    assert installed, "the recipe gives hookctl's absolute path"
    db = tmp_path / "var" / "hookctl.db"
    secrets = tmp_path / "secrets.env"
    secrets.write_text("DEMO_TOKEN=t0k3n\n")
    config = tmp_path / "config.toml"
    config.write_text('allow_net = ["127.0.0.1"]\n')  # the recipe's intranet, for the receiver
    swap = {
        settings["HOOKCTL_DB"]: str(db),
        settings["HOOKCTL_CONFIG"]: str(config),
        "/etc/hookctl/secrets.env": str(secrets),
        installed[1]: str(BIN),
    }

    def real(text: str) -> str:
        for old, new in swap.items():
            text = text.replace(old, new)
        return text

    # A delivery waiting for its retry, to the test's receiver on 127.0.0.1.
    busy = [503]
    httpserver.clear()
    httpserver.expect_request("/hook").respond_with_handler(
        lambda request: Response("x", status=busy.pop() if busy else 200)
    )
    rule = rule_file(
        "name: cron\nwebhook:\n  url: '"
        + httpserver.url_for("/hook")
        + "?t={{ env.DEMO_TOKEN }}'\n"
        "retry: {schedule: [1ms]}\n"
    )
    fired = subprocess.run(
        [str(BIN / "hookctl"), "fire", "-q", "-r", str(rule), str(event_file({"id": "e1"}))],
        env={
            **os.environ,
            "HOOKCTL_DB": str(db),
            "DEMO_TOKEN": "t0k3n",
            "HOOKCTL_CONFIG": str(config),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert fired.returncode == 0, fired.stderr
    wait_until_due(db)
    cron_env = {
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
        "SHELL": "/bin/sh",
        "LOGNAME": "cron",
    }
    cron_env.update({k: real(v) for k, v in settings.items()})
    done = subprocess.run(
        ["/bin/sh", "-c", real(jobs[0])], env=cron_env, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")  # nothing for cron to mail
    assert [r.args.get("t") for r, _ in httpserver.log] == ["t0k3n", "t0k3n"]
    stats = subprocess.run(
        ["/bin/sh", "-c", real(jobs[1])], env=cron_env, capture_output=True, text=True, timeout=60
    )
    assert (stats.returncode, stats.stdout, stats.stderr) == (0, "", "")
