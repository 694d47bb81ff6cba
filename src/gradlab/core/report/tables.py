"""The tables: per study and setting aggregated over seeds, gradient flow and theory against
measurement per run, and the study helpers they share (membership, axes, metric labels)."""

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from gradlab.core import theory
from gradlab.core.architectures import get_architecture
from gradlab.core.schema import LONG_COLUMNS, THEORY_COLUMNS
from gradlab.core.verdict import VERDICTS, first_last_ratio, init_verdict

METRIC_LABELS = {"val_r2": "val R²", "val_accuracy": "val accuracy"}
LOSS_LABELS = {"val_loss": "validation loss", "train_loss": "training loss"}
# How a study axis reads where it does not apply to a run (a plain MLP's residual_scale): its
# runs keep their own setting, which pandas would drop as a NaN group key.
NOT_APPLICABLE = "–"


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    if missing := set(columns) - set(frame.columns):
        raise ValueError(f"{what} lacks columns {sorted(missing)}; it has {sorted(frame.columns)}")


def metric_label(names: Sequence[str]) -> str:
    """``val R²``, ``val accuracy``, or both joined, for the metric names of some runs."""
    unique = [n for n in dict.fromkeys(names) if isinstance(n, str)]
    return " / ".join(METRIC_LABELS.get(name, name) for name in unique) or "val metric"


def in_study(runs: pd.DataFrame, study: str) -> pd.Series:
    """Whether each run's comma-separated ``studies`` include ``study`` (a mask on ``runs``: a
    test on a few columns before copying the rows costs less than the copy)."""
    return runs["studies"].str.split(",").map(lambda names: study in names).astype(bool)


def runs_in_study(runs: pd.DataFrame, study: str) -> pd.DataFrame:
    """The runs whose comma-separated ``studies`` include ``study``."""
    return runs[in_study(runs, study)]


def study_axes(runs: pd.DataFrame, axes: str) -> list[str]:
    """The runs-table columns a study varies, as the report shows them.

    ``init`` and ``init_std`` read as ``init_name`` (``normal(0.01)``); an axis with one value
    among the study's runs (e.g. ``depth: [16]``) is dropped, unless nothing else is left.

    Args:
        runs: The study's runs.
        axes: The study's comma-separated axis names (``studies.axes``).
    Returns:
        One or more column names, in the study's order.
    """
    columns = list(
        dict.fromkeys("init_name" if a in ("init", "init_std") else a for a in axes.split(","))
    )
    columns = [c for c in columns if c in runs.columns]
    # a value that does not apply (NaN) counts as one more: mlp vs resmlp varies residual_scale
    varied = [c for c in columns if runs[c].nunique(dropna=False) > 1]
    return varied or columns[:1]


def _shown(value: object) -> str:
    return NOT_APPLICABLE if pd.isna(value) else str(value)


