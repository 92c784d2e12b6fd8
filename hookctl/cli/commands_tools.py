"""`test`, `rules` and `stats`: trust rules before they go live, then watch them."""

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hookctl.cli.app import (
    DbOption,
    JsonOption,
    QuietOption,
    RulesOption,
    app,
    exit_with,
    handle_errors,
    open_store,
    rule_paths,
    window_start,
)
from hookctl.cli.commands_explain import RuleNameOption, _pick
from hookctl.errors import ExitCode
from hookctl.store.records import STATUSES

if TYPE_CHECKING:
    from hookctl.rules.load import Rule
    from hookctl.ruletest.cases import CaseResult

RULE_KEYS = ("name", "events", "method", "url", "format", "retry", "enabled", "source")
RULE_COLUMNS = [(key, "URL" if key == "url" else key.capitalize()) for key in RULE_KEYS]
BY_RULE = [("rule", "Rule"), ("total", "Total"), *((s, s.capitalize()) for s in STATUSES)]
SLOWEST = [("url", "URL"), ("attempts", "Attempts"), ("avg", "Average"), ("max", "Slowest")]
FAILING = [
    ("url", "URL"),
    ("deliveries", "Deliveries"),
    ("failed", "Failed"),
    ("failed_attempts", "Failed attempts"),
]


# --- test ----------------------------------------------------------------------------------


