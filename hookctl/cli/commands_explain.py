"""`explain`: why each rule fires or not for an event, drawn as a tree."""

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

import typer

from hookctl.cli.app import (
    JsonOption,
    RulesOption,
    app,
    exit_with,
    handle_errors,
    rule_paths,
)
from hookctl.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from hookctl.rules.conditions import Trace
    from hookctl.rules.load import Rule
    from hookctl.ruletest.explain import Explanation

RuleNameOption = Annotated[
    str | None, typer.Option("--rule", help="Only this rule.", show_default=False)
]


@dataclass
class _Node:
    """A line of tree-shaped output: a rich Tree on a terminal, indented text otherwise."""

    text: str
    style: str = ""
    children: list["_Node"] = field(default_factory=list)


def _print_tree(node: _Node) -> None:
    node = _safe_tree(node)
    if not sys.stdout.isatty():
        sys.stdout.write("\n".join(_plain_lines(node, "")) + "\n")
        return
    from rich.console import Console
    from rich.text import Text
    from rich.tree import Tree

    def grow(tree: Tree, children: Iterable[_Node]) -> None:
        for child in children:
            grow(tree.add(Text(child.text, style=child.style)), child.children)

    tree = Tree(Text(node.text, style=node.style))
    grow(tree, node.children)
    Console(highlight=False).print(tree)


def _safe_tree(node: _Node) -> _Node:
    """The tree with event and receiver text made harmless for a terminal."""
    from hookctl.cli.output import safe

    return _Node(
        safe(node.text, multiline=True), node.style, [_safe_tree(c) for c in node.children]
    )


def _plain_lines(node: _Node, indent: str) -> list[str]:
    lines = [indent + line if line else "" for line in node.text.splitlines() or [""]]
    for child in node.children:
        lines.extend(_plain_lines(child, indent + "  "))
    return lines


def _pick(rules: "list[Rule]", name: str | None) -> "list[Rule]":
    if name is None:
        return rules
    chosen = [rule for rule in rules if rule.name == name]
    if not chosen:
        import difflib

        close = difflib.get_close_matches(name, [rule.name for rule in rules], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(f"--rule: no rule named {name!r} is loaded{hint}")
    return chosen


# --- explain -------------------------------------------------------------------------------


@app.command()
@handle_errors
def explain(
    event_file: Annotated[
        str,
        typer.Argument(
            metavar="EVENT_FILE",
            help="Events to explain: a JSON object, an array or NDJSON ('-': stdin).",
        ),
    ],
    rules_paths: RulesOption = None,
    rule: RuleNameOption = None,
    curl: Annotated[
        bool,
        typer.Option(
            "--curl", help='Show each request as a runnable curl command, secrets as "$NAME".'
        ),
    ] = False,
    json_lines: JsonOption = False,
) -> None:
    """Show why each rule fires or not for an event: the on: check, every condition, the request.

    Each condition shows the field, the value found (or absent), the operator, the expected value and whether it passed, with all/any/none groups as a tree. A matched rule shows the exact request it would send, secrets masked; nothing is sent. Exit code 0, or 1 when an event cannot be read or a matched rule cannot render its request.

    Example: hookctl explain -r examples/rules examples/events/ticket-created.json --curl
    """
    from hookctl.events.event import BadEvent
    from hookctl.events.read import read_events
    from hookctl.rules.load import load_rules
    from hookctl.ruletest.explain import explain as explain_event
    from hookctl.ruletest.explain import explanation_dict

    rules = _pick(load_rules(rule_paths(rules_paths)), rule)
    if event_file == "-" and sys.stdin.isatty():
        raise UsageError("no events: give an event file, or pipe events to stdin")
    failed = False
    first = True
    for item in read_events([event_file], sys.stdin.buffer):
        if isinstance(item, BadEvent):
            sys.stderr.write(f"Error: {item}\n")
            failed = True
            continue
        explanations = explain_event(rules, item, os.environ)
        failed = failed or any(e.error for e in explanations)
        if json_lines:
            from hookctl.cli.output import Printer

            printer = Printer(json_lines=True)
            for explanation in explanations:
                printer.json(explanation_dict(explanation, curl=curl))
            continue
        if not first:
            sys.stdout.write("\n")
        first = False
        where = f"{item.source}:{item.line}"
        sys.stdout.write(
            f"event {item.name or '(no event name)'} {item.event_id or '-'}  ({where})\n"
        )
        for explanation in explanations:
            _print_tree(_explain_node(explanation, curl))
    exit_with(ExitCode.FAILED if failed else ExitCode.OK)


def _explain_node(explanation: "Explanation", curl: bool) -> "_Node":
    from hookctl.ruletest.explain import to_curl

    rule = explanation.rule
    if explanation.error:
        verdict, style = "error", "bold red"
    elif explanation.matched:
        verdict, style = "matched", "bold green"
    elif not rule.enabled:
        verdict, style = "disabled", "dim"
    else:
        verdict, style = "no match", "yellow"
    node = _Node(f"{verdict:<9} {rule.name}  ({rule.source}:{rule.line})", style)
    node.children.append(_Node(explanation.on_reason(), "" if explanation.on_passed else "red"))
    if explanation.trace is not None:
        when = _Node("when:")
        when.children.append(_trace_node(explanation.trace))
        node.children.append(when)
    if explanation.error:
        node.children.append(_Node(explanation.error, "red"))
    masked = explanation.masked()
    if explanation.request is not None and masked is not None:
        if curl:
            text = to_curl(explanation.request)
        else:
            lines = [f"{masked.method} {masked.url}", *(f"{k}: {v}" for k, v in masked.headers)]
            if masked.body is not None:
                lines += ["", masked.body]
            text = "\n".join(lines)
        node.children.append(_Node("request:", children=[_Node(text, "cyan")]))
        if explanation.order_key is not None:
            node.children.append(
                _Node(
                    f"order_by: {rule.order_by} -> key {explanation.order_key!r} (sent after "
                    "earlier deliveries of this rule with the same key)"
                )
            )
        if rule.rate is not None:
            from hookctl.store.endpoint import endpoint_of

            node.children.append(
                _Node(
                    f"rate: {rule.rate} to {endpoint_of(masked.url)} (with every other rule's "
                    "deliveries there; the strictest rate named for an endpoint applies)"
                )
            )
        needs = explanation.needs()
        if needs:
            names = ", ".join(name + ("" if ok else " (not set)") for name, ok in needs)
            unset = any(not ok for _, ok in needs)
            node.children.append(
                _Node(
                    f"a real send needs: {names}"
                    + ("; a delivery waits, held, until then" if unset else ""),
                    "yellow" if unset else "",
                )
            )
    if explanation.matched:
        from hookctl.rules.breaker import describe_breaker

        node.children.append(_Node(f"breaker: {describe_breaker(rule.breaker)}", "dim"))
    return node


def _trace_node(step: "Trace") -> "_Node":
    from hookctl.ruletest.explain import trace_label

    verdict = "pass" if step.passed else "FAIL"
    node = _Node(f"{verdict}  {trace_label(step)}", "green" if step.passed else "red")
    node.children = [_trace_node(child) for child in step.children]
    return node
