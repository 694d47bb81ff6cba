"""The input–output Jacobian's singular values at init (Pennington et al. 2017): their density
per activation and init, and their spread against depth beside free-probability theory."""

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from gradlab.core.plots._style import (
    _canvas,
    _drawable,
    _dropped_note,
    _log_scale,
    _palette,
    _require,
    category_order,
    plot_message,
)

DENSITY_TITLE = "At init, do the Jacobian's singular values sit near 1, or spread over decades?"
SPREAD_TITLE = "Does the spread of the Jacobian's singular values grow with depth as theory says?"
# Panels of the density figure per row.
_COLUMNS = 4
# Bins of the density: at least this wide in decades, and about this many over the window.
_MIN_BIN = 0.25
_BINS = 80
# The window always shows the well-conditioned band and a margin around it (decades).
_BAND = (-1.0, 1.0)
_MARGIN = 1.5
_BAND_COLOR = "#3a7d44"
# A panel's y axis ends this many times above its highest line, for the list of shares
_HEADROOM = 1.8
_LINE_STEP = 0.075


def _bins(values: np.ndarray) -> np.ndarray:
    low = min(float(values.min()), -_MARGIN)
    high = max(float(values.max()), _MARGIN)
    width = max(_MIN_BIN, (high - low) / _BINS)
    return np.arange(math.floor(low / width) * width, high + width, width)


def _band_text(share: float) -> str:
    return "n/a" if not math.isfinite(share) else f"{100 * share:.0f} %"


def plot_spectrum_density(samples: pd.DataFrame, cells: pd.DataFrame) -> Figure:
    """Density of log₁₀ s per setting: a panel per activation, a line per init.

    A line's area is the share of its sample drawn (numerically zero values, ``zero``, are left
    out and counted in a note); each panel lists its inits' share of s in (0.1, 10) (exact, over
    every s: ``frac_well_conditioned``).

    Args:
        samples: ``activation``, ``init``, ``log10_s``, ``zero``
            (``gradlab.core.report.spectra.density_frames``).
        cells: ``activation``, ``init``, ``depth``, ``n_runs``, ``frac_well_conditioned``.
    Returns:
        The figure, or one that says why there is nothing to draw.
    """
    _require(samples, ["activation", "init", "log10_s", "zero"], "samples")
    _require(cells, ["activation", "init", "depth", "n_runs", "frac_well_conditioned"], "cells")
    drawn = samples[~samples["zero"].astype(bool)]
    drawn, dropped = _drawable(drawn, "log10_s", log=False)
    if drawn.empty:
        return plot_message(
            DENSITY_TITLE,
            "no run of a study comparing activations or inits has a measured Jacobian spectrum "
            "(BatchNorm nets are not measured; the spectrum may be switched off)",
        )
    activations = category_order(samples["activation"])
    inits = category_order(samples["init"])
    colors = _palette("init", inits)
    rows = math.ceil(len(activations) / _COLUMNS)
    cols = min(len(activations), _COLUMNS)
    zeros = int(samples["zero"].astype(bool).sum())
    notes = [
        f"depth {int(cells['depth'].max())}; {int(cells['n_runs'].sum())} runs, every measured "
        "input point and seed pooled; y: share of s per decade",
        _dropped_note(zeros, "below 1e-12 × their point's largest s (numerically zero)"),
        _dropped_note(dropped, "non-finite"),
    ]
    canvas = _canvas(
        (rows, cols), (3.3, 2.3), DENSITY_TITLE, notes, legend=1.9, left=0.7, sharex=True
    )
    bins = _bins(drawn["log10_s"].to_numpy(float))
    sizes = samples.groupby(["activation", "init"]).size()
    for ax, activation in zip(canvas.axes.flat, activations, strict=False):
        ax.axvspan(*_BAND, color=_BAND_COLOR, alpha=0.12, lw=0)
        ax.axvline(0.0, color="0.4", ls="--", lw=0.8)
        mine = drawn[drawn["activation"] == activation]
        top = 0.0
        for init, values in mine.groupby("init", sort=False)["log10_s"]:
            counts, edges = np.histogram(values, bins=bins)
            share = counts / sizes[(activation, init)] / np.diff(edges)
            # a step line over the bins it fills, down to 0 at both ends (ax.stairs' patch costs
            # ~10 ms each to bound)
            filled = np.flatnonzero(counts)
            first, last = filled[0], filled[-1] + 1
            x = np.repeat(edges[first : last + 1], 2)
            y = np.concatenate([[0.0], np.repeat(share[first:last], 2), [0.0]])
            ax.plot(x, y, color=colors[init], lw=1.2)
            top = max(top, float(share.max()))
        shares = cells[cells["activation"] == activation].set_index("init")
        lines = [
            (init, _band_text(shares.loc[init, "frac_well_conditioned"]))
            for init in inits
            if init in shares.index
        ]
        ax.text(
            0.98, 0.97, "in (0.1, 10):", transform=ax.transAxes, ha="right", va="top", fontsize=6
        )
        for k, (init, text) in enumerate(lines, start=1):
            ax.text(
                0.98,
                0.97 - _LINE_STEP * k,
                text,
                color=colors[init],
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=6,
            )
        ax.set_ylim(0, _HEADROOM * top or 1.0)  # the shares' list above the lines
        ax.set_title(activation, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(6, integer=True))
    for ax in canvas.axes.flat[len(activations) :]:
        ax.set_axis_off()
    for ax in canvas.axes[-1, :]:
        ax.set_xlabel("log₁₀ s", fontsize=8)
    for ax in canvas.axes[:, 0]:
        ax.set_ylabel("share per decade", fontsize=8)
    handles: list[Line2D | Patch] = [
        Line2D([], [], color=colors[init], lw=1.2, label=init) for init in inits
    ]
    handles += [
        Patch(color=_BAND_COLOR, alpha=0.25, label="s in (0.1, 10)"),
        Line2D([], [], color="0.4", ls="--", lw=0.8, label="s = 1"),
    ]
    canvas.legend(handles, "init", 7)
    return canvas.fig


