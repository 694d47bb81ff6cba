"""Figures of the report: a tidy DataFrame in, a matplotlib ``Figure`` out.

Every function checks the columns it needs and names those missing; none saves, shows or sets a
global style (the catalog's ``matplotlib.MatplotlibDataset`` saves and closes). Values a log axis
cannot show (≤ 0 after underflow, non-finite after a divergence) are left out and counted in a
note under the figure rather than handed to matplotlib.

Speed matters (the whole report stage has a budget of seconds for ~120 runs): seeds are
aggregated with vectorised pandas before drawing, panels are laid out in inches up front (no
layout engine measuring every tick label at save time), and seaborn is called where it does the
work (violins, point estimates with error bars, scatter and line semantics) but not for heatmaps,
whose seaborn version draws the whole figure once more to check its tick labels.

References: X. Glorot and Y. Bengio, "Understanding the difficulty of training deep feedforward
neural networks", AISTATS 2010 (Fig. 2: saturation during training; Fig. 6: activations per
layer at init; Figs 6–7 and eq. 14: back-propagated against weight gradients). B. Poole et al.,
"Exponential expressivity in deep neural networks through transient chaos", NeurIPS 2016 (the
order-to-chaos phase diagram).
"""

import math
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

from gradlab.core.theory import ACTIVATIONS

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

# A final metric below this is drawn at it, with a note: R² of a failed fit can reach −1e3.
METRIC_FLOOR = -1.0
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


def pick_layers(layers: Sequence[int], limit: int) -> list[int]:
    """At most ``limit`` layers, evenly spaced, always keeping the first and the last.

    Args:
        layers: Layer numbers (repeats allowed).
        limit: How many to keep (≥ 1).
    Returns:
        The kept layers, sorted.
    """
    ordered = sorted({int(layer) for layer in layers})
    if len(ordered) <= limit:
        return ordered
    positions = np.linspace(0, len(ordered) - 1, limit).round().astype(int)
    return [ordered[i] for i in sorted(set(positions))]


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


