"""`hookctl test`: cases kept with rules, run like a test runner, with diffs and located errors."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ndjson

RULE = """
name: urgent
on: [ticket.created]
when:
  - {field: ticket.urgency, op: eq, value: Urgent}
webhook:
  url: "https://hooks.example.com/t/{{ ticket.id }}?token={{ env.HOOK_TOKEN }}"
  headers: {X-Source: hookctl}
  body:
    id: "{{ ticket.id }}"
    text: "Ticket {{ ticket.id }}\\n{{ ticket.subject }}"
    tags: "{{ ticket.tags }}"
"""
URGENT = {
    "event": "ticket.created",
    "id": "e1",
    "ticket": {"id": 7, "urgency": "Urgent", "subject": "Fire", "tags": ["a", "b"]},
}


def rule_with_tests(rule_file, tests: str, rule: str = RULE, name: str = "urgent.yaml") -> Path:  # type: ignore[no-untyped-def]
    return rule_file(
        textwrap.dedent(rule).lstrip()
        + "tests:\n"
        + textwrap.indent(textwrap.dedent(tests).strip(), "  ")
        + "\n",
        name,
    )


def test_passing_cases_with_event_files_and_inline_events(cli, rule_file, tmp_path):
    (tmp_path / "rules" / "events").mkdir(parents=True)
    (tmp_path / "rules" / "events" / "urgent.json").write_text(json.dumps(URGENT))
    rules = rule_with_tests(
        rule_file,
        """
        - name: urgent fires
          event: events/urgent.json
          fires: true
          method: POST
          url: "https://hooks.example.com/t/7?token=${HOOK_TOKEN}"
          headers: {x-source: hookctl, Content-Type: application/json, Authorization: null}
          body: {id: 7, tags: [a, b], text: "Ticket 7\\nFire"}
        - name: low stays quiet
          event: {event: ticket.created, ticket: {id: 8, urgency: Low}}
          fires: false
        """,
    )
    result = cli("test", "-r", rules)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"PASS  urgent: urgent fires  ({rules}:13)",
        f"PASS  urgent: low stays quiet  ({rules}:20)",
    ]
    assert result.stderr == "2 passed, 0 failed\n"


def test_mismatches_fail_with_a_diff(cli, rule_file):
    rules = rule_with_tests(
        rule_file,
        """
        - name: wrong everything
          event: {event: ticket.created, ticket: {id: 7, urgency: Urgent, subject: Fire, tags: [a]}}
          fires: true
          url: "https://hooks.example.com/t/8?token=${HOOK_TOKEN}"
          headers: {X-Source: other, X-Missing: yes}
          body: {id: "7", text: "Ticket 7\\nSmoke", tags: [a, b], extra: 1}
        """,
    )
    result = cli("test", "-r", rules)
    assert result.exit_code == 1
    out = result.stdout
    assert out.startswith(f"FAIL  urgent: wrong everything  ({rules}:13)\n")
    assert (
        '      url:\n        - expected "https://hooks.example.com/t/8?token=${HOOK_TOKEN}"\n        + got      "https://hooks.example.com/t/7?token=${HOOK_TOKEN}"'
        in out
    )
    assert (
        '      headers.X-Source:\n        - expected "other"\n        + got      "hookctl"' in out
    )
    assert (
        '      headers.X-Missing:\n        - expected "yes"\n        + got      absent' not in out
    )  # yes is YAML true
    assert "headers.X-Missing" in out
    assert '      body.id:\n        - expected "7"\n        + got      7' in out  # JSON keeps types
    assert "        -Smoke\n        +Fire" in out  # multi-line text gets a unified diff
    assert '      body.tags:\n        - expected ["a", "b"]\n        + got      ["a"]' in out
    assert "      body.extra: missing (expected 1)" in out
    assert result.stderr == "0 passed, 1 failed\n"


def test_firing_mismatch_shows_the_trace(cli, rule_file):
    rules = rule_with_tests(
        rule_file,
        """
        - event: {event: ticket.created, ticket: {id: 1, urgency: Low}}
          fires: true
        - event: {event: ticket.updated, ticket: {id: 1, urgency: Urgent}}
          fires: true
        - event: {event: ticket.created, ticket: {id: 1, urgency: Urgent}}
          fires: false
        """,
    )
    result = cli("test", "-r", rules)
    assert result.exit_code == 1
    blocks = result.stdout.split("FAIL  urgent: ")[1:]
    assert blocks[0].splitlines()[1:] == [
        "      expected the rule to fire; it did not:",
        "        on: 'ticket.created' matches [ticket.created]",
        "        FAIL  all:",
        '          FAIL  ticket.urgency eq "Urgent" (actual "Low")',
    ]
    assert "on: 'ticket.updated' does not match [ticket.created]" in blocks[1]
    assert "expected the rule not to fire; it did:" in blocks[2]
    assert blocks[0].startswith("tests[0]")


def test_secrets_render_as_placeholders_and_never_leak(cli, rule_file):
    rules = rule_with_tests(
        rule_file,
        """
        - event: {event: ticket.created, ticket: {id: 7, urgency: Urgent, subject: x, tags: []}}
          fires: true
          url: "https://hooks.example.com/t/7?token=WRONG"
        """,
    )
    result = cli("test", "-r", rules, "--json", env={"HOOK_TOKEN": "r3al-s3cret"})
    assert result.exit_code == 1
    (record,) = ndjson(result.stdout)
    assert record["request"]["url"] == "https://hooks.example.com/t/7?token=${HOOK_TOKEN}"
    assert "r3al-s3cret" not in result.stdout + result.stderr


def test_xml_and_form_bodies_compare_as_text(cli, rule_file):
    xml_rule = """
    name: crm
    webhook:
      url: "https://crm.example.com/cases"
      format: xml
      xml_root: case
      body: {id: "{{ ticket.id }}", open: true, tags: "{{ ticket.tags }}", who: {name: "{{ ticket.name }}"}}
    """
    form_rule = """
    name: sms
    webhook:
      url: "https://sms.example.com/send"
      format: form
      body: {id: "{{ ticket.id }}", to: ["+1", "+2"], meta: {name: "{{ ticket.name }}"}}
    """
    event = "{ticket: {id: 7, tags: [a, '<b>'], name: 'A & B'}}"
    rule_with_tests(
        rule_file,
        f"""
        - event: {event}
          fires: true
          body: {{id: 7, open: true, tags: [a, "<b>"], who: {{name: "A & B"}}}}
        - name: wrong
          event: {event}
          fires: true
          body: {{id: 8, tags: [a]}}
        """,
        xml_rule,
        "crm.yaml",
    )
    rules = rule_with_tests(
        rule_file,
        f"""
        - event: {event}
          fires: true
          body: {{id: 7, to: ["+1", "+2"], meta: {{name: "A & B"}}}}
        - name: wrong
          event: {event}
          fires: true
          body: {{to: "+1", "meta[name]": B}}
        """,
        form_rule,
        "sms.yaml",
    )
    result = cli("test", "-r", rules.parent, "--json")
    by_case = {(r["rule"], r["case"]): r for r in ndjson(result.stdout)}
    assert by_case[("crm", "tests[0]")]["passed"], by_case[("crm", "tests[0]")]
    assert by_case[("sms", "tests[0]")]["passed"], by_case[("sms", "tests[0]")]
    crm_problems = by_case[("crm", "wrong")]["problems"]
    assert crm_problems[0] == 'body.id:\n  - expected 8\n  + got      "7"'
    assert crm_problems[1].startswith("body.tags:")
    sms_problems = by_case[("sms", "wrong")]["problems"]
    assert sms_problems == [
        'body.to:\n  - expected ["+1"]\n  + got      ["+1", "+2"]',
        'body.meta[name]:\n  - expected "B"\n  + got      "A & B"',
    ]
    assert result.exit_code == 1


def test_a_string_body_is_compared_whole(cli, rule_file):
    rule = """
    name: raw
    webhook: {url: "https://a.example/x", body: "id={{ ticket.id }}"}
    """
    rules = rule_with_tests(
        rule_file,
        """
        - {event: {ticket: {id: 1}}, fires: true, body: "id=1"}
        - {event: {ticket: {id: 2}}, fires: true, body: "id=1"}
        """,
        rule,
        "raw.yaml",
    )
    result = cli("test", "-r", rules, "--json")
    first, second = ndjson(result.stdout)
    assert first["passed"] and not second["passed"]
    assert second["problems"] == ['body:\n  - expected "id=1"\n  + got      "id=2"']


def test_disabled_rules_and_render_errors_fail_cases_that_expect_a_request(cli, rule_file):
    rule_with_tests(
        rule_file,
        "- {event: {event: ticket.created, ticket: {urgency: Urgent}}, fires: true}",
        RULE.replace("name: urgent", "name: switched-off\nenabled: false"),
        "switched-off.yaml",
    )
    rules = rule_with_tests(
        rule_file,
        "- {event: {event: ticket.created, ticket: {urgency: Urgent}}, fires: true}",
        RULE.replace("name: urgent", "name: broken"),
        "broken.yaml",
    )
    result = cli("test", "-r", rules.parent)
    assert result.exit_code == 1
    assert "the rule is disabled (enabled: false)" in result.stdout
    assert "cannot render: webhook.url:" in result.stdout
    assert "ticket has no field 'id'" in result.stdout


def test_cases_in_a_tests_directory_and_on_the_command_line(cli, rule_file, tmp_path):
    rules = rule_file(RULE, "urgent.yaml")
    tests_dir = rules.parent / "tests"
    tests_dir.mkdir()
    (tests_dir / "more.yaml").write_text(
        "- rule: urgent\n  name: from tests/\n  event: ../../urgent.json\n  fires: true\n"
    )
    (tmp_path / "urgent.json").write_text(json.dumps(URGENT))
    extra = tmp_path / "extra.yaml"
    extra.write_text(
        "- {rule: urgent, name: from an argument, event: {ticket: {}}, fires: false}\n"
    )

    result = cli("test", "-r", rules.parent, extra)
    assert result.exit_code == 0, result.output
    assert [line.split("  ")[1] for line in result.stdout.splitlines()] == [
        "urgent: from tests/",
        "urgent: from an argument",
    ]
    # A single rule file does not pull in the directory's tests/.
    result = cli("test", "-r", rules, extra)
    assert [line.split("  ")[1] for line in result.stdout.splitlines()] == [
        "urgent: from an argument"
    ]


def test_rule_option_and_rules_without_cases(cli, rule_file):
    rule_with_tests(
        rule_file,
        "- {event: {ticket: {}}, fires: false}",
        RULE.replace("name: urgent", "name: one"),
        "one.yaml",
    )
    rules = rule_file(RULE.replace("name: urgent", "name: two"), "two.yaml")
    result = cli("test", "-r", rules.parent)
    assert result.exit_code == 0
    assert result.stderr == "1 passed, 0 failed; rules without cases: two\n"

    result = cli("test", "-r", rules.parent, "--rule", "two")
    assert result.exit_code == 1
    assert "no test cases found" in result.stderr

    result = cli("test", "-r", rules.parent, "--rule", "tow")
    assert result.exit_code == 2 and "did you mean 'two'" in result.stderr


def test_malformed_cases_are_errors_with_locations(cli, rule_file, tmp_path):
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "two.json").write_text('{"a": 1}\n{"b": 2}\n')
    rules = rule_with_tests(
        rule_file,
        """
        - evnt: {ticket: {}}
          fires: true
        - event: {ticket: {}}
          fires: maybe
        - event: {ticket: {}}
          fires: false
          url: "https://x"
        - event: missing.json
          fires: true
        - event: two.json
          fires: true
        - just text
        """,
    )
    tests_dir = rules.parent / "tests"
    tests_dir.mkdir()
    (tests_dir / "cases.yaml").write_text(
        "- {rule: urgnt, event: {}, fires: true}\n- {event: {}, fires: true}\n"
    )

    result = cli("test", "-r", rules.parent)
    assert result.exit_code == 3
    errors = result.stderr
    assert (
        f"{rules}:13: rule 'urgent': tests[0].evnt: unknown key (did you mean 'event'?)" in errors
    )
    assert (
        f"{rules}:16: rule 'urgent': tests[1].fires: required: true or false, got \"maybe\""
        in errors
    )
    assert (
        f"{rules}:19: rule 'urgent': tests[2].url: expectations about the request need fires: true"
        in errors
    )
    assert f"{rules}:20: rule 'urgent': tests[3].event: no event file" in errors
    assert (
        f"{rules}:22: rule 'urgent': tests[4].event: " in errors
        and "holds 2 events; a case takes exactly one" in errors
    )
    assert f"{rules}: rule 'urgent': tests[5]: a test case is a mapping" in errors
    assert (
        "cases.yaml:1: tests[0].rule: no rule named 'urgnt' is loaded (did you mean 'urgent'?)"
        in errors
    )
    assert "cases.yaml:2: tests[1].rule: required in a test file" in errors
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{rule: urgent}", "expected a list of test cases"),
        ("- [unclosed", "invalid YAML"),
    ],
)
def test_malformed_case_files(cli, rule_file, tmp_path, content, message):
    rules = rule_file(RULE)
    cases = tmp_path / "cases.yaml"
    cases.write_text(content)
    result = cli("test", "-r", rules, cases)
    assert result.exit_code == 3 and message in result.stderr


def test_inline_yaml_dates_become_iso_strings(cli, rule_file):
    rule = """
    name: due
    when: [{field: ticket.due, op: lt, value: "2026-12-01"}]
    webhook: {url: "https://a.example/x", body: {due: "{{ ticket.due }}"}}
    """
    rules = rule_with_tests(
        rule_file,
        "- {event: {ticket: {due: 2026-11-30}}, fires: true, body: {due: 2026-11-30}}",
        rule,
        "due.yaml",
    )
    result = cli("test", "-r", rules)
    assert result.exit_code == 0, result.output


def test_validate_checks_the_shape_of_test_cases_without_running_them(cli, rule_file, tmp_path):
    rules = rule_file(
        """
        name: r
        on: ticket.created
        webhook: {url: "https://example.com/hook"}
        tests:
          - event: {event: ticket.created}
            fires: true
            url: "https://example.com/other"
          - evnt: {}
            fires: true
        """
    )
    (tmp_path / "rules" / "tests").mkdir()
    (tmp_path / "rules" / "tests" / "more.yaml").write_text("rule: r\n", encoding="utf-8")
    result = cli("validate", "-r", rules.parent)
    assert result.exit_code == 3
    assert (
        f"{rules}:9: rule 'r': tests[1].evnt: unknown key (did you mean 'event'?)" in result.stderr
    )
    assert "more.yaml: expected a list of test cases" in result.stderr
    # Well-formed cases pass validate even when they would fail when run (the URL differs).
    rules.write_text(rules.read_text().replace("- evnt: {}\n    fires: true\n", ""))
    (tmp_path / "rules" / "tests" / "more.yaml").unlink()
    result = cli("validate", "-r", rules.parent)
    assert result.exit_code == 0, result.stderr
    assert "1 rule valid, 1 test case well-formed" in result.stderr
    assert cli("test", "-r", rules.parent).exit_code == 1
