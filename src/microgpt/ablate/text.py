"""A study's report as printed text: the tables of `tables` laid out in columns, level by
level, then the differences across levels and the notes on stability. Drawn from the checked
results.json (`results.Results`), as the page is.
"""

from __future__ import annotations

import textwrap

from microgpt.ablate import tables
from microgpt.ablate.results import Results
from microgpt.ablate.tables import Cell, Table

WIDTH = 100  # the notes are wrapped at this many characters; the tables are as wide as they are
EVERY_LEVEL = ("designs", "comparisons")  # tables explained at every level, the rest at the first


def format_report(results: Results) -> str:
    """Per level: the figures and the comparisons; then, when a numeric setting varies, each
    design's difference to the baseline against it; then what diverged or grew."""
    lines: list[str] = []
    levels = results.levels()
    for i, level in enumerate(levels):
        if level.values:
            lines += [f"== {level.label} ==", ""]
        for table in tables.figure_tables(results, level):
            lines += [*_table(table, first=i == 0), ""]
        comparisons = tables.comparison_tables(results, level)
        if comparisons is None:
            lines += [tables.NO_VAL_LOSS, ""]
        for table in comparisons or []:
            lines += [*_table(table, first=i == 0), ""]
    if tables.scales(results):
        table = tables.scaling_table(results, levels)
        question = tables.scaling_question(results.numeric)
        title = f"{question} {table.title} (mean and interval as above; ~ marks differences "
        title += "within seed noise)."
        lines += [*_wrap(title), *_grid(table), ""]
    for note in tables.stability_notes(results):
        lines += [*_wrap(note), ""]
    return "\n".join(lines).rstrip("\n")


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH)


def _table(table: Table, first: bool) -> list[str]:
    """A table with its title before it and its note after it (a baseline's row marked *)."""
    explained = first or table.kind in EVERY_LEVEL
    lines = _wrap(table.title) if explained else []
    lines += _grid(table)
    if explained and table.note:
        tag = next((row.tag for row in table.rows if row.tag), "")
        lines += _wrap((f"* {tag} design. " if tag else "") + table.note)
    if table.caveat:
        lines += _wrap(table.caveat)
    return lines


def _cell(cell: Cell) -> str:
    text = f"{cell.text} {cell.aside}" if cell.aside else cell.text
    return text + (" ~" if cell.tone == "noise" else "")


def _grid(table: Table) -> list[str]:
    """The header, a rule and the rows; numbers read from the right, the rest from the left."""
    if not table.rows:
        return []
    rows = [
        [row.label + (" *" if row.tag else ""), *map(_cell, row.cells)]
        + ([row.verdict] if table.verdicts else [])
        for row in table.rows
    ]
    header = list(table.header)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in table.numbers else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return [line(header), "-" * len(line(header)), *map(line, rows)]
