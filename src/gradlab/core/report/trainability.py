"""How deep a net trains over the weight variance, against the correlation depth scale ξ_c
(Schoenholz et al. 2017, Fig. 5): the cells a trainability heatmap draws, the 6 ξ_c curve and the
critical σ_w² drawn on it, and its finding.

A study qualifies when its plain MLPs without a normalization layer (those the mean-field maps
describe) take at least two depths and two weight variances σ_w² for one activation and bias
variance σ_b² (a *panel*). σ_w² and σ_b² are the runs' ``theory_sigma_w2`` and
``theory_sigma_b2``; where those are missing (a runs table from before they were stored, or a
run with ``bias_std`` the train stage made no prediction for) they are taken from the run spec:
the init's own rule (``theory.init_variances``, e.g. ``init_std² · width`` for ``normal``, with
the gain ``√sigma_w2`` where the spec sets ``sigma_w2``) and ``bias_std²`` where the spec sets
``bias_std``.

A cell is one (σ_w², depth) of a panel; its outcome is the median over its runs (seeds) of the
final validation metric, a run that diverged or failed counted as below every metric, so a cell
where at least half the seeds diverged has a median of −inf. A cell *trains* when that median is
at least ``TRAINED_AT`` (the runs table's ``trained``), and a column's trainable depth is the
deepest depth of its cells that trains.

Reference: S. S. Schoenholz, J. Gilmer, S. Ganguli, J. Sohl-Dickstein. Deep information
propagation. ICLR 2017 (§3 the depth scales, Fig. 5: nets train up to depth ≈ 6 ξ_c).
"""

import math

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from gradlab.core import theory
from gradlab.core.grid import sigma_w2_value
from gradlab.core.report.tables import in_study, metric_label, setting_label, study_axes
from gradlab.core.verdict import TRAINED_AT

# Nets train up to about this many correlation depth scales ξ_c (Schoenholz et al. 2017, Fig. 5).
XI_C_MULTIPLE = 6.0
# The heatmap is passed among the study figures under this key (a study's name has no dot).
TRAINABILITY_FIGURE = "{study}.trainability"
TRAINABILITY_CAPTION = (
    "trainability over the weight variance σ_w² (x) and depth (y), after Schoenholz et al. "
    "(2017, Fig. 5): each cell's median final metric over seeds (a seed that diverged counts as "
    "not trained; hatched where at least half did), the deepest depth that trains per σ_w² as a "
    f"red staircase, {XI_C_MULTIPLE:g} ξ_c(σ_w², σ_b²) of mean-field theory as a black curve "
    "and the critical σ_w² (χ₁ = 1, where ξ_c diverges) dashed"
)
# The columns of ``trainability_frames``' cells and panels.
CELL_COLUMNS = [
    "panel",
    "activation",
    "sigma_b2",
    "sigma_w2",
    "depth",
    "n_runs",
    "n_stopped",
    "median_metric",
    "trains",
    "six_xi_c",
]
PANEL_COLUMNS = ["panel", "activation", "sigma_b2", "critical_sigma_w2", "metric_name"]
# Study axes that make σ_w², σ_b² and depth, or the panel's activation: the others split panels.
_CELL_AXES = ("init_name", "sigma_w2", "bias_std", "depth", "activation")
# σ_w² and σ_b² are grouped at this many significant digits (init_std² · width is not exact).
_DIGITS = 6
# Points of the drawn curve: log-spaced over the panel, and towards the critical σ_w² from both
# sides, where ξ_c diverges.
_CURVE_POINTS = 64
_CRITICAL_POINTS = 12


def _rounded(values: pd.Series) -> pd.Series:
    return values.map(lambda v: float(f"{v:.{_DIGITS}g}") if math.isfinite(v) else math.nan)


