"""The Jinja2 sandbox every template runs in, with limits on loops, sizes and time.

Jinja's own sandbox stops templates from reaching Python internals, and caps one `range()`
at 100,000 items. Nested loops, string or list arithmetic and padding filters can still ask
for gigabytes or minutes, especially when a count comes from an event. So every loop draws
on an iteration budget, every render on a time budget, and operations whose result would be
larger than the output cap are refused *before they run*: their result's size is worked out
from their inputs (a join from its items and separator, an indent from the line count, a
format from its fields), and a list turned into text is measured without building the text.
Results that each fit can still pile up (a loop appending 1 MB strings to a list), so every
result a template builds is also charged to an allowance of BUILT_FACTOR times the cap.
"""

from __future__ import annotations

import contextlib
import functools
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from jinja2 import StrictUndefined, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.visitor import NodeTransformer

MAX_OUTPUT = 1024 * 1024  # characters one rendering may produce (webhook.max_body overrides)
MAX_ITERATIONS = 1_000_000  # loop iterations in one request's templates, all loops together
RENDER_SECONDS = 1.0  # time for one request's templates, all together
# What one render may build in all (every intermediate string and list), in output caps: a
# filter chain over a big field builds a few caps' worth; a bomb builds thousands.
BUILT_FACTOR = 16
_PERCENT_WIDTH = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\d+)?(?:\.(\d+))?")


class Budget:
    """What one request's templates may still spend; set as current with `limits()`."""

    def __init__(
        self,
        output: int = MAX_OUTPUT,
        iterations: int = MAX_ITERATIONS,
        seconds: float = RENDER_SECONDS,
    ) -> None:
        self.output = output
        self.iterations = iterations
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.built = 0  # characters (or list items) template operations have built so far

    def tick(self) -> None:
        """Spend one loop iteration (and check the clock)."""
        self.iterations -= 1
        if self.iterations < 0:
            raise SecurityError(f"more than {MAX_ITERATIONS:,} loop iterations")
        self.check_time()

    def check_time(self) -> None:
        """Refuse to go on once the time budget is spent."""
        if time.monotonic() > self.deadline:
            raise SecurityError(f"rendering took longer than {self.seconds:g}s")

    def check_size(self, size: int, what: str = "result") -> None:
        """Refuse a string or list larger than the output cap."""
        if size > self.output:
            raise SecurityError(f"{what} would be larger than {self.output:,} characters")

    def spend(self, size: int) -> None:
        """Charge a result just built; refuse once the render has built too much in all."""
        self.built += size
        if self.built > BUILT_FACTOR * self.output:
            raise SecurityError(
                f"the templates built more than {BUILT_FACTOR * self.output:,} characters "
                "of intermediate results"
            )


_current: ContextVar[Budget | None] = ContextVar("hookctl_budget", default=None)


def current() -> Budget:
    """The budget of the rendering in progress (a default one outside `limits()`)."""
    return _current.get() or Budget()


@contextlib.contextmanager
def limits(budget: Budget) -> Iterator[Budget]:
    """Make `budget` the one templates rendered in this block draw on."""
    token = _current.set(budget)
    try:
        yield budget
    finally:
        _current.reset(token)


def render_capped(template: Any, context: dict[str, Any]) -> str:
    """Render piece by piece and stop as soon as the output passes the cap."""
    budget = current()
    parts: list[str] = []
    size = 0
    for chunk in template.generate(context):
        size += len(chunk)
        budget.check_size(size, "the rendered text")
        budget.check_time()
        parts.append(chunk)
    return "".join(parts)


def _sized(value: Any) -> int | None:
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


def _counted(iterable: Iterable[Any]) -> Iterator[Any]:
    budget = current()
    for item in iterable:
        budget.tick()
        yield item


def _concat(*parts: Any) -> str:
    budget = current()
    # Measured before str(): a part may be a list whose text is a thousand times its size.
    budget.check_size(sum(text_size(p, budget.output) for p in parts), "the result of ~")
    text = "".join([str(p) for p in parts])
    budget.spend(len(text))
    return text


def _sized_result(value: Any) -> Any:
    """An expression's value, once its text is known to fit (it becomes a JSON body leaf)."""
    if not isinstance(value, str | int | float | bool) and value is not None:
        budget = current()
        budget.check_size(text_size(value, budget.output), "the expression's value")
    return value


def _finalize(value: Any) -> Any:
    """What `{{ ... }}` prints, measured before jinja turns it into text."""
    if not isinstance(value, str):
        budget = current()
        budget.check_size(text_size(value, budget.output), "the printed value")
    return value


