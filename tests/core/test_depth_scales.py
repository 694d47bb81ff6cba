"""The correlation map, its fixed point c*, χ_c, and the depth scales ξ_q and ξ_c.

Every number is checked against something written here, independently of the code under test:
closed forms for relu (the arc-cosine kernels), a trapezoid rule on a fine (z₁, z₂) grid for tanh,
whose Gaussian integrands are analytic (the rule's error ~exp(−2π d / step) with d ≈ 1 the width
of tanh's strip of analyticity: < 1e-30 here), maps iterated layer by layer, and a Monte-Carlo of
two inputs through wide random tanh nets in plain torch.
"""

import math

import numpy as np
import pytest
import torch

from gradlab.core.residual_theory import predict_residual_profiles
from gradlab.core.theory import (
    bivariate_expectation,
    chi1,
    chi_c,
    correlation_fixed_point,
    correlation_map,
    critical_sigma_w2,
    depth_scales,
    fixed_point,
    init_variances,
    length_map,
    length_map_slope,
    predict_profiles,
)

SIGMA_B2 = 0.05  # Schoenholz et al. 2017's trainability sweep

# --- an independent reference: trapezoid rule on a (z₁, z₂) grid, maps iterated over layers ------

STEP = 0.06
Z = np.arange(-9.0, 9.0 + STEP / 2, STEP)
W = STEP * np.exp(-0.5 * Z * Z) / math.sqrt(2.0 * math.pi)


def tanh_prime(h):
    return 1.0 / np.cosh(h) ** 2


def ref_mean(fn, q):
    return W @ fn(math.sqrt(q) * Z)


def ref_pair(fn, c, q):
    """E[fn(u₁, u₂)] with u₁ = √q z₁, u₂ = √q (c z₁ + √(1 − c²) z₂) on the grid."""
    z1, z2 = Z[:, None], Z[None, :]
    u1 = math.sqrt(q) * z1
    u2 = math.sqrt(q) * (c * z1 + math.sqrt(max(1.0 - c * c, 0.0)) * z2)
    return W @ fn(u1, u2) @ W


def ref_q_star(sigma_w2, sigma_b2, layers=200):
    q = 1.0
    for _ in range(layers):
        q = sigma_w2 * ref_mean(lambda h: np.tanh(h) ** 2, q) + sigma_b2
    return q


def ref_c_map(c, q, sigma_w2, sigma_b2):
    q_next = sigma_w2 * ref_mean(lambda h: np.tanh(h) ** 2, q) + sigma_b2
    return (sigma_w2 * ref_pair(lambda a, b: np.tanh(a) * np.tanh(b), c, q) + sigma_b2) / q_next


def fitted_rate(errors, low, high):
    """exp(slope) of ln|e_l| over the layers where low < |e_l| < high: the per-layer contraction."""
    errors = np.abs(np.asarray(errors))
    layers = np.flatnonzero((errors > low) & (errors < high))
    assert layers.size >= 5, f"only {layers.size} layers in ({low}, {high}): {errors}"
    slope = np.polyfit(layers, np.log(errors[layers]), 1)[0]
    return math.exp(slope)


def arc_cosine_cross(c, q):
    """Cho & Saul 2009: E[relu(u₁) relu(u₂)] = q (sin θ + (π − θ) cos θ) / 2π, θ = arccos c."""
    theta = np.arccos(c)
    return q * (np.sin(theta) + (math.pi - theta) * np.cos(theta)) / (2.0 * math.pi)


def relu(h):
    return np.maximum(h, 0.0)


def relu_prime(h):
    return (h > 0.0).astype(float)


# --- the bivariate quadrature ---------------------------------------------------------------------

CORRELATIONS = [-1.0, -0.6, 0.0, 0.5, 0.95, 0.9999, 1.0 - 1e-9, 1.0]


@pytest.mark.parametrize("q", [1e-3, 0.7, 40.0])
def test_bivariate_expectation_relu_is_the_arc_cosine_kernels(q):
    c = np.array(CORRELATIONS)
    cross = bivariate_expectation(lambda a, b: relu(a) * relu(b), c, q, symmetric=True)
    slopes = bivariate_expectation(lambda a, b: relu_prime(a) * relu_prime(b), c, q)
    cross_error = np.abs(cross - arc_cosine_cross(c, q)).max() / q
    slope_error = np.abs(slopes - (math.pi - np.arccos(c)) / (2.0 * math.pi)).max()
    assert cross_error < 1e-14, f"E[relu relu]/q off by {cross_error:.1e}"
    assert slope_error < 1e-14, f"E[relu' relu'] off by {slope_error:.1e}"