def _canvas(
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
        **subplot_kw: Passed to ``plt.subplots`` (``sharey``, ...).
    Returns:
        The canvas.
    """
    rows, cols = shape
    ratios = list(widths or [1.0] * cols)
    plot_w = panel[0] * sum(ratios) + gaps[0] * (cols - 1)
    width = left + plot_w + 0.3 + legend
    heading = textwrap.fill(title, max(int(width * _TITLE_CHARS_PER_INCH), 30))
    note = "; ".join(n for n in notes if n)
    small = textwrap.fill(note, int(width * _NOTE_CHARS_PER_INCH)) if note else ""
    top = 0.5 + 0.2 * (heading.count("\n") + 1)  # the title, then room for panel titles
    foot = bottom + (0.12 * (small.count("\n") + 1) + 0.1 if small else 0.0)
    height = top + rows * panel[1] + gaps[1] * (rows - 1) + foot
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
            "hspace": gaps[1] / panel[1],
            "width_ratios": ratios,
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


def _band_lines(
    ax: Axes, stats: pd.DataFrame, x: str, key: str, colors: dict, **line_kwargs
) -> None:
    """Mean line and min–max band of ``stats`` (columns x, key, mean, min, max) per key."""
    for value, group in stats.sort_values(x).groupby(key, sort=False):
        color = colors[value]
        ax.plot(group[x], group["mean"], color=color, **line_kwargs)
        if (group["max"] > group["min"]).any():
            ax.fill_between(group[x], group["min"], group["max"], color=color, alpha=0.2, lw=0)


def _seed_stats(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    return frame.groupby(by, sort=False)["value"].agg(["mean", "min", "max"]).reset_index()


def plot_gradient_flow(stats: pd.DataFrame) -> Figure:
    """Per-layer gradient sizes at init: back-propagated ∂L/∂h above, weight gradients below.

    Glorot & Bengio (2010, eq. 14): ``Var[∂L/∂W_l] ∝ Var[x_l] · Var[∂L/∂h_l]``, so shrinking
    activations and growing back-propagated gradients can cancel in ‖∂L/∂W_l‖; a level bottom row
    under a sloped top row is that cancellation.

    Args:
        stats: One row per (run, layer, quantity) at init: ``activation``, ``init_name``,
            ``layer``, ``quantity`` (``grad_preact_rms`` or ``grad_weight_norm``), ``value``.
            Seeds of one (activation, init) are drawn as their mean with a min–max band.
    Returns:
        The figure: a column per init, a line per activation.
    """
    _require(stats, ["activation", "init_name", "layer", "quantity", "value"], "stats")
    rows = {
        "grad_preact_rms": "RMS ∂L/∂h per unit\n(log scale)",
        "grad_weight_norm": "‖∂L/∂W‖ Frobenius\n(log scale)",
    }
    data, dropped = _drawable(stats[stats["quantity"].isin(rows)], "value", log=True)
    title = (
        "At init, does ∂L/∂h shrink towards the input while ‖∂L/∂W‖ stays level? "
        "(Glorot & Bengio 2010, eq. 14)"
    )
    if data.empty:
        return plot_message(title, "no positive gradient values to draw")
    inits = category_order(data["init_name"])
    colors = _palette("activation", category_order(data["activation"]))
    notes = [
        "line: mean over seeds, band: min–max; the bottom row includes the output head",
        _dropped_note(dropped, "≤ 0 or non-finite (underflow, divergence)"),
    ]
    canvas = _canvas(
        (2, len(inits)),
        (2.5, 2.0),
        title,
        notes,
        legend=1.1,
        left=1.0,
        gaps=(0.25, 0.6),
        sharey="row",
    )
    summary = _seed_stats(data, ["quantity", "init_name", "activation", "layer"])
    panels = dict(tuple(summary.groupby(["quantity", "init_name"])))
    for i, quantity in enumerate(rows):
        for j, init in enumerate(inits):
            ax = canvas.axes[i, j]
            _log_scale(ax, "y", summary.loc[summary["quantity"] == quantity, "mean"])
            if (quantity, init) in panels:
                _band_lines(
                    ax, panels[quantity, init], "layer", "activation", colors, marker="o", ms=3
                )
            ax.set_title(f"init = {init}", fontsize=9)
            ax.set_xlabel("layer (1 = next to the input)" if i == 1 else "", fontsize=8)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(rows[quantity] if j == 0 else "", fontsize=8)
            ax.tick_params(which="both", labelsize=7)
    canvas.legend(_line_handles(colors, marker="o"), "activation")
    return canvas.fig


def plot_weight_grad_violins(samples: pd.DataFrame, max_layers: int) -> Figure:
    """Violins of sampled weight-gradient entries ∂L/∂W per hidden layer at init.

    The plain view a course would draw (linear axis): a layer whose gradients vanished is a flat
    line. Their orders of magnitude are in ``plot_gradient_flow``'s bottom row. The output head is
    left out: its gradient is on another scale and would flatten every hidden layer's violin.

    Args:
        samples: Sampled entries: ``activation``, ``init_name``, ``depth``, ``layer``, ``value``
            (rows of the head, ``layer = depth + 1``, are ignored).
        max_layers: Layers shown per activation, evenly spaced, first and last kept.
    Returns:
        The figure: a panel per activation.
    """
    _require(samples, ["activation", "init_name", "depth", "layer", "value"], "samples")
    hidden = samples[samples["layer"].between(1, samples["depth"])]
    data, dropped = _drawable(hidden, "value", log=False)
    title = "At init, how widely are the weight gradients ∂L/∂W of each hidden layer spread?"
    if data.empty:
        return plot_message(title, "no sampled weight gradients of hidden layers to draw")
    activations = category_order(data["activation"])
    colors = _palette("activation", activations)
    notes = [
        "each violin: sampled ∂L/∂W entries of one layer, all seeds pooled; lines: quartiles; "
        "a flat violin is a layer whose gradient vanished (sizes: gradient-flow figure)",
        _dropped_note(dropped, "non-finite"),
    ]
    canvas = _canvas((1, len(activations)), (3.3, 2.6), title, notes, legend=1.1, gaps=(0.8, 0.6))
    for ax, activation in zip(canvas.axes[0], activations, strict=True):
        panel = data[data["activation"] == activation]
        layers = pick_layers(panel["layer"], max_layers)
        panel = panel[panel["layer"].isin(layers)]
        sns.violinplot(
            x=panel["layer"].to_numpy(),
            y=panel["value"].to_numpy(),
            order=layers,
            color=colors[activation],
            cut=0,
            inner="quart",
            density_norm="width",
            linewidth=0.7,
            ax=ax,
        )
        inits = ", ".join(category_order(panel["init_name"]))
        ax.set_title(f"{activation} · init = {inits}", fontsize=9)
        ax.set_xlabel("hidden layer (1 = next to the input)", fontsize=8)
        ax.set_ylabel("∂L/∂W entry" if ax is canvas.axes[0, 0] else "", fontsize=8)
        ax.tick_params(which="both", labelsize=7)
    canvas.legend([Patch(color=colors[a], label=a) for a in activations], "activation")
    return canvas.fig


def _layer_colors(layers: Sequence[int]) -> dict[int, tuple]:
    """One viridis colour per drawn layer, input side dark, output side light."""
    return dict(zip(layers, sns.color_palette("viridis", len(layers)), strict=True))


def _layer_panels(
    canvas: _Canvas,
    data: pd.DataFrame,
    activations: Sequence[str],
    inits: Sequence[str],
    xlabel: str,
    ylabel: str,
) -> Iterator[tuple[Axes, pd.DataFrame]]:
    """The (activation, init) grid of a per-layer figure: yields each panel's axes and rows,
    titled and labelled on the outer edge; panels without data are switched off."""
    panels = dict(tuple(data.groupby(["activation", "init_name"])))
    for i, activation in enumerate(activations):
        for j, init in enumerate(inits):
            ax = canvas.axes[i, j]
            panel = panels.get((activation, init))
            if panel is None:
                ax.set_axis_off()
                continue
            ax.set_title(f"{activation} · {init}", fontsize=8)
            ax.tick_params(which="both", labelsize=6)
            if i == len(activations) - 1:
                ax.set_xlabel(xlabel, fontsize=7)
            if j == 0:
                ax.set_ylabel(ylabel, fontsize=7)
            yield ax, panel


def plot_activation_histograms(samples: pd.DataFrame, max_layers: int) -> Figure:
    """Histograms of activation values φ(h) per layer at init (Glorot & Bengio 2010, Fig. 6).

    Args:
        samples: Sampled activations: ``activation``, ``init_name``, ``layer``, ``value``.
        max_layers: Layers drawn per panel, evenly spaced, first and last kept.
    Returns:
        The figure: a row per activation, a column per init, a line per layer.
    """
    _require(samples, ["activation", "init_name", "layer", "value"], "samples")
    data, dropped = _drawable(samples, "value", log=False)
    title = "At init, do activations keep their spread in deep layers, or collapse or saturate?"
    if data.empty:
        return plot_message(title, "no sampled activations to draw")
    activations, inits = category_order(data["activation"]), category_order(data["init_name"])
    layers = pick_layers(data["layer"], max_layers)
    colors = _layer_colors(layers)
    notes = [
        "values pooled over seeds; x window: 0.5–99.5th percentile of each panel; "
        "y: probability density, scaled per panel",
        _dropped_note(dropped, "non-finite"),
    ]
    canvas = _canvas(
        (len(activations), len(inits)),
        (2.2, 1.45),
        title,
        notes,
        legend=0.9,
        left=0.75,
        gaps=(0.45, 0.55),
    )
    panels = _layer_panels(
        canvas, data[data["layer"].isin(layers)], activations, inits, "activation φ(h)", "density"
    )
    for ax, panel in panels:
        low, high = np.quantile(panel["value"], [0.005, 0.995])
        if high <= low:  # every sample at one value (e.g. all ReLUs off): a unit-wide window
            low, high = low - 0.5, high + 0.5
        bins = np.linspace(low, high, 31)
        for layer, values in panel.groupby("layer")["value"]:
            density, edges = np.histogram(values.clip(low, high), bins=bins, density=True)
            ax.stairs(density, edges, color=colors[layer], linewidth=1)
        ax.locator_params(axis="x", nbins=3)
        # each tick its own value: an axis offset ("1e-11") would sit over the next panel
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.2g}"))
        ax.set_yticks([])  # densities differ by orders between panels: shapes are the point
    canvas.legend(_line_handles({f"layer {k}": c for k, c in colors.items()}), "layer", 7)
    return canvas.fig


def plot_saturation(stats: pd.DataFrame, max_layers: int) -> Figure:
    """Fraction of saturated units per layer during training (Glorot & Bengio 2010, Fig. 2).

    Args:
        stats: ``activation``, ``init_name``, ``step``, ``layer``, ``value`` (``act_saturation``);
            seeds are averaged.
        max_layers: Layers drawn per panel, evenly spaced, first and last kept.
    Returns:
        The figure: a row per activation, a column per init, a line per layer.
    """
    _require(stats, ["activation", "init_name", "step", "layer", "value"], "stats")
    data, dropped = _drawable(stats, "value", log=False)
    title = "During training, which layers of saturating networks (sigmoid, tanh) saturate?"
    if data.empty:
        return plot_message(title, "no run with a saturating activation (sigmoid, tanh, …)")
    layers = pick_layers(data["layer"], max_layers)
    colors = _layer_colors(layers)
    data = (
        data[data["layer"].isin(layers)]
        .groupby(["activation", "init_name", "layer", "step"], as_index=False)["value"]
        .mean()
    )
    activations, inits = category_order(data["activation"]), category_order(data["init_name"])
    notes = [
        "mean over seeds of the fraction of units × probe samples in φ's flat region "
        "(sigmoid < 0.01 or > 0.99, |tanh| > 0.99)",
        _dropped_note(dropped, "non-finite"),
    ]
    canvas = _canvas(
        (len(activations), len(inits)),
        (2.3, 1.5),
        title,
        notes,
        legend=0.9,
        left=0.75,
        gaps=(0.2, 0.55),
        sharey=True,
    )
    panels = _layer_panels(
        canvas, data, activations, inits, "training step (updates)", "saturated fraction"
    )
    for ax, panel in panels:
        for layer, curve in panel.groupby("layer"):
            ax.plot(curve["step"], curve["value"], color=colors[layer], lw=1.1)
        ax.set_ylim(-0.02, 1.02)
        ax.locator_params(axis="x", nbins=4)
    canvas.legend(_line_handles({f"layer {k}": c for k, c in colors.items()}), "layer", 7)
    return canvas.fig


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
    fig: Figure,
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
    fig.colorbar(image, ax=ax, label=f"mean final {metric}\n(colour clipped to [0, 1])")
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


def plot_study(
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
        _draw_heatmap(canvas.fig, canvas.axes[0, 2], runs, finished, axes, metric_label)
    return canvas.fig


def plot_theory_slopes(table: pd.DataFrame) -> Figure:
    """Measured against predicted log-slope of RMS ∂L/∂h over layers at init, a point per run.

    The slope is that of ``ln RMS(∂L/∂h_l)`` against l (``gradlab.core.theory.log_slope``):
    positive when the gradient shrinks towards the input.

    Args:
        table: ``activation``, ``init_name``, ``theory_log_slope``, ``measured_log_slope``.
    Returns:
        The figure, with the diagonal ``measured = predicted``.
    """
    _require(table, ["activation", "init_name", "theory_log_slope", "measured_log_slope"], "table")
    title = "Does mean-field theory predict how fast ∂L/∂h decays per layer at init?"
    finite = np.isfinite(table["theory_log_slope"]) & np.isfinite(table["measured_log_slope"])
    data = table[finite]
    if data.empty:
        return plot_message(title, "no run has both a predicted and a measured slope")
    gap = (data["measured_log_slope"] - data["theory_log_slope"]).abs().median()
    skipped = len(table) - len(data)
    notes = [
        f"{len(data)} runs; median |measured − predicted| = {gap:.3g} per layer; "
        "> 0: the gradient shrinks towards the input",
        f"{skipped} runs without both slopes (normalization layers, underflow, divergence)"
        if skipped
        else "",
    ]
    canvas = _canvas((1, 1), (5.0, 4.2), title, notes, legend=1.9, left=0.8)
    ax = canvas.axes[0, 0]
    low = float(min(data["theory_log_slope"].min(), data["measured_log_slope"].min()))
    high = float(max(data["theory_log_slope"].max(), data["measured_log_slope"].max()))
    pad = 0.05 * ((high - low) or 1.0)
    ax.plot(
        [low - pad, high + pad],
        [low - pad, high + pad],
        color="0.4",
        ls="--",
        lw=1,
        label="measured = predicted",
    )
    ax.axhline(0, color="0.85", lw=0.8, zorder=0)
    ax.axvline(0, color="0.85", lw=0.8, zorder=0)
    activations = category_order(data["activation"])
    sns.scatterplot(
        data=data.rename(columns={"init_name": "init"}),  # the legend's heading
        x="theory_log_slope",
        y="measured_log_slope",
        hue="activation",
        hue_order=activations,
        palette=_palette("activation", activations),
        style="init",
        style_order=category_order(data["init_name"]),
        s=45,
        ax=ax,
    )
    sns.move_legend(
        ax,
        "upper left",
        bbox_to_anchor=canvas.legend_at,
        bbox_transform=canvas.fig.transFigure,
        fontsize=8,
        frameon=False,
    )
    ax.set_xlabel("predicted slope of ln RMS ∂L/∂h per layer (theory)", fontsize=9)
    ax.set_ylabel("measured slope of ln RMS ∂L/∂h per layer", fontsize=9)
    return canvas.fig


def plot_theory_profiles(profiles: pd.DataFrame) -> Figure:
    """Measured RMS ∂L/∂h per layer at init (÷ last hidden layer) against the prediction.

    Args:
        profiles: ``activation``, ``init_name``, ``layer``, ``source`` (``measured`` or
            ``theory``), ``seed`` (a line per seed; any constant for theory), ``value``.
    Returns:
        The figure: a panel per activation, a colour per init; measured solid, theory dashed.
    """
    _require(profiles, ["activation", "init_name", "layer", "source", "seed", "value"], "profiles")
    data, dropped = _drawable(profiles, "value", log=True)
    title = "Does the measured ∂L/∂h profile at init follow the mean-field prediction?"
    if data.empty:
        return plot_message(title, "no positive gradient values to draw")
    activations, inits = category_order(data["activation"]), category_order(data["init_name"])
    colors = _palette("init_name", inits)
    notes = [_dropped_note(dropped, "≤ 0 or non-finite (underflow)")]
    if "theory" not in set(data["source"]):
        notes.append("no theory rows in layer_stats (re-run the train stage to record them)")
    canvas = _canvas(
        (1, len(activations)), (3.2, 2.9), title, notes, legend=2.2, left=1.0, gaps=(0.7, 0.6)
    )
    for ax, activation in zip(canvas.axes[0], activations, strict=True):
        panel = data[data["activation"] == activation]
        for (init, source, _), line in panel.groupby(["init_name", "source", "seed"], sort=False):
            theory = source == "theory"
            ax.plot(
                line["layer"],
                line["value"],
                color=colors[init],
                lw=1.8 if theory else 1.0,
                ls=(0, (4, 2)) if theory else "-",
                alpha=1.0 if theory else 0.8,
            )
        _log_scale(ax, "y", panel["value"])
        ax.set_title(activation, fontsize=9)
        ax.set_xlabel("layer (1 = next to the input)", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(
            "RMS ∂L/∂h ÷ last hidden layer\n(log scale)" if ax is canvas.axes[0, 0] else "",
            fontsize=8,
        )
        ax.tick_params(which="both", labelsize=7)
    handles = _line_handles(colors) + [
        Line2D([], [], color="0.3", lw=1.0, label="measured (a line per seed)"),
        Line2D([], [], color="0.3", lw=1.8, ls=(0, (4, 2)), label="mean-field theory"),
    ]
    canvas.legend(handles, "init")
    return canvas.fig


def plot_phase_diagram(grid: pd.DataFrame, points: pd.DataFrame, activation: str) -> Figure:
    """χ₁ at the fixed point over (σ_w², σ_b²): the order-to-chaos transition and the grid's runs.

    Args:
        grid: A full mesh: ``sigma_w2``, ``sigma_b2``, ``chi1``.
        points: Where runs sit: ``sigma_w2``, ``sigma_b2``, ``init_name``, ``n_runs``.
        activation: The activation the mesh was computed for (title).
    Returns:
        The figure, σ_w² on a log axis.
    """
    _require(grid, ["sigma_w2", "sigma_b2", "chi1"], "grid")
    _require(points, ["sigma_w2", "sigma_b2", "init_name", "n_runs"], "points")
    mesh = grid.pivot(index="sigma_b2", columns="sigma_w2", values="chi1")
    sw, sb = mesh.columns.to_numpy(float), mesh.index.to_numpy(float)
    with np.errstate(divide="ignore"):
        log_chi = np.log10(mesh.to_numpy(float))
    finite = log_chi[np.isfinite(log_chi)]
    # χ₁ = 1 white; each side saturates at its own extreme, however lopsided the range
    low = min(float(finite.min()), -0.1) if finite.size else -1.0
    high = max(float(finite.max()), 0.1) if finite.size else 1.0
    notes = [
        "points: σ_w², σ_b² of the hidden layers' init"
        + ("; none: no run of this activation has a prediction" if points.empty else "")
    ]
    canvas = _canvas(
        (1, 1),
        (6.4, 4.0),
        f"Where do the grid's {activation} networks sit relative to the edge of chaos? "
        "(Poole et al. 2016; Schoenholz et al. 2017)",
        notes,
        left=0.8,
    )
    fig, ax = canvas.fig, canvas.axes[0, 0]
    image = ax.pcolormesh(
        sw, sb, log_chi, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, low, high), shading="auto"
    )
    fig.colorbar(image, ax=ax, label="log₁₀ χ₁ at the fixed point q*")
    if finite.size and finite.min() < 0 < finite.max():
        ax.contour(sw, sb, log_chi, levels=[0.0], colors="black", linewidths=1.5)
    _log_scale(ax, "x", pd.Series(sw))
    for x, text, color, align in (
        (0.03, "ordered: χ₁ < 1\n∂L/∂h vanishes\ntowards the input", "navy", "left"),
        (0.97, "chaotic: χ₁ > 1\n∂L/∂h explodes\ntowards the input", "darkred", "right"),
    ):
        ax.text(
            x,
            0.55,
            text,
            transform=ax.transAxes,
            fontsize=9,
            color=color,
            ha=align,
            bbox={"facecolor": "white", "alpha": 0.75, "linewidth": 0},
        )
    handles = [Line2D([], [], color="black", lw=1.5, label="χ₁ = 1 (critical line)")]
    markers = dict(zip(category_order(points["init_name"]), "osD^vP*Xph", strict=False))
    for init, marker in markers.items():
        at = points[points["init_name"] == init]
        ax.scatter(
            at["sigma_w2"],
            at["sigma_b2"],
            marker=marker,
            s=70,
            facecolor="gold",
            edgecolor="black",
            zorder=3,
            clip_on=False,
        )
        handles.append(
            Line2D(
                [],
                [],
                marker=marker,
                color="black",
                markerfacecolor="gold",
                ls="",
                label=f"{init} ({int(at['n_runs'].sum())} runs)",
            )
        )
    ax.legend(handles=handles, loc="upper left", fontsize=8, title=f"{activation} runs")
    ax.set_xlim(sw.min(), sw.max())
    ax.set_ylim(sb.min(), sb.max())
    ax.set_xlabel("σ_w² = fan_in · Var[W] (log scale)")
    ax.set_ylabel("σ_b² = Var[b]")
    return fig
