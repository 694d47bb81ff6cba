"""Mean-field theory: quadrature, length and gradient maps, fixed points, inits and profiles."""

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import integrate, special

from gradlab.core.activations import ACTIVATIONS, get_activation
from gradlab.core.theory import (
    chi1,
    chi1_grid,
    critical_sigma_w2,
    depth_scale,
    depth_scales,
    fixed_point,
    gaussian_expectation,
    gradient_rms_profile,
    init_variances,
    layer_variances,
    length_map,
    log_slope,
    predict_profile,
    predict_profiles,
)
from tests.helpers import solo_reference

SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805
INIT_NAMES = [
    "default",
    "fixup",
    "kaiming_normal",
    "kaiming_uniform",
    "lecun_normal",
    "lsuv",
    "normal",
    "orthogonal",
    "xavier_normal",
    "xavier_uniform",
]


def phi_sq(name):
    phi = ACTIVATIONS[name].phi
    return lambda h: phi(h) ** 2


def dphi_sq(name):
    dphi = ACTIVATIONS[name].dphi
    return lambda h: dphi(h) ** 2


# --- quadrature against closed forms -------------------------------------------------------------


def test_gaussian_expectation_relu_grad_squared_is_half():
    value = gaussian_expectation(dphi_sq("relu"))
    assert abs(value - 0.5) < 1e-14, f"E[relu'(z)²] = {value!r}, expected 0.5"


@pytest.mark.parametrize("q", [1e-6, 0.3, 1.0, 7.5, 1e4])
def test_gaussian_expectation_relu_squared_is_half_q(q):
    value = gaussian_expectation(phi_sq("relu"), q)
    assert abs(value / (q / 2) - 1) < 1e-13, f"E[relu(√q z)²] = {value!r}, expected {q / 2}"


def test_gaussian_expectation_z_squared_is_one():
    value = gaussian_expectation(np.square)
    assert abs(value - 1.0) < 1e-14, f"E[z²] = {value!r}, expected 1"


@pytest.mark.parametrize("q", [0.5, 1.0, 3.0])
def test_gaussian_expectation_tanh_grad_squared_matches_quad(q):
    def integrand(z):
        return (1.0 - math.tanh(math.sqrt(q) * z) ** 2) ** 2 * math.exp(-0.5 * z * z)

    half, _ = integrate.quad(integrand, 0.0, np.inf, epsabs=1e-14, epsrel=1e-12, limit=200)
    reference = 2.0 * half / math.sqrt(2.0 * math.pi)  # the integrand is even
    value = gaussian_expectation(dphi_sq("tanh"), q)
    assert abs(value - reference) < 1e-8, f"q={q}: {value!r} vs quad {reference!r}"


def test_gaussian_expectation_selu_grad_is_exact_across_the_kink():
    # E[selu'(z)²] = scale² (P(z > 0) + α² E[e^{2z}; z < 0]) and E[e^{2z}; z < 0] = e² Φ(−2)
    exact = SELU_SCALE**2 * (0.5 + SELU_ALPHA**2 * math.e**2 * special.ndtr(-2.0))
    value = gaussian_expectation(dphi_sq("selu"))
    assert abs(value - exact) < 1e-13, f"split rule {value!r} vs closed form {exact!r}"


def test_gaussian_expectation_selu_grad_beats_unsplit_hermite():
    # why the half-line split: odd-order Gauss–Hermite puts a node (and weight ~0.03) on the jump
    exact = SELU_SCALE**2 * (0.5 + SELU_ALPHA**2 * math.e**2 * special.ndtr(-2.0))
    nodes, weights = np.polynomial.hermite_e.hermegauss(255)
    unsplit = dphi_sq("selu")(nodes) @ weights / math.sqrt(2.0 * math.pi)
    split = gaussian_expectation(dphi_sq("selu"))
    assert abs(unsplit - exact) > 1e-3, f"unsplit error {abs(unsplit - exact):.1e}"
    assert abs(split - exact) < 1e-13, f"split error {abs(split - exact):.1e}"


def test_gaussian_expectation_broadcasts_over_q():
    q = np.linspace(0.1, 2.0, 12).reshape(3, 4)
    values = gaussian_expectation(phi_sq("identity"), q)
    assert values.shape == (3, 4), f"shape {values.shape}"
    np.testing.assert_allclose(values, q, rtol=1e-13)


