"""The input–output Jacobian's singular values: the whole distribution of a net's gradient gains.

∂L/∂h's profile and χ₁ say whether gradients shrink or grow *on average*. Pennington, Schoenholz
& Ganguli (2017) showed that the average hides what decides trainability at depth: at χ₁ = 1 a
ReLU net, or a tanh net with Gaussian weights, still has Jacobian singular values spread over
decades, while an orthogonal tanh net near criticality keeps them all near 1 ("dynamical
isometry"). This module measures that spectrum; ``gradlab.core.spectrum_theory`` predicts its
first two moments.

J is the Jacobian of the head's input with respect to the first hidden layer's output, at one
input point: ``J = ∂x_L/∂x_1 = D_L W_L ⋯ D_2 W_2`` for an MLP (``D_l = diag φ'(h_l)``), and
``∂x_L/∂x_0`` from the stem's output through every block for a residual net. Both are
width × width; the input layer (d_in → width) is left out, so the spectrum does not depend on how
many features a dataset has. J is computed exactly, in float64 (a deep net's small singular values
lie many decades below its largest, beyond float32), by one backward pass per point over a batch
of ``width`` copies of it: copy i back-propagates the unit vector e_i and returns J's row i. A
sample's Jacobian must not depend on the other rows of its batch, so BatchNorm nets are not
measured (``measurable``).
"""

import copy
import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from gradlab.core.models import NORM_LAYERS, StackedNet
from gradlab.core.registry import lookup
from gradlab.core.schema import PHASES, empty_table, text_column

# What each measured point leaves in the ``spectrum`` table (``SAMPLE``: a sample of log₁₀ s)
STATISTICS = ("mean_s2", "var_s2", "s_max", "s_min", "frac_well_conditioned")
SAMPLE = "log10_s"
# log₁₀ s values kept per measured point, for the density figures
SAMPLE_SIZE = 64
# The singular values counted as "well conditioned": within a factor 10 of 1
WELL_CONDITIONED = (0.1, 10.0)
# Activations kept for one backward pass (values × depth): bounds the memory of a measurement
_MAX_ELEMENTS = 2**24


def measurable(norm_layer: str) -> bool:
    """Whether a net's Jacobian at a point is its own: BatchNorm mixes the rows of a batch."""
    return not lookup(NORM_LAYERS, norm_layer, "norm_layer").mixes_batch


