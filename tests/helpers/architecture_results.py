"""Hand-made result tables of one study of architectures (``make_architecture_results``): plain
against residual nets, α ∈ {1, 1/√L, ReZero}, without and with LayerNorm, whose gradient
profiles, theory rows and outcomes are known exactly, for the report's and the plots' tests."""

import math

import numpy as np
import pandas as pd

from gradlab.core import theory
from gradlab.core.grid import RunSpec, Study, expand
from gradlab.core.verdict import init_verdict
from tests.helpers.results import result_tables

DEPTH = 4
STUDY = Study(
    name="residual",
    question="Does a residual stream train a net too deep for the plain one?",
    axes={
        "arch": ("mlp", "resmlp"),
        "residual_scale": ("1", "1/sqrt(depth)", "rezero"),
        "norm_layer": ("none", "layernorm"),
    },
)
# Per layer towards the input, the measured gradient is multiplied by these (the plain net's
# ∂L/∂h, a residual net's ∂L/∂x on the stream, by α); theory's by THEORY_FACTORS. A plain net
# with LayerNorm has no prediction.
MEASURED_FACTORS = {"mlp": 0.1, "1": 1.6, "1/sqrt(depth)": 1.1, "rezero": 1.0}
THEORY_FACTORS = {"mlp": 0.2, "1": 1.5, "1/sqrt(depth)": 1.125, "rezero": 1.0}
# The branch's ∂L/∂h of a residual net: a profile the stream's figure must not read.
BRANCH_FACTOR = 0.5
TOP = 1e-2  # the measured gradient at the last layer, seed 0 (+10 % per seed)
# Final val R² of the runs that finish: the plain net learns nothing, α = 1 diverges.
METRICS = {"mlp": 0.001, "1/sqrt(depth)": 0.95, "rezero": 0.97}
DIVERGED_SCALE = "1"


def _key(run: pd.Series) -> str:
    return "mlp" if run["arch"] == "mlp" else str(run["residual_scale"])


def _profile(factor: float, seed: int) -> np.ndarray:
    """Layers 1 … DEPTH, ``TOP`` (+10 % per seed) at the last, × ``factor`` per layer down."""
    return TOP * (1 + 0.1 * seed) * factor ** (DEPTH - np.arange(1, DEPTH + 1))


# noqa reason: one branch per architecture and outcome the fixture must cover, read top to bottom
def make_architecture_results(  # noqa: C901, PLR0912, PLR0915
    measured: dict[str, float] | None = None, seeds: tuple[int, ...] = (0, 1)
) -> dict[str, pd.DataFrame]:
    """The five tables the report reads, for ``STUDY``.

    Args:
        measured: Per-layer factors that replace ``MEASURED_FACTORS``' (by key ``mlp`` or α).
        seeds: Seeds of every setting.
    Returns:
        ``runs``, ``history``, ``layer_stats``, ``distributions``, ``studies``.
    """
    factors = MEASURED_FACTORS | (measured or {})
    baseline = RunSpec(depth=DEPTH, width=8, epochs=3, log_every=10, activation="relu")
    runs = expand(baseline, [STUDY], seeds)
    rng = np.random.default_rng(0)
    summaries, history, stats, samples = [], [], [], []
    for _, run in runs.iterrows():
        key, residual = _key(run), run["arch"] == "resmlp"
        status = "diverged" if key == DIVERGED_SCALE else "finished"
        metric = METRICS.get(key, math.nan) - 0.01 * run["seed"]
        if run["norm_layer"] == "layernorm":
            metric -= 0.02
        rms = _profile(factors[key], run["seed"])
        has_theory = residual or run["norm_layer"] == "none"
        predicted = THEORY_FACTORS[key] ** (DEPTH - np.arange(1, DEPTH + 1))
        ratio = float(rms[0] / rms[-1])
        summaries.append(
            {
                "run_id": run["run_id"],
                "status": status,
                "diverged_step": 3.0 if status == "diverged" else math.nan,
                "metric_name": "val_r2",
                "final_train_loss": 1 - metric if status == "finished" else math.nan,
                "final_val_loss": 1.1 - metric if status == "finished" else math.nan,
                "final_val_metric": metric if status == "finished" else math.nan,
                "init_grad_ratio": ratio,
                "end_grad_ratio": ratio * 2 if status == "finished" else math.nan,
                "end_saturation": math.nan,  # relu: nothing to saturate
                "measured_log_slope": theory.log_slope(rms),
                "theory_log_slope": theory.log_slope(predicted) if has_theory else math.nan,
                "theory_first_last_ratio": float(predicted[0]) if has_theory else math.nan,
                "theory_chi1": 0.5 if has_theory else math.nan,
                "theory_depth_scale": math.nan,
                "theory_sigma_w2": 1.0,
                "theory_sigma_b2": 0.0,
                "theory_verdict": init_verdict(float(predicted[0])) if has_theory else "n/a",
            }
        )
        epochs = [1] if status == "diverged" else [1, 2, 3]
        for epoch in epochs:
            loss = math.inf if status == "diverged" else (1.2 - metric) / epoch
            history += [
                (run["run_id"], epoch, "train_loss", loss),
                (run["run_id"], epoch, "val_loss", loss * 1.1),
                (run["run_id"], epoch, "val_metric", metric),
                (run["run_id"], epoch, "lr", run["lr"]),
            ]
        profile = "grad_stream_rms" if residual else "grad_preact_rms"
        steps = [("init", 0)] + [
            ("train", s) for s in ((0,) if status == "diverged" else (0, 10, 20))
        ]
        for phase, step in steps:
            blown = status == "diverged" and phase == "train"
            for layer in range(1, DEPTH + 1):
                value = math.nan if blown else rms[layer - 1]
                stats += [
                    (run["run_id"], phase, step, layer, profile, value),
                    (run["run_id"], phase, step, layer, "act_saturation", math.nan),
                ]
                if residual:
                    branch = TOP * BRANCH_FACTOR ** (DEPTH - layer)
                    stats.append((run["run_id"], phase, step, layer, "grad_preact_rms", branch))
            for layer in range(0 if residual else 1, DEPTH + 2):
                norm = math.inf if blown else 0.05 * (1 + 0.05 * layer)
                stats.append((run["run_id"], phase, step, layer, "grad_weight_norm", norm))
        if has_theory:
            for layer in range(1, DEPTH + 1):
                value = predicted[layer - 1]
                stats += [
                    (run["run_id"], "theory", 0, layer, profile, value),
                    (run["run_id"], "theory", 0, layer, "chi1", 0.5),  # not a profile
                ]
        for layer in range(1, DEPTH + 2):
            samples += [
                (run["run_id"], "init", 0, layer, "grad_weight", v)
                for v in rng.normal(0, rms[min(layer, DEPTH) - 1], 16)
            ]
            if layer <= DEPTH:
                samples += [
                    (run["run_id"], "init", 0, layer, "act", v)
                    for v in np.maximum(rng.normal(0, 1, 16), 0)
                ]
    return result_tables(runs, summaries, history, stats, samples, (STUDY,))
