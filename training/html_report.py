"""The HTML of the report pages (`mtrank ab-report`, `mtrank compare`): one style, one page layout,
tables, and the number formats both pages show.

Pages are self-contained: the style is inline, and nothing is loaded from elsewhere (`mtrank
compare` links its PNGs, written beside the page). Values are formatted here; text that comes from
the data (names, notes) is escaped by the caller or by `page`.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f4f4f4; }
.good { color: #0a7d32; } .bad { color: #b3261e; } .muted { color: #777; }
.verdict { background: #f0f6ff; border-left: 4px solid #2a6fdb; padding: 0.6em 1em; }
"""


def page(title: str, body: Iterable[str], notes: Iterable[str], more_style: str = "") -> str:
    """A whole page: `title` as the heading, the `body` parts, then the notes as a list."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>",
        f"<style>{STYLE}{more_style}</style></head><body><h1>{title}</h1>",
        *body,
        "<h2>Notes</h2><ul>",
        *(f"<li>{html.escape(note)}</li>" for note in notes),
        "</ul></body></html>\n",
    ]
    return "\n".join(parts)


@dataclass(frozen=True)
class Cell:
    """A table cell with attributes: `Cell(text, css="muted")`, `Cell(colspan=7)`."""

    content: object = ""
    css: str | None = None
    colspan: int | None = None

    def __str__(self) -> str:
        css = "" if self.css is None else f" class='{self.css}'"
        span = "" if self.colspan is None else f" colspan='{self.colspan}'"
        return f"<td{css}{span}>{self.content}</td>"


def row(*cells: object, css: str | None = None) -> str:
    """A table row; a cell that is not a `Cell` is put in a plain `<td>` as it is (not escaped)."""
    tds = "".join(str(c) if isinstance(c, Cell) else f"<td>{c}</td>" for c in cells)
    attribute = "" if css is None else f" class='{css}'"
    return f"<tr{attribute}>{tds}</tr>"


def table(headers: Sequence[str], rows: Iterable[str]) -> str:
    """A table: a row of `headers`, then the `rows` (see `row`), one element a line."""
    head = "<table><tr>" + "".join(f"<th>{h}</th>" for h in headers) + "</tr>"
    return "\n".join([head, *rows, "</table>"])


def with_interval(value: str, low: str, high: str) -> str:
    """A value followed by its interval, muted: `0.7312 [0.7290, 0.7334]`."""
    return f"{value} <span class='muted'>[{low}, {high}]</span>"


def num(value: float | None, digits: int = 4) -> str:
    """A number with `digits` decimals; `n/a` for None."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def p_value(value: float | None) -> str:
    """A p-value: four decimals, `< 0.0001` below that (HTML-escaped); `n/a` for None."""
    if value is None:
        return "n/a"
    return "&lt; 0.0001" if value < 1e-4 else f"{value:.4f}"
