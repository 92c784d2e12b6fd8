"""The `hookctl` command line: parse options, call the core, hand results to output.

This package is the only place that imports typer. Heavy modules (aiohttp, jinja2,
sqlite-utils) are imported inside the commands that use them, so `--help` and an idle
`retry-loop` start fast.
"""

import importlib
import inspect

import typer

from hookctl.cli.app import app

# Importing a command module registers its commands; this order is the order in --help.
for _module in (
    "commands_send",
    "commands_rules",
    "commands_explain",
    "commands_tools",
    "commands_plan",
    "commands_log",
    "commands_store",
    "commands_endpoints",
    "commands_listen",
    "commands_sign",
    "commands_serve",
):
    importlib.import_module(f"hookctl.cli.{_module}")


def _reflow(app: typer.Typer) -> None:
    """Each help paragraph on one line, so --help wraps it to the terminal's width.

    Typer's rich help keeps a docstring's line breaks, which a terminal narrower than the
    source then breaks again, leaving ragged lines.
    """
    for info in app.registered_commands:
        doc = info.help or inspect.getdoc(info.callback) or ""
        info.help = "\n\n".join(p.replace("\n", " ") for p in doc.split("\n\n"))
    for group in app.registered_groups:
        if group.typer_instance is not None:
            _reflow(group.typer_instance)


_reflow(app)


def main() -> None:
    """Entry point of the `hookctl` console script."""
    app()


__all__ = ["app", "main"]