def test_bivariate_expectation_of_an_asymmetric_integrand():
    # E[u₁⁺ 1(u₂ > 0)] = √q (1 + c) / (2√(2π)): x⁺ on one side, a jump on the other
    c, q = np.array(CORRELATIONS), 2.0
    value = bivariate_expectation(lambda a, b: relu(a) * relu_prime(b), c, q)
    expected = math.sqrt(q) * (1.0 + c) / (2.0 * math.sqrt(2.0 * math.pi))
    error = np.abs(value - expected).max()
    assert error < 1e-14, f"E[u1+ 1(u2 > 0)] off by {error:.1e}"


@pytest.mark.parametrize("q", [0.5, 2.0])
@pytest.mark.parametrize("c", [0.0, 0.5, 0.95, 0.9999])
def test_bivariate_expectation_tanh_against_the_grid(c, q):
    for name, fn in [
        ("tanh tanh", lambda a, b: np.tanh(a) * np.tanh(b)),
        ("tanh' tanh'", lambda a, b: tanh_prime(a) * tanh_prime(b)),
        ("tanh u2^3", lambda a, b: np.tanh(a) * b**3),
    ]:
        error = abs(bivariate_expectation(fn, c, q) - ref_pair(fn, c, q))
        assert error < 1e-13, f"E[{name}] at c={c}, q={q} off by {error:.1e}"


def test_bivariate_expectation_rejects_a_correlation_beyond_one():
    with pytest.raises(ValueError, match=r"c must lie in \[-1, 1\]"):
        bivariate_expectation(np.multiply, 1.5)


# --- the correlation map --------------------------------------------------------------------------


@pytest.mark.parametrize(("sigma_w2", "q"), [(1.0, 0.3), (2.0, 1.0), (3.5, 50.0)])
def test_correlation_map_relu_without_bias_is_the_normalized_arc_cosine_kernel(sigma_w2, q):
    c = np.array(CORRELATIONS)
    expected = (np.sqrt(1.0 - c * c) + (math.pi - np.arccos(c)) * c) / math.pi
    error = np.abs(correlation_map("relu", c, q, sigma_w2, 0.0) - expected).max()
    assert error < 1e-14, f"relu correlation map off by {error:.1e}"


@pytest.mark.parametrize("c", [0.2, 0.9])
def test_correlation_map_slope_is_price_theorem(c):
    # dM/dc = σ_w² q E[φ'(u₁)φ'(u₂)] / q_next; for relu without bias, (π − arccos c) / π
    step = 1e-6
    slope = (
        correlation_map("relu", c + step, 1.3, 2.0, 0.0)
        - correlation_map("relu", c - step, 1.3, 2.0, 0.0)
    ) / (2 * step)
    expected = (math.pi - math.acos(c)) / math.pi
    assert abs(slope - expected) < 1e-8, f"dM/dc = {slope!r}, arc-cosine gives {expected!r}"


@pytest.mark.parametrize(("sigma_w2", "q"), [(1.5, 0.4), (3.0, 2.5)])
def test_correlation_map_tanh_against_the_grid(sigma_w2, q):
    c = np.array([0.0, 0.3, 0.8, 0.999, 1.0])
    value = correlation_map("tanh", c, q, sigma_w2, SIGMA_B2)
    expected = np.array([ref_c_map(ci, q, sigma_w2, SIGMA_B2) for ci in c])
    error = np.abs(value - expected).max()
    assert error < 1e-13, f"tanh correlation map off by {error:.1e}: {value} vs {expected}"


def test_correlation_map_broadcasts():
    c, q = np.array([0.1, 0.5, 0.9])[:, None], np.array([0.5, 1.0])
    grid = correlation_map("tanh", c, q, np.array([[[1.0]], [[2.0]]]), SIGMA_B2)
    assert grid.shape == (2, 3, 2), grid.shape
    one = correlation_map("tanh", 0.9, 0.5, 2.0, SIGMA_B2)
    assert abs(grid[1, 2, 0] - one) < 1e-15, (grid[1, 2, 0], one)


# --- c*, χ_c, ξ_c against the iterated map --------------------------------------------------------