def test_gaussian_expectation_negative_q_raises():
    with pytest.raises(ValueError, match="q must be >= 0"):
        gaussian_expectation(np.square, -0.1)


# --- quadrature against Monte Carlo --------------------------------------------------------------


@pytest.fixture(scope="module")
def normal_samples():
    return np.random.default_rng(20240607).standard_normal(2_000_000)


@pytest.mark.parametrize("q", [0.5, 2.0])
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_gaussian_expectation_matches_monte_carlo(normal_samples, name, q):
    h = math.sqrt(q) * normal_samples
    for label, fn in (("φ²", phi_sq(name)), ("φ'²", dphi_sq(name))):
        samples = fn(h)
        mean = samples.mean()
        stderr = samples.std(ddof=1) / math.sqrt(samples.size)
        value = gaussian_expectation(fn, q)
        # the floor covers φ'² = 1 (identity), whose sample has zero spread
        assert abs(value - mean) <= 4.0 * stderr + 1e-12, (
            f"{name} E[{label}] at q={q}: quadrature {value:.8f}, Monte Carlo {mean:.8f} "
            f"± {stderr:.1e}"
        )


# --- activations ---------------------------------------------------------------------------------


def test_activations_table_has_the_expected_names():
    expected = {
        "sigmoid",
        "tanh",
        "relu",
        "leaky_relu",
        "elu",
        "selu",
        "gelu",
        "softsign",
        "identity",
    }
    assert set(ACTIVATIONS) == expected, f"{sorted(ACTIVATIONS)}"


