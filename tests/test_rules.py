"""Loading rules: where errors point, what they quote, `when:` groups side by side, public_env,
the rules directory, and `validate --event`."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ndjson

EVENT = {
    "event": "ticket.created",
    "id": "evt_1",
    "ticket": {"id": 4711, "subject": "Printer", "urgency": "Urgent", "tags": ["vip"]},
}


# --- where a `when:` error points ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "line", "field"),
    [
        # The bad operator is on line 7, four lines below `when:`.
        (
            "when:\n  all:\n    - {field: ticket.urgency, op: eq, value: Urgent}\n"
            "    - any:\n        - {field: ticket.tags, op: contains, value: vip}\n"
            "        - field: ticket.status\n          op: equals\n          value: open\n",
            9,
            "when.all[1].any[1].op",
        ),
        ("when:\n  - {field: ticket.id, op: gt}\n", 4, "when[0].value"),
        (
            "when:\n  all:\n    - {field: ticket.id, op: eq, value: 1, note: x}\n",
            5,
            "when.all[0].note",
        ),
        ("when:\n  any: yes\n", 4, "when.any"),
    ],
)
def test_a_when_error_points_at_the_conditions_own_line(cli, rule_file, when, line, field):
    path = rule_file(
        f"name: r\non: [ticket.created]\n{when}webhook: {{url: 'https://a.example/'}}\n"
    )
    result = cli("validate", "-r", path)
    assert result.exit_code == 3
    assert result.stderr.startswith(f"Error: {path}:{line}: rule 'r': {field}: "), result.stderr


# --- all / any / none side by side -----------------------------------------------------------


SIDE_BY_SIDE = """\
name: zendesk-style
on: [ticket.created]
when:
  all:
    - {field: ticket.urgency, op: in, value: [High, Urgent]}
  none:
    - {field: ticket.tags, op: contains, value: spam}
  any:
    - {field: ticket.tags, op: contains, value: vip}
    - {field: ticket.subject, op: contains, value: fire}
