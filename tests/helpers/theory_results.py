"""Hand-made result tables of two studies that mean-field theory speaks to
(``make_theory_results``), for the report's and the plots' tests:

* ``depth_sigma``: tanh MLPs with biases ~ N(0, 0.05) over σ_w² (init ``normal``) × depth, whose
  runs train exactly up to a depth given per σ_w² (``TRAINABLE``; one seed of one cell
  diverges), after Schoenholz et al. (2017);
* ``bn``: BatchNorm-before-φ MLPs, relu and tanh over batch sizes, and ``bn_init``: relu at one
  batch size over three inits, whose ∂L/∂h at training step 0 grows towards the input by
  exactly ``bn_gradient_growth(activation, B) × (1 + GROWTH_ERROR[activation])`` per layer
  (the init adds ``INIT_EFFECT[init]`` more), after Yang et al. (2019).
"""

import math

import numpy as np
import pandas as pd

from gradlab.core.bn_theory import bn_gradient_growth
from gradlab.core.grid import RunSpec, Study, expand
from tests.helpers.results import result_tables

WIDTH = 8
SIGMA_B2 = 0.05
SIGMA_W2 = (0.6, 1.0, 1.5, 1.76, 2.5, 4.0)  # the critical σ_w² of tanh at σ_b² = 0.05: 1.761
DEPTHS = (4, 8, 16, 32, 64)
AXES = "init_std,depth"  # of the study depth_sigma (with lrs: ",lr" more)
# The deepest depth that trains per σ_w² (0: none does); 6 ξ_c is 8.9, 21.8, 94.7, ∞, 70.8, 41.9.
TRAINABLE = {0.6: 8, 1.0: 16, 1.5: 64, 1.76: 64, 2.5: 32, 4.0: 16}
# σ_w², depth and seed of the one run that diverges.
DIVERGED = (4.0, 64, 0)
BN_DEPTH = 10
BATCH_SIZES = (16, 64, 256)
# Measured growth over theory's, less 1, per activation; the init multiplies it by 1 + its own.
GROWTH_ERROR = {"relu": 0.01, "tanh": -0.02}
INIT_EFFECT = {"kaiming_normal": 0.0, "xavier_uniform": 0.003, "normal": -0.002}
TRAINED_METRIC, UNTRAINED_METRIC = 0.9, 0.1


def _std(sigma_w2: float) -> float:
    return math.sqrt(sigma_w2 / WIDTH)


def axes_of(tables: dict[str, pd.DataFrame], study: str) -> str:
    """A study's comma-separated axes, as the studies table has them."""
    return str(tables["studies"].set_index("study").loc[study, "axes"])


def _studies(lrs: tuple[float, ...]) -> tuple[Study, ...]:
    lr_axis = {"lr": lrs} if lrs else {}
    return (
        Study(
            name="depth_sigma",
            question="How deep does a tanh net train at each σ_w²?",
            axes={"init_std": tuple(_std(s) for s in SIGMA_W2), "depth": DEPTHS, **lr_axis},
        ),
        Study(
            name="bn",
            question="How fast does BatchNorm's gradient grow with depth?",
            axes={
                "norm_layer": ("batchnorm_pre",),
                "activation": ("relu", "tanh"),
                "batch_size": BATCH_SIZES,
                "depth": (BN_DEPTH,),
            },
        ),
        Study(
            name="bn_init",
            question="Does BatchNorm's gradient growth depend on σ_w?",
            axes={
                "norm_layer": ("batchnorm_pre",),
                "activation": ("relu",),
                "init": ("kaiming_normal", "xavier_uniform", "normal"),
                "init_std": (1.0,),
                "depth": (BN_DEPTH,),
            },
        ),
    )


def measured_growth(
    activation: str, batch_size: int, init: str, error: dict[str, float] | None = None
) -> float:
    """The per-layer growth of the mean squared ∂L/∂h the fixture's BatchNorm runs show
    (``error`` replaces ``GROWTH_ERROR``'s entries)."""
    theory = bn_gradient_growth(activation, batch_size)
    off = (GROWTH_ERROR | (error or {}))[activation]
    return theory * (1 + off) * (1 + INIT_EFFECT[init])


def _sigma_w2(run: pd.Series) -> float:
    return round(float(run["init_std"]) ** 2 * WIDTH, 6)


