"""`plan`: what a rule change would do to the traffic the store has kept, before it goes live."""

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hookctl.cli.app import (
    DbOption,
    JsonOption,
    RulesOption,
    app,
    exit_with,
    handle_errors,
    open_store,
    rule_paths,
    window_start,
)
from hookctl.errors import ExitCode, HookctlError, StoreError, UsageError

if TYPE_CHECKING:
    from hookctl.ruletest.plan import Plan
    from hookctl.store import Store

PLAN_COLUMNS = [
    ("rule", "Rule"),
    ("status", "Status"),
    ("added", "Added"),
    ("removed", "Removed"),
    ("changed", "Changed"),
    ("unchanged", "Unchanged"),
]


class PlanError(HookctlError):
    """A plan that could not be made: exit 1, as terraform's errors (2 means differences)."""


@app.command()
@handle_errors
def plan(
    rules_paths: RulesOption = None,
    since: Annotated[
        str,
        typer.Option("--since", help="Replay the events stored in this window, e.g. 7d or 12h."),
    ] = "7d",
    rule: Annotated[
        str | None,
        typer.Option(
            "--rule", help="Only this rule (its new or its old name).", show_default=False
        ),
    ] = None,
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            metavar="RULES_OR_GIT_REV",
            help="Compare with this rule set (a file, a directory, or a git revision such as "
            "HEAD~1 or main) instead of the deliveries on record.",
            show_default=False,
        ),
    ] = None,
    examples: Annotated[
        int, typer.Option("--examples", min=0, max=100, help="Examples of each kind per rule.")
    ] = 3,
    db: DbOption = None,
    json_lines: JsonOption = False,
) -> None:
    """Show what new rules would send differently, over the events the store kept: nothing is sent.

    Each stored event of the window goes through the new rules (--rules) and is compared with what the deliveries on record show was sent for it (or with another rule set, --against): per rule, how many deliveries would be added, removed, changed (same rule and event, another method, URL, headers or body: a diff shows how, secrets masked) or unchanged, with examples to run `explain` on. No secret is needed or shown.

    Exit codes (as terraform plan -detailed-exitcode): 0 no difference, 2 differences, 1 error, 3 invalid rules.

    Example: hookctl plan -r rules/ --since 7d
    """
    from hookctl.rules.load import load_rules
    from hookctl.ruletest.plan import make_plan

    try:
        paths = rule_paths(rules_paths)
        start = window_start(since)
    except UsageError as exc:
        raise PlanError(str(exc)) from None
    new_rules = load_rules(paths)
    with tempfile.TemporaryDirectory(prefix="hookctl-plan-") as scratch:
        old_rules = None
        against_name = "record"
        if against is not None:
            against_name = against
            if Path(against).exists():
                old_rules = load_rules([Path(against)])
            else:
                from hookctl.ruletest.revision import RevisionError, rules_at_revision

                try:
                    at = rules_at_revision(against, paths, Path(scratch))
                except RevisionError as exc:
                    raise PlanError(
                        f"--against {against}: not a rules file or directory, nor a git "
                        f"revision holding {', '.join(map(str, paths))} ({exc})"
                    ) from None
                if not at:
                    raise PlanError(f"--against {against}: no rule files there at that revision")
                old_rules = load_rules(at)
        try:
            store = open_store(db)
        except (UsageError, StoreError) as exc:
            raise PlanError(str(exc)) from None
        try:
            if rule is not None:
                known = {r.name for r in new_rules} | {r.name for r in old_rules or ()}
                _check_rule(rule, known, store if old_rules is None else None, start)
            result = make_plan(
                lambda: store.stored_events(since=start),
                new_rules,
                environ=os.environ,
                recorded=store.recorded_requests if old_rules is None else None,
                recorded_rules=(
                    (lambda: store.stored_event_rules(since=start)) if old_rules is None else None
                ),
                against=old_rules,
                against_name=against_name,
                only_rule=rule,
                examples=examples,
            )
        finally:
            store.close()
    if json_lines:
        from hookctl.cli.output import Printer

        printer = Printer(json_lines=True)
        for record in plan_records(result):
            printer.json(record)
    else:
        _print_plan(result, since)
    exit_with(ExitCode.DIFFERENCES if result.differs else ExitCode.OK)


