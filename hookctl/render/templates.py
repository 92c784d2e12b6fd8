"""Sandboxed Jinja2: compiling and evaluating a rule's templates for one event. No I/O.

webhook.py puts a rule's rendered webhook together as a request; url.py places values in
its URL.

Ticket text is only ever data: it reaches templates as values, never as template source.
Environment variables are treated as secrets. A template that reads `env.NAME` gets an
opaque placeholder instead of the value; the placeholder is what the store keeps, and
`resolve()` swaps in the real value (encoded for where it stands) just before sending.
So tokens never reach the database, the log or a dry run, and rotating one fixes pending
retries.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote_plus

from jinja2 import StrictUndefined, TemplateError, UndefinedError, nodes
from jinja2.sandbox import SecurityError

from hookctl.errors import RenderError
from hookctl.events.fields import describe_missing
from hookctl.render.budget import Budget, limits
from hookctl.render.encoding import clean as _clean
from hookctl.render.encoding import tojson, xml_escape
from hookctl.render.request import placeholder
from hookctl.render.sandbox import SandboxEnvironment, make_environment, render_capped
from hookctl.render.url import _INTERPOLATION, _url_filter

MAX_BODY_BYTES = 1024 * 1024  # default cap on a rendered body; webhook.max_body changes it

# A template leaf that is a single expression keeps its JSON type: `{{ ticket.id }}` stays a number.
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}|\{%|%\}).)*)\}\}\s*$", re.S)
# `ticket.actions[-1].body`: a plain path, which _walk reads without building a jinja Context.
_PATH = re.compile(r"^\s*[A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[-?\d+\])*\s*$")
_PATH_STEP = re.compile(r"\.?([A-Za-z_]\w*)|\[(-?\d+)\]")
_LITERAL_NAMES = frozenset({"true", "false", "none", "True", "False", "None"})
_MISSING = object()


@lru_cache(maxsize=1)
def environment() -> SandboxEnvironment:
    """The one sandboxed Jinja environment every template is compiled in."""
    return make_environment(
        {
            "tojson": tojson,
            "xml_escape": xml_escape,
            "urlencode_plus": lambda v: quote_plus(_clean(str(v))),
            # In webhook.url: insert the value as it is, not encoded for its place (render_url).
            "raw_url": lambda v: v,
            **{
                f"_url_{place}": _url_filter(place)
                for place in ("host", "path", "query", "fragment")
            },
        }
    )


@lru_cache(maxsize=4096)
def _compile(source: str) -> Any:
    """("expr", expression, path or None) or ("template", template, pieces or None)."""
    match = _SINGLE_EXPRESSION.match(source)
    if match:
        expression = environment().compile_expression(match["expr"], undefined_to_none=False)
        return ("expr", expression, _path(match["expr"]))
    return ("template", environment().from_string(source), _pieces(source))


def _pieces(source: str) -> tuple[str | tuple[str | int, ...], ...] | None:
    """Text with plain `{{ path }}`s only, as literal strings and paths; None for anything else.

    Literal text must be what jinja outputs verbatim: no other markup, and no carriage
    return (jinja rewrites line endings).
    """
    pieces: list[str | tuple[str | int, ...]] = []
    for k, part in enumerate(_INTERPOLATION.split(source)):
        if k % 2 == 0:
            if "{{" in part or "{%" in part or "{#" in part or "\r" in part:
                return None
            if part:
                pieces.append(part)
            continue
        steps = _path(part)
        if steps is None:
            return None
        pieces.append(steps)
    return tuple(pieces)


def _interpolate(
    pieces: tuple[str | tuple[str | int, ...], ...], shared: dict[str, Any]
) -> str | None:
    """`pieces` filled in as jinja would, or None when a value needs jinja to decide."""
    out = []
    for piece in pieces:
        if isinstance(piece, str):
            out.append(piece)
            continue
        value = _walk(piece, shared)
        # str() of anything else (floats, None, lists, objects) is jinja's business.
        if type(value) is str:
            out.append(value)
        elif type(value) is int:
            out.append(str(value))
        else:
            return None
    return "".join(out)


def _path(expression: str) -> tuple[str | int, ...] | None:
    """The steps of a plain path expression (`a.b[0]`), or None for anything else."""
    if not _PATH.match(expression):
        return None
    steps = tuple(
        name if name else int(index) for name, index in _PATH_STEP.findall(expression.strip())
    )
    return None if steps[0] in _LITERAL_NAMES else steps


def _walk(steps: tuple[str | int, ...], shared: dict[str, Any]) -> Any:
    """Read a path through plain dicts and lists as jinja would; _MISSING when jinja must decide.

    Only dict keys that are not also dict attributes (`items`) and list indexes in range are
    read here: everything else (undefined names, objects, the sandbox's checks) goes to jinja.
    """
    value: Any = shared.get(str(steps[0]), _MISSING)
    for step in steps[1:]:
        if type(value) is dict:
            readable = type(step) is str and step in value and not hasattr(dict, step)
        elif type(value) is _SecretEnv:
            # `env.NAME`: its placeholder, exactly what jinja would get.
            readable = type(step) is str and _ENV_NAME.match(step) is not None
        else:
            readable = (
                type(value) is list and type(step) is int and -len(value) <= step < len(value)
            )
        if not readable:
            return _MISSING
        value = value[step]
    return value


def is_template(value: str) -> bool:
    """True when a string holds Jinja markup and needs rendering."""
    return "{{" in value or "{%" in value


# --- secrets ---------------------------------------------------------------------------------


_ENV_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class _SecretEnv:
    """`env` inside templates: every variable read becomes a placeholder, and is remembered.

    A variable that is not set renders too: its value is only needed when the request is sent,
    and that is where a missing one is reported (the delivery waits for it).
    """

    def __init__(self, environ: Mapping[str, str], nonce: str) -> None:
        self._environ = environ
        self._nonce = nonce
        self.used: dict[str, None] = {}

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __contains__(self, name: str) -> bool:
        return name in self._environ

    def __getitem__(self, name: str) -> str:
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise RenderError(f"env.{name}: not an environment variable name")
        self.used[name] = None
        return placeholder(self._nonce, name)


# --- rendering -----------------------------------------------------------------------------


class _Renderer:
    """Renders one request's templates; use inside `limits(renderer.budget)`."""

    def __init__(self, context: dict[str, Any], max_output: int = MAX_BODY_BYTES) -> None:
        self.context = context
        self.budget = Budget(output=max_output)
        # Every expression leaf reads this one mapping (the sandbox's helpers included), built
        # once: TemplateExpression.__call__ would copy the whole context for each leaf.
        self._shared = {**environment().globals, **context}

    def text(self, source: str, where: str) -> str:
        value = self.value(source, where)
        if value is None:
            return ""
        text = (
            value
            if isinstance(value, str)
            else tojson(value)
            if isinstance(value, dict | list)
            else str(value)
        )
        return _clean(text)

    def value(self, source: Any, where: str) -> Any:
        if not isinstance(source, str) or not is_template(source):
            return source
        # `plain`: the expression's path, or the template's pieces, when they have one.
        kind, compiled, plain = _compile(source)
        if plain is not None:
            if kind == "expr":
                found = _walk(plain, self._shared)
                if found is not _MISSING:
                    return found
            else:
                text = _interpolate(plain, self._shared)
                if text is not None and len(text) <= self.budget.output:
                    return text
        try:
            if kind == "expr":
                result = _evaluate(compiled, self._shared)
                if isinstance(result, StrictUndefined):
                    str(result)  # raises UndefinedError with jinja's own message
                return result
            return render_capped(compiled, self.context)
        except RenderError as exc:
            raise RenderError(f"{where}: {exc}") from None
        except UndefinedError as exc:
            raise RenderError(f"{where}: {_undefined(source, self._shared, exc)}") from None
        except SecurityError as exc:
            raise RenderError(f"{where}: refused by the template sandbox: {exc}") from None
        except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise RenderError(f"{where}: {type(exc).__name__}: {exc}") from None
        except (MemoryError, RecursionError):
            raise RenderError(
                f"{where}: the template needs too much memory or nests too deeply"
            ) from None

    def tree(self, node: Any, where: str) -> Any:
        if isinstance(node, Mapping):
            return {k: self.tree(v, f"{where}.{k}") for k, v in node.items()}
        if isinstance(node, list):
            return [self.tree(v, f"{where}[{i}]") for i, v in enumerate(node)]
        return self.value(node, where)


def _undefined(source: str, context: Mapping[str, Any], exc: UndefinedError) -> str:
    """Jinja's "'dict object' has no attribute 'subjet'" said as the event's field that is missing:
    "ticket has no field 'subjet' (did you mean 'subject'?)"."""
    message = exc.message or str(exc)
    try:
        ast = environment().parse(source)
    except TemplateError:
        return message
    for path in _paths_in(ast):
        missing = describe_missing(context, path)
        if missing is None:
            continue
        step, text = missing
        # The chain jinja tripped on names the same step in its message.
        if f"'{step}'" in message or f"element {step}" in message:
            return text
    return message


def _paths_in(ast: Any) -> list[tuple[str | int, ...]]:
    """Every `a.b[0]["c"]` chain of constant steps in a template, outermost first."""
    found: list[tuple[str | int, ...]] = []
    for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        steps: list[str | int] = []
        current = node
        while True:
            if isinstance(current, nodes.Getattr):
                steps.append(current.attr)
                current = current.node
            elif isinstance(current, nodes.Getitem) and isinstance(current.arg, nodes.Const):
                steps.append(current.arg.value)
                current = current.node
            else:
                break
        if isinstance(current, nodes.Name):
            found.append((current.name, *reversed(steps)))
    return sorted(set(found), key=len, reverse=True)


def _evaluate(expression: Any, shared: dict[str, Any]) -> Any:
    """What jinja's TemplateExpression.__call__ does, reading `shared` instead of a copy of it."""
    template = expression._template
    context = template.new_context(shared, shared=True)
    for _ in template.root_render_func(context):
        pass
    return context.vars["result"]


def render_text(source: str, context: Mapping[str, Any], *, where: str) -> str:
    """Render one template string (no secrets: `env` is not in this context)."""
    r = _Renderer(dict(context))
    with limits(r.budget):
        return r.text(source, where)
