"""Render matplotlib figures as PNG bytes, or as markdown metadata the Dagster UI shows inline."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import dagster as dg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def figure_png(fig) -> bytes:
    """`fig` as PNG bytes; closes the figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def figure_markdown(fig, title: str) -> dg.MetadataValue:
    """A PNG of `fig` embedded as a data URI in markdown; closes the figure."""
    encoded = base64.b64encode(figure_png(fig)).decode()
    return dg.MetadataValue.md(f"**{title}**\n\n![{title}](data:image/png;base64,{encoded})")


def line_figure(series: dict[str, list[float]], title: str, xlabel: str, ylabel: str, x=None):
    """One line per named series (a matplotlib figure)."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name, values in series.items():
        ax.plot(x if x is not None else range(1, len(values) + 1), values, label=name)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    if x is None:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        fig.autofmt_xdate()
    if len(series) > 1:
        ax.legend()
    return fig


def line_plot(
    series: dict[str, list[float]], title: str, xlabel: str, ylabel: str, x=None
) -> dg.MetadataValue:
    """One line per named series, as inline markdown metadata."""
    return figure_markdown(line_figure(series, title, xlabel, ylabel, x), title)