TORCH_ACTIVATIONS = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "leaky_relu": lambda t: torch.nn.functional.leaky_relu(t, 0.01),
    "elu": torch.nn.functional.elu,
    "selu": torch.selu,
    "gelu": torch.nn.functional.gelu,
    "softsign": torch.nn.functional.softsign,
    "identity": lambda t: t,
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_get_activation_matches_torch_and_its_autograd(name):
    # x includes 0: φ'(0) follows torch's convention where φ' jumps
    x = torch.linspace(-6.0, 6.0, 1201, dtype=torch.float64, requires_grad=True)
    y = TORCH_ACTIVATIONS[name](x)
    y.sum().backward()
    act = get_activation(name)
    # the module a model is built from, and the fast stacked path, are the same φ
    with torch.no_grad():
        torch.testing.assert_close(act.module()(x), y, rtol=1e-12, atol=1e-14)
        if act.stacked is not None:
            torch.testing.assert_close(act.stacked(x), y, rtol=1e-12, atol=1e-14)
    x_np = x.detach().numpy()
    np.testing.assert_allclose(act.phi(x_np), y.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(act.dphi(x_np), x.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_get_activation_unknown_name_raises_listing_choices():
    message = f"unknown activation 'swish'; expected one of {sorted(ACTIVATIONS)}"
    with pytest.raises(ValueError) as excinfo:
        get_activation("swish")
    assert str(excinfo.value) == message
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        chi1("swish", 1.0, 1.0)


# --- gradient map and depth scale ----------------------------------------------------------------


@pytest.mark.parametrize("q", [0.0, 0.3, 5.0])
@pytest.mark.parametrize("sigma_w2", [0.5, 1.0, 3.0])
def test_chi1_identity_equals_sigma_w2(q, sigma_w2):
    value = chi1("identity", q, sigma_w2)
    assert abs(value - sigma_w2) < 1e-14, f"χ₁ = {value!r}, expected σ_w² = {sigma_w2}"


@pytest.mark.parametrize("q", [1e-8, 1.0, 1e6])
def test_chi1_relu_kaiming_is_one(q):
    value = chi1("relu", q, 2.0)
    assert abs(value - 1.0) < 1e-9, f"relu χ₁(q={q}) at σ_w² = 2: {value!r}"


def test_chi1_relu_at_zero_q_is_the_one_sided_limit():
    value = chi1("relu", 0.0, 2.0)
    assert abs(value - 1.0) < 1e-14, f"χ₁(0⁺) = {value!r}, expected σ_w²/2 = 1"


def test_depth_scale_known_values():
    values = depth_scale([math.exp(-1.0), math.exp(-0.5), math.e, 1.0, 0.0])
    np.testing.assert_allclose(values, [1.0, 2.0, -1.0, np.inf, 0.0], rtol=1e-14)
    assert depth_scale(1.0 + 1e-13) == np.inf, "χ₁ within 1e-12 of 1 counts as critical"


# --- length map and fixed point ------------------------------------------------------------------


def test_length_map_relu_is_half_sigma_w2_q_plus_bias():
    value = length_map("relu", 3.0, 1.5, 0.2)
    assert abs(value - (1.5 * 3.0 / 2 + 0.2)) < 1e-13, f"{value!r}"


def test_fixed_point_tanh_critical_point_gives_chi1_one():
    # σ_w² = 1, σ_b² = 0: q* = 0, approached only like 1/(2l); direct bracketing copes
    q_star = fixed_point("tanh", 1.0, 0.0)
    value = chi1("tanh", q_star, 1.0)
    assert q_star < 1e-6, f"q* = {q_star!r}"
    assert abs(value - 1.0) < 1e-3, f"χ₁(q*) = {value!r}"


@pytest.mark.parametrize(
    ("name", "sigma_w2", "sigma_b2"),
    [
        ("sigmoid", 4.0, 0.1),
        ("tanh", 1.5, 0.05),
        ("tanh", 3.0, 0.5),
        ("relu", 1.5, 0.2),
        ("leaky_relu", 1.0, 0.1),
        ("elu", 1.5, 0.1),
        ("selu", 0.8, 0.1),
        ("gelu", 2.0, 0.1),
        ("softsign", 2.0, 0.05),
        ("identity", 0.5, 0.1),
    ],
)
def test_fixed_point_matches_iterated_length_map(name, sigma_w2, sigma_b2):
    q = 1.0
    for _ in range(1000):
        q = length_map(name, q, sigma_w2, sigma_b2)
    q_star = fixed_point(name, sigma_w2, sigma_b2, q0=1.0)
    residual = length_map(name, q_star, sigma_w2, sigma_b2) / q_star - 1.0
    assert abs(q_star / q - 1.0) < 1e-9, f"{name}: q* = {q_star!r}, 1000 iterations give {q!r}"
    assert abs(residual) < 1e-12, f"{name}: L(q*)/q* − 1 = {residual:.1e}"


@pytest.mark.parametrize("sigma_w2", [0.5, 1.0, 1.9])
def test_fixed_point_relu_with_bias_below_critical_exists(sigma_w2):
    q_star = fixed_point("relu", sigma_w2, 0.2)
    expected = 0.2 / (1.0 - sigma_w2 / 2.0)
    assert abs(q_star / expected - 1.0) < 1e-10, f"q* = {q_star!r}, expected {expected!r}"


def test_fixed_point_selu_lecun_is_one():
    # self-normalization (Klambauer et al. 2017): unit variance is the fixed point at σ_w² = 1
    q_star = fixed_point("selu", 1.0, 0.0, q0=0.3)
    assert abs(q_star - 1.0) < 1e-6, f"q* = {q_star!r}"


@pytest.mark.parametrize(
    ("name", "sigma_w2", "sigma_b2"),
    [("identity", 1.5, 0.0), ("identity", 1.0, 0.1), ("relu", 2.5, 0.0), ("gelu", 3.0, 0.1)],
)
def test_fixed_point_exploding_unbounded_is_inf(name, sigma_w2, sigma_b2):
    q_star = fixed_point(name, sigma_w2, sigma_b2)
    assert q_star == np.inf, f"{name} σ_w²={sigma_w2} σ_b²={sigma_b2}: q* = {q_star!r}"


@pytest.mark.parametrize(("name", "sigma_w2"), [("relu", 1.0), ("identity", 0.5), ("tanh", 0.8)])
def test_fixed_point_vanishing_without_bias_is_zero(name, sigma_w2):
    q_star = fixed_point(name, sigma_w2, 0.0)
    assert q_star == 0.0, f"{name} σ_w²={sigma_w2}: q* = {q_star!r}"


def test_fixed_point_relu_kaiming_keeps_q0():
    q_star = fixed_point("relu", 2.0, 0.0, q0=3.7)
    assert q_star == 3.7, f"q* = {q_star!r}"


def test_fixed_point_from_zero_starts_at_the_bias():
    assert fixed_point("tanh", 1.5, 0.0, q0=0.0) == 0.0
    from_zero = fixed_point("tanh", 1.5, 0.05, q0=0.0)
    from_one = fixed_point("tanh", 1.5, 0.05, q0=1.0)
    assert abs(from_zero / from_one - 1.0) < 1e-12, f"{from_zero!r} vs {from_one!r}"


def test_fixed_point_broadcasts_and_propagates_nan():
    q_star = fixed_point("tanh", [[1.5, np.nan]], [[0.05], [0.1]])
    assert q_star.shape == (2, 2), f"shape {q_star.shape}"
    assert np.isnan(q_star[:, 1]).all() and np.isfinite(q_star[:, 0]).all(), f"{q_star}"
    assert abs(q_star[0, 0] - fixed_point("tanh", 1.5, 0.05)) < 1e-15


# --- initializations -----------------------------------------------------------------------------

TANH_GAIN2 = (5.0 / 3.0) ** 2


@pytest.mark.parametrize(
    ("init", "expected"),
    [
        ("default", (1.0 / 3.0, 1.0 / 192.0)),
        ("xavier_uniform", (4.0 / 3.0, 0.0)),
        ("xavier_normal", (4.0 / 3.0, 0.0)),
        ("kaiming_uniform", (TANH_GAIN2, 0.0)),
        ("kaiming_normal", (TANH_GAIN2, 0.0)),
        ("orthogonal", (TANH_GAIN2, 0.0)),  # a wide 64 → 32 matrix has orthonormal rows
        ("lecun_normal", (1.0, 0.0)),
        ("normal", (0.01 * 64, 0.0)),
    ],
)
def test_init_variances_tanh_64_to_32(init, expected):
    got = init_variances(init, "tanh", 64, 32, std=0.1)
    np.testing.assert_allclose(got, expected, rtol=1e-14, err_msg=f"{init}: {got}")


def test_init_variances_orthogonal_tall_layer_scales_by_fan_ratio():
    got = init_variances("orthogonal", "tanh", 32, 64)
    assert got == pytest.approx((TANH_GAIN2 / 2.0, 0.0), rel=1e-14), f"{got}"


def test_init_variances_lsuv_has_no_prediction():
    sigma_w2, sigma_b2 = init_variances("lsuv", "tanh", 64, 32)
    assert math.isnan(sigma_w2) and sigma_b2 == 0.0, f"{(sigma_w2, sigma_b2)}"


def test_init_variances_normal_without_std_raises():
    with pytest.raises(ValueError, match="init 'normal' needs std"):
        init_variances("normal", "tanh", 64, 32)


def test_init_variances_unknown_init_raises_listing_choices():
    with pytest.raises(ValueError) as excinfo:
        init_variances("glorot", "tanh", 64, 32)
    assert str(excinfo.value) == f"unknown init 'glorot'; expected one of {INIT_NAMES}"


def test_init_variances_unknown_activation_raises_listing_choices():
    with pytest.raises(ValueError) as excinfo:
        init_variances("default", "swish", 64, 32)
    message = f"unknown activation 'swish'; expected one of {sorted(ACTIVATIONS)}"
    assert str(excinfo.value) == message


def _default_linear(fan_in, fan_out):
    return torch.nn.Linear(fan_in, fan_out).weight


TORCH_INITS = {
    "default": _default_linear,
    "xavier_uniform": lambda i, o: torch.nn.init.xavier_uniform_(torch.empty(o, i)),
    "xavier_normal": lambda i, o: torch.nn.init.xavier_normal_(torch.empty(o, i)),
    "kaiming_uniform": lambda i, o: torch.nn.init.kaiming_uniform_(
        torch.empty(o, i), nonlinearity="relu"
    ),
    "kaiming_normal": lambda i, o: torch.nn.init.kaiming_normal_(
        torch.empty(o, i), nonlinearity="relu"
    ),
    "normal": lambda i, o: torch.nn.init.normal_(torch.empty(o, i), std=0.02),
}


@pytest.mark.parametrize("init", sorted(TORCH_INITS))
def test_init_variances_match_torch_wide_layer(init):
    fan_in, fan_out = 2048, 1024
    torch.manual_seed(0)
    weight = TORCH_INITS[init](fan_in, fan_out)
    empirical = fan_in * weight.double().var().item()
    predicted, _ = init_variances(init, "relu", fan_in, fan_out, std=0.02)
    assert abs(empirical / predicted - 1.0) < 0.05, (
        f"{init}: fan_in·Var[W] = {empirical:.4f}, predicted {predicted:.4f}"
    )


def test_init_variances_match_torch_default_bias():
    fan_in = 2048
    torch.manual_seed(0)
    bias = torch.nn.Linear(fan_in, 4096).bias
    empirical = bias.double().var().item()
    _, predicted = init_variances("default", "relu", fan_in, 4096)
    assert abs(empirical / predicted - 1.0) < 0.05, f"Var[b] = {empirical:.3e} vs {predicted:.3e}"


@pytest.mark.parametrize(("fan_in", "fan_out"), [(256, 512), (512, 256)])
def test_init_variances_match_torch_orthogonal(fan_in, fan_out):
    torch.manual_seed(0)
    weight = torch.nn.init.orthogonal_(
        torch.empty(fan_out, fan_in), gain=get_activation("tanh").gain
    )
    empirical = fan_in * weight.double().pow(2).mean().item()  # zero mean by construction
    predicted, _ = init_variances("orthogonal", "tanh", fan_in, fan_out)
    assert abs(empirical / predicted - 1.0) < 1e-4, f"{empirical:.6f} vs {predicted:.6f}"


# --- gains ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["elu", "gelu", "softsign"])
def test_gains_recomputed_from_second_moment(name):
    recomputed = 1.0 / math.sqrt(gaussian_expectation(phi_sq(name)))
    gain = get_activation(name).gain
    assert abs(recomputed - gain) < 1e-12, f"{name}: {recomputed!r} vs {gain!r}"


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "leaky_relu", "selu", "identity"])
def test_gains_match_torch_calculate_gain(name):
    expected = torch.nn.init.calculate_gain("linear" if name == "identity" else name)
    gain = get_activation(name).gain
    assert abs(gain - expected) < 1e-12, f"{name}: {gain!r} vs torch {expected!r}"


