"""Sizes worked out before an operation runs, so one that would pass the output cap is refused.

A result's size is worked out from its inputs (a join from its items and separator, an indent
from the line count, a format from its fields), and a list turned into text is measured
without building the text. What was built is checked, and charged to the budget, after.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from typing import Any

from jinja2.sandbox import SecurityError

from hookctl.render.budget import Budget, current

_PERCENT_WIDTH = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\d+)?(?:\.(\d+))?")

# Filters and str methods whose numeric arguments are sizes: a width of 10**9 is 10**9 bytes.
_SIZE_ARGS = frozenset(
    {"center", "ljust", "rjust", "zfill", "expandtabs", "indent", "batch", "slice"}
)
# Filters that keep a list a list (or return one of its items); every other filter may turn
# its value into text, so a list or dict given to one is measured as text first.
_STRUCTURAL = frozenset(
    {
        "attr", "batch", "count", "d", "default", "dictsort", "first", "groupby", "items",
        "join", "last", "length", "list", "map", "max", "min", "random", "reject",
        "rejectattr", "reverse", "select", "selectattr", "slice", "sort", "sum", "unique",
    }
)  # fmt: skip
_FIELD_ROOT = re.compile(r"[^.\[]*")  # `0` of `0.name[1]`
_BRACE_WIDTH = re.compile(r"\{[^{}]*:[^{}]*?(\d+)")
# What str.splitlines() splits on (indent splits the text into lines that way).
_LINE_BREAKS = ("\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


def sized(value: Any) -> int | None:
    """The length of a string, bytes, list or tuple; None for anything else."""
    return len(value) if isinstance(value, str | bytes | list | tuple) else None


def text_size(value: Any, limit: int) -> int:
    """About `len(str(value))` (or of its JSON), without building it; stops counting past `limit`.

    A list of a thousand references to one 1 MB string is 8 KB in memory and 1 GB as text:
    this is what every place that turns a value into text checks first.
    """
    if isinstance(value, str):
        return len(value)
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item) + 4  # quotes and a separator
        elif isinstance(item, bool) or item is None:
            total += 6
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 3  # about 0.3 digits per bit, and a separator
        elif isinstance(item, float):
            total += 26
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2
            stack.extend(item)
        elif isinstance(item, dict):
            total += 2
            for key, val in item.items():
                stack.append(key)
                stack.append(val)
        else:
            total += 64  # an object's repr (a namespace, a range, Undefined): short
    return total


def precheck(
    name: str, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], budget: Budget
) -> None:
    """Refuse, before it runs, an operation that would build a result past the output cap."""
    limit = budget.output
    if name in _SIZE_ARGS and _big_int((*args, *kwargs.values()), limit):
        raise SecurityError(f"an argument of {name}() is too large")
    if not isinstance(value, str):
        if name not in _STRUCTURAL:
            budget.check_size(text_size(value, limit), f"the text of the value given to {name}")
        return
    if name == "format":
        if any(int(n) > limit for n in _BRACE_WIDTH.findall(value)):
            raise SecurityError("a width in format() is too large")
        if "%" in value and "{" not in value:  # the `format` filter: printf style
            check_percent(value, kwargs or args, budget)
        else:
            _check_format(value, args, kwargs, budget)
    elif name == "replace" and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        count = value.count(old) if old else len(value) + 1
        if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
            count = min(count, args[2])
        budget.check_size(len(value) + count * (len(new) - len(old)), "the result of replace")
    elif name == "indent":
        width = args[0] if args else kwargs.get("width", 4)
        pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        lines = sum(value.count(b) for b in _LINE_BREAKS) + 2
        budget.check_size(len(value) + lines * max(pad, 0), "the result of indent")
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        tabs = value.count("\t")
        if isinstance(size, int):
            budget.check_size(len(value) + tabs * max(size, 0), "the result of expandtabs")
    elif name == "wordwrap":
        width = args[0] if args else kwargs.get("width", 79)
        wrap = args[2] if len(args) > 2 else kwargs.get("wrapstring")
        if isinstance(wrap, str) and isinstance(width, int):
            # A line ends at a full width, at whitespace or at a break: no more lines than that.
            breaks = sum(value.count(c) for c in " \t") + sum(value.count(b) for b in _LINE_BREAKS)
            lines = len(value) // max(width, 1) + breaks + 1
            budget.check_size(len(value) + lines * len(wrap), "the result of wordwrap")


def check_join(items: Any, separator: Any, budget: Budget) -> None:
    """A join's size is its items' text plus a separator between each two."""
    limit = budget.output
    if isinstance(items, str):
        size = len(items) + max(len(items) - 1, 0) * text_size(separator, limit)
    elif isinstance(items, list | tuple):
        size = max(len(items) - 1, 0) * text_size(separator, limit)
        for item in items:
            if size > limit:
                break
            size += text_size(item, limit)
    else:
        return
    budget.check_size(size, "the result of join")


def _check_format(fmt: str, args: tuple[Any, ...], kwargs: dict[str, Any], budget: Budget) -> None:
    """str.format's size: its literal text, and each field as wide as its value or its width."""
    limit = budget.output
    size, auto = 0, 0
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # format() raises the same error itself
    for literal, field, spec, _conversion in fields:
        size += len(literal)
        if field is None:
            continue
        if spec and "{" in spec and _big_int((*args, *kwargs.values()), limit):
            raise SecurityError("a width in format() is too large")  # `{:{}}` takes it from an arg
        name = _FIELD_ROOT.match(field)[0]  # type: ignore[index]  # always matches
        root: int | str = int(name) if name.isdigit() else name
        if root == "":
            root, auto = auto, auto + 1
        value = (
            (args[root] if root < len(args) else None)
            if isinstance(root, int)
            else kwargs.get(root)
        )
        widths = [int(n) for n in re.findall(r"\d+", spec or "")]
        size += max(text_size(value, limit), *widths, 0)
        if size > limit:
            break
    budget.check_size(size, "the result of format")


def check_percent(fmt: str, args: Any, budget: Budget) -> None:
    """%-formatting's size: its text, each width, and the text of the values it reads."""
    limit = budget.output
    values = args if isinstance(args, tuple) else (args,)
    found = list(_PERCENT_WIDTH.finditer(fmt))
    widths = [int(n) for m in found for n in m.groups() if n]
    if any(w > limit for w in widths) or ("*" in fmt and _big_int(values, limit)):
        raise SecurityError("a width or precision in % formatting is too large")
    if isinstance(args, dict):
        names = re.findall(r"%\(([^)]*)\)", fmt)
        text = sum(text_size(args.get(name), limit) for name in names)
    elif isinstance(args, tuple):
        text = text_size(list(args), limit)
    else:  # one value, which every directive may print
        text = len(found) * text_size(args, limit)
    budget.check_size(len(fmt) + sum(widths) + text, "the result of % formatting")


def _big_int(values: Iterable[Any], limit: int) -> bool:
    return any(isinstance(v, int) and not isinstance(v, bool) and abs(v) > limit for v in values)


def checked(result: Any, *inputs: Any) -> Any:
    """Check a result against the cap, and charge it to the render unless it is an input."""
    if isinstance(result, str | bytes | list | tuple):
        budget = current()
        budget.check_size(len(result))
        for value in inputs:
            if result is value:  # passed through (`default`, `first`): nothing was built
                return result
        budget.spend(len(result))
    return result
