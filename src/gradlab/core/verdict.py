"""One verdict per run, from its gradient statistics at init and at the end of training.

The rule, in order (the first that holds wins):

1. ``exploding``  — the run diverged, or ∂L/∂h RMS of the first hidden layer is more than
   ``exploding_ratio`` times that of the last hidden layer, at init or at the end;
2. ``vanishing``  — that first/last ratio is below ``vanishing_ratio`` at init or at the end;
3. ``saturated``  — at the end, the mean over hidden layers of ``act_saturation`` is above
   ``saturated_frac``;
4. ``dead``       — at the end, the mean over hidden layers of ``act_dead_frac`` is above
   ``dead_frac``;
5. ``healthy``    — none of the above.

A single-layer network has no first/last ratio; rules 1–2 then look at divergence only.
"""

import math
from dataclasses import dataclass

import numpy as np

VERDICTS = ("exploding", "vanishing", "saturated", "dead", "healthy")


@dataclass(frozen=True)
class VerdictRule:
    """Thresholds of the verdict; see the module docstring."""

    vanishing_ratio: float = 0.1
    exploding_ratio: float = 10.0
    saturated_frac: float = 0.5
    dead_frac: float = 0.5


def first_last_ratio(grad_preact_rms: np.ndarray) -> float:
    """RMS ∂L/∂h of the first hidden layer over that of the last (NaN for one layer)."""
    if len(grad_preact_rms) < 2 or grad_preact_rms[-1] == 0:
        return math.nan
    return float(grad_preact_rms[0] / grad_preact_rms[-1])


def verdict(
    init_ratio: float,
    end_ratio: float,
    end_saturation: float,
    end_dead: float,
    diverged: bool,
    rule: VerdictRule = VerdictRule(),
) -> str:
    """Apply the rule of this module.

    Args:
        init_ratio: First/last hidden-layer ∂L/∂h RMS ratio at init.
        end_ratio: The same at the last probe step of training (NaN if none).
        end_saturation: Mean ``act_saturation`` over hidden layers at the end (NaN if undefined).
        end_dead: Mean ``act_dead_frac`` over hidden layers at the end (NaN if undefined).
        diverged: Whether training diverged.
        rule: The thresholds.
    Returns:
        One of ``VERDICTS``.
    """
    ratios = [r for r in (init_ratio, end_ratio) if math.isfinite(r)]
    if diverged or any(r > rule.exploding_ratio for r in ratios):
        return "exploding"
    if any(r < rule.vanishing_ratio for r in ratios):
        return "vanishing"
    if math.isfinite(end_saturation) and end_saturation > rule.saturated_frac:
        return "saturated"
    if math.isfinite(end_dead) and end_dead > rule.dead_frac:
        return "dead"
    return "healthy"


def expected_verdict(predicted_ratio: float, rule: VerdictRule = VerdictRule()) -> str:
    """What mean-field theory expects at init from its predicted first/last ∂L/∂h ratio.

    ``n/a`` where the theory makes no prediction (normalization layers, LSUV).
    """
    if not math.isfinite(predicted_ratio):
        return "n/a"
    if predicted_ratio > rule.exploding_ratio:
        return "exploding"
    if predicted_ratio < rule.vanishing_ratio:
        return "vanishing"
    return "healthy"
