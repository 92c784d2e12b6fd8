"""Tables on stdout: rich and cut to fit on a terminal, tab-separated when piped."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

from hookctl.cli.output import STATUS_STYLE, safe


def rows_table(
    rows: Iterable[Mapping[str, Any]],
    columns: list[tuple[str, str]],
    *,
    color: bool,
    whole: tuple[str, ...] = (),
    drop: tuple[str, ...] = (),
    width: int | None = None,
) -> None:
    """A table on stdout: rich on a terminal, tab-separated when piped.

    On a terminal every row is one line: the `whole` columns (ids, names) are not cut, the
    others are cut with `…` to fit, and when even that does not fit the `drop` columns are
    left out, in that order. On a terminal too narrow for all the `whole` columns, the last
    of them are cut too: the first (an id) stays whole.
    """
    if not color:
        out = sys.stdout
        out.write("\t".join(title for _, title in columns) + "\n")
        for row in rows:
            out.write("\t".join(_cell(row.get(key)) for key, _ in columns) + "\n")
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(width=width) if width else Console()
    cells = [{key: _cell(row.get(key)) for key, _ in columns} for row in rows]
    shown = _fit(columns, cells, console.width, whole, drop)
    whole = _keep_whole(shown, cells, console.width, whole)
    widths = _widths(shown, cells, console.width, whole)
    table = Table(box=None, header_style="bold")
    for key, title in shown:
        table.add_column(title, width=widths[key], no_wrap=True, overflow="ellipsis")
    for row in cells:
        texts = []
        for key, _ in shown:
            text = row[key]
            style = STATUS_STYLE.get(text) if key == "status" else None
            texts.append(Text(text, style=style or ""))
        table.add_row(*texts)
    console.print(table)


_CUT_WIDTH = 10  # the least a column that is cut keeps, before it is dropped instead
_PADDING = 2  # rich's padding around each column of a box-less table


def _natural(key: str, title: str, cells: list[dict[str, str]]) -> int:
    return max([len(title), *(len(row[key]) for row in cells)])


def _fit(
    columns: list[tuple[str, str]],
    cells: list[dict[str, str]],
    width: int,
    whole: tuple[str, ...],
    drop: tuple[str, ...],
) -> list[tuple[str, str]]:
    """The columns that fit in `width`: whole ones at full width, the rest at least cut."""
    shown = list(columns)

    def needed() -> int:
        total = 0
        for key, title in shown:
            natural = _natural(key, title, cells)
            total += (natural if key in whole else min(natural, _CUT_WIDTH)) + _PADDING
        return total

    for key in drop:
        if needed() <= width:
            break
        shown = [c for c in shown if c[0] != key]
    return shown


def _keep_whole(
    shown: list[tuple[str, str]], cells: list[dict[str, str]], width: int, whole: tuple[str, ...]
) -> tuple[str, ...]:
    """The `whole` columns that fit whole beside the others at their least, first ones first."""
    titles = dict(shown)
    kept = tuple(key for key in whole if key in titles)
    while len(kept) > 1:
        cut = sum(
            min(_natural(key, title, cells), _CUT_WIDTH) for key, title in shown if key not in kept
        )
        full = sum(_natural(key, titles[key], cells) for key in kept)
        if full + cut + _PADDING * len(shown) <= width:
            break
        kept = kept[:-1]
    return kept


def _widths(
    shown: list[tuple[str, str]], cells: list[dict[str, str]], width: int, whole: tuple[str, ...]
) -> dict[str, int]:
    """Each column's width: whole ones as wide as their widest cell, the others sharing what
    is left, the narrow ones first (each gets at most what it needs)."""
    natural = {key: _natural(key, title, cells) for key, title in shown}
    sizes = {key: natural[key] for key, _ in shown if key in whole}
    left = width - _PADDING * len(shown) - sum(sizes.values())
    flexible = sorted((key for key, _ in shown if key not in whole), key=natural.__getitem__)
    for n, key in enumerate(flexible):
        share = max(1, left // (len(flexible) - n))
        sizes[key] = min(natural[key], share)
        left -= sizes[key]
    return sizes


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return safe(str(value).replace("\t", " ").replace("\n", " "))