def _spec_variances(row: pd.Series) -> tuple[float, float]:
    std, sigma_w2, bias_std = (row.get(key) for key in ("init_std", "sigma_w2", "bias_std"))
    try:
        gain = None
        if not pd.isna(sigma_w2):
            bias = None if pd.isna(bias_std) else float(bias_std)
            gain = math.sqrt(sigma_w2_value(str(sigma_w2), row["activation"], bias))
        return theory.init_variances(
            row["init"],
            row["activation"],
            int(row["width"]),
            int(row["width"]),
            std=None if pd.isna(std) else float(std),
            gain=gain,
        )
    except ValueError:  # an init with no a-priori variance, or normal without std
        return math.nan, math.nan


def run_variances(runs: pd.DataFrame) -> pd.DataFrame:
    """σ_w² and σ_b² of each run's hidden layers at init.

    ``theory_sigma_w2`` and ``theory_sigma_b2`` where they are finite; elsewhere the run spec's:
    ``theory.init_variances`` of its init, activation, width, ``init_std`` and ``sigma_w2``
    (``critical`` solved with its ``bias_std``), and ``bias_std²`` for σ_b² where the spec sets
    ``bias_std`` (its biases are drawn from N(0, bias_std²)).

    Args:
        runs: Rows of the runs table (``init``, ``activation``, ``width``; ``init_std``,
            ``sigma_w2``, ``bias_std`` and the theory columns where it has them).
    Returns:
        ``sigma_w2``, ``sigma_b2`` on ``runs``' index (NaN where neither source gives one).
    """
    nan = pd.Series(math.nan, index=runs.index)
    sigma_w2 = pd.to_numeric(runs.get("theory_sigma_w2", nan), errors="coerce")
    sigma_b2 = pd.to_numeric(runs.get("theory_sigma_b2", nan), errors="coerce")
    bias_std = pd.to_numeric(runs.get("bias_std", nan), errors="coerce")
    sigma_b2 = sigma_b2.where(sigma_b2.notna() | bias_std.isna(), bias_std**2)
    missing = sigma_w2.isna() | sigma_b2.isna()
    if missing.any():
        keys = ["init", "activation", "width", "init_std", "sigma_w2", "bias_std"]
        specs = runs.loc[missing].reindex(columns=keys).astype(object)
        specs = specs.where(specs.notna(), None)  # None == None as a key; NaN != NaN
        # one call per distinct spec: a sweep repeats each over depths and seeds
        known = {
            key: _spec_variances(pd.Series(key, index=keys))
            for key in specs.drop_duplicates().itertuples(index=False, name=None)
        }
        derived = pd.DataFrame(
            [known[key] for key in specs.itertuples(index=False, name=None)],
            index=specs.index,
            columns=["sigma_w2", "sigma_b2"],
        )
        sigma_w2 = sigma_w2.fillna(derived["sigma_w2"])
        sigma_b2 = sigma_b2.fillna(bias_std**2).fillna(derived["sigma_b2"])
    return pd.DataFrame({"sigma_w2": sigma_w2, "sigma_b2": sigma_b2}, index=runs.index)


def _plain(runs: pd.DataFrame) -> pd.Series:
    """The runs mean-field theory's σ_w² describes: plain MLPs without a normalization layer."""
    arch = runs["arch"] if "arch" in runs else pd.Series("mlp", index=runs.index)
    norm = runs["norm_layer"] if "norm_layer" in runs else pd.Series("none", index=runs.index)
    return (arch == "mlp") & (norm == "none")


def _scores(runs: pd.DataFrame) -> pd.Series:
    """The final metric, a run that did not finish with a finite one counted as −inf (below
    every metric, so a median over seeds is −inf where at least half of them stopped)."""
    metric = pd.to_numeric(runs["final_val_metric"], errors="coerce")
    finished = (runs["status"] == "finished") & np.isfinite(metric)
    return metric.where(finished, -np.inf)


