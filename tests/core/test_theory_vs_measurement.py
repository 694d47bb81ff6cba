"""Mean-field theory predicts the measured ∂L/∂h profile of wide, deep nets at init."""

import numpy as np
import pytest
import torch

from gradlab.core import probes, theory
from gradlab.core.activations import get_activation
from gradlab.core.inits import initialize
from gradlab.core.models import MLP

pytestmark = pytest.mark.slow  # trains 9 × 4 deep, wide networks: 20 s in all here

WIDTH, DEPTH, D_IN, SEEDS = 256, 20, 16, 4


def measured_log_rms(activation: str, init: str) -> np.ndarray:
    """ln RMS(∂L/∂h_l) per hidden layer at init, averaged over seeds."""
    profiles = []
    for seed in range(SEEDS):
        generator = torch.Generator().manual_seed(seed)
        model = MLP(D_IN, 1, DEPTH, WIDTH, activation, "none")
        initialize(model, init, activation, 0.0, generator)
        x = torch.randn(512, D_IN, generator=generator)
        y = torch.randn(512, generator=generator)
        with probes.capture(model.acts) as cap:
            torch.nn.functional.mse_loss(model(x).squeeze(-1), y).backward()
        stats = probes.hidden_stats(cap, get_activation(activation), probes.Workspace())
        rms = stats["grad_preact_rms"][0]  # replica 0 of 1
        profiles.append(np.log(rms.double().numpy()))
    return np.mean(profiles, axis=0)


CASES = [
    (a, i)
    for a in ("relu", "tanh", "sigmoid")
    for i in ("default", "xavier_uniform", "kaiming_normal")
]


@pytest.mark.parametrize(("activation", "init"), CASES)
def test_measured_log_slope_matches_mean_field_prediction(activation, init):
    log_rms = measured_log_rms(activation, init)
    measured = theory.log_slope(np.exp(log_rms))
    widths = [D_IN, *[WIDTH] * DEPTH, 1]
    predicted = theory.predict_profile(activation, init, widths, q_in=1.0).log_slope
    if abs(predicted) < 0.2:  # near-critical (χ₁ ≈ 1): a relative error is meaningless
        assert abs(measured - predicted) < 0.02, (
            f"slope {measured:.4f} vs predicted {predicted:.4f}"
        )
    else:
        relative = abs(measured - predicted) / abs(predicted)
        assert relative < 0.10, (
            f"slope {measured:.4f} vs predicted {predicted:.4f} ({relative:.1%})"
        )