@pytest.mark.parametrize("sigma_w2", [2.5, 4.0])
def test_chaotic_fixed_point_and_contraction_match_the_iterated_map(sigma_w2):
    q_star = ref_q_star(sigma_w2, SIGMA_B2)
    trajectory = [0.9]
    while len(trajectory) < 400:
        trajectory.append(ref_c_map(trajectory[-1], q_star, sigma_w2, SIGMA_B2))
        if abs(trajectory[-1] - trajectory[-2]) < 1e-16:
            break
    c_limit = trajectory[-1]
    rate = fitted_rate(np.array(trajectory) - c_limit, 1e-11, 1e-5)
    slope = sigma_w2 * ref_pair(lambda a, b: tanh_prime(a) * tanh_prime(b), c_limit, q_star)

    c_star = correlation_fixed_point("tanh", sigma_w2, SIGMA_B2)
    chi = chi_c("tanh", sigma_w2, SIGMA_B2)
    xi_c = depth_scales("tanh", sigma_w2, SIGMA_B2).xi_c
    assert abs(c_star - c_limit) < 1e-12, f"c* = {c_star!r}, the iterated map gives {c_limit!r}"
    assert c_star < 1.0
    assert abs(chi - slope) < 1e-12, f"χ_c = {chi!r}, σ_w² E[φ'φ'] on the grid {slope!r}"
    assert chi < 1.0 < chi1("tanh", q_star, sigma_w2)
    assert abs(chi / rate - 1.0) < 1e-5, f"χ_c = {chi!r}, fitted contraction {rate!r}"
    assert abs(xi_c * -math.log(rate) - 1.0) < 1e-4, f"ξ_c = {xi_c!r}, fit {-1 / math.log(rate)!r}"


@pytest.mark.parametrize("sigma_w2", [0.8, 1.2])
def test_ordered_phase_has_c_star_one_and_chi_c_chi1(sigma_w2):
    q_star = ref_q_star(sigma_w2, SIGMA_B2)
    trajectory = [0.2]
    for _ in range(200):
        trajectory.append(ref_c_map(trajectory[-1], q_star, sigma_w2, SIGMA_B2))
    rate = fitted_rate(1.0 - np.array(trajectory), 1e-10, 1e-4)

    chi_one = chi1("tanh", fixed_point("tanh", sigma_w2, SIGMA_B2), sigma_w2)
    assert correlation_fixed_point("tanh", sigma_w2, SIGMA_B2) == 1.0
    assert chi_c("tanh", sigma_w2, SIGMA_B2) == chi_one
    assert abs(trajectory[-1] - 1.0) < 1e-9, f"the iterated map ends at {trajectory[-1]!r}"
    assert abs(chi_one / rate - 1.0) < 1e-4, (
        f"χ_c = χ₁ = {chi_one!r}, 1 − c_l contracts by {rate!r}"
    )


@pytest.mark.parametrize(
    ("sigma_w2", "sigma_b2"), [(1.0, 0.1), (1.9, 0.1), (2.0, 0.0), (3.0, 0.0), (1.5, 0.0)]
)
def test_relu_chi_c_is_the_arc_cosine_slope_at_c_star_one(sigma_w2, sigma_b2):
    # relu is never chaotic: c* = 1 and χ_c = σ_w² (π − arccos c*) / 2π = σ_w² / 2 = χ₁
    c_star = correlation_fixed_point("relu", sigma_w2, sigma_b2)
    assert c_star == 1.0
    expected = sigma_w2 * (math.pi - math.acos(c_star)) / (2.0 * math.pi)
    assert abs(chi_c("relu", sigma_w2, sigma_b2) - expected) < 1e-14


def test_tanh_without_bias_in_the_chaotic_phase_has_c_star_zero():
    # M(0) = σ_w² E[tanh]² / q* = 0: c* = 0 and χ_c = σ_w² E[tanh']² at q*
    sigma_w2 = 25.0 / 9.0  # kaiming's gain² for tanh
    q_star = ref_q_star(sigma_w2, 0.0)
    assert correlation_fixed_point("tanh", sigma_w2, 0.0) == 0.0
    expected = sigma_w2 * ref_mean(tanh_prime, q_star) ** 2
    assert abs(chi_c("tanh", sigma_w2, 0.0) - expected) < 1e-12


# --- ξ_q ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma_w2", [0.8, 1.76, 3.0])
def test_xi_q_matches_the_iterated_length_map(sigma_w2):
    q_star = ref_q_star(sigma_w2, SIGMA_B2)
    trajectory = [3.0 * q_star]
    for _ in range(60):
        trajectory.append(sigma_w2 * ref_mean(lambda h: np.tanh(h) ** 2, trajectory[-1]) + SIGMA_B2)
    rate = fitted_rate(np.array(trajectory) - q_star, 1e-11, 1e-5)
    xi_q = depth_scales("tanh", sigma_w2, SIGMA_B2).xi_q
    assert abs(xi_q * -math.log(rate) - 1.0) < 1e-4, f"ξ_q = {xi_q!r}, fit {-1 / math.log(rate)!r}"


