"""Theory against measurement: predicted and measured log-slopes, gradient profiles, and the
order-to-chaos phase diagram."""

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from gradlab.core.plots._style import (
    _canvas,
    _drawable,
    _dropped_note,
    _line_handles,
    _log_scale,
    _palette,
    _require,
    category_order,
    plot_message,
)


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
