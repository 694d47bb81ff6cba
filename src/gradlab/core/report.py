"""The report: tables aggregated over seeds, one-line findings computed from them, the frames the
figures draw, and a self-contained HTML page.

Everything here reads the stored result tables (``runs``, ``history``, ``layer_stats``,
``distributions``, ``studies``; see ``gradlab.core.probes`` for the quantities) and trains
nothing. Final metrics are aggregated over the *finished* seeds of a setting: a diverged run's last
metric is whatever the blow-up left, so it is counted, not averaged.

The log-slope of a gradient profile is ``gradlab.core.theory.log_slope``: the least-squares slope
of ``ln RMS(∂L/∂h_l)`` against the layer l, positive when the gradient shrinks towards the input.
"""

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gradlab.core import theory
from gradlab.core.train import THEORY_COLUMNS  # the columns the theory figures and table need
from gradlab.core.verdict import (
    TRAINED_AT,
    VERDICTS,
    agreement,
    first_last_ratio,
    init_verdict,
    verdict_confusion,
)

METRIC_LABELS = {"val_r2": "val R²", "val_accuracy": "val accuracy"}
LOSS_LABELS = {"val_loss": "validation loss", "train_loss": "training loss"}
# Axes that change the network at init (the others act only once training starts).
INIT_AXES = {"activation", "init_name", "depth", "width", "input_norm", "norm_layer", "dataset"}
# The init a "reference" view shows when a study compares several: PyTorch's own nn.Linear init.
REFERENCE_INIT = "default"
# Where the phase diagram's axes end, beyond the runs placed on it.
PHASE_SIGMA_W2 = (1e-2, 10.0)
PHASE_SIGMA_B2_MAX = 0.5


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    if missing := set(columns) - set(frame.columns):
        raise ValueError(f"{what} lacks columns {sorted(missing)}; it has {sorted(frame.columns)}")


def _fmt(value: float, digits: int = 2) -> str:
    """A number for a sentence: fixed for ordinary sizes, scientific for tiny or huge ones."""
    if not math.isfinite(value):
        return "n/a"
    if value != 0 and not 10.0**-digits <= abs(value) < 1e4:  # "0.00" would say nothing
        return f"{value:.0e}"
    return f"{value:.{digits}f}"


def metric_label(names: Sequence[str]) -> str:
    """``val R²``, ``val accuracy``, or both joined, for the metric names of some runs."""
    unique = [n for n in dict.fromkeys(names) if isinstance(n, str)]
    return " / ".join(METRIC_LABELS.get(name, name) for name in unique) or "val metric"


def runs_in_study(runs: pd.DataFrame, study: str) -> pd.DataFrame:
    """The runs whose comma-separated ``studies`` include ``study``."""
    member = runs["studies"].str.split(",").map(lambda names: study in names)
    return runs[member.astype(bool)]


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
    varied = [c for c in columns if runs[c].astype(str).nunique() > 1]
    return varied or columns[:1]


