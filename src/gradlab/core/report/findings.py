"""One-line findings, each computed from a table of the report."""

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from gradlab.core.plots.layer_steps import GRADIENT_NAMES, grid
from gradlab.core.report.frames import EARLY_STEPS, reference_runs
from gradlab.core.report.tables import metric_label
from gradlab.core.verdict import TRAINED_AT, agreement

# Axes that change the network at init (the others act only once training starts).
INIT_AXES = {"activation", "init_name", "depth", "width", "input_norm", "norm_layer", "dataset"}


def _fmt(value: float, digits: int = 2) -> str:
    """A number for a sentence: fixed for ordinary sizes, scientific for tiny or huge ones."""
    if not math.isfinite(value):
        return "n/a"
    if value != 0 and not 10.0**-digits <= abs(value) < 1e4:  # "0.00" would say nothing
        return f"{value:.0e}"
    return f"{value:.{digits}f}"


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


def _times(ratio: float) -> str:
    """A first/last ratio for a sentence: ``536×``, ``1.3×``, ``0.77×``, ``2e-05×``."""
    if not math.isfinite(ratio):
        return "n/a"
    if ratio == 0:
        return "0× (underflow)"
    if 10 <= ratio < 1e4:
        return f"{ratio:.0f}×"
    return f"{ratio:.2g}×" if 1e-2 <= ratio < 10 else f"{ratio:.0e}×"