class _Limits(NodeTransformer):
    """Route every for-loop through the iteration budget, every `~` through the size cap, and
    an expression's value (`compile_expression` makes it `result = expr`) through a text-size check."""

    def visit_Template(self, node: nodes.Template) -> nodes.Node:
        self.generic_visit(node)
        only = node.body[0] if len(node.body) == 1 else None
        if (
            isinstance(only, nodes.Assign)
            and isinstance(only.target, nodes.Name)
            and only.target.name == "result"
        ):
            only.node = nodes.Call(
                nodes.Name("__hookctl_sized", "load", lineno=only.lineno),
                [only.node],
                [],
                None,
                None,
                lineno=only.lineno,
            )
        return node

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Call(
            nodes.Name("__hookctl_loop", "load", lineno=node.lineno),
            [node.iter],
            [],
            None,
            None,
            lineno=node.lineno,
        )
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Call(
            nodes.Name("__hookctl_concat", "load", lineno=node.lineno),
            node.nodes,
            [],
            None,
            None,
            lineno=node.lineno,
        )


class SandboxEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with the loops and operations that could eat memory or time bounded."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Event data's keys win over dict methods: `ticket.items` is the key, not dict.items."""
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def compile(
        self,
        source: Any,
        name: str | None = None,
        filename: str | None = None,
        *args: Any,
        **kw: Any,
    ) -> Any:
        """Compile as Jinja does, after putting loops and `~` on the budget."""
        if isinstance(source, str):
            source = self.parse(source, name, filename)
        return super().compile(_Limits().visit(source), name, filename, *args, **kw)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """Refuse arithmetic whose result would be too large to hold."""
        budget = current()
        budget.check_time()
        if operator == "**":
            ints = isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0
            if ints and left.bit_length() * right > 64 * 1024:
                raise SecurityError("result of ** would be too large")
        elif operator == "*":
            for seq, count in ((left, right), (right, left)):
                size = _sized(seq)
                if size is not None and isinstance(count, int):
                    budget.check_size(size * count, "the result of *")
        elif operator == "+":
            if _sized(left) is not None and _sized(right) is not None:
                budget.check_size(len(left) + len(right), "the result of +")
        elif operator == "%" and isinstance(left, str):
            _check_percent(left, right, budget)
        return _checked(super().call_binop(context, operator, left, right), left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Call from a template: refuse huge paddings and results past the cap."""
        if __obj in _OWN_HELPERS:  # the budget's own hooks check what they build
            return __obj(*args)  # (jinja adds _loop_vars/_block_vars; they take none)
        budget = current()
        budget.check_time()
        target = getattr(__obj, "__wrapped__", __obj)  # str.format comes wrapped by the sandbox
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            name = getattr(target, "__name__", "")
            if name == "join" and args:
                args = (_items(args[0]), *args[1:])
                _check_join(args[0], owner, budget)
            _precheck(name, owner, args, kwargs, budget)
        return _checked(super().call(__context, __obj, *args, **kwargs), owner, *args)


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


def _precheck(
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
            _check_percent(value, kwargs or args, budget)
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


def _items(value: Any) -> Any:
    """The items a join will read, as a list (a generator is read once, on the loop budget)."""
    if isinstance(value, list | tuple | str):
        return value
    try:
        return list(_counted(value))
    except TypeError:
        return value  # not iterable: join itself says so


def _check_join(items: Any, separator: Any, budget: Budget) -> None:
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


def _check_percent(fmt: str, args: Any, budget: Budget) -> None:
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


def _checked(result: Any, *inputs: Any) -> Any:
    """Check a result against the cap, and charge it to the render unless it is an input."""
    if isinstance(result, str | bytes | list | tuple):
        budget = current()
        budget.check_size(len(result))
        for value in inputs:
            if result is value:  # passed through (`default`, `first`): nothing was built
                return result
        budget.spend(len(result))
    return result


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a filter with the same checks as a call: sizes before, the result after."""
    skip = 1 if hasattr(func, "jinja_pass_arg") else 0  # the context or environment

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        budget = current()
        budget.check_time()
        if len(args) > skip:
            value, rest = args[skip], args[skip + 1 :]
            if name == "join":
                value = _items(value)
                args = (*args[:skip], value, *rest)
                _check_join(value, rest[0] if rest else kwargs.get("d", ""), budget)
            _precheck(name, value, rest, kwargs, budget)
        return _checked(func(*args, **kwargs), *args)

    return bounded


_OWN_HELPERS = (_counted, _concat, _sized_result)


def make_environment(filters: dict[str, Callable[..., Any]]) -> SandboxEnvironment:
    """A sandbox with hookctl's filters and the budget hooks installed."""
    env = SandboxEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=_finalize,
    )
    env.filters.update(filters)
    for name, func in list(env.filters.items()):
        env.filters[name] = _bounded_filter(name, func)
    env.globals.pop("lipsum", None)  # generates text by the megabyte on request
    env.globals["__hookctl_loop"] = _counted
    env.globals["__hookctl_concat"] = _concat
    env.globals["__hookctl_sized"] = _sized_result
    return env