def display_axes(runs: pd.DataFrame, axes: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """At most two axes to draw: a third and further axis are folded into the second one.

    Returns:
        ``runs`` with the folded column added (if any), and the one or two column names.
    """
    if len(axes) <= 2:
        return runs, list(axes)
    name = " · ".join(axes[1:])
    folded = runs[list(axes[1:])].astype(str).agg(" · ".join, axis=1)
    return runs.assign(**{name: folded}), [axes[0], name]


def setting_label(row: pd.Series, axes: Sequence[str]) -> str:
    """``activation=sigmoid, depth=16``: one setting of a study (``init_name`` reads ``init``)."""
    return ", ".join(f"{'init' if a == 'init_name' else a}={row[a]}" for a in axes)


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


def gradient_flow_table(runs: pd.DataFrame, layer_stats: pd.DataFrame) -> pd.DataFrame:
    """Per run: how the back-propagated gradient changes across layers at init and at the end.

    Args:
        runs: The runs table.
        layer_stats: The long per-layer statistics.
    Returns:
        One row per run: identity and axes, ``status``, ``verdict``, and for ``init`` and ``end``
        (the last probe step of training) the first/last hidden-layer ∂L/∂h RMS ratio
        (``*_grad_ratio``) and log-slope (``*_log_slope``); ``init_weight_ratio``, the same ratio
        of ‖∂L/∂W‖, which Glorot & Bengio's eq. 14 predicts stays near 1; ``end_step``.
    """
    _require(runs, ["run_id", "label", "activation", "init_name", "depth"], "runs")
    _require(layer_stats, ["run_id", "phase", "step", "layer", "quantity", "value"], "layer_stats")
    # float: an empty map keeps the run_id's text dtype (pandas 3), which `between` refuses
    depth = runs.set_index("run_id")["depth"].astype(float)
    rms = layer_stats[
        (layer_stats["quantity"] == "grad_preact_rms")
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
    weights = layer_stats[
        (layer_stats["phase"] == "init") & (layer_stats["quantity"] == "grad_weight_norm")
    ]
    weights = weights[weights["layer"].between(1, weights["run_id"].map(depth).astype(float))]
    ends = weights.sort_values("layer").groupby("run_id")["value"].agg(["first", "last"])
    with np.errstate(divide="ignore", invalid="ignore"):
        weight_ratio = (ends["first"] / ends["last"]).rename("init_weight_ratio")
    columns = ["run_id", "label", "studies", "activation", "init_name", "depth", "norm_layer"]
    table = runs[[c for c in [*columns, "status", "verdict"] if c in runs.columns]].set_index(
        "run_id"
    )
    table = table.join(fits.rename(columns=lambda c: c.replace("_ratio", "_grad_ratio")))
    table = table.join(weight_ratio).join(end.groupby("run_id")["step"].max().rename("end_step"))
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
    columns += ["measured_first_last_ratio", "measured_init_verdict", "slope_error"]
    return table[[c for c in columns if c in table.columns]]


def init_selection(runs: pd.DataFrame, studies: pd.DataFrame) -> pd.DataFrame:
    """The runs the figures at init compare: activation × init, at one depth.

    The runs of the first study that varies both ``activation`` and ``init``; failing that, of
    the first that varies ``activation``, at its greatest depth; failing that, every run.

    Args:
        runs: The runs table.
        studies: The studies table.
    Returns:
        The selected rows of ``runs``.
    """
    rows = list(studies.itertuples(index=False))
    for wanted in ({"activation", "init"}, {"activation"}):
        for study in rows:
            if wanted <= set(study.axes.split(",")):
                members = runs_in_study(runs, study.study)
                if not members.empty:
                    return members[members["depth"] == members["depth"].max()]
    return runs


def _axes_of(selection: pd.DataFrame) -> pd.DataFrame:
    return selection[["run_id", "activation", "init_name", "depth", "seed"]]


def flow_stats(selection: pd.DataFrame, layer_stats: pd.DataFrame) -> pd.DataFrame:
    """RMS ∂L/∂h of hidden layers and ‖∂L/∂W‖ of every layer at init, for ``plot_gradient_flow``."""
    stats = layer_stats[
        (layer_stats["phase"] == "init")
        & layer_stats["quantity"].isin(["grad_preact_rms", "grad_weight_norm"])
        & layer_stats["run_id"].isin(selection["run_id"])
    ]
    stats = stats.merge(_axes_of(selection), on="run_id")
    hidden = stats["layer"].between(1, stats["depth"])
    head = (stats["quantity"] == "grad_weight_norm") & (stats["layer"] == stats["depth"] + 1)
    return stats[hidden | head]


def reference_runs(selection: pd.DataFrame) -> pd.DataFrame:
    """Per activation, the runs with the reference init (``default``, else the most common)."""
    parts = []
    for _, group in selection.groupby("activation", sort=False):
        names = group["init_name"].value_counts()
        init = REFERENCE_INIT if REFERENCE_INIT in names.index else names.index[0]
        parts.append(group[group["init_name"] == init])
    return pd.concat(parts) if parts else selection


def distribution_samples(
    selection: pd.DataFrame, distributions: pd.DataFrame, quantity: str
) -> pd.DataFrame:
    """Sampled values of one quantity at init for the selected runs, with their axes."""
    samples = distributions[
        (distributions["phase"] == "init")
        & (distributions["quantity"] == quantity)
        & distributions["run_id"].isin(selection["run_id"])
    ]
    return samples.merge(_axes_of(selection), on="run_id")


def saturation_stats(selection: pd.DataFrame, layer_stats: pd.DataFrame) -> pd.DataFrame:
    """``act_saturation`` per training step and hidden layer of runs whose φ can saturate."""
    stats = layer_stats[
        (layer_stats["phase"] == "train")
        & (layer_stats["quantity"] == "act_saturation")
        & layer_stats["run_id"].isin(selection["run_id"])
    ]
    # NaN marks activations without a flat region (relu, gelu, ...): nothing to saturate
    stats = stats[np.isfinite(stats["value"])]
    return stats.merge(_axes_of(selection), on="run_id")


def theory_profiles(selection: pd.DataFrame, layer_stats: pd.DataFrame) -> pd.DataFrame:
    """Measured RMS ∂L/∂h at init, normalized to the last hidden layer, and the theory rows.

    Returns:
        ``activation``, ``init_name``, ``layer``, ``source`` (``measured``/``theory``), ``seed``
        (−1 for theory), ``value``; theory rows once per (activation, init).
    """
    stats = layer_stats[
        layer_stats["phase"].isin(["init", "theory"])
        & (layer_stats["quantity"] == "grad_preact_rms")
        & layer_stats["run_id"].isin(selection["run_id"])
    ].merge(_axes_of(selection), on="run_id")
    stats = stats[stats["layer"].between(1, stats["depth"])]
    measured = stats[stats["phase"] == "init"]
    last = measured[measured["layer"] == measured["depth"]].set_index("run_id")["value"]
    with np.errstate(divide="ignore", invalid="ignore"):
        measured = measured.assign(
            value=measured["value"] / measured["run_id"].map(last).astype(float)
        )
    predicted = stats[stats["phase"] == "theory"].drop_duplicates(
        ["activation", "init_name", "layer"]
    )
    columns = ["activation", "init_name", "layer", "source", "seed", "value"]
    return pd.concat(
        [
            measured.assign(source="measured")[columns],
            predicted.assign(source="theory", seed=-1)[columns],
        ],
        ignore_index=True,
    )


def phase_points(runs: pd.DataFrame, activation: str) -> pd.DataFrame:
    """Distinct (σ_w², σ_b², init) of the runs with ``activation``, with how many runs sit there."""
    columns = ["theory_sigma_w2", "theory_sigma_b2"]
    if not set(columns) <= set(runs.columns):
        return pd.DataFrame(columns=["sigma_w2", "sigma_b2", "init_name", "n_runs"])
    chosen = runs[(runs["activation"] == activation)].dropna(subset=columns)
    return (
        chosen.groupby([*columns, "init_name"])
        .size()
        .rename("n_runs")
        .reset_index()
        .rename(columns={"theory_sigma_w2": "sigma_w2", "theory_sigma_b2": "sigma_b2"})
    )


def phase_grid(activation: str, points: pd.DataFrame, resolution: int) -> pd.DataFrame:
    """χ₁ at the fixed point (``theory.chi1_grid``) on a mesh that contains every point.

    Args:
        activation: A key of ``theory.ACTIVATIONS``.
        points: ``phase_points``' output.
        resolution: Mesh points along σ_w² (log-spaced); σ_b² gets 5/8 as many.
    Returns:
        ``sigma_w2``, ``sigma_b2``, ``chi1``, one row per mesh point.
    """
    low, high = PHASE_SIGMA_W2
    top = PHASE_SIGMA_B2_MAX
    positive = points["sigma_w2"][points["sigma_w2"] > 0]
    if not positive.empty:
        low, high = min(low, positive.min() / 2), max(high, positive.max() * 2)
        top = max(top, points["sigma_b2"].max() * 1.2)
    sigma_w2 = np.logspace(np.log10(low), np.log10(high), resolution)
    sigma_b2 = np.linspace(0.0, top, max(resolution * 5 // 8, 2))
    chi = theory.chi1_grid(activation, sigma_w2, sigma_b2)
    sw, sb = np.meshgrid(sigma_w2, sigma_b2)
    return pd.DataFrame({"sigma_w2": sw.ravel(), "sigma_b2": sb.ravel(), "chi1": chi.ravel()})


def study_frames(
    runs: pd.DataFrame, history: pd.DataFrame, study: str, axes: str, loss: str
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """What ``plot_study`` draws for one study.

    Args:
        runs: The runs table.
        history: The long per-epoch history.
        study: The study's name.
        axes: Its comma-separated axes.
        loss: The history metric of the loss curves (``val_loss`` or ``train_loss``).
    Returns:
        The study's runs, their loss per epoch (both with the drawn axis columns), and those
        one or two column names.
    """
    members = runs_in_study(runs, study)
    members, drawn = display_axes(members, study_axes(members, axes))
    curves = history[(history["metric"] == loss) & history["run_id"].isin(members["run_id"])]
    curves = curves.merge(members[["run_id", *drawn]], on="run_id")
    return members, curves, drawn


def study_finding(summary: pd.DataFrame) -> str:
    """One line on one study's summary rows: the best setting, the weakest or strongest gradient
    reaching the first layer (at init, or at the end of training for a study of optimizers,
    learning rates or schedules, which leave the initial network alone), and the diverged runs.

    Args:
        summary: The rows of ``summarize_studies`` for one study.
    Returns:
        The sentence.
    """
    parts = []
    for name, rows in summary.groupby("metric_name", sort=False):
        scored = rows.dropna(subset=["final_val_metric_mean"])
        if scored.empty:
            continue
        best = scored.loc[scored["final_val_metric_mean"].idxmax()]
        spread = best["final_val_metric_sd"]
        value = _fmt(best["final_val_metric_mean"])
        if math.isfinite(spread):
            value += f" ± {_fmt(spread)}"
        # one "best" per metric: a study over datasets mixes R² and accuracy
        parts.append(f"best {metric_label([name])} {value} ({best['setting']})")
    # optimizer, lr, schedule, ... leave the network at init untouched: look at the end instead
    varied = set(summary.columns) & INIT_AXES
    at_init = bool(varied) and summary[sorted(varied)].notna().any().any()
    when = "at init" if at_init else "at the end of training"
    column = "init_grad_ratio_median" if at_init else "end_grad_ratio_median"
    ratios = summary[np.isfinite(summary[column]) & (summary[column] > 0)]
    if not ratios.empty:
        extreme = ratios.loc[np.log10(ratios[column]).abs().idxmax()]
        ratio = extreme[column]
        trend = "vanishing" if ratio < 1 else "exploding"
        parts.append(
            f"most extreme {when}: {extreme['setting']}, first-layer ∂L/∂h is {_fmt(ratio)} × "
            f"the last ({trend})"
        )
    zero = summary[summary[column] == 0]
    if not zero.empty:
        parts.append(f"∂L/∂h underflows to 0 at the first layer: {'; '.join(zero['setting'])}")
    diverged = summary[summary["n_diverged"] > 0]
    total = int(summary["n_runs"].sum())
    if diverged.empty:
        parts.append(f"no run of {total} diverged")
    else:
        where = "; ".join(diverged["setting"])
        parts.append(f"{int(diverged['n_diverged'].sum())} of {total} runs diverged ({where})")
    return "; ".join(parts) + "."


def saturation_finding(runs: pd.DataFrame) -> str:
    """One line on how saturated the hidden layers were at the end of training.

    Args:
        runs: The runs table (``end_saturation``: mean saturated fraction over the hidden layers
            at the last probe step; NaN where it does not apply).
    Returns:
        The sentence: the most and least saturated runs and how many ended above one half.
    """
    ended = runs.dropna(subset=["end_saturation"])
    if ended.empty:
        return "No run measured saturation at the end of training."
    most = ended.loc[ended["end_saturation"].idxmax()]
    least = ended.loc[ended["end_saturation"].idxmin()]
    high = int((ended["end_saturation"] > 0.5).sum())
    return (
        f"At the end of training the hidden layers were {_fmt(most['end_saturation'])} "
        f"saturated on average in {most['label']} (verdict {most['verdict']}) and "
        f"{_fmt(least['end_saturation'])} in {least['label']}; {high} of {len(ended)} runs "
        "ended with more than half their units saturated."
    )


def flow_finding(flow: pd.DataFrame) -> str:
    """One line on the gradient-flow table of the runs compared at init.

    Args:
        flow: Rows of ``gradient_flow_table`` (e.g. for the ``init_selection`` runs).
    Returns:
        The sentence: the range of first/last ∂L/∂h ratios at init, and for the most vanishing
        setting how the weight-gradient ratio compares (Glorot & Bengio 2010, eq. 14).
    """
    medians = flow.groupby(["activation", "init_name"])[
        ["init_grad_ratio", "init_weight_ratio"]
    ].median()
    medians = medians[np.isfinite(medians["init_grad_ratio"]) & (medians["init_grad_ratio"] > 0)]
    if medians.empty:
        return "No run has a measurable first/last ∂L/∂h ratio at init."
    depth = ", ".join(str(d) for d in sorted(flow["depth"].unique()))
    low, high = medians["init_grad_ratio"].idxmin(), medians["init_grad_ratio"].idxmax()
    text = (
        f"At init (depth {depth}), first/last-layer ∂L/∂h ranges from "
        f"{_fmt(medians.loc[low, 'init_grad_ratio'])} ({' · '.join(low)}) to "
        f"{_fmt(medians.loc[high, 'init_grad_ratio'])} ({' · '.join(high)})"
    )
    weight = medians.loc[low, "init_weight_ratio"]
    if math.isfinite(weight):
        text += (
            f"; for {' · '.join(low)} the weight-gradient ratio ‖∂L/∂W‖ first/last is "
            f"{_fmt(weight)}, so weight gradients alone understate the vanishing"
            if weight > medians.loc[low, "init_grad_ratio"] * 10
            else f"; for {' · '.join(low)} ‖∂L/∂W‖ first/last is {_fmt(weight)}"
        )
    return text + "."


def theory_finding(table: pd.DataFrame) -> str:
    """One line on ``theory_table``: slope agreement and how often the verdicts agree."""
    usable = table[
        np.isfinite(table["theory_log_slope"]) & np.isfinite(table["measured_log_slope"])
    ]
    if usable.empty:
        return (
            "No run has both a predicted and a measured log-slope (the runs table lacks the "
            "theory columns, or every run has a normalization layer)."
        )
    gap = usable["slope_error"].abs()
    predicted = table[table["theory_verdict"] != "n/a"]
    agree = int((predicted["theory_verdict"] == predicted["measured_init_verdict"]).sum())
    worst = usable.loc[gap.idxmax()]
    return (
        f"Over {len(usable)} runs, measured and predicted slopes of ln RMS ∂L/∂h differ by a "
        f"median of {_fmt(gap.median(), 3)} per layer (largest: {worst['label']}, "
        f"{_fmt(worst['measured_log_slope'], 3)} measured vs {_fmt(worst['theory_log_slope'], 3)} "
        f"predicted); theory's verdict at init matches the measured one in {agree} of "
        f"{len(predicted)} runs."
    )


@dataclass(frozen=True)
class Section:
    """One part of the HTML report."""

    title: str
    question: str
    finding: str
    figures: Sequence[tuple[str, bytes]] = ()  # (caption, PNG)
    tables: Sequence[tuple[str, pd.DataFrame]] = field(default_factory=tuple)  # (caption, table)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1400px; color: #222;
       padding: 0 1.5rem; }
.scroll { overflow-x: auto; max-width: 100%; }
dl.glossary { font-size: 0.85rem; } dl.glossary dt { font-family: monospace; margin-top: 0.3rem; }
dl.glossary dd { margin-left: 1.5rem; color: #444; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #ccc; padding-top: 1rem; }
.question { font-style: italic; color: #444; }
.finding { background: #eef5ee; border-left: 4px solid #3a7d44; padding: 0.5rem 0.8rem; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.85rem; color: #555; }
table { border-collapse: collapse; font-size: 0.78rem; margin: 0.5rem 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
details { margin: 0.5rem 0; } summary { cursor: pointer; color: #225; }
nav a { margin-right: 0.8rem; }
"""


# Tables up to this many rows are shown unfolded in the page; longer ones start folded.
OPEN_ROWS = 30


def _table_html(table: pd.DataFrame) -> str:
    return table.to_html(
        index=False,
        border=0,
        na_rep="–",
        float_format=lambda v: f"{v:.3g}",
        escape=True,
    )


# What each column of the page's tables holds (a glossary under the navigation lists the ones
# shown). "first/last" is the first hidden layer's value over the last's: far below 1, the
# gradient vanishes on its way to the input; far above 1, it explodes.
GLOSSARY = {
    "setting": "the values of the study's axes for these runs",
    "n_runs": "runs (seeds) with this setting",
    "n_diverged": "of them, runs that diverged (NaN/Inf, or loss above its divergence bound)",
    "final_val_metric_mean": "mean over finished seeds of the final validation metric: R² for "
    "regression datasets, accuracy for classification ones",
    "final_val_metric_sd": "its standard deviation over finished seeds",
    "final_val_loss_mean": "mean final validation loss over finished seeds",
    "init_grad_ratio": "first/last RMS ∂L/∂h at init (on the fixed probe batch)",
    "init_grad_ratio_median": "median over seeds of init_grad_ratio",
    "end_grad_ratio": "first/last RMS ∂L/∂h at the last probe step of training",
    "end_grad_ratio_median": "median over seeds of end_grad_ratio",
    "init_log_slope": "slope of ln RMS ∂L/∂h against layer index at init (negative: shrinks "
    "towards the input)",
    "end_log_slope": "the same slope at the last probe step",
    "init_weight_ratio": "first/last ‖∂L/∂W‖ at init; Glorot & Bengio's eq. 14 predicts it stays "
    "near 1 even when ∂L/∂h vanishes",
    "end_step": "optimizer step of the last probe",
    "verdict": f"one of {', '.join(VERDICTS)} (gradlab.core.verdict)",
    "status": "finished, diverged (a result, not a crash) or failed",
    "theory_sigma_w2": "σ_w²: the init's weight variance times fan-in",
    "theory_sigma_b2": "σ_b²: the bias variance",
    "theory_chi1": "χ₁ at the fixed point q*: below 1 ordered (gradients vanish), above 1 "
    "chaotic (they explode)",
    "theory_depth_scale": "layers over which the gradient changes by a factor e (−1/ln χ₁)",
    "theory_log_slope": "mean-field prediction of init_log_slope",
    "theory_first_last_ratio": "mean-field prediction of the first/last RMS ∂L/∂h",
    "theory_verdict": "the verdict that ratio implies",
    "measured_log_slope": "the measured init_log_slope",
    "measured_first_last_ratio": "the measured init_grad_ratio",
    "measured_init_verdict": "the same rule applied to the measured ratio",
    "slope_error": "measured_log_slope − theory_log_slope",
    **{f"verdict_{name}": f"runs with the verdict {name}" for name in VERDICTS},
    "claim_id": "the claim's key in conf/<env>/parameters_claims.yml (and its MLflow tag)",
    "claim": "a statement of the paper or course this environment reproduces",
    "source": "where it is made: paper and section, table or figure",
    "paper": "the source's number or statement",
    "measured": "what gradlab measured for it: medians over seeds, per group compared",
    "rule": "the measure, the runs it reads and the pass rule, fixed before the run",
    "when": "at init: the verdict of the gradients at init alone; over training: of the network "
    "as training left it (gradlab.core.verdict)",
    "runs": "runs with this verdict",
    "trained": f"of them, runs that finished with val R² or accuracy ≥ {TRAINED_AT:g}",
    "not_trained": "of them, runs that did not",
    "agree": "runs where the verdict predicted the outcome (healthy: trained; else: not)",
    "init_verdict": "the verdict at init (gradlab.core.verdict)",
    "result": "pass if the rule holds at this environment's scale, else fail",
}


def _glossary_html(sections: Sequence[Section]) -> str:
    shown = {column for section in sections for _, table in section.tables for column in table}
    entries = [
        f"<dt>{html.escape(name)}</dt><dd>{html.escape(text)}</dd>"
        for name, text in GLOSSARY.items()
        if name in shown
    ]
    if not entries:
        return ""
    return (
        "<details><summary>What the table columns hold</summary>"
        f'<dl class="glossary">{"".join(entries)}</dl></details>'
    )


def _anchor(title: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in title.lower()).strip("-")


def build_html(title: str, overview: str, sections: Sequence[Section]) -> str:
    """One self-contained HTML page: figures inlined as base64 PNG data URIs, no other files.

    Args:
        title: The page's heading.
        overview: A paragraph under it (plain text).
        sections: The parts, in order.
    Returns:
        The page.
    """
    nav = " ".join(f'<a href="#{_anchor(s.title)}">{html.escape(s.title)}</a>' for s in sections)
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(overview)}</p>",
        f"<nav>{nav}</nav>",
        _glossary_html(sections),
    ]
    for section in sections:
        body.append(f'<h2 id="{_anchor(section.title)}">{html.escape(section.title)}</h2>')
        body.append(f'<p class="question">{html.escape(section.question)}</p>')
        body.append(f'<p class="finding">{html.escape(section.finding)}</p>')
        for caption, png in section.figures:
            data = base64.b64encode(png).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        for caption, table in section.tables:
            body.append(
                f"<details{' open' if len(table) <= OPEN_ROWS else ''}>"
                f"<summary>{html.escape(caption)} ({len(table)} rows)</summary>"
                f'<div class="scroll">{_table_html(table)}</div></details>'
            )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


# The columns of a study's summary shown in the HTML page.
STUDY_VIEW = [
    "setting",
    "n_runs",
    "n_diverged",
    "final_val_metric_mean",
    "final_val_metric_sd",
    "final_val_loss_mean",
    "init_grad_ratio_median",
    "end_grad_ratio_median",
    *[f"verdict_{name}" for name in VERDICTS],
]
# Figures of the report's fixed sections, by key of ``build_report``'s ``figures``, with captions.
FLOW_FIGURES = {
    "grad_flow": "RMS ∂L/∂h (top) and ‖∂L/∂W‖ (bottom) per layer at init: a line that falls "
    "towards layer 1 is a vanishing gradient, one that rises an exploding one; compare the "
    "bottom panel, where weight gradients often stay level",
    "weight_grad_violins": "sampled weight-gradient entries per layer at init: violins that "
    "narrow towards the input mean the first layers barely learn",
    "activation_hist": "activation values per layer at init (Glorot & Bengio 2010, Fig. 6): "
    "mass piling up at the activation's limits is saturation, a spike at 0 dead units",
}
TRAINING_FIGURES = {
    "saturation": "saturated fraction per layer during training (Glorot & Bengio 2010, Fig. 2): "
    "a layer that climbs towards 1 has stopped passing gradient",
}
THEORY_FIGURES = {
    "theory_slopes": "measured against predicted log-slope, one point per run",
    "theory_profiles": "measured profiles (one line per seed) against the prediction",
    "phase_diagram": "χ₁ over (σ_w², σ_b²) for tanh, with the grid's runs",
}


def verdict_finding(runs: pd.DataFrame) -> str:
    """One line on how often each verdict predicted whether a run trained."""
    trained = int(runs["trained"].sum())
    judged = runs[runs["init_verdict"] != "n/a"]
    return (
        f"{trained} of {len(runs)} runs trained. Healthy predicts a run that trains, any other "
        f"verdict one that does not: the verdict over training is right for "
        f"{_fmt(100 * agreement(runs, 'verdict'), 0)} % of the runs, the verdict at init for "
        f"{_fmt(100 * agreement(runs, 'init_verdict'), 0)} % of the {len(judged)} it judges "
        "(one hidden layer has no first/last ratio)."
    )


def claims_finding(claims: pd.DataFrame) -> str:
    """One line on the claims table: how many reproduce, and which do not."""
    passed = claims[claims["result"] == "pass"]
    failed = claims[claims["result"] != "pass"]
    text = f"{len(passed)} of {len(claims)} claims reproduce at this environment's scale"
    if not failed.empty:
        text += f"; not reproduced: {', '.join(failed['claim_id'])}"
    return text + "."


CLAIMS_VIEW = ["claim_id", "claim", "source", "paper", "measured", "rule", "result"]


def overview(runs: pd.DataFrame, studies: pd.DataFrame) -> str:
    """One paragraph: how many runs, how they ended, their verdicts."""
    status = runs["status"].value_counts()
    verdicts = runs["verdict"].value_counts()
    ended = ", ".join(f"{status.get(s, 0)} {s}" for s in ("finished", "diverged", "failed"))
    verdict_text = ", ".join(f"{name} {verdicts[name]}" for name in VERDICTS if name in verdicts)
    return (
        f"{len(runs)} runs ({ended}) in {len(studies)} studies; verdicts: {verdict_text}. "
        "Final metrics are means ± sd over finished seeds; diverged runs are counted apart."
    )


def build_report(
    runs: pd.DataFrame,
    studies: pd.DataFrame,
    summary: pd.DataFrame,
    flow: pd.DataFrame,
    theory_rows: pd.DataFrame,
    figures: dict[str, bytes],
    study_figures: dict[str, bytes],
    claims: pd.DataFrame | None = None,
) -> str:
    """The HTML report: the claims a reproduction checks (if any), gradient flow at init,
    saturation during training, one section per study, theory against measurement.

    Args:
        runs: The runs table.
        studies: The studies table (their order is the page's).
        summary: ``summarize_studies``' output.
        flow: ``gradient_flow_table``' output.
        theory_rows: ``theory_table``' output.
        figures: PNGs of the fixed figures, by the keys of ``FLOW_FIGURES``,
            ``TRAINING_FIGURES`` and ``THEORY_FIGURES`` (a missing key is skipped).
        study_figures: One PNG per study name.
        claims: ``gradlab.core.claims.check_claims``' table; none or empty: no claims section.
    Returns:
        The self-contained page.
    """
    selected = flow[flow["run_id"].isin(init_selection(runs, studies)["run_id"])]
    sections = []
    if claims is not None and not claims.empty:
        sections.append(
            Section(
                "Claims",
                "Does gradlab reproduce what the source states, at the scale this machine affords?",
                claims_finding(claims),
                tables=[
                    ("Claims: the source's statement, measurement and rule", claims[CLAIMS_VIEW])
                ],
            )
        )
    sections += [
        Section(
            "Gradient flow at init",
            "Does the back-propagated gradient ∂L/∂h reach the first layer, and would weight "
            "gradients alone show it?",
            flow_finding(selected),
            [(FLOW_FIGURES[k], figures[k]) for k in FLOW_FIGURES if k in figures],
            [
                (
                    "Gradient flow per run (first/last-layer ratios; slopes of ln RMS ∂L/∂h)",
                    flow,
                )
            ],
        ),
        Section(
            "Saturation during training",
            "Do the hidden layers saturate as training goes on, and where?",
            saturation_finding(runs),
            [(TRAINING_FIGURES[k], figures[k]) for k in TRAINING_FIGURES if k in figures],
        ),
        Section(
            "Verdicts against outcomes",
            f"Does a verdict tell which runs trained (final val R² or accuracy ≥ {TRAINED_AT:g})?",
            verdict_finding(runs),
            tables=[("Verdict (at init, over training) against outcome", verdict_confusion(runs))],
        ),
    ]
    for study in studies.itertuples(index=False):
        rows = summary[summary["study"] == study.study] if not summary.empty else summary
        if rows.empty:
            continue
        sections.append(
            Section(
                f"Study: {study.study}",
                study.question,
                study_finding(rows),
                [(f"study {study.study}", study_figures[study.study])]
                if study.study in study_figures
                else [],
                [(f"{study.study}: per setting", rows[[c for c in STUDY_VIEW if c in rows]])],
            )
        )
    sections.append(
        Section(
            "Theory against measurement",
            "Does mean-field theory (Poole et al. 2016; Schoenholz et al. 2017) predict the "
            "gradient profile at init?",
            theory_finding(theory_rows),
            [(THEORY_FIGURES[k], figures[k]) for k in THEORY_FIGURES if k in figures],
            [("Predicted and measured per run", theory_rows)],
        )
    )
    return build_html(
        "gradlab report: vanishing and exploding gradients", overview(runs, studies), sections
    )