def plot_spectrum_spread(points: pd.DataFrame, lines: pd.DataFrame) -> Figure:
    """The normalized variance v = Var[s²]/E[s²]² of the Jacobian's squared singular values
    against depth: a panel per init, a colour per activation; a dot per seed and point, the
    median joined by a line, free-probability theory dashed. Log y axis; values it cannot show
    (v ≤ 0, NaN) are counted in a note.

    Args:
        points: ``activation``, ``init``, ``depth``, ``v``
            (``gradlab.core.report.spectra.spread_frames``).
        lines: ``activation``, ``init``, ``depth``, ``measured``, ``theory``.
    Returns:
        The figure, or one that says why there is nothing to draw.
    """
    _require(points, ["activation", "init", "depth", "v"], "points")
    _require(lines, ["activation", "init", "depth", "measured", "theory"], "lines")
    data, dropped = _drawable(points, "v", log=True)
    if data.empty:
        return plot_message(
            SPREAD_TITLE,
            "no study measured the Jacobian spectrum of one activation and init at two depths "
            "or more (a grid at a single depth, BatchNorm nets only, or the spectrum off)",
        )
    inits = category_order(lines["init"])
    activations = category_order(lines["activation"])
    colors = _palette("activation", activations)
    notes = [
        f"{data.groupby(['activation', 'init', 'depth'])['v'].size().max()} points per setting "
        "and depth at most (seeds × input points); theory: gradlab.core.spectrum_theory",
        _dropped_note(dropped, "not positive or not finite"),
    ]
    canvas = _canvas(
        (1, len(inits)), (3.4, 2.8), SPREAD_TITLE, notes, legend=2.0, left=0.8, sharey=True
    )
    offsets = {a: 0.012 * (k - (len(activations) - 1) / 2) for k, a in enumerate(activations)}
    for ax, init in zip(canvas.axes[0], inits, strict=True):
        for activation in activations:
            color = colors[activation]
            mine = data[(data["init"] == init) & (data["activation"] == activation)]
            ax.scatter(
                mine["depth"] * (1 + offsets[activation]),
                mine["v"],
                s=8,
                color=color,
                alpha=0.45,
                lw=0,
            )
            line = lines[(lines["init"] == init) & (lines["activation"] == activation)]
            line = line.sort_values("depth")
            measured = line[np.isfinite(line["measured"]) & (line["measured"] > 0)]
            ax.plot(measured["depth"], measured["measured"], color=color, marker="o", ms=4, lw=1.4)
            theory = line[np.isfinite(line["theory"]) & (line["theory"] > 0)]
            ax.plot(theory["depth"], theory["theory"], color=color, ls="--", lw=1.2)
        ax.set_title(init, fontsize=9)
        ax.set_xlabel("depth (hidden layers)", fontsize=8)
        ax.tick_params(labelsize=7)
        depths = np.sort(lines["depth"].unique())
        ax.set_xticks(depths.tolist())
    values = pd.concat([data["v"], lines["measured"], lines["theory"]]).dropna()
    _log_scale(canvas.axes[0, 0], "y", values[values > 0])
    canvas.axes[0, 0].set_ylabel("v = Var[s²] / E[s²]²", fontsize=8)
    handles = [Line2D([], [], color=colors[a], lw=1.4, label=a) for a in activations]
    handles += [
        Line2D([], [], color="0.3", marker="o", ms=4, lw=1.4, label="median (measured)"),
        Line2D([], [], color="0.3", ls="--", lw=1.2, label="theory"),
        Line2D([], [], color="0.3", marker="o", ms=3, ls="", alpha=0.5, label="a seed's point"),
    ]
    canvas.legend(handles, "activation", 7)
    return canvas.fig
