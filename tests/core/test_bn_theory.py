"""BatchNorm's gradient growth at init (Yang et al. 2019) against Monte-Carlo simulations.

Two simulations, both written here without gradlab: a plain-torch BN net (nn.Linear → nn.BatchNorm1d
→ φ, depth 30) whose back-propagated gradient is measured layer by layer, and a direct Monte-Carlo
of the mean-field backward operator over sampled batches, which checks the quadrature and the
reduction of ``tr(P D P₁ D)`` to two-coordinate moments.
"""

import functools
import math

import numpy as np
import pytest
import torch
from torch import nn

from gradlab.core.bn_theory import bn_gradient_growth, predict_bn_profile

DEPTH, D_OUT = 30, 10
# Layers 6 … 25 of 1 … 30: the first five hold the transient from the input (the batch's Gram
# matrix approaching its fixed point), the last five the one from the head (the gradient's batch
# covariance settling on the operator's eigenvector).
FIT = slice(5, 25)
TOLERANCE = 0.02  # issue 28: "BN growth against a Monte-Carlo simulation ... within 2 %"

# Width and seeds per batch size. The theory is the wide limit; the finite-width bias about halves
# per doubling of the width and is largest at large B (B = 256: relu −1.1 %, tanh +1.2 % at width
# 256, −0.7 % and +0.6 % at 512), so B = 256 gets width 512. The seeds put the measured λ's
# standard error near 0.1–0.3 % (more seeds at small B, where one net's gradient norm scatters more
# from layer to layer and a net costs the least). Measured here: every case within 1 %.
SIZES = {16: (256, 24), 64: (256, 12), 256: (512, 4)}

PHIS = {"relu": torch.relu, "tanh": torch.tanh, "identity": lambda h: h}


def _linear(width: int, init: str, generator: torch.Generator) -> nn.Linear:
    layer = nn.utils.skip_init(nn.Linear, width, width)
    with torch.no_grad():
        if init == "he":  # N(0, 2 / fan_in), no bias: σ_w² = 2
            layer.weight.normal_(0.0, math.sqrt(2.0 / width), generator=generator)
            layer.bias.zero_()
        else:  # torch's own nn.Linear init, U(±1/√fan_in) for both: σ_w² = 1/3, σ_b² = 1/(3 fan_in)
            bound = 1.0 / math.sqrt(width)
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.uniform_(-bound, bound, generator=generator)
    return layer.requires_grad_(False)


@functools.cache
def simulated_grad_sq(
    activation: str, batch_size: int, *, init: str = "he", first_seed: int = 0
) -> np.ndarray:
    """‖∂L/∂h_l‖² (over units and batch) of hidden layers 1 … 30 per seed, (seeds, 30), with the
    width and number of seeds of ``SIZES[batch_size]``.

    h_l = BN(W_l x_{l−1} + b_l) in training mode (batch statistics, biased variance, ε = 1e-5,
    γ = 1, β = 0), x_l = φ(h_l), x_0 a standard-normal batch with as many features as the width,
    and ∂L/∂(head output) a standard-normal matrix (a random loss gradient).
    """
    phi = PHIS[activation]
    width, seeds = SIZES[batch_size]
    grad_sq = np.zeros((seeds, DEPTH))
    for row, seed in enumerate(range(first_seed, first_seed + seeds)):
        generator = torch.Generator().manual_seed(seed)
        linears = [_linear(width, init, generator) for _ in range(DEPTH)]
        head = _linear(width, init, generator)
        x = torch.randn(batch_size, width, generator=generator, requires_grad=True)
        preacts = []
        for linear in linears:
            h = nn.BatchNorm1d(width)(linear(x))
            h.retain_grad()
            preacts.append(h)
            x = phi(h)
        out = head(x)
        out.backward(torch.randn(out.shape, generator=generator))
        grad_sq[row] = [h.grad.double().pow(2).sum().item() for h in preacts]
    return grad_sq


def fitted_growth(grad_sq: np.ndarray) -> float:
    """Per-layer growth of E‖∂L/∂h_l‖² towards the input: exp(−slope) of ln(mean over seeds)
    against l, fitted by least squares over the middle layers."""
    layers = np.arange(1, DEPTH + 1)[FIT]
    slope = np.polyfit(layers, np.log(grad_sq.mean(axis=0))[FIT], 1)[0]
    return math.exp(-slope)