def _first_last(line: pd.DataFrame) -> float:
    """The value at the lowest layer of ``line`` over the value at its highest."""
    ordered = line.sort_values("layer")["value"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(ordered[0] / ordered[-1]) if len(ordered) > 1 else math.nan


def _outcome(runs: pd.DataFrame) -> str:
    """``trains (val R² 0.98)``, ``does not train (val R² 0.00)``, ``2 of 2 diverged``, …"""
    parts = [
        f"{n} of {len(runs)} {status}"
        for status, n in runs["status"].value_counts().items()
        if status != "finished"
    ]
    finished = runs[(runs["status"] == "finished") & np.isfinite(runs["final_val_metric"])]
    if not finished.empty:
        trained = int((finished["final_val_metric"] >= TRAINED_AT).sum())
        verb = (
            "trains"
            if trained == len(finished)
            else "does not train"
            if trained == 0
            else f"{trained} of {len(finished)} finished train"
        )
        # two decimals, as the metric is read: R² −2e-04 of a net that learned nothing is 0.00
        score = f"{finished['final_val_metric'].median():.2f}".replace("-0.00", "0.00")
        parts.insert(0, f"{verb} ({metric_label(finished['metric_name'])} {score})")
    return ", ".join(parts) or "no run"


def architecture_finding(
    profiles: pd.DataFrame, outcomes: pd.DataFrame, nets: Sequence[str]
) -> str:
    """One line on a study of architectures: per setting and net, how much larger the gradient
    is at layer 1 than at the last layer at init (median over seeds; the mean-field prediction
    beside it) and how the runs ended.

    Args:
        profiles: ``architecture_frames``' profiles (``net``, ``setting``, ``run_id``,
            ``layer``, ``source``, ``value``).
        outcomes: Its outcomes (``net``, ``setting``, ``status``, ``final_val_metric``,
            ``metric_name``).
        nets: The net labels in order.
    Returns:
        The sentence, e.g. ``… norm_layer=none: plain MLP 1e-05× (theory 2e-05×), does not train
        (val R² 0.00); resmlp α = 1 4.8e+02× (theory 5.4e+02×), 2 of 2 diverged; …``.
    """
    if outcomes.empty:
        return "No run of this study has a result."
    measured = profiles[profiles["source"] == "measured"]
    predicted = profiles[profiles["source"] == "theory"]
    groups = []
    for setting in dict.fromkeys(outcomes["setting"]):
        entries = []
        for net in nets:
            runs = outcomes[(outcomes["net"] == net) & (outcomes["setting"] == setting)]
            if runs.empty:
                continue
            mine = measured[(measured["net"] == net) & (measured["setting"] == setting)]
            ratios = [_first_last(line) for _, line in mine.groupby("run_id")]
            ratio = float(np.median(ratios)) if ratios else math.nan
            theory = predicted[(predicted["net"] == net) & (predicted["setting"] == setting)]
            expected = f"theory {_times(_first_last(theory))}" if not theory.empty else "no theory"
            entries.append(f"{net} {_times(ratio)} ({expected}), {_outcome(runs)}")
        groups.append((f"{setting}: " if setting else "") + "; ".join(entries) + ".")
    return " ".join(
        [
            "At init, layer 1's gradient over the last layer's (∂L/∂h of a plain net, ∂L/∂x "
            "on a residual stream; median over seeds), and how the runs ended.",
            *groups,
        ]
    )


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


def violin_finding(flow: pd.DataFrame) -> str:
    """One line under the weight-gradient violins: per activation, on the runs the figure draws
    (the reference init), the first hidden layer's ‖∂L/∂W‖ at init over the last's.

    Args:
        flow: Rows of ``gradient_flow_table`` for the runs compared at init.
    Returns:
        The sentence, or the empty string when no run has the ratio.
    """
    if flow.empty:
        return ""
    drawn = reference_runs(flow)
    medians = drawn.groupby("activation")["init_weight_ratio"].median().dropna()
    if medians.empty:
        return ""
    parts = ", ".join(f"{name} {_fmt(value)}" for name, value in medians.sort_values().items())
    init = " / ".join(dict.fromkeys(drawn["init_name"]))
    return f"First-layer ‖∂L/∂W‖ over the last, median over seeds ({init}): {parts}."


def activation_finding(flow: pd.DataFrame) -> str:
    """One line under the activation histograms: the range over settings of the first hidden
    layer's activation std at init over the last's (the forward signal's counterpart of
    ``flow_finding``).

    Args:
        flow: Rows of ``gradient_flow_table`` for the runs compared at init.
    Returns:
        The sentence, or the empty string when no run has the ratio.
    """
    if flow.empty or "init_act_ratio" not in flow:
        return ""
    medians = flow.groupby(["activation", "init_name"])["init_act_ratio"].median()
    medians = medians[np.isfinite(medians) & (medians > 0)]
    if medians.empty:
        return ""
    low, high = medians.idxmin(), medians.idxmax()
    return (
        f"First-layer activation std over the last, median over seeds: from "
        f"{_fmt(medians[low])} ({' · '.join(low)}) to {_fmt(medians[high])} ({' · '.join(high)}); "
        "far above 1, the signal fades on its way up."
    )


def phase_finding(runs: pd.DataFrame, activation: str) -> str:
    """One line under the phase diagram: χ₁ at the fixed point of the runs it places, by init,
    and the phase that puts them in (ordered below 0.95, chaotic above 1.05, else critical).

    Args:
        runs: The runs table (``theory_chi1`` where theory predicts it).
        activation: The diagram's activation.
    Returns:
        The sentence, or the empty string when no such run has a prediction.
    """
    if "theory_chi1" not in runs:
        return ""
    placed = runs[(runs["activation"] == activation) & np.isfinite(runs["theory_chi1"])]
    if placed.empty:
        return ""

    def phase(chi: float) -> str:
        return "ordered" if chi < 0.95 else "chaotic" if chi > 1.05 else "near critical"

    medians = placed.groupby("init_name")["theory_chi1"].median().sort_values()
    parts = ", ".join(f"{init} {_fmt(chi)} ({phase(chi)})" for init, chi in medians.items())
    return f"χ₁ of the {activation} runs, by init: {parts}."


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


def verdict_finding(runs: pd.DataFrame) -> str:
    """One line on how often each verdict predicted whether a run trained."""
    trained = int(runs["trained"].sum())
    judged = {column: int((runs[column] != "n/a").sum()) for column in ("verdict", "init_verdict")}

    def right(column: str) -> str:
        share = f"{_fmt(100 * agreement(runs, column), 0)} %"
        # n/a: a run that failed, or (at init) one hidden layer, which has no first/last ratio
        return share + (f" of the {judged[column]} it judges" if judged[column] < len(runs) else "")

    return (
        f"{trained} of {len(runs)} runs trained. Healthy predicts a run that trains, any other "
        f"verdict one that does not: the verdict over training is right for {right('verdict')}, "
        f"the verdict at init for {right('init_verdict')}."
    )


def claims_finding(claims: pd.DataFrame) -> str:
    """One line on the claims table: how many reproduce, and which do not."""
    passed = claims[claims["result"] == "pass"]
    failed = claims[claims["result"] != "pass"]
    text = f"{len(passed)} of {len(claims)} claims reproduce at this environment's scale"
    if not failed.empty:
        text += f"; not reproduced: {', '.join(failed['claim_id'])}"
    return text + "."


def _moved(before: float, after: float) -> str:
    """A change of log₁₀ RMS in words: ``fell 40× (from 1e-01 to 3e-03)``, ``rose 2.5× (…)``,
    or ``stayed within 2× (…)``."""
    values = f"(from {10.0**before:.0e} to {10.0**after:.0e})"
    if abs(after - before) < math.log10(2):
        return f"stayed within 2× {values}"
    verb = "fell" if after < before else "rose"
    return f"{verb} {_times(10.0 ** abs(after - before))} {values}"


# The columns of ``early_change``'s table (and of ``layer_step_changes.parquet``, with ``study``).
EARLY_CHANGE_COLUMNS = [
    "setting",
    "quantity",
    "layer",
    "top",
    "until",
    "change",
    "before",
    "after",
    "top_before",
    "top_after",
]


def early_change(maps: pd.DataFrame, early: int = EARLY_STEPS) -> pd.DataFrame:
    """Per setting and layer below the last, how much the gradient profile changed in early
    training: between step 0 and step ``until`` (the first probe step ≥ ``early`` at which the
    setting's whole profile has a value, else its last such step: a run that ended or diverged
    sooner), the change of log₁₀ RMS at the layer less that at the last layer, i.e. the change
    of the map's colour in the layer's row. A setting without a whole profile at its first step
    and at a later one has no rows.

    Args:
        maps: ``layer_step_frames``' maps.
        early: Where early training ends (in optimizer steps).
    Returns:
        ``setting``, ``quantity``, ``layer``, ``top`` (the last layer), ``until`` (the step
        compared with step 0), ``change`` (Δ log₁₀ RMS at the layer − Δ at the last layer, in
        decades), ``before``, ``after``, ``top_before``, ``top_after`` (log₁₀ RMS).
    """
    parts = []
    for (setting, quantity), frame in maps.groupby(["setting", "quantity"], sort=False):
        layers, steps, logs = grid(
            frame["layer"].to_numpy(), frame["step"].to_numpy(), frame["log_rms"].to_numpy(float)
        )
        whole = np.flatnonzero(np.isfinite(logs).all(axis=0))  # steps with a whole profile
        if len(whole) < 2 or whole[0] != 0 or len(layers) < 2:
            continue
        later = whole[steps[whole] >= early]
        until = later[0] if len(later) else whole[-1]
        start, end = logs[:, 0], logs[:, until]
        parts.append(
            {
                "setting": setting,
                "quantity": quantity,
                "layer": layers[:-1],
                "top": layers[-1],
                "until": steps[until],
                "change": ((end - start) - (end[-1] - start[-1]))[:-1],
                "before": start[:-1],
                "after": end[:-1],
                "top_before": start[-1],
                "top_after": end[-1],
            }
        )
    frames = [pd.DataFrame(part) for part in parts]
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=EARLY_CHANGE_COLUMNS)
    )


