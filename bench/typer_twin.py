"""Generate a bare Typer app with hookctl's commands and options and empty bodies.

    python bench/typer_twin.py OUT.py

The twin is the start-up baseline: the same Typer and Click work (parsing, --help rendering)
without anything hookctl imports or does. It is generated from the live command tree, so it
follows hookctl as commands and options change.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer.main

from hookctl.cli import app

_SKIP = {"install_completion", "show_completion"}  # Typer adds these itself


def annotation(param: Any) -> str:
    """The parameter's Python type as source text."""
    descriptor = getattr(param, "type_descriptor", None)
    ann = getattr(descriptor, "annotation", None)
    if ann is None:
        text = "bool" if getattr(param, "is_flag", False) else "str"
    else:
        text = ann.__name__ if isinstance(ann, type) else str(ann).replace("typing.", "")
    if param.default is None and not param.required:
        text += " | None"
    return text


def param_source(param: Any) -> str:
    """One parameter of a command function."""
    kind = "Argument" if type(param).__name__.endswith("Argument") else "Option"
    args = [repr(o) for o in param.opts] if kind == "Option" else []
    for name in ("help", "min", "max", "envvar", "metavar"):
        value = getattr(param, name, None)
        if value is not None:
            args.append(f"{name}={value!r}")
    for name in ("hidden", "is_eager"):
        if getattr(param, name, False):
            args.append(f"{name}=True")
    if getattr(param, "show_default", None) is False:
        args.append("show_default=False")
    if param.callback is not None and param.name == "version":
        args.append("callback=_version")
    text = f"{param.name}: Annotated[{annotation(param)}, typer.{kind}({', '.join(args)})]"
    if not param.required:
        text += f" = {param.default!r}"
    return text


def command_source(owner: str, name: str, command: Any, index: int) -> str:
    """A decorated function with the command's name, help and parameters, doing nothing."""
    params = [p for p in command.params if p.name not in _SKIP]
    options = (
        [f"no_args_is_help={command.no_args_is_help!r}"]
        if getattr(command, "no_args_is_help", False)
        else []
    )
    decorator = (
        f"@{owner}.command({name!r}, help={command.help!r}{''.join(', ' + o for o in options)})"
    )
    body = ",\n    ".join(param_source(p) for p in params)
    return f"{decorator}\ndef command_{index}(\n    {body}\n) -> None:\n    pass\n"


def twin_source() -> str:
    """The whole twin module."""
    root = typer.main.get_command(app)
    out = [
        "import typer",
        "from typing import Annotated",
        "",
        "app = typer.Typer(",
        f"    name={root.name!r}, help={root.help!r}, no_args_is_help=True,",
        '    pretty_exceptions_show_locals=False, rich_markup_mode="rich", add_completion=True,',
        ")",
        "",
        "def _version(value: bool) -> None:",
        "    if value:",
        "        raise typer.Exit()",
        "",
    ]
    root_params = [p for p in root.params if p.name not in _SKIP]
    body = ",\n    ".join(param_source(p) for p in root_params)
    out.append(f"@app.callback()\ndef root(\n    {body}\n) -> None:\n    {(root.help or '')!r}\n")
    functions = 0
    for group_number, (name, command) in enumerate(root.commands.items()):
        if hasattr(command, "commands"):  # a sub-group such as `db`
            group = f"group_{group_number}"
            out.append(f"{group} = typer.Typer(help={command.help!r}, no_args_is_help=True)")
            out.append(f"app.add_typer({group}, name={name!r})")
            members = list(command.commands.items())
        else:
            group, members = "app", [(name, command)]
        for member_name, member in members:
            out.append(command_source(group, member_name, member, functions))
            functions += 1
    out += ["", "if __name__ == '__main__':", "    app()", ""]
    return "\n".join(out)


def main() -> None:
    """Write the twin to the path given."""
    Path(sys.argv[1]).write_text(twin_source(), encoding="utf-8")


if __name__ == "__main__":
    main()
