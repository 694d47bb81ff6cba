"""One-line findings, each computed from a table of the report."""

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from gradlab.core.report.frames import reference_runs
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
