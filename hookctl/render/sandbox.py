"""The Jinja2 sandbox every template runs in, with the budget's checks put into templates.

Jinja's own sandbox stops templates from reaching Python internals, and caps one `range()`
at 100,000 items. Nested loops, string or list arithmetic and padding filters can still ask
for gigabytes or minutes, especially when a count comes from an event. So every loop, `~`,
arithmetic operator, call and filter goes through the current budget (budget.py), and an
operation whose result would be larger than the output cap is refused *before it runs*
(sizes.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jinja2 import StrictUndefined, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.visitor import NodeTransformer

from hookctl.render.budget import current
from hookctl.render.sizes import (
    check_join,
    check_percent,
    checked,
    precheck,
    sized,
    text_size,
)


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
                size = sized(seq)
                if size is not None and isinstance(count, int):
                    budget.check_size(size * count, "the result of *")
        elif operator == "+":
            if sized(left) is not None and sized(right) is not None:
                budget.check_size(len(left) + len(right), "the result of +")
        elif operator == "%" and isinstance(left, str):
            check_percent(left, right, budget)
        return checked(super().call_binop(context, operator, left, right), left, right)

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
                check_join(args[0], owner, budget)
            precheck(name, owner, args, kwargs, budget)
        return checked(super().call(__context, __obj, *args, **kwargs), owner, *args)


def _items(value: Any) -> Any:
    """The items a join will read, as a list (a generator is read once, on the loop budget)."""
    if isinstance(value, list | tuple | str):
        return value
    try:
        return list(_counted(value))
    except TypeError:
        return value  # not iterable: join itself says so


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
                check_join(value, rest[0] if rest else kwargs.get("d", ""), budget)
            precheck(name, value, rest, kwargs, budget)
        return checked(func(*args, **kwargs), *args)

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
