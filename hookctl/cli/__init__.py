"""The `hookctl` command line: parse options, call the core, hand results to output.

This package is the only place that imports typer. Heavy modules (aiohttp, jinja2,
sqlite-utils) are imported inside the commands that use them, so `--help` and an idle
`retry-loop` start fast.
"""

import importlib

from hookctl.cli.app import app

# Importing a command module registers its commands; this order is the order in --help.
for _module in (
    "commands_send",
    "commands_rules",
    "commands_tools",
    "commands_store",
    "commands_listen",
    "commands_sign",
):
    importlib.import_module(f"hookctl.cli.{_module}")


def main() -> None:
    """Entry point of the `hookctl` console script."""
    app()


__all__ = ["app", "main"]
