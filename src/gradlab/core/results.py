"""What a run leaves behind: its summary (status, final metrics, the verdict, theory beside
measurement) and its long tables, built once when the run ends."""

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from torch import Tensor

from gradlab.core import spectrum_theory, theory
from gradlab.core.architectures import get_architecture
from gradlab.core.grid import RunSpec
from gradlab.core.inits import get_init
from gradlab.core.recording import ProbeLog
from gradlab.core.schema import HISTORY_COLUMNS, empty_table
from gradlab.core.verdict import first_last_ratio, init_verdict, verdicts_of

STATUSES = ("finished", "diverged", "failed")
METRIC_NAMES = {"regression": "val_r2", "classification": "val_accuracy"}


@dataclass
class RunResult:
    """Everything one run produced; tables are long format, one row per observation."""

    run_id: str
    status: str  # one of STATUSES
    summary: dict[str, Any]
    history: pd.DataFrame  # epoch, metric, value
    layer_stats: pd.DataFrame  # phase, step, layer, quantity, value
    distributions: pd.DataFrame  # phase, step, layer, quantity, value
    spectrum: pd.DataFrame  # phase, step, point, statistic, value
    state_dict: dict[str, Tensor] = field(repr=False)


@dataclass(frozen=True)
class Ending:
    """How and when a run ended, as its training loop saw it."""

    diverged_step: int | None
    steps: int  # optimizer steps taken
    steps_per_epoch: int
    replicas: int  # the runs that shared each step's time, at the start
    start: float  # perf_counter when its group started
    epoch_ended_at: list[float]  # unix seconds, per epoch: MLflow's metric timestamps


# noqa reason: the parts of a result, each made by a different part of the loop
def run_result(  # noqa: PLR0913, PLR0917
    spec: RunSpec,
    task: str,
    history: list[tuple[int, str, float]],
    probe_log: ProbeLog,
    prediction: theory.ProfilePrediction | None,
    ending: Ending,
    state_dict: dict[str, Tensor],
) -> RunResult:
    """The result of a run that trained to its end or diverged."""
    status = "diverged" if ending.diverged_step is not None else "finished"
    arch = get_architecture(spec.arch)
    profile = arch.profile
    summary = {
        **_summary(task, history, probe_log, ending, profile),
        "replicas": ending.replicas,
        "epoch_ended_at": ending.epoch_ended_at,
        "steps_per_epoch": ending.steps_per_epoch,
        **_theory_summary(spec, prediction, probe_log.last("init", profile)),
        **{f"jacobian_{name}": value for name, value in probe_log.spectrum.at_init().items()},
    }
    return RunResult(
        spec.run_id,
        status,
        summary,
        pd.DataFrame(history, columns=list(HISTORY_COLUMNS)),
        probe_log.layer_stats(prediction, (profile, arch.signal)),
        probe_log.distributions(),
        probe_log.spectrum.table(),
        state_dict,
    )


def failed_result(spec: RunSpec, error: str, wall_s: float | None = None) -> RunResult:
    """The result of a run that raised: status ``failed``, the traceback, no tables."""
    history, layer_stats, distributions, spectrum = map(
        empty_table, ("history", "layer_stats", "distributions", "spectrum")
    )
    summary = {"error": error, "wall_s": wall_s, "ended_at": time.time()}
    return RunResult(
        spec.run_id, "failed", summary, history, layer_stats, distributions, spectrum, {}
    )