# --- layer profiles ------------------------------------------------------------------------------


def test_layer_variances_first_layer_is_linear_in_q_in():
    q = layer_variances("tanh", 2.5, [0.8, 1.2], [0.1, 0.05])
    assert q[0] == pytest.approx(0.8 * 2.5 + 0.1, rel=1e-15), f"q_1 = {q[0]!r}"
    assert q[1] == pytest.approx(length_map("tanh", q[0], 1.2, 0.05), rel=1e-15)


def test_gradient_rms_profile_multiplies_from_the_top():
    rms = gradient_rms_profile([4.0, 0.25, 9.0])
    np.testing.assert_allclose(rms, [3.0, 1.5, 3.0, 1.0], rtol=1e-15)


def test_log_slope_recovers_an_exponential():
    layers = np.arange(1, 11)
    assert log_slope(5.0 * np.exp(0.3 * layers)) == pytest.approx(0.3, rel=1e-12)
    assert math.isnan(log_slope([1.0])), "one layer has no slope"


def test_predict_profile_identity_default_is_geometric():
    depth, width = 6, 32
    p = predict_profile("identity", "default", [784] + [width] * depth + [10], q_in=1.0)
    expected = 3.0 ** (-(depth - np.arange(1, depth + 1)) / 2.0)  # χ₁ = 1/3 per layer
    np.testing.assert_allclose(p.grad_rms, expected, rtol=1e-13)
    np.testing.assert_allclose(p.chi1, 1.0 / 3.0, rtol=1e-13)
    assert p.log_slope == pytest.approx(math.log(3.0) / 2.0, rel=1e-12), f"{p.log_slope}"
    assert p.first_last_ratio == pytest.approx(3.0 ** (-(depth - 1) / 2.0), rel=1e-12)
    assert p.chi1_fixed_point == pytest.approx(1.0 / 3.0, rel=1e-13)
    assert p.depth_scale == pytest.approx(1.0 / math.log(3.0), rel=1e-12)
    # q* = σ_b² / (1 − σ_w²) with σ_b² = 1/(3·width)
    assert p.q_fixed_point == pytest.approx(1.0 / (2.0 * width), rel=1e-12)