def display_axes(runs: pd.DataFrame, axes: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """The axes to draw: at most two, a third and further axis folded into the second one, and
    a value that does not apply to a run (NaN) shown as ``NOT_APPLICABLE``, so that its runs
    keep a setting of their own in every group, legend and heatmap.

    Returns:
        ``runs`` with the drawn columns filled (and the folded column added, if any), and the one
        or two column names.
    """
    filled = runs.assign(
        **{a: runs[a].map(_shown) for a in axes if runs[a].isna().any()},
    )
    if len(axes) <= 2:
        return filled, list(axes)
    name = " · ".join(axes[1:])
    folded = filled[list(axes[1:])].map(str).agg(" · ".join, axis=1)
    return filled.assign(**{name: folded}), [axes[0], name]


def setting_label(row: pd.Series, axes: Sequence[str]) -> str:
    """``activation=sigmoid, depth=16``: one setting of a study (``init_name`` reads ``init``,
    a value that does not apply ``NOT_APPLICABLE``)."""
    return ", ".join(f"{'init' if a == 'init_name' else a}={_shown(row[a])}" for a in axes)


def summarize_studies(runs: pd.DataFrame, studies: pd.DataFrame) -> pd.DataFrame:
    """Per study and setting of its axes: run counts, final metrics over seeds, verdict counts.

    Args:
        runs: The runs table.
        studies: ``study``, ``question``, ``axes``.
    Returns:
        One row per (study, setting): ``study``, ``setting``, one column per axis any study
        varies (empty where the study does not vary it), ``metric_name``, ``n_runs``,
        ``n_finished``, ``n_diverged``, ``n_failed``, mean and sd over finished seeds of
        ``final_val_metric``, ``final_val_loss`` and ``final_train_loss``, the median
        first/last ∂L/∂h ratio at init (all runs) and at the end (finished runs: a diverged
        run ends wherever it blew up), and ``verdict_<v>`` counts.
    """
    _require(runs, ["run_id", "studies", "status", "verdict", "final_val_metric"], "runs")
    _require(studies, ["study", "axes"], "studies")
    parts = []
    for study in studies.itertuples(index=False):
        members = runs_in_study(runs, study.study)
        if members.empty:
            continue
        axes = study_axes(members, study.axes)
        # grouping by a list yields tuples of values, one per axis
        for values, group in members.groupby(axes, sort=True, dropna=False):
            finished = group[group["status"] == "finished"]
            row = {
                "study": study.study,
                "setting": setting_label(pd.Series(values, index=axes), axes),
                **dict(zip(axes, values, strict=True)),
                "metric_name": ",".join(group["metric_name"].dropna().unique()),
                "n_runs": len(group),
                "n_finished": len(finished),
                "n_diverged": int((group["status"] == "diverged").sum()),
                "n_failed": int((group["status"] == "failed").sum()),
            }
            for column in ("final_val_metric", "final_val_loss", "final_train_loss"):
                row[f"{column}_mean"] = finished[column].mean()
                row[f"{column}_sd"] = finished[column].std()
            row["init_grad_ratio_median"] = group["init_grad_ratio"].median()
            row["end_grad_ratio_median"] = finished["end_grad_ratio"].median()
            for name in VERDICTS:
                row[f"verdict_{name}"] = int((group["verdict"] == name).sum())
            parts.append(row)
    table = pd.DataFrame(parts)
    if table.empty:
        return table
    # every axis column as text: one parquet type per column whichever studies fill it
    axis_columns = [c for c in table.columns if c in runs.columns and c not in ("run_id", "status")]
    for column in axis_columns:
        table[column] = table[column].map(lambda v: None if pd.isna(v) else str(v))
    return table


def _profile_slopes(stats: pd.DataFrame) -> pd.DataFrame:
    """Per (run_id, when): the log-slope of RMS ∂L/∂h over hidden layers, and first/last ratio."""

    def fit(group: pd.DataFrame) -> pd.Series:
        rms = group.sort_values("layer")["value"].to_numpy(float)
        # ln 0 has no slope: an underflowed layer leaves the slope undefined, not the ratio
        usable = len(rms) >= 2 and bool(np.all(np.isfinite(rms)) and np.all(rms > 0))
        slope = theory.log_slope(rms) if usable else math.nan
        return pd.Series({"log_slope": slope, "ratio": first_last_ratio(rms)})

    if stats.empty:
        return pd.DataFrame(columns=["run_id", "when", "log_slope", "ratio"])
    return stats.groupby(["run_id", "when"]).apply(fit, include_groups=False).reset_index()


def profile_quantities(runs: pd.DataFrame) -> pd.Series:
    """Per run id, the quantity of its gradient profile (``Architecture.profile``): RMS ∂L/∂h
    of the hidden layers for an MLP, RMS ∂L/∂x of the stream for a residual net. A runs table
    without ``arch`` (from before residual nets) holds MLPs."""
    arch = runs["arch"] if "arch" in runs else pd.Series("mlp", index=runs.index)
    profiles = {name: get_architecture(name).profile for name in arch.dropna().unique()}
    return pd.Series(arch.map(profiles).to_numpy(), index=runs["run_id"].to_numpy())


def gradient_flow_table(runs: pd.DataFrame, layer_stats: pd.DataFrame) -> pd.DataFrame:
    """Per run: how the back-propagated gradient changes across layers at init and at the end.

    The gradient is each run's profile quantity (``profile_quantities``): ∂L/∂h of the hidden
    layers, or ∂L/∂x of a residual net's stream entering blocks 1 … depth, the gradient its
    ``init_grad_ratio`` and theory read.

    Args:
        runs: The runs table.
        layer_stats: The long per-layer statistics.
    Returns:
        One row per run: identity and axes, ``status``, ``verdict``, and for ``init`` and ``end``
        (the last probe step of training) the first/last layer's RMS gradient ratio
        (``*_grad_ratio``) and log-slope (``*_log_slope``); ``init_weight_ratio``, the same ratio
        of ‖∂L/∂W‖, which Glorot & Bengio's eq. 14 predicts stays near 1; ``init_act_ratio``,
        the same ratio of the activations' std (the forward signal); ``end_step``.
    """
    _require(runs, ["run_id", "label", "activation", "init_name", "depth"], "runs")
    _require(layer_stats, ["run_id", *LONG_COLUMNS], "layer_stats")
    # float: an empty map keeps the run_id's text dtype (pandas 3), which `between` refuses
    depth = runs.set_index("run_id")["depth"].astype(float)
    rms = layer_stats[
        (layer_stats["quantity"] == layer_stats["run_id"].map(profile_quantities(runs)))
        & layer_stats["phase"].isin(["init", "train"])
    ]
    rms = rms[rms["layer"].between(1, rms["run_id"].map(depth).astype(float))]
    train = rms[rms["phase"] == "train"]
    last = train.groupby("run_id")["step"].transform("max")
    end = train[train["step"] == last]
    profiles = pd.concat(
        [rms[rms["phase"] == "init"].assign(when="init"), end.assign(when="end")],
        ignore_index=True,
    )
    fits = _profile_slopes(profiles).pivot(index="run_id", columns="when")
    fits.columns = [f"{when}_{name}" for name, when in fits.columns]

    def init_ratio(quantity: str, name: str) -> pd.Series:
        """First over last hidden layer of ``quantity`` at init, per run."""
        rows = layer_stats[(layer_stats["phase"] == "init") & (layer_stats["quantity"] == quantity)]
        rows = rows[rows["layer"].between(1, rows["run_id"].map(depth).astype(float))]
        ends = rows.sort_values("layer").groupby("run_id")["value"].agg(["first", "last"])
        with np.errstate(divide="ignore", invalid="ignore"):
            return (ends["first"] / ends["last"]).rename(name)

    columns = ["run_id", "label", "studies", "activation", "init_name", "depth", "norm_layer"]
    columns += ["arch", "residual_scale"]
    table = runs[[c for c in [*columns, "status", "verdict"] if c in runs.columns]].set_index(
        "run_id"
    )
    table = table.join(fits.rename(columns=lambda c: c.replace("_ratio", "_grad_ratio")))
    table = table.join(init_ratio("grad_weight_norm", "init_weight_ratio"))
    table = table.join(init_ratio("act_std", "init_act_ratio"))
    table = table.join(end.groupby("run_id")["step"].max().rename("end_step"))
    for column in ("init_grad_ratio", "end_grad_ratio", "init_log_slope", "end_log_slope"):
        if column not in table:
            table[column] = math.nan
    return table.reset_index()


def theory_table(runs: pd.DataFrame, flow: pd.DataFrame) -> pd.DataFrame:
    """Per run: the mean-field prediction at init beside what was measured.

    Args:
        runs: The runs table; the ``theory_*`` and ``measured_log_slope`` columns are filled
            with NaN (``n/a`` for ``theory_verdict``) where the train stage did not record them.
        flow: ``gradient_flow_table``'s output (its measured ratio and slope at init stand in
            for a missing ``measured_log_slope``).
    Returns:
        One row per run: identity and axes, status, ``theory_*``, ``measured_log_slope``,
        ``measured_first_last_ratio``, ``theory_verdict`` and ``measured_init_verdict`` (the
        same rule applied to the measured ratio at init), and ``slope_error``.
    """
    _require(runs, ["run_id", "label", "activation", "init_name", "depth"], "runs")
    measured = flow.set_index("run_id")[["init_grad_ratio", "init_log_slope"]]
    table = runs.join(measured.add_prefix("flow_"), on="run_id")
    if "measured_log_slope" not in table:
        table["measured_log_slope"] = table["flow_init_log_slope"]
    for column in THEORY_COLUMNS:
        if column not in table:
            table[column] = "n/a" if column == "theory_verdict" else math.nan
    # the runs table's ratio is the one its verdict used; the flow table's is the same fit
    ratio = (
        table["init_grad_ratio"] if "init_grad_ratio" in table else table["flow_init_grad_ratio"]
    )
    table["measured_first_last_ratio"] = ratio
    table["measured_init_verdict"] = ratio.map(init_verdict)
    table["slope_error"] = table["measured_log_slope"] - table["theory_log_slope"]
    columns = ["run_id", "label", "activation", "init_name", "depth", "width", "norm_layer"]
    columns += ["status", "verdict", *THEORY_COLUMNS[1:], "measured_log_slope"]
    columns += ["jacobian_mean_s2", "jacobian_var_s2"]
    columns += ["measured_first_last_ratio", "measured_init_verdict", "slope_error"]
    return table[[c for c in columns if c in table.columns]]