def _summary(
    task: str,
    history: list[tuple[int, str, float]],
    probe_log: ProbeLog,
    ending: Ending,
    profile: str,
) -> dict[str, Any]:
    """Status, final metrics, gradient ratios (of ``profile``, the architecture's per-layer
    gradient) and the verdicts: the one place they are judged."""
    last = {name: value for _, name, value in history}  # the last epoch wins
    wall = time.perf_counter() - ending.start
    at = probe_log.last
    saturation = at("train", "act_saturation")
    dead = at("train", "act_dead_frac")
    summary = {
        "status": "diverged" if ending.diverged_step is not None else "finished",
        "diverged_step": ending.diverged_step,
        "metric_name": METRIC_NAMES[task],
        "final_train_loss": last.get("train_loss", math.nan),
        "final_val_loss": last.get("val_loss", math.nan),
        "final_val_metric": last.get("val_metric", math.nan),
        "epochs_done": max((epoch for epoch, _, _ in history), default=0),
        "steps": ending.steps,
        "wall_s": wall,
        "ended_at": time.time(),  # unix seconds: with wall_s, when the run trained
        "steps_per_s": ending.steps / wall if wall > 0 else math.nan,
        "init_grad_ratio": first_last_ratio(at("init", profile)),
        "end_grad_ratio": first_last_ratio(at("train", profile)),
        "end_saturation": float(np.mean(saturation)) if len(saturation) else math.nan,
        "end_dead_frac": float(np.mean(dead)) if len(dead) else math.nan,
        "error": None,
    }
    return {**summary, **verdicts_of(summary)}


def _theory_summary(
    spec: RunSpec, prediction: theory.ProfilePrediction | None, rms: np.ndarray
) -> dict[str, Any]:
    """Measured (from ``rms``, the RMS gradient per layer at init: ∂L/∂h, or a residual
    stream's ∂L/∂x) beside predicted profile."""
    with np.errstate(divide="ignore", invalid="ignore"):
        measured = theory.log_slope(rms) if len(rms) >= 2 and (rms > 0).all() else math.nan
    if prediction is None:
        predicted = dict.fromkeys(
            (
                "log_slope",
                "first_last_ratio",
                "chi1",
                "depth_scale",
                "sigma_w2",
                "sigma_b2",
                "c_star",
                "chi_c",
                "xi_c",
                "xi_q",
                "jacobian_mean_s2",
                "jacobian_var_s2",
            ),
            math.nan,
        )
    else:
        sigma_w2, sigma_b2 = theory.init_variances(
            spec.init, spec.activation, spec.width, spec.width, spec.init_std, spec.weight_gain
        )
        if spec.bias_std is not None:
            sigma_b2 = spec.bias_std**2
        predicted = {
            "log_slope": prediction.log_slope,
            "first_last_ratio": prediction.first_last_ratio,
            "chi1": prediction.chi1_fixed_point,
            "depth_scale": prediction.depth_scale,
            "sigma_w2": sigma_w2,
            "sigma_b2": sigma_b2,
            # the correlation map's fixed point and depth scales (Schoenholz et al. 2017)
            "c_star": prediction.c_fixed_point,
            "chi_c": prediction.chi_c,
            "xi_c": prediction.xi_c,
            "xi_q": prediction.xi_q,
            **_jacobian_moments(spec, prediction, sigma_w2),
        }
    return {
        "measured_log_slope": measured,
        **{f"theory_{key}": float(value) for key, value in predicted.items()},
        "theory_verdict": init_verdict(predicted["first_last_ratio"]),
    }


def _jacobian_moments(
    spec: RunSpec, prediction: theory.ProfilePrediction, sigma_w2: float
) -> dict[str, float]:
    """The free-probability mean and variance of s² over the spectrum of J = ∂x_L/∂x_1 (what
    ``gradlab.core.spectrum`` measures), from the predicted q of layers 2 … L; NaN but for a
    plain MLP of two or more layers, whose hidden layers all have ``sigma_w2``."""
    if spec.arch != "mlp" or spec.norm_layer != "none" or spec.depth < 2:
        return {"jacobian_mean_s2": math.nan, "jacobian_var_s2": math.nan}
    q = prediction.q[1:]
    moments = spectrum_theory.jacobian_moments(
        spec.activation, q, np.full(len(q), sigma_w2), get_init(spec.init).weights
    )
    return {"jacobian_mean_s2": float(moments.mean_s2), "jacobian_var_s2": float(moments.var_s2)}
