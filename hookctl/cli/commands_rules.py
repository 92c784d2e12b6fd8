"""`validate`: checking rules before they go live."""

import sys

from hookctl.cli.app import JsonOption, RulesOption, app, handle_errors, rule_paths


@app.command()
@handle_errors
def validate(rules_paths: RulesOption = None, json_lines: JsonOption = False) -> None:
    """Check rule files strictly and list the rules they define.

    Unknown keys, bad operators, methods or formats, duplicate names, template syntax
    errors and likely typos in template variables are reported with file, line, rule and
    field. The test cases kept with the rules (their tests:, and tests/*.yaml in a rules
    directory) are checked too, without running them: `hookctl test` runs them. Exit code 0
    when every rule and case is valid, 3 otherwise.

    Example: hookctl validate -r examples/rules
    """
    from hookctl import ruletest
    from hookctl.output import Printer
    from hookctl.rules import load_rules

    paths = rule_paths(rules_paths)
    rules = load_rules(paths)
    cases = ruletest.collect(rules, ruletest.case_files(paths))
    printer = Printer(json_lines=json_lines)
    for rule in rules:
        if json_lines:
            printer.json(
                {
                    "name": rule.name,
                    "source": rule.source,
                    "line": rule.line,
                    "on": list(rule.on),
                    "method": rule.webhook.method,
                    "url": rule.webhook.url,
                    "format": rule.webhook.format,
                    "retry": rule.retry.describe(),
                    "timeout": rule.timeout,
                    "enabled": rule.enabled,
                }
            )
        else:
            sys.stdout.write(f"ok  {rule.name}  ({rule.source}:{rule.line})\n")
    counted = f"{len(rules)} rule{'s' if len(rules) != 1 else ''} valid"
    if cases:
        counted += f", {len(cases)} test case{'s' if len(cases) != 1 else ''} well-formed"
    sys.stderr.write(counted + "\n")
