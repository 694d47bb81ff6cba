"""The input–output Jacobian's singular values at init in the report: which runs its two figures
compare, the rows they draw, and their findings.

Each run measured ``J = ∂x_L/∂x_1`` at a few probe inputs at init (``gradlab.core.spectrum``;
not BatchNorm nets): its statistics per point and a sample of log₁₀ s (the ``spectrum`` table),
their means over the points in the runs table (``jacobian_*``) and, for plain MLPs, the
free-probability prediction of the first two moments of s² (``theory_jacobian_*``,
``gradlab.core.spectrum_theory``).

* The **density** figure pools each setting's log₁₀ s over points and seeds, at one depth: the
  study whose runs differ only in the activation and the init (σ_w², σ_b² included) with the most
  such settings at its deepest depth (``activation_init`` in the default grid).
* The **spread** figure draws, per setting, the normalized variance ``v = Var[s²] / E[s²]²``
  against depth beside theory, which adds a constant per layer at a fixed point (Pennington et al.
  2017): the study whose runs differ in depth and the same axes, with the most (setting, depth)
  cells (``activation_depth``).

A study may also vary axes that act only once training starts (optimizer, learning rate, …):
runs that differ in them alone share their init. A singular value below ``NUMERICAL_ZERO`` times
its point's largest lies beyond float64's resolution of J: a rank-deficient J (a ReLU net's dead
units, a saturated tanh), counted apart instead of drawn at its rounding error.

Reference: J. Pennington, S. S. Schoenholz, S. Ganguli. Resurrecting the sigmoid in deep learning
through dynamical isometry: theory and practice. NeurIPS 2017.
"""

import math

import numpy as np
import pandas as pd

from gradlab.core.plots._style import category_order
from gradlab.core.report.tables import in_study, study_axes
from gradlab.core.spectrum import SAMPLE, WELL_CONDITIONED

# Figures of the spectrum section, by key of ``build_report``'s ``figures``, with captions.
SPECTRUM_FIGURES = {
    "jacobian_density": "density of log₁₀ s, the singular values of the Jacobian "
    "J = ∂x_L/∂x_1 (first hidden layer's output to the head's input) at init, pooled over the "
    "measured input points and seeds of each setting, a panel per activation and a line per "
    "init: the area of a line is its share of s drawn; the shaded band is the well-conditioned "
    "(0.1, 10), the dashed line s = 1. A net is dynamically isometric when all its s sit near 1 "
    "(Pennington et al. 2017)",
    "jacobian_spread": "the spread of the Jacobian's squared singular values against depth, "
    "v = Var[s²] / E[s²]² over one input point's spectrum (0: every s equal): a dot per seed and "
    "point, the median over them joined by a line, free-probability theory dashed "
    "(gradlab.core.spectrum_theory; plain MLPs only). At a fixed point theory adds the same "
    "amount per layer; a spectrum with v ≫ 1 is carried by its few largest s², whose sample "
    "variance over n values falls short of v",
}
# Columns that name a setting of the spectrum figures (beside depth).
CELL_AXES = ("activation", "init_name", "sigma_w2", "bias_std")
# Axes that act only once training starts: runs that differ only in them share their init.
TRAINING_AXES = frozenset(
    {"optimizer", "lr", "weight_decay", "schedule", "batch_size", "epochs", "log_every", "clip"}
)
# s below this times its point's largest s is beyond float64's resolution of J (~n L ε).
NUMERICAL_ZERO = 1e-12
# A setting's density finding names its numerically zero share from this share up.
_ZERO_SHARE = 0.05
DENSITY_COLUMNS = ["cell", "activation", "init", "run_id", "point", "log10_s", "zero"]
CELL_COLUMNS = ["study", "cell", "activation", "init", "depth", "n_runs"]
CELL_COLUMNS += ["frac_well_conditioned"]
CELL_COLUMNS += ["frac_zero", "median_log10_s"]
POINT_COLUMNS = ["cell", "activation", "init", "depth", "run_id", "point", "v"]
LINE_COLUMNS = ["study", "cell", "activation", "init", "depth", "measured", "theory"]


def _init_label(runs: pd.DataFrame) -> pd.Series:
    """``orthogonal σ_w²=critical``, ``normal(0.01)``: the init with what sets its scale."""
    nothing = pd.Series(math.nan, index=runs.index)
    sigma_w2 = runs["sigma_w2"] if "sigma_w2" in runs else nothing
    bias = pd.to_numeric(runs["bias_std"], errors="coerce") if "bias_std" in runs else nothing
    labels = [
        str(name)
        + (f" σ_w²={sigma}" if not pd.isna(sigma) else "")
        + (f" σ_b={std:g}" if math.isfinite(std) else "")
        for name, sigma, std in zip(runs["init_name"], sigma_w2, bias, strict=True)
    ]
    return pd.Series(labels, index=runs.index, dtype=object)


