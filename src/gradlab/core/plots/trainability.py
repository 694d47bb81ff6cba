"""Trainability over (σ_w², depth) with the mean-field depth scale drawn on it (Schoenholz et al.
2017, Fig. 5): a heatmap of each cell's outcome, the deepest depth that trains per σ_w², the
curve 6 ξ_c and the critical σ_w²."""

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.pyplot import get_cmap
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from gradlab.core.plots._style import _canvas, _require, plot_message
from gradlab.core.verdict import TRAINED_AT

# Two values get a log axis where their ratio exceeds this.
_LOG_SPAN = 8.0
_TRAINABLE_COLOR = "#d62728"
_HATCH_COLOR = "lightcoral"
# the final metric, 0 to 1; light grey where a cell has no run
_CMAP = get_cmap("viridis").with_extremes(bad="0.93")


def _edges(values: np.ndarray, log: bool) -> np.ndarray:
    """Cell edges around sorted centres: midpoints (geometric on a log axis), the ends mirrored."""
    x = np.log(values) if log else values.astype(float)
    if len(x) == 1:
        mids = np.array([x[0] - 0.5, x[0] + 0.5])
    else:
        inner = (x[1:] + x[:-1]) / 2
        mids = np.concatenate([[2 * x[0] - inner[0]], inner, [2 * x[-1] - inner[-1]]])
    return np.exp(mids) if log else mids


def _is_log(values: np.ndarray) -> bool:
    """A log axis where the values are closer to evenly spaced in log than in linear terms
    (depths 4, 8, 16, 32; not 10, 20, …, 100), so that the cells come out of even size; two
    values: where their ratio exceeds ``_LOG_SPAN``."""
    if values.min() <= 0:
        return False
    if len(values) < 3:
        return bool(values.max() / values.min() > _LOG_SPAN)
    steps = np.diff(np.log(values)), np.diff(values)
    spread = [float(np.std(step) / np.mean(step)) for step in steps]
    return spread[0] < spread[1]


def _draw_panel(
    ax: Axes,
    cells: pd.DataFrame,
    curve: pd.DataFrame,
    *,
    critical: float,
    title: str,
) -> QuadMesh:
    widths = np.sort(cells["sigma_w2"].unique().astype(float))
    depths = np.sort(cells["depth"].unique().astype(float))
    log_x, log_y = _is_log(widths), _is_log(depths)
    x_edges, y_edges = _edges(widths, log_x), _edges(depths, log_y)
    grid = cells.pivot_table(
        index="depth", columns="sigma_w2", values="median_metric", aggfunc="first"
    ).reindex(index=depths, columns=widths)
    values = grid.to_numpy(float)
    image = ax.pcolormesh(
        x_edges,
        y_edges,
        np.ma.masked_invalid(np.where(np.isneginf(values), np.nan, values)),
        cmap=_CMAP,
        vmin=0.0,
        vmax=1.0,
    )
    for i, j in zip(
        *np.nonzero(np.isneginf(values)), strict=True
    ):  # at least half the seeds stopped
        ax.add_patch(
            Rectangle(
                (x_edges[j], y_edges[i]),
                x_edges[j + 1] - x_edges[j],
                y_edges[i + 1] - y_edges[i],
                fill=False,
                hatch="xx",
                ec=_HATCH_COLOR,
                lw=0,
            )
        )
    # the deepest depth that trains per σ_w², as the top edge of its cell (the bottom: none)
    trains = (grid.to_numpy(float) >= TRAINED_AT) & np.isfinite(values)
    top = [y_edges[np.flatnonzero(col)[-1] + 1] if col.any() else y_edges[0] for col in trains.T]
    ax.stairs(top, x_edges, baseline=None, color=_TRAINABLE_COLOR, lw=2.0, zorder=3)
    if not curve.empty:
        ax.plot(curve["sigma_w2"], curve["six_xi_c"], color="black", lw=1.8, zorder=4)
    if np.isfinite(critical) and x_edges[0] < critical < x_edges[-1]:
        ax.axvline(critical, color="black", ls="--", lw=1.0, zorder=4)
    # ticks at the cells' own values: a sweep's σ_w² and depths read as the grid names them
    for axis, values, log in ((ax.xaxis, widths, log_x), (ax.yaxis, depths, log_y)):
        if log:
            (ax.set_xscale if axis is ax.xaxis else ax.set_yscale)("log")
        axis.set_major_locator(FixedLocator(list(values)))
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
        axis.set_minor_locator(NullLocator())
    ax.set_xlim(x_edges[0], x_edges[-1])
    ax.set_ylim(y_edges[0], y_edges[-1])
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("σ_w² = fan_in · Var[W]" + (" (log scale)" if log_x else ""), fontsize=8)
    ax.tick_params(which="both", labelsize=7)
    return image