def jacobians(
    model: StackedNet, points: Tensor, stream: bool, replicas: Sequence[int] | None = None
) -> Tensor:
    """J at each replica's points, exact, in float64.

    Args:
        model: A stack of nets without BatchNorm.
        points: (R, P, d_in): P inputs for each of R replicas.
        stream: The nets have a residual stream (J starts at the stem's output).
        replicas: The R replicas of the stack measured, in the order of ``points``; all of them
            when None.
    Returns:
        (R, P, n, n): J of replica r at its point p, row i = ∂x_L[i]/∂x_start.
    """
    count, n_points, _ = points.shape
    chosen = torch.arange(count) if replicas is None else torch.tensor(list(replicas))
    width = model.tensors["head.weight"].shape[1]
    per_pair = width * width * (model.depth + 1)
    chunk = max(1, _MAX_ELEMENTS // per_pair)  # (replica, point) pairs per backward pass
    pairs = [(r, p) for p in range(n_points) for r in range(count)]
    out = torch.empty(count, n_points, width, width, dtype=torch.float64, device=points.device)
    for start in range(0, len(pairs), chunk):
        rs, ps = (torch.tensor(c) for c in zip(*pairs[start : start + chunk], strict=True))
        taken = _in_double(model, chosen[rs].to(points.device))
        out[rs, ps] = _jacobian_rows(taken, points[rs, ps], width, stream)
    return out


def _in_double(model: StackedNet, index: Tensor) -> StackedNet:
    """A float64 copy of replicas ``index`` of ``model`` (the stack itself is left as it is)."""
    taken = copy.copy(model)
    taken.tensors = {name: t.detach()[index].double() for name, t in model.tensors.items()}
    return taken


def _jacobian_rows(model: StackedNet, points: Tensor, width: int, stream: bool) -> Tensor:
    """(C, d_in) points, one per replica of ``model`` → (C, n, n) Jacobians."""
    x = points.double()[:, None, :].expand(-1, width, -1).requires_grad_()
    starts: list[Tensor] = []
    if stream:
        features = model.features(x, False, on_stream=_first(starts))
    else:
        features = model.features(x, False, on_hidden=lambda h, a: _first(starts)(a))
    basis = torch.eye(width, dtype=torch.float64, device=x.device).expand_as(features)
    (rows,) = torch.autograd.grad(features, starts[0], basis)
    return rows


def _first(kept: list[Tensor]) -> Callable[[Tensor], None]:
    """A hook that keeps the first tensor it is called with."""

    def keep(tensor: Tensor) -> None:
        if not kept:
            kept.append(tensor)

    return keep


def spectrum_statistics(jacobian: Tensor, sample_size: int) -> tuple[Tensor, Tensor]:
    """The singular values' statistics and a sample of their log₁₀, per Jacobian.

    Args:
        jacobian: (…, n, n).
        sample_size: Values in the sample: evenly spaced order statistics (every value when n is
            no larger), so that pooled samples draw the density.
    Returns:
        (…, len(STATISTICS)) in ``STATISTICS``' order, and (…, min(n, sample_size)) log₁₀ s.
    """
    s = torch.linalg.svdvals(jacobian)  # descending
    s2 = s.square()
    low, high = WELL_CONDITIONED
    stats = torch.stack(
        [
            s2.mean(-1),
            s2.var(-1, unbiased=False),
            s[..., 0],
            s[..., -1],
            ((s > low) & (s < high)).double().mean(-1),
        ],
        -1,
    )
    n = s.shape[-1]
    size = min(n, sample_size)
    at = ((torch.arange(size, dtype=torch.float64) + 0.5) * n / size).long()
    ascending = s.flip(-1)[..., at.to(s.device)]
    sample = ascending.clamp_min(torch.finfo(torch.float64).tiny).log10()
    return stats, sample


class SpectrumLog:
    """One run's measured spectra; builds its tidy table once, at the end."""

    def __init__(self) -> None:
        # phase, step, then per point the statistics (STATISTICS' order) and the log₁₀ s sample
        self.measured: list[tuple[str, int, np.ndarray, np.ndarray]] = []

    def add(self, phase: str, step: int, stats: np.ndarray, sample: np.ndarray) -> None:
        """Keep a measurement: (P, len(STATISTICS)) statistics, (P, m) sample."""
        self.measured.append((phase, step, stats, sample))

    def at_init(self) -> dict[str, float]:
        """Each statistic's mean over the points measured at init; NaN if none were."""
        for phase, _, stats, _ in self.measured:
            if phase == "init":
                return dict(zip(STATISTICS, stats.mean(0).tolist(), strict=True))
        return dict.fromkeys(STATISTICS, math.nan)

    def table(self) -> pd.DataFrame:
        """The run's ``spectrum`` table (``schema.SPECTRUM_COLUMNS``): per phase, step and point
        a row per statistic, then one per value of the log₁₀ s sample."""
        if not self.measured:
            return empty_table("spectrum")
        # per measurement (points, statistics then sample)
        parts = [np.concatenate([stats, sample], 1) for _, _, stats, sample in self.measured]
        sizes = [part.size for part in parts]
        # a row's statistic: its column, every sample column read as SAMPLE
        names = [*STATISTICS, SAMPLE]
        columns = [np.arange(part.shape[1]).clip(max=len(STATISTICS)) for part in parts]
        return pd.DataFrame(
            {
                "phase": text_column(
                    PHASES, np.repeat([PHASES.index(m[0]) for m in self.measured], sizes)
                ),
                "step": np.repeat([step for _, step, _, _ in self.measured], sizes),
                "point": np.concatenate([np.arange(len(p)).repeat(p.shape[1]) for p in parts]),
                "statistic": text_column(
                    names,
                    np.concatenate(
                        [np.tile(c, len(p)) for c, p in zip(columns, parts, strict=True)]
                    ),
                ),
                "value": np.concatenate([part.ravel() for part in parts]),
            }
        )


# noqa reason: the stack, what to measure it at, and where to keep it
def measure(  # noqa: PLR0913, PLR0917
    model: StackedNet,
    points: Tensor,
    stream: bool,
    logs: Sequence[SpectrumLog],
    at: tuple[str, int],
    replicas: Sequence[int] | None = None,
    sample_size: int = SAMPLE_SIZE,
) -> None:
    """Measure the spectrum of replicas of a stack at their points and keep it in their logs.

    Args:
        model: The stack.
        points: (R, P, d_in).
        stream: The nets have a residual stream.
        logs: One per measured replica, in the order of ``points``.
        at: The phase and step the measurement belongs to.
        replicas: The R replicas measured (``jacobians``); all when None.
        sample_size: log₁₀ s values kept per point.
    """
    jacobian = jacobians(model, points, stream, replicas)
    stats, sample = spectrum_statistics(jacobian, sample_size)
    stats_np, sample_np = stats.cpu().numpy(), sample.cpu().numpy()  # one sync
    for log, run_stats, run_sample in zip(logs, stats_np, sample_np, strict=True):
        log.add(*at, run_stats, run_sample)