def plan_records(plan: "Plan") -> Iterator[dict[str, Any]]:
    """The plan as `--json` prints it: a record per rule, one per example, then a summary."""
    for r in plan.rules:
        yield {
            "record": "rule",
            "rule": r.rule,
            "status": r.status,
            "renamed_from": r.renamed_from,
            "source": r.source,
            **r.counts,
            "differs": r.differs,
        }
        for e in r.examples:
            yield {
                "record": "example",
                "rule": e.rule,
                "kind": e.kind,
                "event": e.event,
                "event_id": e.event_id,
                "ticket": e.ticket,
                "source": f"{e.source}:{e.line}" if e.line else e.source,
                "delivery_id": e.delivery_id,
                "diff": e.diff,
                "error": e.error,
            }
    yield {
        "record": "summary",
        "against": plan.against,
        "events": plan.events,
        "duplicates": plan.duplicates,
        "truncated": plan.truncated,
        "render_errors": plan.errors,
        **plan.totals(),
        "differs": plan.differs,
    }


def _check_rule(name: str, known: set[str], store: "Store | None", start: float | None) -> None:
    """--rule must name a rule of either side (on record: any rule with a delivery)."""
    if name in known:
        return
    if store is not None and name in store.stored_event_rules(since=start):
        return
    import difflib

    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise PlanError(f"--rule: no rule named {name!r} in either rule set or on record{hint}")


def _print_plan(result: "Plan", since: str) -> None:
    """The summary table, then the examples (diffs coloured on a terminal), then one line."""
    from hookctl.cli.output import plural, safe, use_color
    from hookctl.cli.tables import rows_table

    color = use_color(sys.stdout)
    tty = sys.stdout.isatty()
    out = sys.stdout

    def paint(text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if color else text

    def status(r: object) -> str:
        from hookctl.ruletest.plan import RulePlan

        assert isinstance(r, RulePlan)
        if r.status == "renamed":
            return f"renamed from {r.renamed_from}"
        return {"kept": "", "new": "new", "deleted": "deleted"}[r.status]

    rows = [{"rule": r.rule, "status": status(r), **r.counts} for r in result.rules]
    if rows:
        rows_table(rows, PLAN_COLUMNS, color=tty, whole=("rule",))
    for r in result.rules:
        if not r.examples or not r.differs:
            continue
        out.write(f"\n{paint(safe(r.rule), '1')}  ({r.source or 'on record only'})\n")
        for e in r.examples:
            if e.kind == "unchanged":
                continue
            code = {"added": "32", "removed": "31", "changed": "33"}[e.kind]
            where = f"{e.source}:{e.line}" if e.line else e.source
            ticket = safe(str(e.ticket)) if e.ticket is not None else "-"
            line = f"  {paint(f'{e.kind:<8}', code)} {e.event}  event {safe(e.event_id or '-')}  ticket {ticket}  ({safe(where)})"
            if e.delivery_id:
                line += f"  was {e.delivery_id}"
            out.write(line + "\n")
            if e.error:
                out.write(f"    {paint(safe(e.error), '31')}\n")
            if e.diff:
                for text in e.diff.splitlines():
                    shade = "32" if text.startswith("+") else "31" if text.startswith("-") else "2"
                    out.write("    " + paint(safe(text), shade) + "\n")
    totals = result.totals()
    against = (
        "the deliveries on record"
        if result.against == "record"
        else f"the rules at {result.against}"
    )
    extra = (
        [f"{plural(result.duplicates, 'duplicate copy', 'duplicate copies')} counted once"]
        if result.duplicates
        else []
    )
    if result.truncated:
        extra.append(f"{plural(result.truncated, 'event')} stored truncated, not replayed")
    if result.errors:
        extra.append(f"{plural(result.errors, 'request')} the new rules cannot render")
    notes = f" ({'; '.join(extra)})" if extra else ""
    verdict = "differences" if result.differs else "no difference"
    out.write(
        f"\nplan over {plural(result.events, 'event')} stored in the last {since}, against {against}{notes}: "
        f"{totals['added']} added, {totals['removed']} removed, {totals['changed']} changed, "
        f"{totals['unchanged']} unchanged: {verdict}\n"
    )