def trainability_frames(
    runs: pd.DataFrame, study: str, axes: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cells of one study's trainability heatmap, and its panels.

    A panel is one activation and σ_b² and one value of each other axis the study varies (a
    learning rate, say: runs that differ in it are not seeds of one cell); one that varies
    both σ_w² and depth is drawn.

    Args:
        runs: The runs table.
        study: The study's name.
        axes: Its comma-separated axes.
    Returns:
        ``cells``: one row per (panel, σ_w², depth) of the panels that vary both σ_w² and
        depth: ``panel`` (its label, e.g. ``tanh, σ_b² = 0.05, lr=0.01``), ``activation``,
        ``sigma_b2``, ``sigma_w2``, ``depth``, ``n_runs``, ``n_stopped`` (diverged or failed),
        ``median_metric`` (−inf where at least half the runs stopped), ``trains`` (median ≥
        ``TRAINED_AT``) and ``six_xi_c`` (``XI_C_MULTIPLE`` × ξ_c of ``theory.depth_scales``
        at the cell's σ_w², σ_b²); and ``panels``: one row per panel, in order: ``panel``,
        ``activation``, ``sigma_b2``, ``critical_sigma_w2`` (``theory.critical_sigma_w2``; NaN
        where χ₁ does not cross 1) and ``metric_name``.
        Both empty (with their columns) when no panel qualifies.
    """
    empty = pd.DataFrame(columns=CELL_COLUMNS), pd.DataFrame(columns=PANEL_COLUMNS)
    wanted = in_study(runs, study) & _plain(runs)
    if runs.loc[wanted, "depth"].nunique() < 2:  # most studies stop here, before any copy
        return empty
    members = runs[wanted]
    members = members.assign(**_rounded_variances(members)).dropna(subset=["sigma_w2"])
    members = members[members["sigma_w2"] > 0]
    others = [a for a in study_axes(members, axes) if a not in _CELL_AXES]
    members = members.assign(
        setting=[setting_label(row, others) for _, row in members.iterrows()] if others else ""
    )
    cells, panels = [], []
    for (activation, sigma_b2, setting), panel in members.groupby(
        ["activation", "sigma_b2", "setting"], sort=True
    ):
        if panel["sigma_w2"].nunique() < 2 or panel["depth"].nunique() < 2:
            continue
        label = f"{activation}, σ_b² = {sigma_b2:.3g}" + (f", {setting}" if setting else "")
        scored = panel.assign(
            score=_scores(panel), stopped=(panel["status"] != "finished").astype(int)
        )
        frame = (
            scored.groupby(["sigma_w2", "depth"], sort=True)
            .agg(
                n_runs=("score", "size"),
                n_stopped=("stopped", "sum"),
                median_metric=("score", "median"),
            )
            .reset_index()
        )
        frame["trains"] = frame["median_metric"] >= TRAINED_AT
        widths = np.sort(frame["sigma_w2"].unique())
        xi_c = np.asarray(theory.depth_scales(activation, widths, sigma_b2).xi_c, dtype=float)
        six = dict(zip(widths, XI_C_MULTIPLE * xi_c, strict=True))
        frame["six_xi_c"] = frame["sigma_w2"].map(six)
        cells.append(frame.assign(panel=label, activation=activation, sigma_b2=sigma_b2))
        panels.append(
            {
                "panel": label,
                "activation": activation,
                "sigma_b2": sigma_b2,
                "critical_sigma_w2": float(theory.critical_sigma_w2(activation, sigma_b2)),
                "metric_name": metric_label(panel["metric_name"]),
            }
        )
    if not cells:
        return empty
    return pd.concat(cells, ignore_index=True)[CELL_COLUMNS], pd.DataFrame(panels)[PANEL_COLUMNS]


def _rounded_variances(members: pd.DataFrame) -> dict[str, pd.Series]:
    variances = run_variances(members)
    return {name: _rounded(variances[name]) for name in ("sigma_w2", "sigma_b2")}


def xi_c_curves(cells: pd.DataFrame, panels: pd.DataFrame) -> pd.DataFrame:
    """``XI_C_MULTIPLE`` × ξ_c over each panel's σ_w² range (a little beyond its cells), densest
    towards the critical σ_w², where it diverges: the curve the heatmap draws.

    Args:
        cells: ``trainability_frames``' cells.
        panels: Its panels.
    Returns:
        ``panel``, ``sigma_w2``, ``six_xi_c`` (finite and positive only).
    """
    parts = []
    for panel in panels.itertuples(index=False):
        mine = cells[cells["panel"] == panel.panel]
        low, high = mine["sigma_w2"].min() / 1.5, mine["sigma_w2"].max() * 1.5
        grid = [np.geomspace(low, high, _CURVE_POINTS)]
        critical = panel.critical_sigma_w2
        if math.isfinite(critical) and low < critical < high:
            near = np.geomspace(1e-4, 0.05, _CRITICAL_POINTS)
            grid += [critical * (1 - near), critical * (1 + near)]
        sigma_w2 = np.unique(np.concatenate(grid))
        xi_c = np.asarray(
            theory.depth_scales(panel.activation, sigma_w2, panel.sigma_b2).xi_c, dtype=float
        )
        keep = np.isfinite(xi_c) & (xi_c > 0)
        parts.append(
            pd.DataFrame(
                {
                    "panel": panel.panel,
                    "sigma_w2": sigma_w2[keep],
                    "six_xi_c": XI_C_MULTIPLE * xi_c[keep],
                }
            )
        )
    columns = ["panel", "sigma_w2", "six_xi_c"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def trainable_depths(cells: pd.DataFrame) -> pd.DataFrame:
    """Per panel and σ_w²: the deepest depth that trains, the next depth tried above it (which
    does not: the trainable depth ends between the two), and the depths tried.

    Args:
        cells: ``trainability_frames``' cells.
    Returns:
        ``panel``, ``sigma_w2``, ``deepest`` (NaN where no depth trains), ``next_tried`` (NaN
        where none is deeper, or nothing trains), ``shallowest_tried``, ``deepest_tried``,
        ``six_xi_c``.
    """
    by = ["panel", "sigma_w2"]
    grouped = cells.groupby(by, sort=True)
    trained = cells[cells["trains"].astype(bool)].groupby(by)["depth"].max()
    table = pd.DataFrame(
        {
            "deepest": trained.reindex(grouped.size().index).astype(float),
            "shallowest_tried": grouped["depth"].min(),
            "deepest_tried": grouped["depth"].max(),
            "six_xi_c": grouped["six_xi_c"].first(),
        }
    ).reset_index()
    deeper = cells.merge(table[[*by, "deepest"]], on=by)
    deeper = deeper[deeper["depth"] > deeper["deepest"]].groupby(by)["depth"].min()
    next_tried = pd.MultiIndex.from_frame(table[by]).map(deeper.to_dict().get)
    table.insert(3, "next_tried", pd.array(next_tried, dtype=float))
    return table


def _span(values: ArrayLike, digits: int = 3) -> str:
    """``1.8``, or ``1.6–2`` for a range (``digits`` significant digits)."""
    low, high = float(np.min(values)), float(np.max(values))
    return f"{low:.{digits}g}" if low == high else f"{low:.{digits}g}–{high:.{digits}g}"


def _values(values: ArrayLike) -> str:
    """``σ_w² = 1.8``, ``σ_w² = 1.5, 1.76`` (up to four), or ``σ_w² = 0.6–4``: the columns
    where something happened."""
    unique = np.unique(np.asarray(values, dtype=float))
    listed = ", ".join(f"{value:.3g}" for value in unique)
    return f"σ_w² = {listed if len(unique) <= 4 else _span(unique)}"


def _panel_finding(depths: pd.DataFrame, critical: float, metric: str) -> str:
    near = f"critical σ_w² {critical:.3g}" if math.isfinite(critical) else "no critical σ_w²"
    trained = depths.dropna(subset=["deepest"])
    if trained.empty:
        return (
            f"no cell trains (median final {metric} ≥ {TRAINED_AT:g}) at "
            f"{_values(depths['sigma_w2'])} ({near})"
        )
    deepest = trained["deepest"].max()
    at = trained.loc[trained["deepest"] == deepest, "sigma_w2"].to_numpy()
    text = (
        f"the deepest net that trains (depth {deepest:.0f} of up to "
        f"{depths['deepest_tried'].max():.0f}) sits at {_values(at)}, {near}"
    )
    inside = trained[trained["deepest"] < trained["deepest_tried"]]
    if not inside.empty:
        # the trainable depth ends between the deepest depth that trains and the next one tried:
        # how far 6 ξ_c lies outside that bracket (1: inside)
        six = inside["six_xi_c"].to_numpy(float)
        low, high = inside["deepest"].to_numpy(float), inside["next_tried"].to_numpy(float)
        beyond = np.maximum.reduce([np.ones_like(six), six / high, low / six])
        worst = int(np.argmax(beyond))
        text += (
            f"; where the trainable depth ends inside the sweep ({len(inside)} of {len(depths)} "
            f"σ_w²), {XI_C_MULTIPLE:g} ξ_c falls between the deepest depth that trains and the "
            f"next one tried at {int((beyond == 1).sum())} of them"
        )
        if beyond[worst] > 1:
            text += (
                f" and at most {beyond[worst]:.2g}× beyond (σ_w² = "
                f"{inside['sigma_w2'].iloc[worst]:.3g}: trains to depth {low[worst]:.0f}, not "
                f"{high[worst]:.0f}; {XI_C_MULTIPLE:g} ξ_c {six[worst]:.3g})"
            )
    every = trained[trained["deepest"] >= trained["deepest_tried"]]
    if not every.empty:
        text += (
            f"; every depth trains at {_values(every['sigma_w2'].to_numpy())} "
            f"({XI_C_MULTIPLE:g} ξ_c {_span(every['six_xi_c'])})"
        )
    none = depths[depths["deepest"].isna()]
    if not none.empty:
        text += (
            f"; none at {_values(none['sigma_w2'].to_numpy())} "
            f"({XI_C_MULTIPLE:g} ξ_c {_span(none['six_xi_c'])})"
        )
    return text


def trainability_finding(cells: pd.DataFrame, panels: pd.DataFrame) -> str:
    """One line on a trainability heatmap, per panel: the deepest depth that trains and the σ_w²
    where it does, beside the critical σ_w²; where the trainable depth ends inside the sweep
    (between the deepest depth that trains and the next one tried, the resolution of the grid),
    at how many σ_w² ``XI_C_MULTIPLE`` ξ_c falls in that bracket and how far beyond it at most;
    where every or no depth trains.

    Args:
        cells: ``trainability_frames``' cells.
        panels: Its panels.
    Returns:
        The sentence, e.g. ``Trainable depth against 6 ξ_c: tanh, σ_b² = 0.05: the deepest net
        that trains (depth 100 of up to 100) sits at σ_w² = 1.76, critical σ_w² 1.76; where
        the trainable depth ends inside the sweep (4 of 5 σ_w²), 6 ξ_c falls between the
        deepest depth that trains and the next one tried at 2 of them and at most 2.4× beyond
        (σ_w² = 2.5: trains to depth 10, not 30; 6 ξ_c 70.8); …``, or the empty string when
        there are no cells.
    """
    if cells.empty:
        return ""
    depths = trainable_depths(cells)
    parts = []
    for panel in panels.itertuples(index=False):
        mine = depths[depths["panel"] == panel.panel]
        finding = _panel_finding(mine, panel.critical_sigma_w2, panel.metric_name)
        parts.append(f"{panel.panel}: {finding}")
    return f"Trainable depth against {XI_C_MULTIPLE:g} ξ_c: " + ". ".join(parts) + "."