webhook: {url: "https://a.example/hook"}
"""


def test_groups_side_by_side_are_accepted_and_combined_with_and(cli, rule_file, event_file):
    rules = rule_file(SIDE_BY_SIDE)
    assert cli("validate", "-r", rules).exit_code == 0
    events = event_file(
        "\n".join(
            json.dumps(e)
            for e in (
                EVENT,  # urgent, vip, no spam: fires
                {**EVENT, "id": "spam", "ticket": {**EVENT["ticket"], "tags": ["vip", "spam"]}},
                {**EVENT, "id": "low", "ticket": {**EVENT["ticket"], "urgency": "Low"}},
                {**EVENT, "id": "plain", "ticket": {**EVENT["ticket"], "tags": []}},
            )
        )
    )
    fired = cli("fire", "--dry-run", "-r", rules, events, "--json")
    assert [(r["event_id"], r["status"]) for r in ndjson(fired.stdout)] == [("evt_1", "dry-run")]

    shown = cli("explain", "-r", rules, event_file(EVENT))
    assert shown.exit_code == 0
    assert "pass  all + none + any (side by side: each must hold):\n" in shown.stdout
    assert "      pass  all:\n" in shown.stdout and "      pass  none:\n" in shown.stdout
    (record,) = ndjson(cli("explain", "-r", rules, event_file(EVENT), "--json").stdout)
    tree = record["conditions"]
    assert tree["group"] == "all" and tree["side_by_side"] is True
    assert [item["group"] for item in tree["items"]] == ["all", "none", "any"]


def test_a_group_mixed_with_a_condition_is_still_an_error(cli, rule_file):
    rules = rule_file(
        "name: r\nwhen:\n  all:\n    - {field: a, op: eq, value: 1}\n  field: b\n"
        "webhook: {url: 'https://a.example/'}\n"
    )
    result = cli("validate", "-r", rules)
    assert result.exit_code == 3
    assert f"{rules}:5: rule 'r': when.field: a group's keys are all, any and none" in result.stderr


# --- what an error may quote -------------------------------------------------------------------


SHADOW = """\
root:$6$kG3x1Zq9$Jd8sPq0vWm3A9bXe2Lr7tYuI1oP4aS5dF6gH7jK8lZ9xC0vB1nM2qW3eR4tY5uI6oP7aS8dF9gH0.:19700:0:99999:7:::
daemon:*:19700:0:99999:7:::
bin:*:19700:0:99999:7:::
sys:*:19700:0:99999:7:::
admin:$y$j9T$abcdefghijklmnop$QRSTUVWXYZabcdefghijklmnopqrstuvwxyz012345:19701:0:99999:7:::
"""


def test_a_rules_path_that_is_a_symlink_to_another_file_never_echoes_its_lines(cli, tmp_path):
    secret = tmp_path / "shadow"
    secret.write_text(SHADOW)
    link = tmp_path / "rules.yaml"
    link.symlink_to(secret)
    result = cli("validate", "-r", link)
    assert result.exit_code == 3
    for line in SHADOW.splitlines():
        hashed = line.split(":")[1]
        assert hashed not in result.stderr or hashed == "*"
        assert line not in result.stderr
    assert "a line starting 'root…' is not a `key: value` of a rule" in result.stderr
    assert "and 2 more lines like these" in result.stderr
    assert len(result.stderr.splitlines()) <= 7


def test_unknown_keys_are_named_but_their_values_never_shown(cli, rule_file):
    rules = rule_file(
        "name: r\nwebhook: {url: 'https://a.example/', tokn: s3cr3t-value}\n"
        "pasword: hunter2-value\n"
    )
    result = cli("validate", "-r", rules)
    assert result.exit_code == 3
    assert "webhook.tokn: unknown key" in result.stderr and "pasword: unknown key" in result.stderr
    assert "s3cr3t-value" not in result.stderr and "hunter2-value" not in result.stderr


def test_yaml_errors_do_not_quote_the_lines_around_them(cli, rule_file):
    rules = rule_file("name: r\nwebhook: {url: 'https://a.example/'}\npassword: [s3cr3t-value\n")
    result = cli("validate", "-r", rules)
    assert result.exit_code == 3 and "invalid YAML" in result.stderr
    assert "s3cr3t-value" not in result.stderr


# --- the rules directory -----------------------------------------------------------------------


def test_an_empty_rules_directory_names_the_path_with_the_no_rules_exit_code(
    cli, tmp_path, event_file
):
    empty = tmp_path / "rules"
    empty.mkdir()
    (empty / "README.txt").write_text("not a rule")
    for command in (["validate"], ["fire", str(event_file(EVENT))], ["rules"]):
        result = cli(*command, "-r", empty)
        assert result.exit_code == 2, (command, result.stderr)  # as with no rules at all
        assert result.stderr == f"Error: {empty}: no rule files (*.yaml, *.yml) in this directory\n"
    assert cli("validate").exit_code == 2  # no rules given: the same code
    missing = cli("validate", "-r", tmp_path / "nope")
    assert missing.exit_code == 2
    assert missing.stderr == f"Error: {tmp_path / 'nope'}: no such rule file or directory\n"


def test_the_default_rules_directory_is_used_when_none_is_given(cli, tmp_path, monkeypatch):
    home = tmp_path / "home"  # HOOKCTL_HOME (conftest): config and data in one place
    assert "or put rule files in " + str(home / "rules") in cli("validate").stderr
    (home / "rules").mkdir(parents=True)
    (home / "rules" / "a.yaml").write_text("name: a\nwebhook: {url: 'https://a.example/'}\n")
    result = cli("validate")
    assert result.exit_code == 0 and result.stdout.startswith("ok  a  (")
    monkeypatch.delenv("HOOKCTL_HOME")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    (tmp_path / "config" / "hookctl" / "rules").mkdir(parents=True)
    (tmp_path / "config" / "hookctl" / "rules" / "b.yaml").write_text(
        "name: b\nwebhook: {url: 'https://a.example/'}\n"
    )
    assert cli("validate").stdout.startswith("ok  b  (")


# --- public_env --------------------------------------------------------------------------------


def test_public_variables_show_their_values_and_secrets_stay_masked(
    cli, rule_file, event_file, httpserver, db_file, monkeypatch
):
    httpserver.expect_request("/tickets").respond_with_data("ok")
    host, port = httpserver.host, str(httpserver.port)
    monkeypatch.setenv("DEMO_HOST", host)
    monkeypatch.setenv("DEMO_PORT", port)
    monkeypatch.setenv("DEMO_TOKEN", "t0ken-value")
    rules = rule_file(
        "name: demo\npublic_env: [DEMO_HOST, DEMO_PORT]\n"
        "webhook:\n  url: 'http://{{ env.DEMO_HOST }}:{{ env.DEMO_PORT }}/tickets'\n"
        "  headers: {X-Port: '{{ env.DEMO_PORT }}'}\n"
        "  auth: {type: bearer, token: '{{ env.DEMO_TOKEN }}'}\n"
        "  body: {port: '{{ env.DEMO_PORT }}', token: '{{ env.DEMO_TOKEN }}'}\n"
    )
    real = f"http://{host}:{port}/tickets"
    fired = cli("fire", "-r", rules, event_file(EVENT))
    assert fired.exit_code == 0, fired.output
    assert f"POST {real}  HTTP 200" in fired.stdout
    ((request, _),) = httpserver.log
    assert request.headers["Authorization"] == "Bearer t0ken-value"
    assert request.get_json() == {"port": port, "token": "t0ken-value"}

    listed = cli("log").stdout
    assert real in listed and "${DEMO_PORT}" not in listed
    detail = cli("log", cli("log", "--json").stdout.split('"id": "')[1].split('"')[0]).stdout
    assert f"POST {real}\n" in detail and f"X-Port: {port}\n" in detail
    assert "Authorization: Bearer ${DEMO_TOKEN}" in detail
    assert f'"port":"{port}"' in detail and '"token":"${DEMO_TOKEN}"' in detail
    assert "t0ken-value" not in fired.output + listed + detail
    assert b"t0ken-value" not in db_file.read_bytes()
    dry = cli("fire", "--dry-run", "-r", rules, event_file(EVENT)).stdout
    assert f"POST {real}\n" in dry and "${DEMO_TOKEN}" in dry


@pytest.mark.parametrize(
    ("public", "where", "message"),
    [
        (
            "[TELEGRAM_TOKEN]",
            "url: 'https://a.example/{{ env.TELEGRAM_TOKEN }}'",
            "looks like a secret",
        ),
        ("[SMS_API_KEY]", "url: 'https://a.example/'", "looks like a secret"),
        (
            "[DESK_USER]",
            "url: 'https://a.example/'\n  auth: {type: basic, username: '{{ env.DESK_USER }}', "
            "password: '{{ env.DESK_PASS }}'}",
            "is used in webhook.auth.username, a credential",
        ),
        (
            "[HMAC]",
            "url: 'https://a.example/'\n  sign: {secret: '{{ env.HMAC }}'}",
            "is used in webhook.sign.secret, a credential",
        ),
        (
            "[KEYS]",
            "url: 'https://a.example/'\n  headers: {Authorization: 'Basic {{ env.KEYS }}'}",
            "is used in webhook.headers.Authorization",
        ),
        ("PORT", "url: 'https://a.example/'", "expected a list of variable names"),
    ],
)
def test_credentials_can_never_be_public(cli, rule_file, public, where, message):
    rules = rule_file(f"name: r\npublic_env: {public}\nwebhook:\n  {where}\n")
    result = cli("validate", "-r", rules)
    assert result.exit_code == 3
    assert f"{rules}:2: rule 'r': public_env: " in result.stderr and message in result.stderr


# --- validate --event --------------------------------------------------------------------------


def test_validate_with_a_sample_event_renders_the_rules_that_match_it(cli, rule_file, event_file):
    typo = rule_file(
        "name: typo\non: [ticket.created]\nwebhook:\n  url: 'https://a.example/'\n"
        "  body: {text: '{{ ticket.subjet }}'}\n"
    )
    rule_file(
        "name: fine\non: [ticket.created]\nwebhook: {url: 'https://a.example/{{ ticket.id }}'}\n"
    )
    rule_file(
        "name: other\non: [ticket.solved]\nwebhook: {url: 'https://a.example/{{ ticket.x }}'}\n"
    )
    sample = event_file(EVENT)
    plain = cli("validate", "-r", typo.parent)
    assert plain.exit_code == 0  # the typo is not knowable without an event
    checked = cli("validate", "-r", typo.parent, "--event", sample)
    assert checked.exit_code == 3
    assert checked.stdout.splitlines() == [
        line for line in plain.stdout.splitlines() if not line.startswith("ok  typo")
    ]
    assert (
        f"Error: {typo}:1: rule 'typo': for {sample}:1: cannot render: webhook.body.text: "
        "ticket has no field 'subjet' (did you mean 'subject'?)\n"
    ) in checked.stderr
    assert "1 request rendered for the sample events, 1 could not be" in checked.stderr
    records = {
        r["name"]: r
        for r in ndjson(cli("validate", "-r", typo.parent, "--event", sample, "--json").stdout)
    }
    assert (
        records["fine"]["rendered_for"] == [f"{sample}:1"]
        and records["other"]["rendered_for"] == []
    )
    assert "ticket has no field 'subjet'" in records["typo"]["render_errors"][0]