def _measured(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs whose spectrum was measured at init, with their ``init`` label and ``cell``."""
    if runs.empty or "jacobian_mean_s2" not in runs:
        return runs.iloc[:0].assign(init="", cell="")
    measured = runs[np.isfinite(pd.to_numeric(runs["jacobian_mean_s2"], errors="coerce"))]
    init = _init_label(measured)
    return measured.assign(init=init, cell=measured["activation"].astype(str) + "·" + init)


def _comparable(members: pd.DataFrame, axes: str) -> bool:
    """Whether a study's measured runs differ only in the setting's axes, depth and training."""
    varied = set(study_axes(members, axes)) if len(members) > 1 else set()
    varied = {a for a in varied if members[a].nunique(dropna=False) > 1}
    return varied <= {*CELL_AXES, "depth", *TRAINING_AXES}


def spectrum_selection(runs: pd.DataFrame, studies: pd.DataFrame, over_depth: bool) -> pd.DataFrame:
    """The measured runs one spectrum figure compares, from one study whose runs differ only in
    the activation, the init (σ_w², σ_b² included), depth and training axes.

    For the density (``over_depth`` False): the study's runs at its deepest depth, from the
    study with the most settings there (ties: the deeper, then the first). For the spread
    (``over_depth`` True): the settings measured at two depths or more, from the study with the
    most (setting, depth) cells.

    Args:
        runs: The runs table (``jacobian_mean_s2`` finite: measured).
        studies: The studies table (its order breaks ties).
        over_depth: Select for the spread against depth.
    Returns:
        The selected rows of ``runs`` with ``init`` (the init's label), ``cell``
        (``activation·init``) and ``study``; none where no study qualifies.
    """
    measured = _measured(runs)
    best, best_score = measured.iloc[:0], (0, 0)
    for study in studies.itertuples(index=False):
        members = measured[in_study(measured, study.study)] if not measured.empty else measured
        if members.empty or not _comparable(members, study.axes):
            continue
        if over_depth:
            depths = members.groupby("cell")["depth"].nunique()
            chosen = members[members["cell"].isin(depths.index[depths >= 2])]
            score = (len(chosen[["cell", "depth"]].drop_duplicates()), 0)
        else:
            chosen = members[members["depth"] == members["depth"].max()]
            score = (chosen["cell"].nunique(), int(chosen["depth"].max()))
        if score > best_score:
            best, best_score = chosen.assign(study=study.study), score
    return best


def _init_rows(spectrum: pd.DataFrame, selection: pd.DataFrame) -> pd.DataFrame:
    rows = spectrum[(spectrum["phase"] == "init") & spectrum["run_id"].isin(selection["run_id"])]
    return rows.merge(selection[["run_id", "cell", "activation", "init", "depth"]], on="run_id")


def _cell_order(frame: pd.DataFrame) -> list[str]:
    """Settings by activation (registry order), then init."""
    order = frame[["cell", "activation", "init"]].drop_duplicates()
    rank = {name: k for k, name in enumerate(category_order(order["activation"]))}
    order = order.assign(rank=order["activation"].map(rank)).sort_values(["rank", "init"])
    return order["cell"].tolist()


def density_frames(
    runs: pd.DataFrame, studies: pd.DataFrame, spectrum: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The log₁₀ s samples of the density figure and one row per setting.

    Args:
        runs: The runs table.
        studies: The studies table.
        spectrum: The long ``spectrum`` table (phase ``init``: statistics and the ``log10_s``
            sample per run and point).
    Returns:
        ``samples``: ``cell``, ``activation``, ``init``, ``run_id``, ``point``, ``log10_s`` and
        ``zero`` (below ``NUMERICAL_ZERO`` times the point's largest s); ``cells``: per setting
        its ``study``, ``depth``, ``n_runs``, ``frac_well_conditioned`` (median over its runs of
        the exact share of s in ``WELL_CONDITIONED``, ``jacobian_frac_well_conditioned``),
        ``frac_zero`` (the sample's share of ``zero``) and ``median_log10_s`` (of the sample
        but its zeros; NaN: all zero), in activation then init order. Both
        empty when no run qualifies or none has a sample.
    """
    selection = spectrum_selection(runs, studies, over_depth=False)
    rows = _init_rows(spectrum, selection)
    sample = rows[rows["statistic"] == SAMPLE]
    if sample.empty:
        return pd.DataFrame(columns=DENSITY_COLUMNS), pd.DataFrame(columns=CELL_COLUMNS)
    largest = rows[rows["statistic"] == "s_max"].set_index(["run_id", "point"])["value"]
    top = pd.MultiIndex.from_frame(sample[["run_id", "point"]]).map(largest).to_numpy(float)
    with np.errstate(divide="ignore"):
        zero = sample["value"].to_numpy(float) < np.log10(top * NUMERICAL_ZERO)
    samples = sample.assign(log10_s=sample["value"], zero=zero)[DENSITY_COLUMNS]
    members = selection[selection["run_id"].isin(set(samples["run_id"]))]
    cells = members.groupby(["study", "cell", "activation", "init"], as_index=False).agg(
        depth=("depth", "first"),
        n_runs=("run_id", "size"),
        frac_well_conditioned=("jacobian_frac_well_conditioned", "median"),
    )
    cells["frac_zero"] = cells["cell"].map(samples.groupby("cell")["zero"].mean())
    resolved = samples[~samples["zero"]].groupby("cell")["log10_s"].median()
    cells["median_log10_s"] = cells["cell"].map(resolved).astype(float)
    cells = cells.set_index("cell").loc[_cell_order(cells)].reset_index()
    return samples.reset_index(drop=True), cells[CELL_COLUMNS]


def _percent(share: float) -> str:
    if not math.isfinite(share):
        return "n/a"
    return f"{100 * share:.0f} %" if share == 0 or share >= 0.01 else "< 1 %"


def _by_activation(cells: pd.DataFrame, value: str | None = None) -> str:
    """``sigmoid: default, normal(0.01); relu: default 60 %``: settings grouped by activation."""
    groups = []
    for activation, rows in cells.groupby("activation", sort=False):
        names = rows["init"] if value is None else rows["init"] + " " + rows[value].map(_percent)
        groups.append(f"{activation} {', '.join(names)}")
    return "; ".join(groups)


def density_finding(cells: pd.DataFrame) -> str:
    """One line on the density figure: per setting the share of its singular values within the
    well-conditioned band (median over seeds), the best first; the settings with none there,
    and between which values their median s lies; and where a sizeable share of J's singular
    values is numerically zero.

    Args:
        cells: ``density_frames``' cells.
    Returns:
        The sentence, e.g. ``In study activation_init at depth 16 (6 settings, 2 seeds each), the
        share of the Jacobian's singular values within (0.1, 10): tanh·xavier_uniform 28 %, …;
        none for sigmoid default, normal(0.01); relu default (median s from 3e-28 to 8e+09) …``,
        or why there is nothing to say.
    """
    if cells.empty:
        return (
            "No run's Jacobian spectrum was measured at init in a study that compares "
            "activations or inits (BatchNorm nets are not measured), so there is no density."
        )
    low, high = WELL_CONDITIONED
    ranked = cells.sort_values("frac_well_conditioned", ascending=False, kind="stable")
    some = ranked[ranked["frac_well_conditioned"] > 0]
    seeds = cells["n_runs"].unique()
    each = "medians over seeds"
    if len(seeds) == 1:
        each = f"{seeds[0]} seed{'s' if seeds[0] > 1 else ''} each"
    text = (
        f"In study {cells['study'].iloc[0]} at depth {int(cells['depth'].iloc[0])} "
        f"({len(cells)} settings, {each}), the share of the Jacobian's singular values within "
        f"({low:g}, {high:g}): "
    )
    text += ", ".join(
        f"{row.cell} {_percent(row.frac_well_conditioned)}" for row in some.itertuples()
    )
    none = cells[~(cells["frac_well_conditioned"] > 0)]
    if not none.empty:
        medians = [f"{10.0**m:.0e}" for m in none["median_log10_s"].dropna().sort_values()]
        span = ""
        if medians:
            span = f" (median s {medians[0]})"
            if medians[-1] != medians[0]:
                span = f" (median s from {medians[0]} to {medians[-1]})"
        text += f"{'; ' if not some.empty else ''}none for {_by_activation(none)}{span}"
    zero = cells[cells["frac_zero"] >= _ZERO_SHARE]
    if not zero.empty:
        text += (
            f". Below {NUMERICAL_ZERO:.0e} × the largest (numerically zero: J is rank-deficient "
            f"to float64): {_by_activation(zero, 'frac_zero')}"
        )
    return text + "."


def spread_frames(
    runs: pd.DataFrame, studies: pd.DataFrame, spectrum: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The normalized variance of s² per run and point, and per setting and depth its median
    beside theory.

    Args:
        runs: The runs table (``theory_jacobian_mean_s2``, ``theory_jacobian_var_s2``: NaN or
            missing where theory has no prediction).
        studies: The studies table.
        spectrum: The long ``spectrum`` table (phase ``init``, ``mean_s2`` and ``var_s2``).
    Returns:
        ``points``: ``cell``, ``activation``, ``init``, ``depth``, ``run_id``, ``point``, ``v``
        (``var_s2 / mean_s2²``; NaN where mean_s2 is not positive); ``lines``: per setting and
        depth its ``study``, ``measured`` (median of ``v``) and ``theory``
        (``theory_jacobian_var_s2 / theory_jacobian_mean_s2²``, median over the runs; NaN
        without theory). Both empty when
        no setting was measured at two depths.
    """
    selection = spectrum_selection(runs, studies, over_depth=True)
    rows = _init_rows(spectrum, selection)
    rows = rows[rows["statistic"].isin(["mean_s2", "var_s2"])]
    if rows.empty:
        return pd.DataFrame(columns=POINT_COLUMNS), pd.DataFrame(columns=LINE_COLUMNS)
    keys = ["cell", "activation", "init", "depth", "run_id", "point"]
    wide = rows.pivot_table(index=keys, columns="statistic", values="value").reset_index()
    mean = wide["mean_s2"].where(wide["mean_s2"] > 0)
    points = wide.assign(v=wide["var_s2"] / mean**2)[POINT_COLUMNS]
    nan = pd.Series(math.nan, index=selection.index)
    mean_t = pd.to_numeric(selection.get("theory_jacobian_mean_s2", nan), errors="coerce")
    var_t = pd.to_numeric(selection.get("theory_jacobian_var_s2", nan), errors="coerce")
    theory = selection.assign(theory=var_t / mean_t.where(mean_t > 0) ** 2)
    by = ["cell", "activation", "init", "depth"]
    lines = points.groupby(by, as_index=False)["v"].median().rename(columns={"v": "measured"})
    lines = lines.merge(theory.groupby(by, as_index=False)["theory"].median(), on=by, how="left")
    lines["study"] = selection["study"].iloc[0]
    order = {cell: k for k, cell in enumerate(_cell_order(lines))}
    lines = lines.sort_values(
        ["cell", "depth"], key=lambda c: c.map(order) if c.name == "cell" else c
    )
    return points.reset_index(drop=True), lines[LINE_COLUMNS].reset_index(drop=True)


def _slope(depth: pd.Series, value: pd.Series) -> float:
    """Least-squares slope of ``value`` against depth over the finite values (NaN: < 2)."""
    keep = np.isfinite(value.to_numpy(float))
    x, y = depth.to_numpy(float)[keep], value.to_numpy(float)[keep]
    if len(np.unique(x)) < 2:
        return math.nan
    return float(np.polyfit(x, y, 1)[0])


def spread_finding(lines: pd.DataFrame) -> str:
    """One line on the spread figure: per setting how much v grows per layer (the least-squares
    slope of its median against depth) beside theory's, both at the deepest depth, and the
    setting farthest from theory there.

    Args:
        lines: ``spread_frames``' lines.
    Returns:
        The sentence, e.g. ``In study activation_depth, the normalized variance v = Var[s²]/E[s²]²
        grows per layer by:
        tanh·xavier_uniform 0.95 (theory 1.00; v = 14.1 vs 15.1 at depth 16), …``, or why there
        is nothing to say.
    """
    if lines.empty:
        return (
            "No study measured the Jacobian's spectrum of one setting at two depths or more, "
            "so there is no spread against depth."
        )
    parts, gaps = [], {}
    for cell, rows in lines.groupby("cell", sort=False):
        deepest = rows.loc[rows["depth"].idxmax()]
        slope, at = _slope(rows["depth"], rows["measured"]), int(deepest["depth"])
        if math.isfinite(deepest["theory"]):
            predicted = _slope(rows["depth"], rows["theory"])
            parts.append(
                f"{cell} {slope:.2f} (theory {predicted:.2f}; v = {deepest['measured']:.3g} vs "
                f"{deepest['theory']:.3g} at depth {at})"
            )
            gaps[cell] = deepest["measured"] / deepest["theory"] - 1
        else:
            parts.append(f"{cell} {slope:.2f} (no theory; v = {deepest['measured']:.3g} at {at})")
    text = (
        f"In study {lines['study'].iloc[0]}, the normalized variance v = Var[s²]/E[s²]² grows "
        "per layer by: " + ", ".join(parts)
    )
    finite = {cell: gap for cell, gap in gaps.items() if math.isfinite(gap)}
    if finite:
        cell = max(finite, key=lambda name: abs(finite[name]))
        side = "below" if finite[cell] < 0 else "above"
        gap = 100 * abs(finite[cell])
        text += f"; farthest from theory at the deepest depth: {cell}, {gap:.0f} % {side}"
    return text + "."
