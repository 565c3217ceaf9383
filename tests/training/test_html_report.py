"""The report pages' HTML helpers (training/html_report.py), pinned byte for byte: both `mtrank
ab-report` and `mtrank compare` build their pages from them."""

from __future__ import annotations

from training.html_report import STYLE, Cell, num, p_value, page, row, table, with_interval


def test_page_holds_the_style_the_body_and_the_escaped_notes() -> None:
    html = page("mtrank x", ["<p>one</p>", "<p>two</p>"], ["a < b"], more_style="img {}\n")
    assert html == "\n".join(
        [
            "<!doctype html><html><head><meta charset='utf-8'><title>mtrank x</title>",
            f"<style>{STYLE}img {{}}\n</style></head><body><h1>mtrank x</h1>",
            "<p>one</p>",
            "<p>two</p>",
            "<h2>Notes</h2><ul>",
            "<li>a &lt; b</li>",
            "</ul></body></html>\n",
        ]
    )


def test_tables_rows_and_cells() -> None:
    assert row("a", 3) == "<tr><td>a</td><td>3</td></tr>"
    assert row("a", css="good") == "<tr class='good'><td>a</td></tr>"
    assert row("a", css="") == "<tr class=''><td>a</td></tr>"  # ab-report's unmarked lift rows
    assert row(Cell("x", css="muted"), Cell(colspan=7)) == (
        "<tr><td class='muted'>x</td><td colspan='7'></td></tr>"
    )
    assert table(["h1", "h2"], [row(1, 2)]) == (
        "<table><tr><th>h1</th><th>h2</th></tr>\n<tr><td>1</td><td>2</td></tr>\n</table>"
    )
    assert table(["h"], []) == "<table><tr><th>h</th></tr>\n</table>"


def test_number_formats() -> None:
    assert num(0.123456) == "0.1235" and num(2.5, 1) == "2.5" and num(None) == "n/a"
    assert p_value(0.04321) == "0.0432" and p_value(1e-6) == "&lt; 0.0001"
    assert p_value(None) == "n/a"
    assert with_interval("1", "0", "2") == "1 <span class='muted'>[0, 2]</span>"