def growth_stderr(grad_sq: np.ndarray) -> float:
    """Standard error of the fitted growth, relative, from the spread of the per-seed fits."""
    per_seed = [fitted_growth(row[None]) for row in grad_sq]
    return float(np.std(per_seed, ddof=1) / np.mean(per_seed) / math.sqrt(len(per_seed)))


# --- the net ---------------------------------------------------------------------------------


@pytest.mark.slow  # ~10 s for the nine cases here
@pytest.mark.parametrize("batch_size", sorted(SIZES))
@pytest.mark.parametrize("activation", ["relu", "tanh", "identity"])
def test_bn_gradient_growth_matches_simulated_net(activation, batch_size):
    width = SIZES[batch_size][0]
    grad_sq = simulated_grad_sq(activation, batch_size)
    measured, predicted = fitted_growth(grad_sq), bn_gradient_growth(activation, batch_size)
    deviation = measured / predicted - 1.0
    assert abs(deviation) < TOLERANCE, (
        f"{activation} B={batch_size} width {width}: measured λ {measured:.4f} "
        f"(± {growth_stderr(grad_sq):.2%}) vs theory {predicted:.4f}: {deviation:+.2%}"
    )


@pytest.mark.slow
def test_bn_gradient_growth_is_independent_of_weight_scale():
    # He's N(0, 2/fan_in) without bias against torch's default U(±1/√fan_in) with bias
    # (σ_w² = 2 against 1/3), on seeds of their own
    he = fitted_growth(simulated_grad_sq("relu", 64, init="he"))
    torch_default = fitted_growth(simulated_grad_sq("relu", 64, init="default", first_seed=1000))
    predicted = bn_gradient_growth("relu", 64)
    assert abs(torch_default / he - 1.0) < TOLERANCE, f"σ_w² = 1/3: {torch_default}, 2: {he}"
    assert abs(torch_default / predicted - 1.0) < TOLERANCE, f"{torch_default} vs {predicted}"


@pytest.mark.slow
def test_predict_bn_profile_matches_simulated_rms_ratio():
    # the RMS of ∂L/∂h over units × batch, as gradlab's grad_preact_rms, from layer 6 to 25
    rms = np.sqrt(simulated_grad_sq("relu", 64).mean(axis=0))
    prediction = predict_bn_profile("relu", DEPTH, 64)
    measured = rms[FIT][0] / rms[FIT][-1]
    predicted = prediction.grad_rms[FIT][0] / prediction.grad_rms[FIT][-1]
    # 19 layers apart: 2 % in λ is (1.02)^9.5 − 1 ≈ 21 % in this ratio
    assert abs(math.log(measured / predicted)) < 19 / 2 * math.log(1.0 + TOLERANCE), (
        f"RMS(∂L/∂h_6) / RMS(∂L/∂h_25): measured {measured:.3f}, predicted {predicted:.3f}"
    )


# --- the operator ----------------------------------------------------------------------------

OPERATOR_PHIS = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "selu": torch.selu,
    "softsign": nn.functional.softsign,
    "identity": lambda h: h,
}


def operator_growth(activation: str, batch_size: int, chunks: int, per_chunk: int) -> np.ndarray:
    """λ per chunk of sampled units: ``E[tr(P D P₁ D) / σ²] / (B v)`` with y ~ N(0, I_B) a unit's
    pre-BN batch vector, σ² its biased batch variance, h = (y − ȳ)/σ, D = diag φ'(h) by autograd,
    P = I − 11ᵀ/B − hhᵀ/B formed as a matrix, and v the mean batch variance of φ(h)."""
    b = batch_size
    generator = torch.Generator().manual_seed(b)
    p1 = torch.eye(b, dtype=torch.float64) - 1.0 / b
    values = []
    for _ in range(chunks):
        y = torch.randn(per_chunk, b, generator=generator, dtype=torch.float64)
        var = y.var(dim=1, unbiased=False, keepdim=True)
        h = ((y - y.mean(dim=1, keepdim=True)) / var.sqrt()).requires_grad_(True)
        out = OPERATOR_PHIS[activation](h)
        (slope,) = torch.autograd.grad(out.sum(), h)
        out = out.detach()
        h = h.detach()
        proj = p1 - h[:, :, None] * h[:, None, :] / b
        # D diagonal, P and P₁ symmetric: tr(P D P₁ D) = Σ_ij P_ij (P₁)_ij d_i d_j
        trace = (proj * p1 * slope[:, :, None] * slope[:, None, :]).sum(dim=(1, 2))
        v = out.var(dim=1, unbiased=False).mean()
        values.append(((trace / var[:, 0]).mean() / (b * v)).item())
    return np.array(values)


