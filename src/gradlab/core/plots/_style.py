"""What every figure family shares: palettes, axis labels, column checks, the canvas laid out in
inches, log axes with plain-text labels, notes, and ``plot_message``."""

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from gradlab.core.activations import ACTIVATIONS

# One colour per activation in every figure, in the order of the theory registry.
ACTIVATION_COLORS: dict[str, tuple[float, float, float]] = dict(
    zip(ACTIVATIONS, sns.color_palette("colorblind", len(ACTIVATIONS)), strict=True)
)

# How a column of the runs table reads on an axis or in a legend.
AXIS_LABELS: dict[str, str] = {
    "init_name": "init",
    "depth": "depth (hidden layers)",
    "width": "width (units)",
    "input_norm": "input normalization",
    "norm_layer": "normalization layer",
    "lr": "learning rate",
    "schedule": "LR schedule",
}

# Characters per inch of figure width for wrapped titles (11 pt) and notes (7 pt).
_TITLE_CHARS_PER_INCH = 10
_NOTE_CHARS_PER_INCH = 17


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    if missing := set(columns) - set(frame.columns):
        raise ValueError(f"{what} lacks columns {sorted(missing)}; it has {sorted(frame.columns)}")


def axis_label(column: str) -> str:
    """How a runs-table column reads on a figure (``init_name`` → ``init``)."""
    return AXIS_LABELS.get(column, column.replace("_", " "))


def _activation_order(names: Sequence[str]) -> list[str]:
    """Activations in the registry's order (sigmoid, tanh, relu, …), unknown ones last."""
    present = set(names)
    known = [name for name in ACTIVATIONS if name in present]
    return known + sorted(present - set(known))


def _palette(column: str, values: Sequence) -> dict:
    """Fixed colours for activations; a colour-blind palette in sorted order for anything else."""
    if column == "activation":
        extra = iter(sns.color_palette("dark", len(values)))
        return {name: ACTIVATION_COLORS.get(name) or next(extra) for name in values}
    return dict(zip(values, sns.color_palette("colorblind", len(values)), strict=False))


def category_order(values: pd.Series) -> list:
    """Distinct values sorted (activations in registry order); mixed types keep first-seen order."""
    unique = values.dropna().unique().tolist()
    if values.name == "activation":
        return _activation_order(unique)
    try:
        return sorted(unique)
    except TypeError:
        return unique


def _drawable(frame: pd.DataFrame, column: str, log: bool) -> tuple[pd.DataFrame, int]:
    values = frame[column].to_numpy(dtype=float)
    keep = np.isfinite(values) & (values > 0 if log else True)
    return frame[keep], int((~keep).sum())


@dataclass(frozen=True)
class _Canvas:
    """A figure with its panels and where the right-margin legend goes (figure coordinates)."""

    fig: Figure
    axes: np.ndarray
    legend_at: tuple[float, float]

    def legend(self, handles: list, title: str, fontsize: float = 8) -> None:
        self.fig.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=self.legend_at,
            title=title,
            fontsize=fontsize,
            title_fontsize=fontsize,
            frameon=False,
        )


