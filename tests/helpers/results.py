"""Hand-made result tables (``make_results``): three small studies whose gradient profiles,
metrics and outcomes are known exactly, for the report's and the plots' tests."""

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from gradlab.core import theory
from gradlab.core.grid import RunSpec, Study, expand
from gradlab.core.verdict import init_verdict, judge

DEPTH = 4
# RMS ∂L/∂h shrinks by this factor per layer towards the input (× 0.9 for default init)
DECAY = {"sigmoid": 0.25, "tanh": 0.8, "relu": 1.0}
INIT_SCALE = {"default": 0.9, "xavier_uniform": 1.1}
STUDIES = (
    Study(
        name="act_init",
        question="Which init keeps the gradient level?",
        axes={"activation": ("sigmoid", "tanh", "relu"), "init": ("default", "xavier_uniform")},
    ),
    Study(
        name="opt",
        question="Which optimizer trains best?",
        axes={"optimizer": ("sgd", "adam"), "lr": (0.01, 0.1)},
    ),
    Study(name="sched", question="Which schedule?", axes={"schedule": ("constant", "cosine")}),
)
DIVERGED = {"optimizer": "adam", "lr": 0.1, "seed": 0}  # one seed of one setting blows up
FAILED = {"schedule": "cosine", "seed": 1}  # one run crashes and leaves no statistics


def _matches(row: pd.Series, where: dict) -> bool:
    return all(row[key] == value for key, value in where.items())


def _profile(activation: str, init: str, seed: int) -> np.ndarray:
    """RMS ∂L/∂h of hidden layers 1…DEPTH: geometric in l, 1e-2 (+10 % per seed) at the top."""
    factor = DECAY[activation] * INIT_SCALE[init]
    return 1e-2 * (1 + 0.1 * seed) * factor ** (DEPTH - np.arange(1, DEPTH + 1))