def plot_trainability(
    cells: pd.DataFrame,
    curves: pd.DataFrame,
    panels: pd.DataFrame,
    question: str,
    metric_label: str,
) -> Figure:
    """A heatmap of the outcome over (σ_w², depth) per panel, with the depth scale on it.

    Each cell is coloured by its median final metric over seeds (clipped to [0, 1]; hatched
    where at least half the seeds diverged or failed); a red staircase marks the deepest depth
    that trains (median ≥ ``TRAINED_AT``) at each σ_w²; the black curve is 6 ξ_c(σ_w², σ_b²)
    and the dashed line the critical σ_w², where χ₁ = 1 and ξ_c diverges. σ_w² and depth get a
    log axis where their values are closer to evenly spaced in logs (``_is_log``).

    Args:
        cells: ``panel`` (its label), ``sigma_w2``, ``depth``, ``median_metric`` (−inf: at
            least half the seeds stopped), ``n_runs`` (``gradlab.core.report.trainability_frames``).
        curves: ``panel``, ``sigma_w2``, ``six_xi_c`` (``gradlab.core.report.xi_c_curves``).
        panels: ``panel``, ``critical_sigma_w2``: a panel each, in order.
        question: The study's question (the figure's title).
        metric_label: What ``median_metric`` is (e.g. ``val accuracy``).
    Returns:
        The figure.
    """
    _require(cells, ["panel", "sigma_w2", "depth", "median_metric"], "cells")
    _require(curves, ["panel", "sigma_w2", "six_xi_c"], "curves")
    _require(panels, ["panel", "critical_sigma_w2"], "panels")
    if cells.empty or panels.empty:
        return plot_message(question, "no panel varies both σ_w² and depth")
    n_runs = int(cells["n_runs"].sum()) if "n_runs" in cells else len(cells)
    notes = [
        f"{n_runs} runs in {len(cells)} cells; a cell's colour is the median over its seeds, a "
        "seed that diverged or failed counted as not trained; curve: Schoenholz et al. (2017) "
        "find nets train to depth ≈ 6 ξ_c"
    ]
    canvas = _canvas(
        (1, len(panels)),
        (4.4, 3.6),
        question,
        notes,
        legend=2.5,
        left=0.8,
        bottom=0.65,
        gaps=(0.6, 0.6),
    )
    images = []
    for ax, panel in zip(canvas.axes[0], panels.itertuples(index=False), strict=True):
        mine, line = cells["panel"] == panel.panel, curves["panel"] == panel.panel
        critical = float(panel.critical_sigma_w2)
        images.append(
            _draw_panel(ax, cells[mine], curves[line], critical=critical, title=panel.panel)
        )
    canvas.axes[0, 0].set_ylabel("depth (hidden layers)", fontsize=8)
    # the colour bar under the legend, in the right margin: the panels keep their size
    fig, box = canvas.fig, canvas.axes[0, -1].get_position()
    width = fig.get_size_inches()[0]
    bar_axes = fig.add_axes(
        (canvas.legend_at[0] + 0.1 / width, box.y0, 0.15 / width, 0.5 * box.height)
    )
    bar = fig.colorbar(images[-1], cax=bar_axes)  # one scale, [0, 1], for every panel
    bar.set_label(f"median final\n{metric_label}", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    handles = [
        Line2D([], [], color="black", lw=1.8, label="6 ξ_c (mean-field theory)"),
        Line2D([], [], color="black", lw=1.0, ls="--", label="critical σ_w² (χ₁ = 1)"),
        Line2D(
            [],
            [],
            color=_TRAINABLE_COLOR,
            lw=2.0,
            label=f"deepest depth that\ntrains (≥ {TRAINED_AT:g})",
        ),
        Patch(
            facecolor="white",
            edgecolor=_HATCH_COLOR,
            hatch="xx",
            label="the median seed\ndiverged or failed",
        ),
    ]
    canvas.legend(handles, "")
    return fig
