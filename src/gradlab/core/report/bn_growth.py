"""BatchNorm's gradient explosion at init against its mean-field theory (Yang et al. 2019): the
points and lines a study's BatchNorm growth figure draws, and its finding.

A study qualifies when it has plain MLPs with ``norm_layer: batchnorm_pre`` (BatchNorm before φ,
the net ``gradlab.core.bn_theory`` describes) deep enough for a fit. Each run's growth is
``gradlab.core.claims.grad_growth`` at training step 0: the per-layer growth λ of the mean square
of ∂L/∂h towards the input, fitted over the hidden layers but the first and last three, on the
first training batch (the run's own ``batch_size``, before any update), since BatchNorm's growth
depends on the batch it normalizes. Theory is ``bn_theory.bn_gradient_growth(activation, B)``
over batch sizes, with its large-batch limit ``E[φ'(z)²] / Var[φ(z)]``.

Reference: G. Yang, J. Pennington, V. Rao, J. Sohl-Dickstein, S. S. Schoenholz. A mean field
theory of batch normalization. ICLR 2019.
"""

import numpy as np
import pandas as pd

from gradlab.core.activations import ACTIVATIONS
from gradlab.core.bn_theory import bn_gradient_growth
from gradlab.core.claims import ClaimInputs, grad_growth
from gradlab.core.report.tables import in_study
from gradlab.core.report.trainability import run_variances

# The normalization layer the theory describes: BatchNorm between W x + b and φ.
BN_NORM = "batchnorm_pre"
# grad_growth leaves out this many hidden layers at each end and needs two to fit.
_SKIP = 3
MIN_DEPTH = 2 * _SKIP + 2
# The figure is passed among the study figures under this key (a study's name has no dot).
BN_GROWTH_FIGURE = "{study}.bn_growth"
BN_GROWTH_CAPTION = (
    "BatchNorm's gradient explosion at init (Yang et al. 2019): the per-layer growth λ of the "
    "mean square of ∂L/∂h towards the input, fitted over the hidden layers but the first and "
    "last three on each run's first training batch (its own batch size, before any update); a "
    "small dot per run, a larger marker per setting (median over seeds, its shape the init), "
    "mean-field theory λ(B) as a line per activation and its large-batch limit "
    "E[φ′²]/Var[φ] dashed"
)
POINT_COLUMNS = [
    "run_id",
    "activation",
    "batch_size",
    "init_name",
    "sigma_w2",
    "seed",
    "growth",
    "theory",
]
LINE_COLUMNS = ["activation", "batch_size", "theory", "large_batch"]
# The theory lines span at least these batch sizes (BatchNorm's growth is finite from B = 4).
_LINE_BATCHES = (8, 512)
_LINE_POINTS = 40