# noqa reason: one branch per status and study the fixture must cover, read top to bottom
def make_results(  # noqa: C901, PLR0912
    seeds: tuple[int, ...] = (0, 1), theory_columns: bool = True, diverge_all: bool = False
) -> dict[str, pd.DataFrame]:
    """The five tables the report reads, for the three small studies above.

    Args:
        seeds: Seeds of every setting.
        theory_columns: Whether the runs table has the ``theory_*`` columns and ``layer_stats``
            the ``theory`` phase.
        diverge_all: Every seed of the ``DIVERGED`` setting diverges (not only seed 0).
    Returns:
        ``runs``, ``history``, ``layer_stats``, ``distributions``, ``studies``.
    """
    baseline = RunSpec(depth=DEPTH, width=8, epochs=3, log_every=10)
    runs = expand(baseline, STUDIES, seeds)
    diverged_where = {k: v for k, v in DIVERGED.items() if not (diverge_all and k == "seed")}
    rng = np.random.default_rng(0)
    summaries, history, stats, samples = [], [], [], []
    for _, run in runs.iterrows():
        status = "finished"
        if _matches(run, diverged_where):
            status = "diverged"
        elif _matches(run, FAILED):
            status = "failed"
        rms = _profile(run["activation"], run["init"], run["seed"])
        metric = 0.9 - 0.2 * (run["activation"] == "sigmoid") - 0.04 * run["seed"]
        metric += 0.03 * (run["init"] == "xavier_uniform") - 0.01 * (run["activation"] == "relu")
        metric -= 0.3 * (run["optimizer"] == "sgd") * (run["lr"] == 0.01)
        ratio = float(rms[0] / rms[-1])
        summary = {
            "run_id": run["run_id"],
            "status": status,
            "diverged_step": 3.0 if status == "diverged" else math.nan,
            "metric_name": "val_r2",
            "final_train_loss": 1 - metric if status == "finished" else math.nan,
            "final_val_loss": 1.1 - metric if status == "finished" else math.nan,
            "final_val_metric": metric if status == "finished" else math.nan,
            "init_grad_ratio": ratio if status != "failed" else math.nan,
            "end_grad_ratio": ratio * 2 if status == "finished" else math.nan,
            "end_saturation": min(1.0, 0.1 / ratio) if status == "finished" else math.nan,
        }
        if theory_columns:
            predicted = rms * 1.05 ** (DEPTH - np.arange(1, DEPTH + 1))
            summary |= {
                "measured_log_slope": theory.log_slope(rms),
                "theory_log_slope": theory.log_slope(predicted),
                "theory_first_last_ratio": float(predicted[0] / predicted[-1]),
                "theory_chi1": DECAY[run["activation"]] ** 2,
                "theory_depth_scale": 3.0,
                "theory_sigma_w2": 1 / 3 if run["init"] == "default" else 1.0,
                "theory_sigma_b2": 1 / 24 if run["init"] == "default" else 0.0,
                "theory_verdict": init_verdict(float(predicted[0] / predicted[-1])),
            }
        summaries.append(summary)
        if status == "failed":
            continue
        epochs = [1] if status == "diverged" else [1, 2, 3]
        for epoch in epochs:
            loss = math.inf if status == "diverged" else (1.2 - metric) / epoch
            history += [
                (run["run_id"], epoch, "train_loss", loss),
                (run["run_id"], epoch, "val_loss", loss * 1.1),
                (run["run_id"], epoch, "val_metric", metric),
                (run["run_id"], epoch, "lr", run["lr"]),
            ]
        saturating = run["activation"] != "relu"
        steps = [("init", 0)] + [
            ("train", s) for s in ((0,) if status == "diverged" else (0, 10, 20))
        ]
        for phase, step in steps:
            blown = status == "diverged" and phase == "train"
            for layer in range(1, DEPTH + 1):
                value = math.nan if blown else rms[layer - 1]
                saturation = 0.1 * layer / DEPTH + 0.01 * step if saturating else math.nan
                stats += [
                    (run["run_id"], phase, step, layer, "grad_preact_rms", value),
                    (run["run_id"], phase, step, layer, "act_saturation", saturation),
                ]
            for layer in range(1, DEPTH + 2):
                norm = math.inf if blown else 0.05 * (1 + 0.05 * layer)
                stats.append((run["run_id"], phase, step, layer, "grad_weight_norm", norm))
        if theory_columns:
            for layer in range(1, DEPTH + 1):
                value = predicted[layer - 1] / predicted[-1]
                stats.append((run["run_id"], "theory", 0, layer, "grad_preact_rms", value))
        for layer in range(1, DEPTH + 2):
            scale = rms[min(layer, DEPTH) - 1]
            samples += [
                (run["run_id"], "init", 0, layer, "grad_weight", v)
                for v in rng.normal(0, scale, 16)
            ]
            if layer <= DEPTH:
                samples += [
                    (run["run_id"], "init", 0, layer, "act", v)
                    for v in np.tanh(rng.normal(0, 1, 16))
                ]
    return result_tables(runs, summaries, history, stats, samples, STUDIES)


# noqa reason: the five lists a fake grid builds, and its studies
def result_tables(  # noqa: PLR0913, PLR0917
    runs: pd.DataFrame,
    summaries: list[dict],
    history: list[tuple],
    stats: list[tuple],
    samples: list[tuple],
    studies: Sequence[Study],
) -> dict[str, pd.DataFrame]:
    """The report's inputs from a fake grid's rows: ``runs`` judged with their summaries, the
    long tables, and the studies table."""
    long = ["run_id", "phase", "step", "layer", "quantity", "value"]
    return {
        "runs": judge(runs.merge(pd.DataFrame(summaries), on="run_id")),
        "history": pd.DataFrame(history, columns=["run_id", "epoch", "metric", "value"]),
        "layer_stats": pd.DataFrame(stats, columns=long),
        "distributions": pd.DataFrame(samples, columns=long),
        "studies": pd.DataFrame(
            {
                "study": [s.name for s in studies],
                "question": [s.question for s in studies],
                "axes": [",".join(s.axes) for s in studies],
            }
        ),
    }
