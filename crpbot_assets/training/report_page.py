"""A self-contained HTML report page, and its table as text for a terminal. Pure: no Dagster, no report keys.

The caller hands a neutral `Page`: a title, the verdict in words, one `Table` (units in the headers, a one-line
legend) and PNG images. `html(page)` inlines everything (style, images as data URIs): the file opens from disk,
an S3 download or an e-mail, with no network. `text(table)` is the same table for a terminal, `markdown(table)`
for Dagster's metadata.
"""

from __future__ import annotations

import base64
import html as _html
from dataclasses import dataclass
from textwrap import wrap

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.4em; margin-bottom: .2em; }
.verdict { font-size: 1.15em; background: #f4f6f8; border-left: 4px solid #3a6ea5; padding: .7em 1em; }
table { border-collapse: collapse; margin: 1em 0 .3em; }
th, td { padding: .3em .7em; border-bottom: 1px solid #ddd; }
th { text-align: right; vertical-align: bottom; } th:first-child, td:first-child { text-align: left; }
td { text-align: right; font-variant-numeric: tabular-nums; }
.legend, .notes { color: #555; font-size: .9em; }
figure { margin: 1.5em 0; } figcaption { font-weight: 600; margin-bottom: .3em; }
img { max-width: 100%; }
"""


@dataclass(frozen=True)
class Table:
    """Rows of already formatted cells (first column: the row's name); headers carry units, e.g. "net (%)"."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    legend: str = ""

    def __post_init__(self):
        object.__setattr__(self, "headers", tuple(self.headers))
        object.__setattr__(self, "rows", tuple(tuple(str(c) for c in row) for row in self.rows))
        for row in self.rows:
            if len(row) != len(self.headers):
                raise ValueError(f"table row {row!r} has {len(row)} cells for {len(self.headers)} headers")


@dataclass(frozen=True)
class Image:
    title: str
    png: bytes

    def __post_init__(self):
        if not self.png.startswith(PNG_SIGNATURE):
            raise ValueError(f"image {self.title!r} is not a PNG")


@dataclass(frozen=True)
class Page:
    title: str
    verdict: str  # the verdict in words, a sentence or two
    table: Table
    images: tuple[Image, ...] = ()
    notes: tuple[str, ...] = ()  # small print under the table (data, costs, "simulation, not advice")


def text(table: Table) -> str:
    """The table for a terminal: first column left-aligned, the others right-aligned, legend below (wrapped to
    the table's width, at least 80 characters)."""
    widths = [max(len(r[i]) for r in (table.headers, *table.rows)) for i in range(len(table.headers))]

    def line(cells) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    lines = [line(table.headers), line("-" * w for w in widths), *(line(r) for r in table.rows)]
    width = max(len(lines[0]), 80)  # the legend wrapped to the table's width
    return "\n".join(lines + [w for part in table.legend.splitlines() for w in wrap(part, width) or [""]])


def markdown(table: Table) -> str:
    """The table as markdown, the legend in italics below it."""

    def line(cells) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [line(table.headers), "|" + "---|" * len(table.headers), *(line(r) for r in table.rows)]
    return "\n".join(lines + ([f"\n*{table.legend}*"] if table.legend else []))


def html(page: Page) -> str:
    """The page as one self-contained HTML document (no external resource)."""
    esc = _html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in page.table.headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in page.table.rows)
    figures = "".join(
        f'<figure><figcaption>{esc(image.title)}</figcaption><img alt="{esc(image.title)}" '
        f'src="data:image/png;base64,{base64.b64encode(image.png).decode()}"></figure>'
        for image in page.images
    )
    notes = "".join(f"<li>{esc(n)}</li>" for n in page.notes)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(page.title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{esc(page.title)}</h1>"
        f'<p class="verdict" id="verdict">{esc(page.verdict)}</p>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        + (f'<p class="legend">{esc(page.table.legend)}</p>' if page.table.legend else "")
        + (f'<ul class="notes">{notes}</ul>' if notes else "")
        + figures
        + "</body></html>\n"
    )