@pytest.mark.parametrize("q", [0.05, 0.7, 4.0])
def test_length_map_slope_is_schoenholz_eq_9_and_the_finite_difference(q):
    sigma_w2 = 2.0
    # χ_q = χ₁ + σ_w² E[φ''(u)φ(u)], tanh'' = −2 tanh sech²
    eq_9 = sigma_w2 * ref_mean(
        lambda h: tanh_prime(h) ** 2 - 2.0 * np.tanh(h) ** 2 * tanh_prime(h), q
    )
    step = 1e-5  # in ln q
    upper, lower = (length_map("tanh", q * math.exp(s), sigma_w2, 0.0) for s in (step, -step))
    centred = (upper - lower) / (2.0 * step * q)
    slope = length_map_slope("tanh", q, sigma_w2)
    assert abs(slope - eq_9) < 1e-12, f"χ_q = {slope!r}, eq. 9 gives {eq_9!r}"
    assert abs(slope - centred) < 1e-10, f"χ_q = {slope!r}, centred difference {centred!r}"


# --- the critical line ----------------------------------------------------------------------------


def test_critical_sigma_w2_tanh_matches_schoenholz_and_makes_chi1_one():
    critical = critical_sigma_w2("tanh", SIGMA_B2)
    q_star = ref_q_star(critical, SIGMA_B2)
    chi_one = critical * ref_mean(lambda h: tanh_prime(h) ** 2, q_star)
    assert abs(critical - 1.76) < 0.01, f"critical σ_w² = {critical!r}, Schoenholz Fig. 1 ≈ 1.76"
    assert abs(chi_one - 1.0) < 1e-9, f"χ₁ = {chi_one!r} at σ_w² = {critical!r}"


def test_critical_sigma_w2_relu_and_tanh_without_bias():
    assert np.allclose(critical_sigma_w2("relu", [0.0, 0.3]), 2.0, rtol=1e-12, atol=0.0)
    assert critical_sigma_w2("tanh", 0.0) == 1.0
    sigma_b2 = np.array([0.01, 0.05, 0.3])
    critical = critical_sigma_w2("tanh", sigma_b2)
    assert critical.shape == (3,) and np.all(np.diff(critical) > 0), critical


def test_xi_c_diverges_at_the_critical_line_from_both_sides():
    critical = critical_sigma_w2("tanh", SIGMA_B2)
    offsets = np.array([1e-1, 1e-2, 1e-3, 1e-4])
    ordered = depth_scales("tanh", critical * (1.0 - offsets), SIGMA_B2)
    chaotic = depth_scales("tanh", critical * (1.0 + offsets), SIGMA_B2)
    for side, scales in (("ordered", ordered.xi_c), ("chaotic", chaotic.xi_c)):
        growth = scales[1:] / scales[:-1]
        # ξ_c ≈ 1 / |χ₁ − 1| ∝ 1 / offset near the line
        assert np.all(growth > 5.0), f"{side} ξ_c {scales} grows by {growth} per decade"
        assert abs(growth[-1] / 10.0 - 1.0) < 0.05, f"{side} ξ_c {scales} not ∝ 1/offset"
        assert scales[-1] > 1000.0
    # ξ_q stays finite across the line
    assert np.all(ordered.xi_q < 3.0) and np.all(chaotic.xi_q < 3.0)
    assert depth_scales("tanh", critical, SIGMA_B2).xi_c > 1e6


def test_depth_scales_broadcast_to_the_chi1_grid_layout():
    sigma_w2, sigma_b2 = np.array([0.5, 1.5, 2.5, 4.0]), np.array([0.0, 0.05, 0.3])
    grid = depth_scales("tanh", sigma_w2[None, :], sigma_b2[:, None])
    assert grid.xi_c.shape == grid.xi_q.shape == (3, 4)
    one = depth_scales("tanh", 2.5, 0.3)
    assert grid.xi_c[2, 2] == pytest.approx(one.xi_c, rel=1e-12)
    assert grid.xi_q[2, 2] == pytest.approx(one.xi_q, rel=1e-12)


# --- Monte-Carlo: two inputs through wide random tanh nets ----------------------------------------


