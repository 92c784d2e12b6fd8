"""Rule files and test-case files are read by one YAML reader, with the same refusals."""

from __future__ import annotations

import pytest

RULE = "name: urgent\nwebhook: {url: 'https://example.com/hook'}\n"
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(6)
)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("- rule: urgent\n  fires: true\n  fires: false\n", ":3: invalid YAML: duplicate key 'fires'"),
        ("- rule: urgent\n  event: {}\n  fires: true\n  x: " + BOMB.replace("\n", "\n  "), "invalid YAML: "),
    ],
)  # fmt: skip
def test_case_files_refuse_what_rule_files_refuse(cli, rule_file, tmp_path, content, message):
    rules = rule_file(RULE)
    cases = tmp_path / "cases.yaml"
    cases.write_text(content)
    result = cli("test", "-r", rules, cases)
    assert result.exit_code == 3 and message in result.stderr, result.stderr
    # The same text in a rule file is refused the same way.
    as_rule = rule_file(RULE + content.replace("- rule: urgent\n ", "tests:\n -"))
    checked = cli("validate", "-r", as_rule)
    assert checked.exit_code == 3 and "invalid YAML" in checked.stderr, checked.stderr