def layer_step_finding(changes: pd.DataFrame, early: int = EARLY_STEPS) -> str:
    """One line on a study's layer × step maps: where its gradient profile changed most in
    early training (the row of ``early_change`` with the largest |change|: Δ log₁₀ RMS at a
    layer − Δ at the last layer, between step 0 and the first probe step ≥ ``early``), and how
    far the layer and the last layer moved.

    Args:
        changes: ``early_change``'s rows of one study.
        early: Where early training ends (in optimizer steps), as ``early_change`` had it.
    Returns:
        The sentence, e.g. ``In early training (step 0 to 100) the gradient profile changed
        most at norm_layer=batchnorm_post, activation=relu: layer 1's ∂L/∂h fell 1338× (from
        2e+01 to 1e-02) while the last layer's (16) fell 8.8× (…), 2.2 decades relative to the
        last layer (…).``
    """
    if changes.empty:
        return "No setting has a whole gradient profile at step 0 and at a later probe step."
    row = changes.loc[changes["change"].abs().idxmax()]
    gradient = GRADIENT_NAMES.get(row["quantity"], row["quantity"])
    before, after = row["top_before"], row["top_after"]
    window = f"step 0 to {row['until']}"
    if row["until"] < early:
        window += ", its last whole profile"
    ratio_before, ratio_after = row["before"] - before, row["after"] - after
    heading = "towards" if abs(ratio_after) < abs(ratio_before) else "away from"
    return (
        f"In early training ({window}) the gradient profile changed most at {row['setting']}: "
        f"layer {row['layer']}'s {gradient} {_moved(row['before'], row['after'])} while the "
        f"last layer's ({row['top']}) {_moved(before, after)}, so layer {row['layer']} went from "
        f"{_times(10.0**ratio_before)} the last layer's to {_times(10.0**ratio_after)} "
        f"({heading} level; {abs(row['change']):.1f} decades, the largest |Δ log₁₀ RMS at a "
        "layer − Δ at the last layer| of the study's maps)."
    )
