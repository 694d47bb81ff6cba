"""Figures at init and during training: gradient flow per layer, weight-gradient violins,
activation histograms, and saturation."""

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

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
    category_order,
    plot_message,
)


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


def _band_lines(
    ax: Axes, stats: pd.DataFrame, x: str, key: str, colors: dict, **line_kwargs
) -> None:
    """Mean line and min–max band of ``stats`` (columns x, key, mean, min, max) per key."""
    for value, group in stats.sort_values(x).groupby(key, sort=False):
        color = colors[value]
        ax.plot(group[x], group["mean"], color=color, **line_kwargs)
        if (group["max"] > group["min"]).any():
            ax.fill_between(group[x], group["min"], group["max"], color=color, alpha=0.2, lw=0)


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
    labels: tuple[str, str],
) -> Iterator[tuple[Axes, pd.DataFrame]]:
    """The (activation, init) grid of a per-layer figure: yields each panel's axes and rows,
    titled and labelled (x, y ``labels``) on the outer edge; panels without data are switched
    off."""
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
                ax.set_xlabel(labels[0], fontsize=7)
            if j == 0:
                ax.set_ylabel(labels[1], fontsize=7)
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
        canvas, data[data["layer"].isin(layers)], activations, inits, ("activation φ(h)", "density")
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
        canvas, data, activations, inits, ("training step (updates)", "saturated fraction")
    )
    for ax, panel in panels:
        for layer, curve in panel.groupby("layer"):
            ax.plot(curve["step"], curve["value"], color=colors[layer], lw=1.1)
        ax.set_ylim(-0.02, 1.02)
        ax.locator_params(axis="x", nbins=4)
    canvas.legend(_line_handles({f"layer {k}": c for k, c in colors.items()}), "layer", 7)
    return canvas.fig