# noqa reason: layout knobs, all but the first four keyword-only with defaults
def _canvas(  # noqa: PLR0913
    shape: tuple[int, int],
    panel: tuple[float, float],
    title: str,
    notes: Sequence[str] = (),
    *,
    legend: float = 0.0,
    left: float = 0.9,
    bottom: float = 0.6,
    gaps: tuple[float, float] = (0.45, 0.65),
    widths: Sequence[float] | None = None,
    heights: Sequence[float] | None = None,
    **subplot_kw,
) -> _Canvas:
    """Panels laid out in inches, title and notes placed, nothing left to a layout engine.

    A fixed layout costs nothing at save time; constrained layout measures every tick label of
    every panel (about half of the time to save a many-panel figure).

    Args:
        shape: (rows, columns) of panels.
        panel: (width, height) of one panel in inches (width scaled by ``widths``).
        title: The figure's question, wrapped to its width.
        notes: Small print under the panels; empty strings are skipped.
        legend: Inches kept free on the right for a figure legend.
        left: Inches left of the first column (y tick labels and label).
        bottom: Inches under the last row (x tick labels and label).
        gaps: (horizontal, vertical) inches between panels.
        widths: Relative widths of the columns.
        heights: Relative heights of the rows: a row is ``panel``'s height times its ratio.
        **subplot_kw: Passed to ``plt.subplots`` (``sharey``, ...).
    Returns:
        The canvas.
    """
    rows, cols = shape
    ratios = list(widths or [1.0] * cols)
    row_ratios = list(heights or [1.0] * rows)
    plot_w = panel[0] * sum(ratios) + gaps[0] * (cols - 1)
    width = left + plot_w + 0.3 + legend
    heading = textwrap.fill(title, max(int(width * _TITLE_CHARS_PER_INCH), 30))
    note = "; ".join(n for n in notes if n)
    small = textwrap.fill(note, int(width * _NOTE_CHARS_PER_INCH)) if note else ""
    top = 0.5 + 0.2 * (heading.count("\n") + 1)  # the title, then room for panel titles
    foot = bottom + (0.12 * (small.count("\n") + 1) + 0.1 if small else 0.0)
    height = top + panel[1] * sum(row_ratios) + gaps[1] * (rows - 1) + foot
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(width, height),
        squeeze=False,
        gridspec_kw={
            "left": left / width,
            "right": (left + plot_w) / width,
            "top": 1 - top / height,
            "bottom": foot / height,
            "wspace": gaps[0] / (panel[0] * sum(ratios) / cols),
            "hspace": gaps[1] / (panel[1] * sum(row_ratios) / rows),
            "width_ratios": ratios,
            "height_ratios": row_ratios,
        },
        **subplot_kw,
    )
    fig.suptitle(heading, y=1 - 0.12 / height, va="top", fontsize=11)
    if small:
        fig.text(0.1 / width, 0.08 / height, small, fontsize=7, color="0.35", va="bottom")
    return _Canvas(fig, axes, ((left + plot_w + 0.35) / width, 1 - top / height))


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _power_label(value: float, _position: object = None) -> str:
    """``10⁻³`` or ``2×10⁻³``: a log-axis tick label in plain text.

    matplotlib's default label is mathtext, whose parser costs ~0.3 s to build in each process
    and a parse per label; plain text with Unicode superscripts reads the same.
    """
    if not value > 0:
        return ""
    exponent = math.floor(math.log10(value) + 1e-9)
    mantissa = value / 10.0**exponent
    power = "10" + str(exponent).translate(_SUPERSCRIPT)
    return power if abs(mantissa - 1) < 1e-6 else f"{mantissa:.2g}×{power}"


def _log_scale(ax: Axes, which: str, values: pd.Series) -> None:
    """Log scale on ``which`` (``x`` or ``y``) with plain-text labels: decades only where the
    values span more than three (minor ticks would go unlabelled, and each tick costs render
    time), else ticks at 1, 2 and 5 times each power of ten."""
    axis: Axis
    if which == "x":
        ax.set_xscale("log")
        axis = ax.xaxis
    else:
        ax.set_yscale("log")
        axis = ax.yaxis
    positive = values[values > 0]
    wide = positive.empty or positive.max() / positive.min() > 1e3
    axis.set_major_locator(LogLocator(subs=(1.0,) if wide else (1.0, 2.0, 5.0)))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(_power_label))


def _dropped_note(count: int, why: str) -> str:
    return f"{count} values {why} not drawn" if count else ""


def _line_handles(colors: dict, **kwargs) -> list[Line2D]:
    return [Line2D([], [], color=color, label=str(key), **kwargs) for key, color in colors.items()]


def plot_message(title: str, message: str) -> Figure:
    """A figure that says why there is nothing to draw (e.g. the runs lack theory columns).

    Args:
        title: The question the missing figure would answer.
        message: Why it is empty and what to do.
    Returns:
        The figure.
    """
    canvas = _canvas((1, 1), (7.0, 1.4), title, left=0.3, bottom=0.2)
    ax = canvas.axes[0, 0]
    ax.set_axis_off()
    ax.text(0.5, 0.5, textwrap.fill(message, 90), ha="center", va="center", fontsize=10)
    return canvas.fig


def _seed_stats(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    return frame.groupby(by, sort=False)["value"].agg(["mean", "min", "max"]).reset_index()
