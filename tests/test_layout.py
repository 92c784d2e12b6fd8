"""The package's layout holds: typer and rich stay in cli/, and imports follow the layers.

Every module under hookctl/ is parsed (not imported) and its imports are walked with ast,
lazy ones inside functions included, so a test cannot pass because an import was deferred.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import hookctl

PACKAGE = Path(hookctl.__file__).resolve().parent
UI_LIBRARIES = ("typer", "rich", "click")

# The layers, lowest first, as today's imports arrange them: a module may import its own package and any package on a lower layer, never
# one on a higher layer. This is not the order data flows in (events -> rules -> render ->
# delivery -> transport -> store): a rule holds render's WebhookTemplate, so rules sits above
# render; the pipeline in delivery drives transport and store, so it sits above both.
LAYERS: list[set[str]] = [
    {"errors", "paths", "durations"},  # shared by everything: no hookctl imports
    {"events", "store"},  # event data and field paths; the store's own records and backends
    {"render"},  # templates, sandbox, encodings, secrets' placeholders and scrubbing
    {"rules"},  # the rule model, holding render's WebhookTemplate
    {"transport"},  # sends render's ResolvedRequest
    {"config"},  # the settings every command shares (the network allow-list)
    {"delivery"},  # plans and runs deliveries: rules, render, transport, store
    {"ruletest", "devserver"},  # tools over rules and rendering
    {"serve"},  # the HTTP intake server: the pipeline and the log behind routes
    {"cli", "__main__"},  # the only place that prints, and the only one importing typer/rich
]
# Imports that run up a layer today, each to be removed (none left: a rule's retry policy
# model moved to rules/policy.py). A new one must be justified here, not slipped in.
KNOWN_BACK_EDGES: set[tuple[str, str]] = set()


def modules() -> Iterator[tuple[str, Path]]:
    """Every module of the package: its dotted name and its file."""
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def imports(name: str, path: Path) -> Iterator[str]:
    """Every module `name` imports, anywhere in its file (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            # `from hookctl import errors` imports the module hookctl.errors.
            yield from (f"{base}.{a.name}" for a in node.names if is_module(f"{base}.{a.name}"))


def is_module(dotted: str) -> bool:
    """True when `dotted` names a module or package of hookctl (not a name inside one)."""
    if not dotted.startswith("hookctl."):
        return False
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def part(module: str) -> str | None:
    """The top-level part of hookctl a module belongs to (`rules`, `errors`), or None."""
    bits = module.split(".")
    if bits[0] != "hookctl":
        return None
    return bits[1] if len(bits) > 1 else "hookctl"


def layer(name: str) -> int:
    """The layer a part of hookctl stands on."""
    for index, parts in enumerate(LAYERS):
        if name in parts:
            return index
    raise AssertionError(f"hookctl.{name} is on no layer: add it to LAYERS in {__file__}")


def test_typer_and_rich_are_imported_only_under_cli() -> None:
    offenders = [
        f"{name} imports {imported}"
        for name, path in modules()
        if not name.startswith("hookctl.cli")
        for imported in imports(name, path)
        if imported.split(".")[0] in UI_LIBRARIES
    ]
    assert not offenders, "only hookctl/cli/ may import typer or rich:\n" + "\n".join(offenders)


def test_no_module_imports_a_higher_layer() -> None:
    offenders = []
    for name, path in modules():
        own = part(name)
        if own in (None, "hookctl"):
            continue  # hookctl/__init__.py: the version only
        for imported in set(imports(name, path)):
            target = part(imported)
            if target in (None, own, "hookctl") or (name, imported) in KNOWN_BACK_EDGES:
                continue
            if layer(target) > layer(own):
                offenders.append(
                    f"{name} imports {imported} (layer {layer(target)} > {layer(own)})"
                )
    assert not offenders, "imports against the layers:\n" + "\n".join(sorted(offenders))


def test_only_the_store_reaches_into_a_backend() -> None:
    # Backends sit behind store/contract.py and open_store(): code elsewhere that imported
    # store.sqlite (the store thread once used its busy check) would work on one backend only.
    offenders = [
        f"{name} imports {imported}"
        for name, path in modules()
        if not name.startswith("hookctl.store")
        for imported in imports(name, path)
        if imported.startswith(("hookctl.store.sqlite", "hookctl.store.postgres"))
    ]
    assert not offenders, "outside store/, use the contract:\n" + "\n".join(offenders)


def test_every_part_of_the_package_is_on_a_layer() -> None:
    parts = {part(name) for name, _ in modules()} - {"hookctl", None}
    missing = parts - set().union(*LAYERS)
    assert not missing, f"LAYERS must name every package and top-level module: {missing}"


def test_the_known_back_edges_are_still_there() -> None:
    # Once one is removed, drop it from KNOWN_BACK_EDGES so it cannot come back unnoticed.
    found = {(name, imported) for name, path in modules() for imported in imports(name, path)}
    assert found >= KNOWN_BACK_EDGES, KNOWN_BACK_EDGES - found
