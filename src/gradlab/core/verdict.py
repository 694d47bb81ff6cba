"""Two verdicts per run — one at init, one over training — and how well they predict whether the
run trained.

**At init** (``init_verdict``: what mean-field theory can predict, from the first/last hidden
layer's RMS ∂L/∂h ratio alone): ``exploding`` above ``exploding_ratio``, ``vanishing`` below
``vanishing_ratio``, else ``healthy``; ``n/a`` where there is no ratio (one hidden layer, or no
prediction).

**Over training** (``verdict``; the first rule that holds wins):

1. ``exploding`` — the run diverged, or at the end ∂L/∂h of the first hidden layer is more than
   ``end_exploding_ratio`` times that of the last;
2. ``vanishing`` — that ratio at the end is below ``end_vanishing_ratio``;
3. ``saturated`` — at the end, the mean over hidden layers of ``act_saturation`` is above
   ``saturated_frac``;
4. ``dead`` — at the end, the mean over hidden layers of ``act_dead_frac`` is above ``dead_frac``;
5. ``healthy`` — none of the above.

The verdict over training reads the network as training left it, not at init: a normalized
network whose ∂L/∂h grows towards the input at init (as batch norm's does) but that trains, or a
net whose gradients vanish at init and recover, is judged by where it ended.

**Outcome** (``trained``): a run trained if it finished with a final validation R² or accuracy of
at least ``TRAINED_AT``. ``healthy`` predicts "trained", every other verdict "did not train";
``n/a`` (a run that failed, or no ratio at init) predicts nothing. ``verdict_confusion`` counts
both verdicts against the outcome. The thresholds were tuned on the default grid and the three
reproductions (``scripts/calibrate_verdict.py``; README, "Verdicts").
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

VERDICTS = ("exploding", "vanishing", "saturated", "dead", "healthy")
INIT_VERDICTS = ("exploding", "vanishing", "healthy", "n/a")
# A run "trained" if its final validation R² (regression) or accuracy (classification) is at least
# this: R² 0.5 explains half the variance; accuracy 0.5 is 1.5× chance on 3 classes, 5× on 10.
TRAINED_AT = 0.5


@dataclass(frozen=True)
class VerdictRule:
    """Thresholds of both verdicts; see the module docstring."""

    # at init: a factor 10 across the network, the threshold theory's prediction is read with too
    vanishing_ratio: float = 0.1
    exploding_ratio: float = 10.0
    # over training: chosen by scripts/calibrate_verdict.py on the default grid and the three
    # reproductions (229 runs; 30, 100 and 1000 tie for exploding, the smallest is kept)
    end_vanishing_ratio: float = 0.5
    end_exploding_ratio: float = 30.0
    saturated_frac: float = 0.9
    dead_frac: float = 0.3


def first_last_ratio(grad_preact_rms) -> float:
    """RMS ∂L/∂h of the first hidden layer over that of the last (NaN for one layer)."""
    if len(grad_preact_rms) < 2 or grad_preact_rms[-1] == 0:
        return math.nan
    return float(grad_preact_rms[0] / grad_preact_rms[-1])


def init_verdict(ratio: float, rule: VerdictRule = VerdictRule()) -> str:
    """The verdict at init from a first/last ∂L/∂h ratio, measured or predicted by theory.

    ``n/a`` where there is none (one hidden layer; theory on normalization layers or LSUV).
    """
    if math.isnan(ratio):
        return "n/a"
    if ratio > rule.exploding_ratio:
        return "exploding"
    if ratio < rule.vanishing_ratio:
        return "vanishing"
    return "healthy"


def verdict(
    end_ratio: float,
    end_saturation: float,
    end_dead: float,
    diverged: bool,
    rule: VerdictRule = VerdictRule(),
) -> str:
    """The verdict over training, by the rule of this module.

    Args:
        end_ratio: First/last hidden-layer ∂L/∂h RMS ratio at the last probe step (NaN if none).
        end_saturation: Mean ``act_saturation`` over hidden layers at the end (NaN if undefined).
        end_dead: Mean ``act_dead_frac`` over hidden layers at the end (NaN if undefined).
        diverged: Whether training diverged.
        rule: The thresholds.
    Returns:
        One of ``VERDICTS``.
    """
    # a NaN (not measured) compares False with every threshold; an overflowed ratio is inf
    if diverged or end_ratio > rule.end_exploding_ratio:
        return "exploding"
    if end_ratio < rule.end_vanishing_ratio:
        return "vanishing"
    if end_saturation > rule.saturated_frac:
        return "saturated"
    if end_dead > rule.dead_frac:
        return "dead"
    return "healthy"


def verdicts_of(summary: Mapping[str, Any], rule: VerdictRule = VerdictRule()) -> dict[str, str]:
    """Both verdicts of one run from the numbers it stored (``init_grad_ratio``,
    ``end_grad_ratio``, ``end_saturation``, ``end_dead_frac``, ``status``)."""

    def number(key: str) -> float:
        value = summary.get(key)
        return math.nan if value is None else float(value)

    if summary.get("status") == "failed":  # it raised: there is nothing to judge
        return {"init_verdict": "n/a", "verdict": "n/a"}
    return {
        "init_verdict": init_verdict(number("init_grad_ratio"), rule),
        "verdict": verdict(
            number("end_grad_ratio"),
            number("end_saturation"),
            number("end_dead_frac"),
            summary.get("status") == "diverged",
            rule,
        ),
    }


def judge(runs: pd.DataFrame, rule: VerdictRule = VerdictRule()) -> pd.DataFrame:
    """``init_verdict``, ``verdict`` and ``trained`` for every row of a runs table, from the
    numbers its runs stored (so a changed rule needs no retraining).

    The engine judges a run as it ends (``verdicts_of`` in its summary), and what it logs and
    counts reads that. Stored numbers are judged again, here, where they enter a stage: the
    train stage's runs table (``grid_runner.collect``) and the report's (``judge_runs``), since
    results and tables may have been stored under an older rule."""
    verdicts = pd.DataFrame(
        [verdicts_of(row, rule) for row in runs.to_dict("records")],
        index=runs.index,
        columns=["init_verdict", "verdict"],
        dtype=object,
    )
    return runs.assign(
        init_verdict=verdicts["init_verdict"],
        verdict=verdicts["verdict"],
        trained=(runs["status"] == "finished") & (runs["final_val_metric"] >= TRAINED_AT),
    )


CONFUSION_COLUMNS = ["when", "verdict", "runs", "trained", "not_trained", "agree"]


def verdict_confusion(runs: pd.DataFrame) -> pd.DataFrame:
    """Both verdicts against the outcome.

    Args:
        runs: A runs table with ``init_verdict``, ``verdict`` and ``trained`` (``judge``).
    Returns:
        One row per (``when``: at init / over training, ``verdict``) present: ``runs``,
        ``trained``, ``not_trained``, and ``agree`` (runs where the verdict predicted the
        outcome: healthy and trained, or not healthy and not trained).
    """
    rows = []
    for when, column, names in (
        ("at init", "init_verdict", INIT_VERDICTS),
        ("over training", "verdict", (*VERDICTS, "n/a")),
    ):
        for name in names:
            group = runs[runs[column] == name]
            if group.empty:
                continue
            trained = int(group["trained"].sum())
            outcomes = {"trained": trained, "not_trained": len(group) - trained}
            # healthy predicts "trained", every other verdict "not trained"; n/a predicts nothing
            predicted = "trained" if name == "healthy" else "not_trained"
            agree = math.nan if name == "n/a" else outcomes[predicted]
            rows.append(
                {"when": when, "verdict": name, "runs": len(group), **outcomes, "agree": agree}
            )
    return pd.DataFrame(rows, columns=CONFUSION_COLUMNS)


def agreement(runs: pd.DataFrame, column: str) -> float:
    """Fraction of runs whose verdict in ``column`` predicted the outcome (``n/a`` left out)."""
    judged = runs[runs[column] != "n/a"]
    if judged.empty:
        return math.nan
    return float(((judged[column] == "healthy") == judged["trained"]).mean())
