"""A study of architectures (plain against residual nets, residual scales α): the gradient profile
at init per setting, with the mean-field prediction, over how each setting's runs ended."""

from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from gradlab.core.plots._style import (
    _canvas,
    _drawable,
    _dropped_note,
    _line_handles,
    _log_scale,
    _require,
    plot_message,
)
from gradlab.core.plots.studies import METRIC_FLOOR
from gradlab.core.verdict import TRAINED_AT

_THEORY_DASH = (0, (4, 2))
# The colour-blind palette without its vermilion, which beside its orange reads as one colour.
_NET_COLORS = [sns.color_palette("colorblind")[i] for i in (0, 1, 2, 4, 3, 5, 6, 7, 8, 9)]


def _draw_profiles(ax: Axes, panel: pd.DataFrame, colors: dict) -> None:
    """A thin line per run (measured) and a thick dashed one (theory) per net."""
    ordered = panel.sort_values("layer")
    for (net, source, _), line in ordered.groupby(["net", "source", "run_id"], sort=False):
        theory = source == "theory"
        ax.plot(
            line["layer"],
            line["value"],
            color=colors[net],
            lw=1.8 if theory else 0.9,
            ls=_THEORY_DASH if theory else "-",
            alpha=1.0 if theory else 0.7,
            zorder=3 if theory else 2,
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer (1 = next to the input)", fontsize=8)
    ax.tick_params(which="both", labelsize=7)


def _draw_outcomes(ax: Axes, panel: pd.DataFrame, nets: Sequence[str], colors: dict) -> None:
    """Final metric of each finished seed, a row per net; the runs that did not finish said so
    in the row."""
    for row, net in enumerate(nets):
        runs = panel[panel["net"] == net]
        finished = runs[(runs["status"] == "finished") & np.isfinite(runs["final_val_metric"])]
        ax.scatter(
            finished["final_val_metric"].clip(lower=METRIC_FLOOR),
            [row] * len(finished),
            color=colors[net],
            s=28,
            alpha=0.85,
            edgecolor="white",
            linewidth=0.5,
            zorder=3,
        )
        stopped = runs["status"].value_counts().drop("finished", errors="ignore")
        if not stopped.empty:
            text = ", ".join(f"{n} of {len(runs)} {status}" for status, n in stopped.items())
            ax.text(  # left of R² = −0.5, where a finished run rarely lands
                0.01,
                row,
                text,
                transform=ax.get_yaxis_transform(),
                fontsize=7,
                color="firebrick",
                va="center",
            )
    ax.axvline(TRAINED_AT, color="0.5", lw=0.8, ls=":", zorder=1)
    ax.set_yticks(range(len(nets)), list(nets))
    ax.set_ylim(len(nets) - 0.5, -0.5)  # the first net on top
    ax.set_xlim(METRIC_FLOOR - 0.05, 1.05)
    ax.tick_params(labelsize=7)


def plot_architecture_study(
    profiles: pd.DataFrame,
    outcomes: pd.DataFrame,
    nets: Sequence[str],
    question: str,
    metric_label: str,
) -> Figure:
    """Gradient profiles at init (top) and outcomes (bottom), a column per setting.

    Top: RMS of the back-propagated gradient per layer at init on a log axis, ∂L/∂h of the hidden
    layers for a plain net and ∂L/∂x of the stream for a residual one, a thin line per seed and
    the mean-field prediction dashed (scaled to the measured last layer). Bottom: the final
    validation metric of each finished seed, and how many runs diverged or failed.

    Args:
        profiles: ``run_id`` (a line each), ``net``, ``setting``, ``layer``, ``source``
            (``measured`` or ``theory``), ``value`` (``gradlab.core.report.architecture_frames``).
        outcomes: One row per run: ``net``, ``setting``, ``status``, ``final_val_metric``.
        nets: The net labels in drawing order (colours, outcome rows).
        question: The study's question (the figure's title).
        metric_label: What ``final_val_metric`` is (e.g. ``val R²``).
    Returns:
        The figure.
    """
    _require(profiles, ["run_id", "net", "setting", "layer", "source", "value"], "profiles")
    _require(outcomes, ["net", "setting", "status", "final_val_metric"], "outcomes")
    data, dropped = _drawable(profiles, "value", log=True)
    if data.empty and outcomes.empty:
        return plot_message(question, "no run of this study has a gradient profile at init")
    settings = list(dict.fromkeys(outcomes["setting"])) or [""]  # the grid's order
    nets = [n for n in nets if n in set(outcomes["net"])]
    colors = dict(zip(nets, _NET_COLORS * 2, strict=False))
    has_theory = set(data.loc[data["source"] == "theory", ["net", "setting"]].itertuples(None))
    without = [
        f"{net}{f' ({setting})' if setting else ''}"
        for setting in settings
        for net in nets
        if ((outcomes["net"] == net) & (outcomes["setting"] == setting)).any()
        and (net, setting) not in has_theory
    ]
    seeds = outcomes.groupby(["net", "setting"]).size()
    floored = int((outcomes["final_val_metric"] < METRIC_FLOOR).sum())
    notes = [
        f"{len(outcomes)} runs, {seeds.min()}–{seeds.max()} seeds per setting",
        f"{floored} final metrics below {METRIC_FLOOR:g} drawn at it" if floored else "",
        f"no mean-field prediction for {', '.join(without)}" if without else "",
        _dropped_note(dropped, "≤ 0 or non-finite (underflow, overflow)"),
    ]
    canvas = _canvas(
        (2, len(settings)),
        (3.4, 2.0),
        question,
        notes,
        legend=2.4,
        left=1.9,
        bottom=0.55,
        gaps=(0.35, 0.75),
        heights=[1.5, 0.35 + 0.2 * len(nets)],
        sharey="row",
    )
    for column, setting in enumerate(settings):
        top, bottom = canvas.axes[0, column], canvas.axes[1, column]
        panel = data[data["setting"] == setting]
        _draw_profiles(top, panel, colors)
        top.set_title(setting, fontsize=9)
        _draw_outcomes(bottom, outcomes[outcomes["setting"] == setting], nets, colors)
        bottom.set_xlabel(f"final {metric_label} (dotted: trained ≥ {TRAINED_AT:g})", fontsize=8)
    if not data.empty:
        _log_scale(canvas.axes[0, 0], "y", data["value"])
    canvas.axes[0, 0].set_ylabel(
        "RMS ∂L/∂h (plain) or ∂L/∂x\n(residual stream) at init\n(log scale)", fontsize=8
    )
    handles = _line_handles(colors) + [
        Line2D([], [], color="0.3", lw=0.9, label="measured (a line per seed)"),
        Line2D([], [], color="0.3", lw=1.8, ls=_THEORY_DASH, label="mean-field theory"),
    ]
    canvas.legend(handles, "network")
    return canvas.fig