@pytest.mark.parametrize(("sigma_w2", "c0"), [(1.2, 0.2), (4.0, 0.95)])
def test_wide_tanh_net_follows_the_correlation_map_layer_by_layer(sigma_w2, c0):
    # in 11 layers c rises from 0.2 to 0.86 (ordered) or falls from 0.95 to 0.63, on its way to
    # c* = 0.17 (chaotic). At width 512, averaged over 32 pairs, the measured c scatters by ~0.01
    # about the map (∝ 1/√width: ~0.005 at 2048)
    nets, width, depth, pairs = 4, 512, 12, 8
    gen = torch.Generator().manual_seed(0)
    # layer 0: pairs of Gaussian pre-activations with q = 1 and correlation c0
    z = torch.randn(nets, width, 2 * pairs, generator=gen, dtype=torch.float64)
    h = torch.cat([z[..., :pairs], c0 * z[..., :pairs] + math.sqrt(1 - c0**2) * z[..., pairs:]], -1)
    q_seen, c_seen = [], []
    for _ in range(depth):
        a, b = h[..., :pairs], h[..., pairs:]
        q_a, q_b = a.pow(2).mean(1), b.pow(2).mean(1)  # (nets, pairs)
        q_seen.append(((q_a + q_b) / 2).numpy())
        c_seen.append(((a * b).mean(1) / (q_a * q_b).sqrt()).numpy())
        weights = torch.randn(nets, width, width, generator=gen, dtype=torch.float64)
        bias = torch.randn(nets, width, 1, generator=gen, dtype=torch.float64)
        h = weights @ torch.tanh(h) * math.sqrt(sigma_w2 / width) + bias * math.sqrt(SIGMA_B2)
    q_seen, c_seen = np.array(q_seen), np.array(c_seen)  # (depth, nets, pairs)

    # each layer's correlation from the layer below's measured (q, c)
    predicted = np.asarray(correlation_map("tanh", c_seen[:-1], q_seen[:-1], sigma_w2, SIGMA_B2))
    step_error = np.abs((c_seen[1:] - predicted).mean(axis=(1, 2)))
    # the whole trajectory from layer 0's (q, c) = (1, c0)
    q, c, path = 1.0, c0, [c0]
    for _ in range(depth - 1):
        q, c = (
            length_map("tanh", q, sigma_w2, SIGMA_B2),
            correlation_map("tanh", c, q, sigma_w2, SIGMA_B2),
        )
        path.append(c)
    path_error = np.abs(c_seen.mean(axis=(1, 2)) - np.array(path))
    assert abs(path[-1] - c0) > 0.3, f"the map hardly moves c: {path}"
    assert step_error.max() < 0.03, f"layer-by-layer error {np.round(step_error, 4)}"
    assert path_error.max() < 0.04, f"trajectory error {np.round(path_error, 4)}"


# --- ProfilePrediction ----------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_predict_profiles_fills_the_depth_scales(activation):
    widths = [10, 32, 32, 32, 3]
    nets = [("default", None, 1.0), ("xavier_normal", None, 0.7), ("kaiming_normal", None, 1.3)]
    for net, prediction in zip(nets, predict_profiles(activation, widths, nets), strict=True):
        sigma_w2, sigma_b2 = init_variances(net[0], activation, 32, 32, net[1])
        q0 = prediction.q[0]
        scales = depth_scales(activation, sigma_w2, sigma_b2, q0)
        c_star = correlation_fixed_point(activation, sigma_w2, sigma_b2, q0)
        assert prediction.c_fixed_point == pytest.approx(c_star, rel=1e-12, abs=1e-15)
        assert prediction.chi_c == pytest.approx(
            chi_c(activation, sigma_w2, sigma_b2, q0), rel=1e-12
        )
        assert prediction.xi_c == pytest.approx(scales.xi_c, rel=1e-12)
        assert prediction.xi_q == pytest.approx(scales.xi_q, rel=1e-12)
        if prediction.c_fixed_point == 1.0:
            assert prediction.chi_c == prediction.chi1_fixed_point
            assert prediction.xi_c == prediction.depth_scale


def test_predict_profiles_without_a_prediction_leaves_nan():
    (lsuv,) = predict_profiles("tanh", [10, 32, 32, 3], [("lsuv", None, 1.0)])
    (residual,) = predict_residual_profiles(
        "relu", "preact", "none", 8, 32, 6, 3, [("kaiming_normal", None, 1.0, 1.0)]
    )
    for prediction in (lsuv, residual):
        assert prediction is not None
        values = [prediction.c_fixed_point, prediction.chi_c, prediction.xi_c, prediction.xi_q]
        assert np.all(np.isnan(values)), values
