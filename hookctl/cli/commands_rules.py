"""`validate`: checking rules before they go live."""

import os
import sys
from typing import Annotated, Any

import typer

from hookctl.cli.app import JsonOption, RulesOption, app, exit_with, handle_errors, rule_paths
from hookctl.errors import ExitCode, UsageError


@app.command()
@handle_errors
def validate(
    rules_paths: RulesOption = None,
    events: Annotated[
        list[str] | None,
        typer.Option(
            "--event",
            metavar="FILE",
            help="Also render each rule that matches the events in FILE (repeatable): a "
            "misspelt field such as {{ ticket.subjet }} shows here, not at the first send.",
            show_default=False,
        ),
    ] = None,
    json_lines: JsonOption = False,
) -> None:
    """Check rule files strictly and list the rules they define.

    Unknown keys, bad operators, methods or formats, duplicate names, template syntax
    errors and likely typos in template variables are reported with file, line, rule and
    field. The test cases kept with the rules (their tests:, and tests/*.yaml in a rules
    directory) are checked too, without running them: `hookctl test` runs them. With
    --event, every rule that matches a sample event renders its request for it, as `fire`
    would (nothing is sent; variables that are not set render as ${NAME}). Exit code 0
    when every rule and case is valid and renders, 3 otherwise.

    Example: hookctl validate -r examples/rules --event examples/events/ticket-created.json
    """
    from hookctl.cli.output import Printer, plural
    from hookctl.rules.load import load_rules
    from hookctl.ruletest import cases as ruletest

    paths = rule_paths(rules_paths)
    rules = load_rules(paths)
    cases = ruletest.collect(rules, ruletest.case_files(paths))
    problems, checked = _render_samples(rules, events or [])
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
                    "rendered_for": checked.get(rule.name, []),
                    "render_errors": [p for name, p in problems if name == rule.name],
                }
            )
        elif not any(name == rule.name for name, _ in problems):
            sys.stdout.write(f"ok  {rule.name}  ({rule.source}:{rule.line})\n")
    for _, problem in problems:
        sys.stderr.write(f"Error: {problem}\n")
    counted = f"{plural(len(rules), 'rule')} valid"
    if cases:
        counted += f", {plural(len(cases), 'test case')} well-formed"
    if events:
        rendered = sum(len(v) for v in checked.values())
        counted += f"; {plural(rendered, 'request')} rendered for the sample events"
        if problems:
            counted += f", {len(problems)} could not be"
    sys.stderr.write(counted + "\n")
    exit_with(ExitCode.INVALID_RULES if problems else ExitCode.OK)


def _render_samples(
    rules: list[Any], files: list[str]
) -> tuple[list[tuple[str, str]], dict[str, list[str]]]:
    """Render every rule matching each sample event: (rule, problem) pairs, and per rule the
    events it rendered for."""
    if not files:
        return [], {}
    from hookctl.events.event import BadEvent
    from hookctl.events.read import read_events
    from hookctl.ruletest.explain import explain_rule

    problems: list[tuple[str, str]] = []
    checked: dict[str, list[str]] = {}
    for item in read_events(files, sys.stdin.buffer):
        if isinstance(item, BadEvent):
            raise UsageError(f"--event: {item}")
        where = f"{item.source}:{item.line}"
        for rule in rules:
            found = explain_rule(rule, item, os.environ)
            if not found.matched:
                continue
            if found.error is not None:
                problems.append(
                    (
                        rule.name,
                        f"{rule.source}:{rule.line}: rule {rule.name!r}: for {where}: {found.error}",
                    )
                )
            else:
                checked.setdefault(rule.name, []).append(where)
    return problems, checked
