"""One figure per study: loss curves, final metric over seeds, and for a two-axis study a
heatmap."""

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from gradlab.core.plots._style import (
    _Canvas,
    _canvas,
    _drawable,
    _dropped_note,
    _line_handles,
    _log_scale,
    _palette,
    _require,
    _seed_stats,
    axis_label,
    category_order,
)

# A final metric below this is drawn at it, with a note: R² of a failed fit can reach −1e3.
METRIC_FLOOR = -1.0

# Line styles of a study's second axis in the loss curves, in category order.
_DASHES: tuple = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)), (0, (6, 2)))


def _draw_loss_curves(
    canvas: _Canvas, ax: Axes, curves: pd.DataFrame, axes: Sequence[str], loss_label: str
) -> None:
    """Mean loss per epoch with a min–max band over seeds: colour the first axis, line style the
    second. Plain matplotlib on the aggregated frame: seaborn's lineplot costs ~0.1 s a panel."""
    data, _ = _drawable(curves, "value", log=True)
    summary = _seed_stats(data, [*axes, "epoch"]).sort_values("epoch")
    colors = _palette(axes[0], category_order(curves[axes[0]]))
    styles = dict(zip(category_order(curves[axes[-1]]), _DASHES * 3, strict=False))
    for key, group in summary.groupby(list(axes), sort=False):
        color, dash = colors[key[0]], styles[key[-1]] if len(axes) > 1 else "-"
        ax.plot(group["epoch"], group["mean"], color=color, ls=dash, lw=1.2)
        if (group["max"] > group["min"]).any():
            ax.fill_between(
                group["epoch"], group["min"], group["max"], color=color, alpha=0.12, lw=0
            )
    _log_scale(ax, "y", summary["mean"])
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"{loss_label} (log scale)")
    ax.set_title("loss curves: mean, band min–max over seeds", fontsize=9)
    # one legend for the whole figure: the other panels use the same colours
    handles = _line_handles(colors)
    title = axis_label(axes[0])
    if len(axes) > 1:
        handles += [Line2D([], [], color="0.35", ls=d, label=str(k)) for k, d in styles.items()]
        title = f"colour: {title}\nline: {axis_label(axes[1])}"
    canvas.legend(handles, title, fontsize=7)


def _floor_notes(finished: pd.DataFrame, axes: Sequence[str]) -> list[str]:
    low = finished[finished["final_val_metric"] < METRIC_FLOOR]
    return [
        f"{' · '.join(str(row[a]) for a in axes)} s{row['seed']}: {row['final_val_metric']:.3g}"
        for _, row in low.iterrows()
    ]


