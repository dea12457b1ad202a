"""Fit a table to a terminal width: wrap cells, and move the least needed columns under the row.

Pure text layout, no I/O: the caller passes the width (the CLI reads it from the terminal
or COLUMNS), so tests can check every width. A width of None keeps every row on one line,
as wide as its cells (`-o wide`). No line this module returns is wider than the width it
was given (for widths of 30 and up; narrower ones are wrapped as far as they can be).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

INDENT = 2  # before the first column
GAP = 2  # between columns


@dataclass(frozen=True)
class Column:
    """A table column; `keep` orders who stays in the grid when the width runs out."""

    title: str
    label: str  # its name on the line under the row once it left the grid
    keep: int  # higher stays longer; the first column never leaves
    whole: bool = False  # rather not wrapped (short values: counts, verdicts)
    min_width: int = 14


def _tokens(text: str, width: int, prose: bool) -> Iterator[str]:
    """Pieces to join with one space: split after `,` `;` `|` first (cells; prose: at every
    space), then at spaces, then hard."""
    for atom in re.split(r" +" if prose else r"(?<=[,;|]) +", text):
        if not atom:
            continue
        if len(atom) <= width:
            yield atom
            continue
        for word in atom.split(" "):
            while len(word) > width:
                yield word[:width]
                word = word[width:]
            if word:
                yield word


def wrap(text: str, width: int, prose: bool = False, later: int | None = None) -> list[str]:
    """Greedy wrap that prefers the list separators of the table's cells; never wider.

    `later`: the width of the lines after the first (a hanging indent), default `width`.
    """
    width = max(width, 1)
    later = width if later is None else max(later, 1)
    out: list[str] = []
    line = ""
    for token in _tokens(text, min(width, later), prose):
        room = later if out else width
        if not line:
            line = token
        elif len(line) + 1 + len(token) <= room:
            line += " " + token
        else:
            out.append(line)
            line = token
    out.append(line)
    return out


def hanging(first: str, text: str, width: int | None, rest: str | None = None) -> list[str]:
    """`first` then text; continuation lines indented as `rest` (default: as wide as `first`)."""
    if width is None:
        return [first + text]
    rest = " " * len(first) if rest is None else rest
    lines = wrap(text, width - len(first), prose=True, later=width - len(rest))
    return [first + lines[0], *(rest + line for line in lines[1:])]


def _widths(columns: Sequence[Column], natural: list[int], grid: list[int], room: int) -> dict:
    """Each grid column's width: whole columns first (the shortest first), then the rest
    filled evenly."""
    widths = {i: min(natural[i], columns[i].min_width) for i in grid}
    spare = room - sum(widths.values())
    if spare < 0:  # not even the minimums fit: shrink the widest, keep at least 1
        while spare < 0 and max(widths.values()) > 1:
            widest = max(widths, key=lambda i: widths[i])
            widths[widest] -= 1
            spare += 1
        return widths
    for i in sorted(grid, key=lambda i: natural[i]):  # as many whole as fit
        if columns[i].whole:
            give = min(natural[i] - widths[i], spare)
            widths[i] += give
            spare -= give
    growing = [i for i in grid if widths[i] < natural[i]]
    while spare > 0 and growing:
        for i in list(growing):
            if spare == 0:
                break
            widths[i] += 1
            spare -= 1
            if widths[i] >= natural[i]:
                growing.remove(i)
    return widths


@dataclass(frozen=True)
class Fitted:
    """The header's lines, and each row's lines (its grid lines, then the moved columns)."""

    header: list[str]
    rows: list[list[str]]


def fit(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None = None
) -> Fitted:
    """Lay the rows out in at most `width` columns (None: one line per row, full width)."""
    n = len(columns)
    titles = [c.title for c in columns]
    natural = [max(len(r[i]) for r in [titles, *rows]) for i in range(n)]

    def total(cols: list[int], w) -> int:
        return INDENT + GAP * (len(cols) - 1) + sum(w(i) for i in cols)

    grid = list(range(n))
    if width is not None and total(grid, lambda i: natural[i]) > width:
        cap = max(width // 3, 12)  # a whole column is not wrapped to keep a lesser one in view

        def least(i: int) -> int:
            c = columns[i]
            return min(natural[i], max(cap, c.min_width) if c.whole else c.min_width)

        movable = sorted(grid[1:], key=lambda i: columns[i].keep)
        while movable and total(grid, least) > width:
            grid.remove(movable.pop(0))
        widths = _widths(columns, natural, grid, width - total(grid, lambda i: 0))
    else:
        widths = {i: natural[i] for i in grid}
    moved = [i for i in range(n) if i not in grid]

    def lay(cells: Sequence[str]) -> list[str]:
        wrapped = {i: wrap(cells[i], widths[i]) for i in grid}
        height = max(len(w) for w in wrapped.values())
        out = []
        for k in range(height):
            parts = [(wrapped[i][k] if k < len(wrapped[i]) else "").ljust(widths[i]) for i in grid]
            out.append((" " * INDENT + (" " * GAP).join(parts)).rstrip())
        return out

    laid = []
    for row in rows:
        lines = lay(row)
        for i in moved:
            if row[i] in ("", "-"):  # nothing to say (a load has no single path)
                continue
            lines += hanging(" " * (INDENT + 4) + columns[i].label + ": ", row[i], width)
        laid.append(lines)
    return Fitted(lay(titles), laid)
