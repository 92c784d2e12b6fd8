"""The Jinja2 sandbox every template runs in, with limits on loops, sizes and time.

Jinja's own sandbox stops templates from reaching Python internals, and caps one `range()`
at 100,000 items. Nested loops, string or list arithmetic and padding filters can still ask
for gigabytes or minutes, especially when a count comes from an event. So every loop draws
on an iteration budget, every render on a time budget, and operations whose result would be
larger than the output cap are refused before they run.
"""

from __future__ import annotations

import contextlib
import functools
import re
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


def _counted(iterable: Iterable[Any]) -> Iterator[Any]:
    budget = current()
    for item in iterable:
        budget.tick()
        yield item


def _concat(*parts: Any) -> str:
    texts = [str(p) for p in parts]
    current().check_size(sum(map(len, texts)), "the result of ~")
    return "".join(texts)


class _Limits(NodeTransformer):
    """Route every for-loop through the iteration budget and every `~` through the size cap."""

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
            _check_percent(left, right, budget.output)
        return _checked(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Call from a template: refuse huge paddings and results past the cap."""
        budget = current()
        budget.check_time()
        target = getattr(__obj, "__wrapped__", __obj)  # str.format comes wrapped by the sandbox
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            _precheck(getattr(target, "__name__", ""), owner, args, kwargs, budget)
        return _checked(super().call(__context, __obj, *args, **kwargs))


# Filters and str methods whose numeric arguments are sizes: a width of 10**9 is 10**9 bytes.
_SIZE_ARGS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "indent"})
_BRACE_WIDTH = re.compile(r"\{[^{}]*:[^{}]*?(\d+)")


def _precheck(
    name: str, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], budget: Budget
) -> None:
    """Refuse, before it runs, an operation that would build a result past the output cap."""
    limit = budget.output
    if name in _SIZE_ARGS and _big_int((*args, *kwargs.values()), limit):
        raise SecurityError(f"an argument of {name}() is too large")
    if name == "format" and isinstance(value, str):
        if any(int(n) > limit for n in _BRACE_WIDTH.findall(value)):
            raise SecurityError("a width in format() is too large")
        _check_percent(value, args, limit)
    if name == "replace" and isinstance(value, str) and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        count = value.count(old) if old else len(value) + 1
        if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
            count = min(count, args[2])
        budget.check_size(len(value) + count * (len(new) - len(old)), "the result of replace")


def _check_percent(fmt: str, args: Any, limit: int) -> None:
    values = args if isinstance(args, tuple) else (args,)
    widths = [int(n) for m in _PERCENT_WIDTH.finditer(fmt) for n in m.groups() if n]
    if any(w > limit for w in widths) or ("*" in fmt and _big_int(values, limit)):
        raise SecurityError("a width or precision in % formatting is too large")


def _big_int(values: Iterable[Any], limit: int) -> bool:
    return any(isinstance(v, int) and not isinstance(v, bool) and abs(v) > limit for v in values)


def _checked(result: Any) -> Any:
    size = _sized(result)
    if size is not None:
        current().check_size(size)
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
            _precheck(name, value, rest, kwargs, budget)
        return _checked(func(*args, **kwargs))

    return bounded


def make_environment(filters: dict[str, Callable[..., Any]]) -> SandboxEnvironment:
    """A sandbox with hookctl's filters and the budget hooks installed."""
    env = SandboxEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
    env.filters.update(filters)
    for name, func in list(env.filters.items()):
        env.filters[name] = _bounded_filter(name, func)
    env.globals.pop("lipsum", None)  # generates text by the megabyte on request
    env.globals["__hookctl_loop"] = _counted
    env.globals["__hookctl_concat"] = _concat
    return env