def _draw_final_metric(
    ax: Axes, finals: pd.DataFrame, finished: pd.DataFrame, axes: Sequence[str], metric: str
) -> None:
    """Mean ± sd over finished seeds: x the last axis, colour the first (as in the loss panel)."""
    hue, x = axes[0], axes[-1]
    order, hue_order = category_order(finals[x]), category_order(finals[hue])
    drawn = finished.assign(final_val_metric=finished["final_val_metric"].clip(lower=METRIC_FLOOR))
    stats = drawn.groupby([hue, x], sort=False)["final_val_metric"].agg(["mean", "std"])
    colors = _palette(hue, hue_order)
    # dodge the hues around each x position, as a point plot would
    offsets = np.linspace(-0.22, 0.22, len(hue_order)) if hue != x else np.zeros(len(hue_order))
    for offset, level in zip(offsets, hue_order, strict=True):
        if level not in stats.index.get_level_values(0):
            continue
        points = stats.loc[level]
        ax.errorbar(
            [order.index(v) + offset for v in points.index],
            points["mean"],
            yerr=points["std"].fillna(0.0),  # one seed: no spread to show
            fmt="o",
            ms=5,
            color=colors[level],
            capsize=3,
            elinewidth=1,
        )
    if drawn.empty:
        ax.text(0.5, 0.5, "no finished run", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks(range(len(order)), [str(v) for v in order])
    ax.set_xlim(-0.6, len(order) - 0.4)
    stopped = finals[finals["status"] != "finished"].groupby(x, sort=False).size()
    for value, count in stopped.items():
        ax.annotate(
            f"{count}× div.",
            (order.index(value), 0.01),
            xycoords=("data", "axes fraction"),
            ha="center",
            fontsize=7,
            color="firebrick",
        )
    if (finished["final_val_metric"] < METRIC_FLOOR).any():
        ax.axhline(METRIC_FLOOR, color="0.6", linewidth=0.6, linestyle=":")
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(f"final {metric}")
    ax.set_title("final metric: mean ± sd over finished seeds", fontsize=9)
    ax.tick_params(axis="x", labelsize=7, rotation=25)


def _two_digits(value: float) -> str:
    return f"{value:.2f}".replace("-0.00", "0.00")


def _draw_heatmap(
    ax: Axes,
    finals: pd.DataFrame,
    finished: pd.DataFrame,
    axes: Sequence[str],
    metric: str,
) -> None:
    rows, cols = axes
    by = [rows, cols]
    cells = pd.DataFrame({"n": finals.groupby(by).size()})
    cells["mean"] = finished.groupby(by)["final_val_metric"].mean()
    cells["sd"] = finished.groupby(by)["final_val_metric"].std()
    cells["stopped"] = finals[finals["status"] != "finished"].groupby(by).size()
    cells["stopped"] = cells["stopped"].fillna(0).astype(int)
    row_order, col_order = category_order(finals[rows]), category_order(finals[cols])
    mean = cells["mean"].unstack(cols).reindex(index=row_order, columns=col_order)
    image = ax.imshow(
        mean.to_numpy(float),
        cmap=plt.get_cmap("viridis").with_extremes(bad="0.93"),
        vmin=0.0,
        vmax=1.0,
        aspect="auto",
    )
    ax.figure.colorbar(image, ax=ax, label=f"mean final {metric}\n(colour clipped to [0, 1])")
    crossed = False
    for (r, c), cell in cells.iterrows():
        i, j = row_order.index(r), col_order.index(c)
        parts = [] if np.isnan(cell["mean"]) else [_two_digits(cell["mean"])]
        if np.isfinite(cell["sd"]):
            parts.append(f"±{_two_digits(cell['sd'])}")
        if cell["stopped"]:
            parts.append(f"{int(cell['stopped'])}/{int(cell['n'])} div.")
        if np.isnan(cell["mean"]):
            crossed = True
            ax.add_patch(
                Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="xx", ec="lightcoral", lw=0)
            )
            parts.insert(0, "×")
        light = np.isnan(cell["mean"]) or cell["mean"] > 0.6
        ax.text(
            j,
            i,
            "\n".join(parts),
            ha="center",
            va="center",
            fontsize=7,
            color="firebrick" if np.isnan(cell["mean"]) else ("black" if light else "white"),
            fontweight="bold" if np.isnan(cell["mean"]) else "normal",
        )
    ax.set_xticks(range(len(col_order)), [str(c) for c in col_order], rotation=25, ha="right")
    ax.set_yticks(range(len(row_order)), [str(r) for r in row_order])
    ax.tick_params(labelsize=7, length=0)
    ax.set_xlabel(axis_label(cols))
    ax.set_ylabel(axis_label(rows))
    title = "mean final metric per setting" + (" (× every seed diverged)" if crossed else "")
    ax.set_title(title, fontsize=9)


# noqa reason: the two tables it draws and the words it labels them with
def plot_study(  # noqa: PLR0913, PLR0917
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    axes: Sequence[str],
    question: str,
    metric_label: str,
    loss_label: str,
) -> Figure:
    """One study on one figure: loss curves, final metric with seed error bars, and (for a
    two-axis study) a heatmap of the final metric with diverged cells crossed out.

    The first axis is the colour in every panel (and the heatmap's rows); the second is the loss
    curves' line style, the final-metric panel's x axis and the heatmap's columns.

    Args:
        runs: One row per run of the study: the ``axes`` columns, ``seed``, ``status``,
            ``final_val_metric``.
        curves: The loss per epoch of those runs: the ``axes`` columns, ``epoch``, ``value``.
        axes: The one or two columns the study varies.
        question: The study's question (the figure's title).
        metric_label: What ``final_val_metric`` is (e.g. ``val R²``).
        loss_label: What ``value`` of ``curves`` is (e.g. ``validation loss``).
    Returns:
        The figure.
    """
    if not 1 <= len(axes) <= 2:
        raise ValueError(f"a study figure shows one or two axes, got {list(axes)}")
    _require(runs, [*axes, "seed", "status", "final_val_metric"], "runs")
    _require(curves, [*axes, "epoch", "value"], "curves")
    finished = runs[(runs["status"] == "finished") & np.isfinite(runs["final_val_metric"])]
    floor = _floor_notes(finished, axes)
    seeds = runs.groupby(list(axes)).size()
    dropped = len(curves) - len(_drawable(curves, "value", log=True)[0])
    notes = [
        f"{len(runs)} runs, {seeds.min()}–{seeds.max()} seeds per setting; diverged or failed "
        "runs are counted (div.), not averaged",
        f"below {METRIC_FLOOR:g}, drawn at it: " + ", ".join(floor[:4]) if floor else "",
        _dropped_note(dropped, "of the loss ≤ 0 or non-finite"),
    ]
    two = len(axes) == 2
    canvas = _canvas(
        (1, 3 if two else 2),
        (3.6, 3.1),
        question,
        notes,
        legend=1.7,
        bottom=1.0,
        gaps=(1.35, 0.6),
        widths=[1.0, 1.0, 1.05] if two else None,
    )
    _draw_loss_curves(canvas, canvas.axes[0, 0], curves, axes, loss_label)
    _draw_final_metric(canvas.axes[0, 1], runs, finished, axes, metric_label)
    if two:
        _draw_heatmap(canvas.axes[0, 2], runs, finished, axes, metric_label)
    return canvas.fig
