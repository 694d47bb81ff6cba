"""Hand-made Jacobian spectra (``with_spectrum``, ``make_spectrum_results``) whose density and
spread are known exactly, for the report's and the plots' tests of the spectrum figures."""

import math

import numpy as np
import pandas as pd

from gradlab.core.grid import RunSpec, Study, expand
from gradlab.core.schema import SPECTRUM_COLUMNS
from gradlab.core.spectrum import SAMPLE, WELL_CONDITIONED

# Each run's spectrum: SIZE values of log₁₀ s evenly spaced over CENTER ± HALF_WIDTH decades
SIZE = 8
HALF_WIDTH = 1.5
CENTER = {"sigmoid": -6.0, "tanh": 0.0, "relu": 0.5}
INIT_SHIFT = {"default": -2.0, "xavier_uniform": 0.0}
# relu's lowest values are exact zeros (dead units): stored at log₁₀ of float64's tiniest
ZEROS = {"relu": 2}
TINY_LOG10 = math.log10(np.finfo(np.float64).tiny)
# v = Var[s²]/E[s²]² = SLOPE × depth at every point (E[s²] = 1); theory THEORY_SLOPE × depth
SLOPE = {"sigmoid": 1.0, "tanh": 0.5, "relu": 2.0}
THEORY_SLOPE = {"sigmoid": 1.0, "tanh": 0.5, "relu": 2.5}
POINTS = 2

STUDIES = (
    Study(
        name="act_init",
        question="Which init keeps the spectrum near 1?",
        axes={"activation": ("sigmoid", "tanh", "relu"), "init": ("default", "xavier_uniform")},
    ),
    Study(
        name="act_depth",
        question="How does depth spread the spectrum?",
        axes={"activation": ("tanh", "relu"), "depth": (2, 4, 8)},
    ),
)


def log10_s(activation: str, init: str) -> np.ndarray:
    """The run's log₁₀ s, ascending (its zeros first)."""
    center = CENTER[activation] + INIT_SHIFT.get(init, 0.0)
    values = center + np.linspace(-HALF_WIDTH, HALF_WIDTH, SIZE)
    values[: ZEROS.get(activation, 0)] = TINY_LOG10
    return values


def well_conditioned(activation: str, init: str) -> float:
    """The share of the run's s within ``WELL_CONDITIONED``."""
    s = 10.0 ** log10_s(activation, init)
    return float(np.mean((s > WELL_CONDITIONED[0]) & (s < WELL_CONDITIONED[1])))


def with_spectrum(
    runs: pd.DataFrame,
    slope: dict[str, float] = SLOPE,
    theory_slope: dict[str, float] = THEORY_SLOPE,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``runs`` with ``jacobian_*`` and ``theory_jacobian_*`` columns (NaN for BatchNorm nets,
    which are not measured) and their ``spectrum`` table, the same at every point.

    Args:
        runs: A runs table (``run_id``, ``activation``, ``init``, ``depth``, ``norm_layer``).
        slope: v per layer by activation.
        theory_slope: theory's v per layer by activation.
    Returns:
        The runs and the long spectrum table.
    """
    rows, columns = [], []
    for run in runs.itertuples(index=False):
        if str(run.norm_layer).startswith("batchnorm"):
            columns.append(dict.fromkeys(["s_max", "s_min", "frac", "v", "theory"], math.nan))
            continue
        values = log10_s(run.activation, run.init)
        v = slope[run.activation] * run.depth
        stats = {
            "mean_s2": 1.0,
            "var_s2": v,
            "s_max": 10.0 ** values[-1],
            "s_min": 10.0 ** values[0],
            "frac_well_conditioned": well_conditioned(run.activation, run.init),
        }
        for point in range(POINTS):
            rows += [(run.run_id, "init", 0, point, name, value) for name, value in stats.items()]
            rows += [(run.run_id, "init", 0, point, SAMPLE, value) for value in values]
        theory = theory_slope[run.activation] * run.depth
        columns.append(
            {
                "s_max": stats["s_max"],
                "s_min": stats["s_min"],
                "frac": stats["frac_well_conditioned"],
                "v": v,
                "theory": theory,
            }
        )
    extra = pd.DataFrame(columns, index=runs.index)
    measured = extra["v"].notna()
    runs = runs.assign(
        jacobian_mean_s2=np.where(measured, 1.0, math.nan),
        jacobian_var_s2=extra["v"],
        jacobian_s_max=extra["s_max"],
        jacobian_s_min=extra["s_min"],
        jacobian_frac_well_conditioned=extra["frac"],
        theory_jacobian_mean_s2=np.where(measured, 1.0, math.nan),
        theory_jacobian_var_s2=extra["theory"],
    )
    spectrum = pd.DataFrame(rows, columns=["run_id", *SPECTRUM_COLUMNS])
    return runs, spectrum


def empty_spectrum() -> pd.DataFrame:
    """A spectrum table without rows (every net BatchNorm, or the spectrum off)."""
    return pd.DataFrame(columns=["run_id", *SPECTRUM_COLUMNS])


def make_spectrum_results(seeds: tuple[int, ...] = (0, 1)) -> dict[str, pd.DataFrame]:
    """``runs``, ``studies`` and ``spectrum`` of the two studies above (activation × init at
    depth 4; activation × depth, xavier_uniform)."""
    baseline = RunSpec(depth=4, width=8, epochs=1, init="xavier_uniform")
    runs, spectrum = with_spectrum(expand(baseline, STUDIES, seeds))
    studies = pd.DataFrame(
        {
            "study": [s.name for s in STUDIES],
            "question": [s.question for s in STUDIES],
            "axes": [",".join(s.axes) for s in STUDIES],
        }
    )
    return {"runs": runs, "studies": studies, "spectrum": spectrum}