@pytest.mark.parametrize("batch_size", [6, 12])
@pytest.mark.parametrize("activation", sorted(OPERATOR_PHIS))
def test_bn_gradient_growth_matches_monte_carlo_of_the_operator(activation, batch_size):
    values = operator_growth(activation, batch_size, chunks=8, per_chunk=25_000)
    mean, stderr = values.mean(), values.std(ddof=1) / math.sqrt(values.size)
    predicted = bn_gradient_growth(activation, batch_size)
    assert stderr / mean < 0.005, f"the Monte-Carlo is too noisy to test: ± {stderr / mean:.2%}"
    assert abs(mean - predicted) < 4.0 * stderr, (
        f"{activation} B={batch_size}: Monte-Carlo {mean:.4f} ± {stderr:.4f}, "
        f"theory {predicted:.4f}"
    )


# --- limits and closed forms -----------------------------------------------------------------


def test_bn_gradient_growth_large_batch_limit_relu_is_pi_over_pi_minus_1():
    expected = math.pi / (math.pi - 1.0)
    assert bn_gradient_growth("relu") == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_bn_gradient_growth_large_batch_limit_identity_is_1():
    assert bn_gradient_growth("identity") == pytest.approx(1.0, abs=1e-12)
    assert bn_gradient_growth("identity", 100_000) == pytest.approx(1.0, abs=2e-5)


@pytest.mark.parametrize("batch_size", [4, 5, 16, 256, 10_000])
def test_bn_gradient_growth_identity_closed_form(batch_size):
    # linear φ: D = I, tr(P P₁) = B − 2, v = 1, so λ = (B − 2) / (B − 3) by hand
    expected = (batch_size - 2) / (batch_size - 3)
    assert bn_gradient_growth("identity", batch_size) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "selu", "softsign"])
def test_bn_gradient_growth_approaches_its_limit_like_one_over_batch(activation):
    # two independent routes (half-line Gauss rule on N(0, 1) and the two-coordinate rule):
    # λ(B) − λ_∞ = c / B + O(1/B²), so B (λ(B) − λ_∞) settles
    limit = bn_gradient_growth(activation)
    scaled = [b * (bn_gradient_growth(activation, b) - limit) for b in (10_000, 100_000)]
    assert 0.0 < scaled[1] < 3.0, f"{activation}: B (λ(B) − λ_∞) = {scaled}"
    assert scaled[0] == pytest.approx(scaled[1], rel=1e-3), f"{activation}: {scaled}"


def test_bn_gradient_growth_decreases_with_batch_and_is_smaller_for_tanh():
    relu = [bn_gradient_growth("relu", b) for b in (8, 16, 64, 256)]
    tanh = [bn_gradient_growth("tanh", b) for b in (8, 16, 64, 256)]
    assert relu == sorted(relu, reverse=True), relu
    assert all(t < r for t, r in zip(tanh, relu, strict=True)), (tanh, relu)
    assert bn_gradient_growth("tanh") < bn_gradient_growth("relu")


# --- the API ---------------------------------------------------------------------------------


def test_predict_bn_profile_fields():
    growth = bn_gradient_growth("tanh", 32)
    prediction = predict_bn_profile("tanh", 12, 32)
    assert prediction.q.tolist() == [1.0] * 12
    assert np.isnan(prediction.chi1[-1])
    np.testing.assert_allclose(
        prediction.grad_rms[:-1] / prediction.grad_rms[1:], math.sqrt(growth)
    )
    assert prediction.grad_rms[-1] == 1.0
    assert prediction.log_slope == pytest.approx(-0.5 * math.log(growth))
    assert prediction.first_last_ratio == pytest.approx(growth ** (11 / 2))
    assert prediction.chi1_fixed_point == growth
    assert prediction.depth_scale == pytest.approx(-1.0 / math.log(growth))


def test_predict_bn_profile_large_batch_limit():
    prediction = predict_bn_profile("relu", 3, None)
    assert prediction.chi1_fixed_point == pytest.approx(math.pi / (math.pi - 1.0))


@pytest.mark.parametrize("batch_size", [3, 2, 0, 16.0])
def test_bn_gradient_growth_rejects_batch_size(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        bn_gradient_growth("relu", batch_size)


def test_bn_gradient_growth_unknown_activation_lists_choices():
    with pytest.raises(ValueError, match="expected one of"):
        bn_gradient_growth("swish", 16)