def test_predict_profile_relu_kaiming_is_flat():
    p = predict_profile("relu", "kaiming_normal", [784] + [64] * 8 + [10], q_in=0.5)
    np.testing.assert_allclose(p.grad_rms, 1.0, rtol=1e-13)
    assert abs(p.log_slope) < 1e-12 and p.first_last_ratio == pytest.approx(1.0, rel=1e-13)
    assert p.chi1_fixed_point == pytest.approx(1.0, rel=1e-13) and p.depth_scale == np.inf
    assert p.q_fixed_point == pytest.approx(2.0 * 0.5, rel=1e-14), f"{p.q_fixed_point}"


def test_predict_profile_matches_layer_by_layer_recursion():
    # xavier: σ_w² differs between the first, hidden and output layers, so an index slip shows
    widths = [100, 64, 64, 64, 64, 10]
    p = predict_profile("tanh", "xavier_normal", widths, q_in=0.7)
    sigma_w2 = [2.0 * n_in / (n_in + n_out) for n_in, n_out in zip(widths, widths[1:])]
    q = [sigma_w2[0] * 0.7]
    for sw in sigma_w2[1:-1]:
        q.append(sw * gaussian_expectation(phi_sq("tanh"), q[-1]))
    mean_sq = [1.0]  # E[(∂L/∂h_l)²] / E[(∂L/∂h_L)²], filled from l = L down
    for layer in range(len(q) - 2, -1, -1):
        slope2 = gaussian_expectation(dphi_sq("tanh"), q[layer])
        mean_sq.insert(0, sigma_w2[layer + 1] * slope2 * mean_sq[0])
    np.testing.assert_allclose(p.q, q, rtol=1e-13)
    np.testing.assert_allclose(p.grad_rms, np.sqrt(mean_sq), rtol=1e-13)