@app.command("test")
@handle_errors
def test_rules(
    case_files: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="CASE_FILE",
            help="More case files: YAML lists of cases, each naming its rule.",
            show_default=False,
        ),
    ] = None,
    rules_paths: RulesOption = None,
    rule: RuleNameOption = None,
    json_lines: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Run the test cases kept with the rules: does each fire as expected, with the expected request.

    Cases come from each rule's tests: list, from tests/*.yaml inside each rules directory, and from CASE_FILES. A case gives an event (inline, or a file path relative to the case's file) and fires: true or false, plus optionally method, url, headers and body (a subset of the parsed body). Secrets render as ${NAME}, so cases need no real secrets. One line per case, a diff for each mismatch. Exit code 0 when every case passes, 1 when one fails or there are none, 3 when rules or cases are invalid.

    Example: hookctl test -r examples/rules
    """
    from pathlib import Path

    from hookctl.rules.load import load_rules
    from hookctl.ruletest import cases as ruletest

    paths = rule_paths(rules_paths)
    rules = load_rules(paths)
    files = ruletest.case_files(paths) + [Path(p) for p in case_files or ()]
    cases = ruletest.collect(rules, files)
    if rule is not None:
        _pick(rules, rule)
        cases = [case for case in cases if case.rule == rule]
    if not cases:
        sys.stderr.write(
            "Error: no test cases found (add tests: to a rule, or files under tests/)\n"
        )
        raise typer.Exit(int(ExitCode.FAILED))
    from hookctl.cli.output import use_color

    color = use_color(sys.stdout)
    passed = failed = 0
    for result in ruletest.run(rules, cases):
        passed, failed = passed + result.passed, failed + (not result.passed)
        if json_lines:
            _case_json(result)
        else:
            _case_text(result, color)
    if not quiet:
        tested = {case.rule for case in cases}
        untested = [
            r.name for r in rules if r.name not in tested and (rule is None or r.name == rule)
        ]
        line = f"{passed} passed, {failed} failed"
        if untested:
            line += f"; rules without cases: {', '.join(untested)}"
        sys.stderr.write(line + "\n")
    exit_with(ExitCode.FAILED if failed else ExitCode.OK)


def _case_text(result: "CaseResult", color: bool) -> None:
    from hookctl.cli.output import paint, safe

    case = result.case
    mark = paint("PASS", "green", color) if result.passed else paint("FAIL", "bold red", color)
    lines = [f"{mark}  {safe(case.rule)}: {safe(case.name)}  ({safe(case.where)})"]
    for problem in result.problems:
        lines += ["      " + safe(line) for line in problem.splitlines()]
    sys.stdout.write("\n".join(lines) + "\n")


def _case_json(result: "CaseResult") -> None:
    from hookctl.cli.output import Printer

    case = result.case
    Printer(json_lines=True).json(
        {
            "rule": case.rule,
            "case": case.name,
            "file": case.file,
            "line": case.line,
            "passed": result.passed,
            "problems": result.problems,
            "request": result.request.to_dict() if result.request else None,
        }
    )


# --- rules ---------------------------------------------------------------------------------


@app.command("rules")
@handle_errors
def list_rules(rules_paths: RulesOption = None, json_lines: JsonOption = False) -> None:
    """List the loaded rules: name, events, method, URL, format, retry policy, enabled, source.

    A table on a terminal, tab-separated lines when piped, NDJSON with --json. Exit code 0, or 3 when the rules are invalid.

    Example: hookctl rules -r examples/rules
    """
    from hookctl.cli.output import Printer
    from hookctl.cli.tables import rows_table
    from hookctl.rules.load import load_rules

    records = [_rule_record(rule) for rule in load_rules(rule_paths(rules_paths))]
    if json_lines:
        printer = Printer(json_lines=True)
        for record in records:
            printer.json(record)
        return
    rows = (
        {
            **r,
            "events": ", ".join(r["on"]) or "*",
            "retry": f"{r['retry_policy']}: {r['retry']}",
            "enabled": "yes" if r["enabled"] else "no",
            "source": f"{r['source']}:{r['line']}",
        }
        for r in records
    )
    rows_table(
        rows,
        RULE_COLUMNS,
        color=sys.stdout.isatty(),
        whole=("name",),
        drop=("source", "retry", "format", "enabled", "events"),
    )


def _rule_record(rule: "Rule") -> dict[str, Any]:
    hook = rule.webhook
    return {
        "name": rule.name,
        "description": rule.description,
        "on": list(rule.on),
        "method": hook.method,
        "url": hook.url,
        "format": hook.format,
        "retry": rule.retry.describe(),
        "retry_policy": rule.retry.name,
        "timeout": rule.describe_timeout(),
        "rate": str(rule.rate) if rule.rate else None,
        "on_failure": rule.on_failure is not None,
        "enabled": rule.enabled,
        "source": rule.source,
        "line": rule.line,
        "tests": len(rule.tests),
    }


# --- stats ---------------------------------------------------------------------------------


@app.command()
@handle_errors
def stats(
    since: Annotated[
        str, typer.Option("--since", help="The window: deliveries created in the last 24h, 7d, ...")
    ] = "24h",
    max_failed: Annotated[
        int | None,
        typer.Option(
            "--max-failed",
            min=0,
            help="Exit 1 when more deliveries than this failed in the window.",
            show_default=False,
        ),
    ] = None,
    db: DbOption = None,
    json_lines: JsonOption = False,
    prometheus: Annotated[
        bool,
        typer.Option(
            "--prometheus",
            help="Print the store's gauges in the Prometheus text format (as `serve`'s /metrics "
            "has them), for node_exporter's textfile collector.",
        ),
    ] = False,
) -> None:
    """A health check: deliveries by status and rule, success rate, latency, failing endpoints.

    The success rate counts finished deliveries (succeeded out of succeeded + failed); latency percentiles are over every attempt in the window. Exit code 0, or 1 when --max-failed is given and exceeded (for monitoring from cron), 2 when there is no database.

    Example: hookctl stats --since 1h --max-failed 0
    """

    from dataclasses import asdict

    start = window_start(since)
    store = open_store(db)
    if prometheus:
        from hookctl.serve.metrics import store_text

        try:
            sys.stdout.write(store_text(store).decode())
        finally:
            store.close()
        return
    try:
        found = store.stats(since=start)
        breakers = store.breaker_states()  # a handful of rows: which endpoints are open
    finally:
        store.close()
    by_status = found.by_status
    data = {**asdict(found), "success_rate": found.success_rate}
    # Endpoints whose circuit breaker is open now (README "Circuit breaker"): name, since.
    opened = {e: v for e, v in sorted(breakers.items()) if v.open_since is not None}
    over = max_failed is not None and by_status["failed"] > max_failed
    if json_lines:
        from hookctl.cli.output import Printer, iso

        Printer(json_lines=True).json(
            {
                **data,
                "since": iso(start),
                "window": since,
                "max_failed": max_failed,
                "open_endpoints": [
                    {
                        "endpoint": e,
                        "open_since": iso(v.open_since),
                        "next_probe_at": iso(v.next_probe_at),
                    }
                    for e, v in opened.items()
                ],
            }
        )
    else:
        _stats_text(data, since)
        if opened:
            from hookctl.cli.output import short_time

            sys.stdout.write(
                "open endpoints (breaker): "
                + "; ".join(
                    f"{e} since {short_time(v.open_since)}, next probe {short_time(v.next_probe_at)}"
                    for e, v in opened.items()
                )
                + "\n"
            )
    if over:
        from hookctl.cli.output import plural

        failures = f"{plural(by_status['failed'], 'failed delivery')} in the last {since}"
        sys.stderr.write(f"Error: {failures} (more than --max-failed {max_failed})\n")
    exit_with(ExitCode.FAILED if over else ExitCode.OK)


def _stats_text(data: dict[str, Any], window: str) -> None:
    from hookctl.cli.tables import rows_table

    table = sys.stdout.isatty()
    out = sys.stdout
    counts = data["by_status"]
    rate = data["success_rate"]
    rate_text = f"{rate:.1%}" if rate is not None else "-"
    pct = data["duration_ms"]
    latency = ", ".join(f"{p} {_ms(pct[p])}" for p in ("p50", "p95", "p99"))
    statuses = ", ".join(f"{counts[name]} {name}" for name in STATUSES)
    out.write(f"deliveries in the last {window}: {data['deliveries']} ({statuses})\n")
    out.write(f"success rate: {rate_text} of finished deliveries\n")
    out.write(f"attempts: {data['attempts']}; latency {latency}\n")
    sections = [
        ("by rule", [{"rule": k, **v} for k, v in sorted(data["by_rule"].items())], BY_RULE),
        ("slowest endpoints", [_timing(row) for row in data["slowest_urls"]], SLOWEST),
        ("most failing endpoints", data["failing_urls"], FAILING),
    ]
    for title, rows, columns in sections:
        if rows:
            out.write(f"\n{title}\n")
            out.flush()
            rows_table(rows, columns, color=table, whole=("rule",))


def _timing(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "avg": _ms(row["avg_ms"]), "max": _ms(row["max_ms"])}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"
