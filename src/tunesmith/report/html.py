"""The report's HTML kit: the page shell and its CSS, section headings and the navigation bar,
tables, paragraphs and notes, and figures inlined as PNG data URIs. Every piece of run or user
text goes through html.escape here."""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SHOWN_TEXT_CHARS = 400  # longer texts are cut in the examples table to keep it scannable
SECTIONS = {
    "config": "Configuration",
    "data": "Data",
    "curves": "Training curves",
    "validation": "Validation results",
    "worst": "Worst-predicted validation examples",
    "throughput": "Throughput and hardware",
}


class Figures:
    """Writes each figure as a PNG into a folder and returns it inlined as an <img> tag."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, plot: Callable[[Path], None], alt: str) -> str:
        path = self.folder / f"{name}.png"
        plot(path)
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def _nav() -> str:
    links = " · ".join(f'<a href="#{key}">{title}</a>' for key, title in SECTIONS.items())
    return f"<nav>{links}</nav>"


def _section(key: str, content: str) -> str:
    return f'<section id="{key}">\n<h2>{SECTIONS[key]}</h2>\n{content}\n</section>'


def _p(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _shorten(text: str) -> str:
    return text if len(text) <= SHOWN_TEXT_CHARS else text[:SHOWN_TEXT_CHARS] + " …"


def _cell(value: Any) -> str:
    if value is None:
        return "<td>—</td>"
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return f"<td>{html.escape(str(value))}</td>"
    if isinstance(value, int | np.integer):
        return f'<td class="num">{value:,}</td>'
    return (
        f'<td class="num">{value:.4f}</td>'
        if abs(value) < 10
        else f'<td class="num">{value:,.1f}</td>'
    )


def _table(columns: list[str], rows: list, show_header: bool = True, css: str = "") -> str:
    """Rows of values: text escaped and left-aligned, numbers right-aligned, None as a dash.
    css: "examples" (full width, long texts wrap) or "numbers" (values right-aligned)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns) if show_header else ""
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>\n" for row in rows)
    table = f'<table class="{css}">' if css else "<table>"
    return table + (f"<thead><tr>{head}</tr></thead>" if head else "") + body + "</table>"


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
  color: #222; line-height: 1.45; }}
h1 {{ font-size: 1.6em; }}
h2 {{ border-bottom: 2px solid #ddd; padding-bottom: .2em; margin-top: 2em; }}
h3 {{ font-size: 1em; margin: .8em 0 .3em; }}
nav a {{ color: #2a5db0; }}
table {{ border-collapse: collapse; margin: .5em 0 1em; font-size: .92em; }}
th, td {{ border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }}
tr:nth-child(even) td {{ background: #fafafa; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
table.examples {{ width: 100%; }}
table.examples td {{ overflow-wrap: anywhere; }}
table.numbers td + td {{ text-align: right; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 0 2em; align-items: flex-start; }}
img {{ max-width: 100%; display: block; margin: .5em 0 1em; }}
.note {{ background: #fff6d6; border-left: 4px solid #e0b800; padding: .4em .8em; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""