def test_predict_profile_deep_layers_decay_at_the_depth_scale():
    p = predict_profile("tanh", "default", [784] + [64] * 60 + [10], q_in=1.0)
    local_slopes = np.diff(np.log(p.grad_rms))[30:50]
    expected = 1.0 / (2.0 * p.depth_scale)
    np.testing.assert_allclose(local_slopes, expected, rtol=1e-9)
    assert p.log_slope == pytest.approx(expected, rel=0.05), f"{p.log_slope} vs {expected}"


def _torch_grad_rms(activation, widths, q_in, seed):
    """RMS of ∂L/∂h_l over units and batch for an nn.Linear-default MLP at init."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(i, o).double() for i, o in zip(widths, widths[1:])]
    phi = TORCH_ACTIVATIONS[activation]
    x = math.sqrt(q_in) * torch.randn(512, widths[0], generator=generator, dtype=torch.float64)
    pre = []
    h = layers[0](x)
    for layer in layers[1:]:
        h.retain_grad()
        pre.append(h)
        h = layer(phi(h))
    (h * torch.randn(h.shape, generator=generator, dtype=torch.float64)).sum().backward()
    rms = np.array([p.grad.pow(2).mean().sqrt().item() for p in pre])
    return rms / rms[-1]


@pytest.mark.parametrize(
    ("activation", "widths"),
    [("tanh", [256] + [512] * 6 + [10]), ("identity", [256, 128, 512, 256, 10])],
)
def test_predict_profile_matches_a_wide_torch_network(activation, widths):
    # the uneven identity net checks the n_{l+1}/n_l factor: without it rms would be off by ~2×
    p = predict_profile(activation, "default", widths, q_in=1.0)
    measured = _torch_grad_rms(activation, widths, 1.0, seed=0)
    np.testing.assert_allclose(measured, p.grad_rms, rtol=0.1, err_msg=f"{measured}")


def test_predict_profile_is_read_only():
    p = predict_profile("tanh", "default", [10, 8, 8, 2], q_in=1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.log_slope = 0.0
    with pytest.raises(ValueError, match="read-only"):
        p.grad_rms[0] = 2.0


def test_predict_profile_lsuv_is_nan():
    p = predict_profile("tanh", "lsuv", [10, 8, 8, 2], q_in=1.0)
    assert np.isnan(p.q).all() and np.isnan(p.chi1).all(), f"{p.q} {p.chi1}"
    assert np.isnan([p.log_slope, p.chi1_fixed_point, p.depth_scale, p.q_fixed_point]).all()


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_predict_profiles_is_predict_profile_net_by_net(activation):
    # what a stack of one activation and shape mixes: inits, init std, each replica's input
    nets = [
        ("xavier_uniform", None, 1.0),
        ("kaiming_normal", None, 0.7),
        ("normal", 0.01, 1.3),
        ("normal", 1.0, 0.9),
        ("lsuv", None, 1.0),
        ("default", None, 2.5),
        ("xavier_uniform", None, 0.2),
    ]
    widths = [3, *[32] * 12, 1]
    together = predict_profiles(activation, widths, nets)
    for (init, std, q_in), got in zip(nets, together, strict=True):
        want = predict_profile(activation, init, widths, q_in, std=std)
        for name in ("q", "chi1", "grad_rms"):
            np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-12)
        for name in (
            "log_slope",
            "first_last_ratio",
            "q_fixed_point",
            "chi1_fixed_point",
            "depth_scale",
        ):
            np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-12)
        assert not got.grad_rms.flags.writeable


def test_layer_variances_and_gradient_profile_run_over_rows():
    sigma_w2, sigma_b2 = np.array([[0.8, 1.2, 1.0], [2.0, 0.5, 1.5]]), np.full((2, 3), 0.05)
    q = layer_variances("tanh", np.array([2.5, 0.4]), sigma_w2, sigma_b2)
    for row, q_in in enumerate((2.5, 0.4)):
        np.testing.assert_allclose(
            q[row], layer_variances("tanh", q_in, sigma_w2[row], sigma_b2[row]), rtol=1e-13
        )
    steps = np.array([[4.0, 0.25, 9.0], [1.0, 2.0, 0.5]])
    rms = gradient_rms_profile(steps)
    for row in range(2):
        np.testing.assert_array_equal(rms[row], gradient_rms_profile(steps[row]))


def test_predict_profiles_of_no_nets_is_empty():
    assert predict_profiles("tanh", [3, 8, 1], []) == []


def test_predict_profile_rejects_widths_without_hidden_layer():
    with pytest.raises(ValueError, match="widths must be"):
        predict_profile("tanh", "default", [10, 2], q_in=1.0)


# --- phase diagram -------------------------------------------------------------------------------


def test_chi1_grid_shape_and_entries():
    sigma_w2, sigma_b2 = np.linspace(0.5, 3.0, 7), np.linspace(0.0, 0.4, 5)
    grid = chi1_grid("tanh", sigma_w2, sigma_b2)
    assert grid.shape == (5, 7), f"shape {grid.shape}"
    expected = chi1("tanh", fixed_point("tanh", sigma_w2[4], sigma_b2[2]), sigma_w2[4])
    assert grid[2, 4] == pytest.approx(expected, rel=1e-13)


def test_chi1_grid_tanh_critical_line_starts_near_unit_weight_variance():
    sigma_w2, sigma_b2 = np.linspace(0.5, 3.0, 60), np.linspace(0.0, 0.3, 60)
    grid = chi1_grid("tanh", sigma_w2, sigma_b2)
    spacing = sigma_w2[1] - sigma_w2[0]
    # each row crosses χ₁ = 1 once: ordered (χ₁ < 1) at small σ_w², chaotic beyond
    crossings = [sigma_w2[np.argmax(row > 1.0)] for row in grid]
    assert abs(crossings[0] - 1.0) <= spacing, f"σ_b² = 0 crosses at σ_w² = {crossings[0]:.3f}"
    assert np.all(np.diff(crossings) >= 0.0), f"critical σ_w² must grow with σ_b²: {crossings}"
    assert crossings[-1] > 1.5, f"σ_b² = 0.3 crosses at σ_w² = {crossings[-1]:.3f}"


def test_theory_imports_neither_kedro_nor_mlflow():
    # torch it does import: an activation's registry entry holds its module beside φ and φ'
    code = (
        "import sys, gradlab.core.theory; "
        "print(sorted(m for m in ('kedro', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]", out


def test_a_bias_variance_override_enters_the_length_map_and_the_depth_scales():
    widths = [64, 64, 64, 64, 10]
    plain = predict_profile("tanh", "normal", widths, 1.0, std=0.2)
    biased = predict_profile("tanh", "normal", widths, 1.0, std=0.2, sigma_b2=0.05)
    sigma_w2 = 0.2**2 * 64
    assert biased.q[0] == pytest.approx(sigma_w2 * 1.0 + 0.05)
    assert biased.q[1] == pytest.approx(length_map("tanh", biased.q[0], sigma_w2, 0.05))
    assert plain.q[0] == pytest.approx(sigma_w2)
    scales = depth_scales("tanh", sigma_w2, 0.05)
    assert biased.xi_c == pytest.approx(scales.xi_c) and biased.xi_q == pytest.approx(scales.xi_q)


# --- a chosen σ_w² (a run's sigma_w2, as the gain √σ_w²) ------------------------------------------


def test_init_variances_with_a_gain_replace_the_activations():
    assert init_variances("kaiming_normal", "tanh", 64, 32, gain=math.sqrt(2.5)) == pytest.approx(
        (2.5, 0.0), rel=1e-15
    )
    # orthogonal keeps its tall-layer factor
    got = init_variances("orthogonal", "tanh", 32, 64, gain=math.sqrt(3.0))
    assert got == pytest.approx((1.5, 0.0), rel=1e-15)
    assert init_variances("orthogonal", "tanh", 64, 64, gain=None) == (TANH_GAIN2, 0.0)


def test_init_variances_refuse_a_gain_for_an_init_without_one():
    with pytest.raises(ValueError, match="init 'xavier_normal' has no gain to replace"):
        init_variances("xavier_normal", "tanh", 64, 32, gain=1.0)


def test_predict_profile_with_a_gain_identity_is_geometric_in_sigma_w2():
    s, q_in = 0.8, 0.4
    p = predict_profile(
        "identity", "kaiming_normal", [5, 16, 16, 16, 3], q_in=q_in, gain=math.sqrt(s)
    )
    np.testing.assert_allclose(p.q, [s * q_in, s**2 * q_in, s**3 * q_in], rtol=1e-14)
    np.testing.assert_allclose(p.chi1, s, rtol=1e-14)
    np.testing.assert_allclose(p.grad_rms, [s, math.sqrt(s), 1.0], rtol=1e-14)
    assert p.chi1_fixed_point == pytest.approx(s, rel=1e-14) and p.q_fixed_point == 0.0
    assert p.depth_scale == pytest.approx(-1.0 / math.log(s), rel=1e-13)


def test_predict_profile_with_a_gain_orthogonal_tanh_matches_quadrature():
    s, q_in, d_in, width = 1.3, 0.9, 5, 32

    def expect(fn, q):
        def integrand(z):
            return fn(math.sqrt(q) * z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

        return sum(
            integrate.quad(integrand, *ends, epsabs=1e-15)[0] for ends in [(-30, 0), (0, 30)]
        )

    q1 = s * d_in / width * q_in  # the tall first layer: σ_w² = s · fan_in / fan_out
    q2 = s * expect(lambda h: math.tanh(h) ** 2, q1)
    chi = [s * expect(lambda h: math.cosh(h) ** -4, q) for q in (q1, q2)]
    p = predict_profile("tanh", "orthogonal", [d_in, width, width, 3], q_in, gain=math.sqrt(s))
    np.testing.assert_allclose(p.q, [q1, q2], rtol=1e-12)
    np.testing.assert_allclose(p.chi1, chi, rtol=1e-12)
    np.testing.assert_allclose(p.grad_rms, [math.sqrt(chi[0]), 1.0], rtol=1e-12)


def test_predict_profiles_gains_apply_per_net_and_none_changes_nothing():
    widths, nets = [6, 24, 24, 24, 2], [("orthogonal", None, 1.0), ("kaiming_normal", None, 0.5)]
    plain = predict_profiles("tanh", widths, nets)
    for a, b in zip(plain, predict_profiles("tanh", widths, nets, gains=[None, None]), strict=True):
        for field in dataclasses.fields(a):
            np.testing.assert_array_equal(getattr(a, field.name), getattr(b, field.name))
    mixed = predict_profiles("tanh", widths, nets, gains=[None, 1.0])
    alone = predict_profile("tanh", "kaiming_normal", widths, 0.5, gain=1.0)
    # another stack's companions may move the vectorised fixed-point solve by an ulp
    for a, b in [(plain[0], mixed[0]), (alone, mixed[1])]:
        np.testing.assert_allclose(a.q, b.q, rtol=1e-14)
        np.testing.assert_allclose(a.grad_rms, b.grad_rms, rtol=1e-14)
        assert a.chi1_fixed_point == pytest.approx(b.chi1_fixed_point, rel=1e-14)
    # q_1 = σ_w² q_in: σ_w² = gain² = 1 in place of tanh's 25/9
    assert (mixed[1].q[0], plain[1].q[0]) == pytest.approx((0.5, TANH_GAIN2 * 0.5), rel=1e-15)


@pytest.mark.parametrize(
    ("activation", "sigma_b2"), [("tanh", 0.05), ("relu", 0.0), ("sigmoid", 0.0)]
)
def test_the_oracles_critical_sigma_w2_agrees_with_theorys(activation, sigma_b2):
    # the solo oracle solves χ₁(q*) = 1 in q* with scipy quadrature, independently of theory
    oracle = solo_reference.critical_sigma_w2(activation, sigma_b2)
    assert oracle == pytest.approx(float(critical_sigma_w2(activation, sigma_b2)), rel=1e-9)