def _outcome(run: pd.Series, trainable: dict[float, int]) -> tuple[str, float]:
    if run["norm_layer"] != "none":
        return "finished", TRAINED_METRIC
    sigma_w2 = _sigma_w2(run)
    if (sigma_w2, run["depth"], run["seed"]) == DIVERGED:
        return "diverged", math.nan
    trains = run["depth"] <= trainable[sigma_w2]
    return "finished", TRAINED_METRIC if trains else UNTRAINED_METRIC


def _profile(run: pd.Series, error: dict[str, float] | None) -> np.ndarray:
    """RMS ∂L/∂h of hidden layers 1 … depth, 1e-2 at the last: a BatchNorm run's grows by the
    square root of its growth per layer towards the input, the others' shrinks by 0.9."""
    depth = int(run["depth"])
    if run["norm_layer"] == "batchnorm_pre":
        growth = measured_growth(run["activation"], run["batch_size"], run["init"], error)
        factor = math.sqrt(growth)
    else:
        factor = 0.9
    return 1e-2 * factor ** (depth - np.arange(1, depth + 1))


def make_theory_results(
    trainable: dict[float, int] | None = None,
    growth_error: dict[str, float] | None = None,
    seeds: tuple[int, ...] = (0, 1),
    lrs: tuple[float, ...] = (),
) -> dict[str, pd.DataFrame]:
    """The five tables the report reads, for the studies above.

    The runs of ``depth_sigma`` have no ``theory_sigma_w2`` / ``theory_sigma_b2`` (NaN), as the
    train stage leaves a run with ``bias_std``: the report takes them from the run spec.

    Args:
        trainable: The deepest depth that trains per σ_w², replacing ``TRAINABLE``'s entries.
        growth_error: Measured BatchNorm growth over theory's, less 1, replacing
            ``GROWTH_ERROR``'s entries.
        seeds: Seeds of every setting.
        lrs: Learning rates ``depth_sigma`` varies too (none: the baseline's); each has the
            same outcomes.
    Returns:
        ``runs``, ``history``, ``layer_stats``, ``distributions``, ``studies``.
    """
    limits = TRAINABLE | (trainable or {})
    baseline = RunSpec(
        activation="tanh",
        init="normal",
        init_std=1.0,
        bias_std=math.sqrt(SIGMA_B2),
        width=WIDTH,
        depth=4,
        epochs=2,
        log_every=10,
        dataset="digits",
    )
    studies = _studies(lrs)
    runs = expand(baseline, studies, seeds)
    summaries, history, stats, samples = [], [], [], []
    for _, run in runs.iterrows():
        status, metric = _outcome(run, limits)
        rms = _profile(run, growth_error)
        finished = status == "finished"
        summaries.append(
            {
                "run_id": run["run_id"],
                "status": status,
                "diverged_step": 5.0 if not finished else math.nan,
                "metric_name": "val_accuracy",
                "final_train_loss": 1 - metric if finished else math.nan,
                "final_val_loss": 1.1 - metric if finished else math.nan,
                "final_val_metric": metric if finished else math.nan,
                "init_grad_ratio": float(rms[0] / rms[-1]),
                "end_grad_ratio": float(rms[0] / rms[-1]) if finished else math.nan,
                "end_saturation": 0.1 if run["activation"] == "tanh" else math.nan,
                "theory_sigma_w2": math.nan,
                "theory_sigma_b2": math.nan,
            }
        )
        for epoch in [1] if not finished else [1, 2]:
            loss = math.inf if not finished else (1.2 - metric) / epoch
            history += [
                (run["run_id"], epoch, "train_loss", loss),
                (run["run_id"], epoch, "val_loss", loss * 1.1),
                (run["run_id"], epoch, "val_metric", metric),
            ]
        steps = [("init", 0), ("train", 0)] + ([("train", 10)] if finished else [])
        for phase, step in steps:
            depth = int(run["depth"])
            for layer in range(1, depth + 1):
                stats += [
                    (run["run_id"], phase, step, layer, "grad_preact_rms", rms[layer - 1]),
                    (run["run_id"], phase, step, layer, "act_saturation", 0.1),
                ]
            for layer in range(1, depth + 2):
                stats.append((run["run_id"], phase, step, layer, "grad_weight_norm", 0.05))
        for layer in range(1, int(run["depth"]) + 1):
            samples += [
                (run["run_id"], "init", 0, layer, "grad_weight", v) for v in (-0.01, 0.0, 0.01)
            ]
            samples += [(run["run_id"], "init", 0, layer, "act", v) for v in (-0.5, 0.0, 0.5)]
    return result_tables(runs, summaries, history, stats, samples, studies)