def bn_growth_frames(
    runs: pd.DataFrame, layer_stats: pd.DataFrame, study: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The measured growth of each BatchNorm run of a study and the theory lines beside it.

    Args:
        runs: The runs table.
        layer_stats: The long per-layer statistics (phase ``train``, step 0).
        study: The study's name.
    Returns:
        ``points``: one row per qualifying run: ``run_id``, ``activation``, ``batch_size``,
        ``init_name``, ``sigma_w2`` (its init's, ``trainability.run_variances``; BatchNorm
        divides it out), ``seed``, ``growth`` (measured λ; NaN where the profile at step 0 is
        not finite and positive) and ``theory`` (``bn_gradient_growth`` at its batch size); and
        ``lines``: per activation, λ(B) over batch sizes spanning the points' (``theory``) and
        the large-batch limit (``large_batch``). Both empty when no run qualifies.
    """
    arch = runs["arch"] if "arch" in runs else pd.Series("mlp", index=runs.index)
    norm = runs["norm_layer"] if "norm_layer" in runs else pd.Series("", index=runs.index)
    wanted = (arch == "mlp") & (norm == BN_NORM) & (runs["depth"] >= MIN_DEPTH)
    if not wanted.any() or not (wanted := wanted & in_study(runs, study)).any():
        return pd.DataFrame(columns=POINT_COLUMNS), pd.DataFrame(columns=LINE_COLUMNS)
    members = runs[wanted]
    stats = layer_stats[layer_stats["run_id"].isin(set(members["run_id"]))]  # few rows left
    stats = stats[(stats["phase"] == "train") & (stats["step"] == 0)]
    growth = grad_growth(
        ClaimInputs(members, pd.DataFrame(), stats), phase="train", step=0, skip=_SKIP
    )
    batch = members["batch_size"].astype(int)
    theory = {
        key: bn_gradient_growth(*key) for key in set(zip(members["activation"], batch, strict=True))
    }
    points = members.assign(
        batch_size=batch,
        sigma_w2=run_variances(members)["sigma_w2"],
        growth=members["run_id"].map(growth).astype(float),
        theory=[theory[key] for key in zip(members["activation"], batch, strict=True)],
    )[POINT_COLUMNS].reset_index(drop=True)
    low = min(_LINE_BATCHES[0], max(4, int(batch.min()) // 2))
    high = max(_LINE_BATCHES[1], 2 * int(batch.max()))
    sizes = np.unique(np.geomspace(low, high, _LINE_POINTS).round().astype(int))
    sizes = np.union1d(sizes, batch.unique())  # the line passes through every measured B
    lines = pd.DataFrame(
        [
            (activation, int(size), bn_gradient_growth(activation, int(size)), limit)
            for activation in points["activation"].unique()
            for limit in [bn_gradient_growth(activation)]
            for size in sizes
        ],
        columns=LINE_COLUMNS,
    )
    return points, lines


def _activation_order(names: pd.Series) -> list[str]:
    present = set(names)
    return [name for name in ACTIVATIONS if name in present] + sorted(present - set(ACTIVATIONS))


def _at(rows: pd.DataFrame, size: int) -> tuple[float, float]:
    """Median measured growth and the theory at one batch size."""
    mine = rows[rows["batch_size"] == size]
    return float(mine["growth"].median()), float(mine["theory"].iloc[0])


def bn_growth_finding(points: pd.DataFrame) -> str:
    """One line on a BatchNorm growth figure: per activation the measured growth (median over
    runs) at the smallest and largest batch size beside theory; how far measurement and theory
    lie apart over the settings; how much the init (σ_w², which BatchNorm divides out) changes
    the growth at one batch size where the study varies it.

    Args:
        points: ``bn_growth_frames``' points.
    Returns:
        The sentence, e.g. ``At init (each run's first training batch), the mean square of
        ∂L/∂h grows towards the input per layer by: relu 1.62× at B = 8 → 1.47× at B = 256
        (theory 1.788 → 1.473), …``, or the empty string when no run has a growth.
    """
    measured = points.dropna(subset=["growth"])
    if measured.empty:
        return ""
    parts = []
    for activation in _activation_order(measured["activation"]):
        rows = measured[measured["activation"] == activation]
        small, large = int(rows["batch_size"].min()), int(rows["batch_size"].max())
        (got_small, want_small), (got, want) = _at(rows, small), _at(rows, large)
        if small == large:
            parts.append(f"{activation} {got:.2f}× at B = {large} (theory {want:.3f})")
        else:
            parts.append(
                f"{activation} {got_small:.2f}× at B = {small} → {got:.2f}× at B = {large} "
                f"(theory {want_small:.3f} → {want:.3f})"
            )
    text = (
        "At init (each run's first training batch), the mean square of ∂L/∂h grows towards the "
        "input per layer by: " + ", ".join(parts)
    )
    settings = measured.groupby(["activation", "batch_size"]).agg(
        growth=("growth", "median"), theory=("theory", "first")
    )
    error = (settings["growth"] / settings["theory"] - 1).abs()
    worst = error.idxmax()
    if len(settings) == 1:
        text += f", within {100 * error.max():.2g} % of theory"
    else:
        text += (
            f"; over {len(settings)} activation × batch settings the median growth lies within "
            f"{100 * error.max():.2g} % of theory (largest: {worst[0]} at B = {worst[1]}, "
            f"{settings.loc[worst, 'growth']:.2f}× vs {settings.loc[worst, 'theory']:.3f})"
        )
    by_init = measured.groupby(["activation", "batch_size", "init_name"])["growth"].median()
    spread = by_init.groupby(level=[0, 1]).agg(["min", "max", "size"])
    spread = spread[spread["size"] > 1]
    if not spread.empty:
        change = float((spread["max"] / spread["min"] - 1).max())
        inits = measured["sigma_w2"].dropna()
        span = (
            f" (σ_w² {inits.min():.3g}–{inits.max():.3g})"
            if not inits.empty and inits.max() > inits.min()
            else ""
        )
        text += (
            f"; across {measured['init_name'].nunique()} inits{span} at one activation and "
            f"batch size it changes by at most {100 * change:.2g} %"
        )
    missing = len(points) - len(measured)
    if missing:
        text += f"; {missing} of {len(points)} runs have no finite profile at step 0"
    return text + "."
