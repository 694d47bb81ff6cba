"""BatchNorm's gradient explosion at init against its mean-field theory (Yang et al. 2019): the
measured per-layer growth of the mean squared ∂L/∂h over batch size, with λ(B) and its
large-batch limit per activation."""

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, NullLocator

from gradlab.core.plots._style import (
    _canvas,
    _dropped_note,
    _palette,
    _require,
    category_order,
    plot_message,
)

_MARKERS = "osD^vP*Xph"
# Settings with another init at one batch size sit this many octaves apart, centred on it.
_DODGE = 0.12


def _init_label(init: str, sigma_w2: pd.Series) -> str:
    values = sigma_w2.dropna().unique()
    return f"{init} (σ_w² = {values[0]:.3g})" if len(values) == 1 else init


def plot_bn_growth(points: pd.DataFrame, lines: pd.DataFrame, question: str) -> Figure:
    """Measured growth λ per layer of the mean squared ∂L/∂h against batch size, with theory.

    A small dot per run and a larger marker per setting (median over seeds; colour the
    activation, shape the init, dodged sideways when several inits share a batch size); a line
    per activation for the mean-field λ(B) and a dashed one at its large-batch limit; a grey
    line at 1 (level). Batch size on a log₂ axis ticked at the measured sizes.

    Args:
        points: ``activation``, ``batch_size``, ``init_name``, ``sigma_w2``, ``growth`` (NaN:
            not drawn, counted in a note) (``gradlab.core.report.bn_growth_frames``).
        lines: ``activation``, ``batch_size``, ``theory``, ``large_batch``.
        question: The study's question (the figure's title).
    Returns:
        The figure.
    """
    _require(points, ["activation", "batch_size", "init_name", "sigma_w2", "growth"], "points")
    _require(lines, ["activation", "batch_size", "theory", "large_batch"], "lines")
    data = points[np.isfinite(points["growth"].to_numpy(float))]
    if data.empty and lines.empty:
        return plot_message(question, "no BatchNorm run of this study has a gradient profile")
    activations = category_order(pd.concat([points["activation"], lines["activation"]]))
    colors = _palette("activation", activations)
    inits = category_order(data["init_name"]) if not data.empty else []
    markers = dict(zip(inits, _MARKERS * 2, strict=False))
    notes = [
        f"{len(data)} runs; λ fitted over hidden layers 4 … L−3 of ∂L/∂h on each run's first "
        "training batch, before any update; theory: gradlab.core.bn_theory",
        _dropped_note(len(points) - len(data), "with no finite profile at step 0"),
    ]
    canvas = _canvas((1, 1), (5.6, 3.6), question, notes, legend=2.6, left=0.9, bottom=0.65)
    ax = canvas.axes[0, 0]
    ax.axhline(1.0, color="0.75", lw=0.8, zorder=1)
    for activation in activations:
        line = lines[lines["activation"] == activation].sort_values("batch_size")
        if line.empty:
            continue
        ax.plot(line["batch_size"], line["theory"], color=colors[activation], lw=1.6, zorder=2)
        ax.axhline(line["large_batch"].iloc[0], color=colors[activation], lw=1.0, ls="--")
    # per batch size, the inits measured there sit side by side around it
    offset = {
        (size, init): 2.0 ** (_DODGE * (k - (len(names) - 1) / 2))
        for size, group in data.groupby("batch_size")["init_name"]
        for names in [category_order(group)]
        for k, init in enumerate(names)
    }
    at = [offset[key] for key in zip(data["batch_size"], data["init_name"], strict=True)]
    ax.scatter(
        data["batch_size"] * np.asarray(at, dtype=float),
        data["growth"],
        s=10,
        c=[colors[a] for a in data["activation"]],
        alpha=0.45,
        lw=0,
        zorder=3,
    )
    settings = data.groupby(["activation", "batch_size", "init_name"], as_index=False, sort=False)[
        "growth"
    ].median()
    for init, rows in settings.groupby("init_name", sort=False):
        ax.scatter(
            rows["batch_size"] * np.asarray([offset[(b, init)] for b in rows["batch_size"]]),
            rows["growth"],
            s=46,
            marker=markers[init],
            c=[colors[a] for a in rows["activation"]],
            edgecolor="black",
            lw=0.6,
            zorder=4,
        )
    ax.set_xscale("log", base=2)
    sizes = pd.concat([data["batch_size"], lines["batch_size"]]).astype(float)
    low, high = math.floor(math.log2(sizes.min())), math.ceil(math.log2(sizes.max()))
    powers = 2.0 ** np.arange(low, high + 1)
    ax.xaxis.set_major_locator(FixedLocator(list(powers[:: 1 + len(powers) // 10])))
    ax.xaxis.set_major_formatter(lambda value, _: f"{value:.0f}")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(sizes.min() / 2**0.25, sizes.max() * 2**0.25)
    ax.set_xlabel("batch size B (log scale)", fontsize=8)
    ax.set_ylabel("growth λ of mean squared ∂L/∂h\nper layer towards the input", fontsize=8)
    ax.tick_params(labelsize=7)
    handles = [
        Line2D([], [], color=colors[a], lw=1.6, label=f"{a}: theory λ(B)") for a in activations
    ]
    handles += [
        Line2D([], [], color="0.3", lw=1.0, ls="--", label="large-batch limit\nE[φ′²] / Var[φ]"),
        Line2D([], [], color="0.3", marker="o", ms=3, ls="", alpha=0.6, label="a run"),
    ]
    handles += [
        Line2D(
            [],
            [],
            color="0.6",
            marker=markers[init],
            markeredgecolor="black",
            ls="",
            label=_init_label(init, data.loc[data["init_name"] == init, "sigma_w2"]),
        )
        for init in inits
    ]
    canvas.legend(handles, "lines: theory; markers: the median\nover seeds of a setting, by init")
    return canvas.fig
