"""Mean-field theory of the residual stream against a Monte-Carlo simulation, and its API."""

import functools
import math

import numpy as np
import pytest
import torch

from gradlab.core.residual import BRANCHES, RESIDUAL_NORMS
from gradlab.core.residual_theory import (
    BRANCH_MAPS,
    NORM_PREDICTIONS,
    predict_residual_profiles,
    relu_he_grad_ratio,
)

DEPTH, WIDTH, D_IN, D_OUT = 30, 256, 64, 8
# Most of the spread is from seed to seed (a net's weights), not within a batch: per seed,
# log10 sqrt(q) of ReLU preact α = 1 at the last layer scatters by 0.1 decade, so 16 seeds put
# the mean's scatter near 0.03 decade, a third of the tolerance.
SEEDS, BATCH = 16, 8
ALPHAS = (1.0, 1.0 / math.sqrt(DEPTH), 0.0)
INITS = ("xavier_normal", "kaiming_normal")
TOLERANCE_DECADES = 0.1


# --- the simulation: plain torch, nothing from gradlab ------------------------------------------

GAINS = {"relu": math.sqrt(2.0), "tanh": 5.0 / 3.0}  # torch.nn.init.calculate_gain
PHIS = {"relu": torch.relu, "tanh": torch.tanh}


def weight_std(init: str, activation: str, fan_in: int, fan_out: int) -> float:
    if init == "xavier_normal":
        return math.sqrt(2.0 / (fan_in + fan_out))
    return GAINS[activation] / math.sqrt(fan_in)  # kaiming_normal


@functools.cache
def simulate(activation: str, branch: str, norm: str) -> dict[tuple[str, float], tuple]:
    """E[x_l²], E[x_l], E[(∂L/∂x_l)²] and the last with ∂L/∂x_{L−1}'s component along x_{L−1}
    taken out, of stream layers 1 … L (x_0 … x_{L−1}) per (init, α), averaged over units, batch
    and seeds; ∂L/∂out is a standard normal vector.

    Every (init, α) pair runs on the same standard-normal draws (common random numbers): the
    inits differ by a scale per layer, applied to the matmul's output. Shapes: the stream is
    (S, C, B, n) for S seeds and C pairs; a layer's draws (S, fan_in, fan_out), shared by the pairs.
    """
    generator = torch.Generator().manual_seed(0)
    pairs = [(init, alpha) for init in INITS for alpha in ALPHAS]

    def linear(x: torch.Tensor, fan_in: int, fan_out: int) -> torch.Tensor:
        # float32 draws cost a third of float64's; the nets still compute in float64
        w = torch.randn(SEEDS, fan_in, fan_out, generator=generator).double()
        std = torch.tensor([weight_std(i, activation, fan_in, fan_out) for i, _ in pairs])
        y = (x.reshape(SEEDS, -1, fan_in) @ w).reshape(SEEDS, -1, BATCH, fan_out)
        return std.double()[:, None, None] * y  # (S, C, B, fan_out)

    phi = PHIS[activation]
    alpha = torch.tensor([a for _, a in pairs], dtype=torch.float64)[:, None, None]
    inputs = torch.randn(SEEDS, 1, BATCH, D_IN, generator=generator).double()
    stream = [linear(inputs, D_IN, WIDTH).requires_grad_()]  # no biases under these inits
    for _ in range(DEPTH):
        x = stream[-1]
        if branch == "preact":
            h = torch.nn.functional.layer_norm(x, (WIDTH,)) if norm == "layernorm" else x
            f = linear(phi(h), WIDTH, WIDTH)
        else:
            h = linear(x, WIDTH, WIDTH)
            f = phi(torch.nn.functional.layer_norm(h, (WIDTH,)) if norm == "layernorm" else h)
        stream.append(x + alpha * f)
    out = linear(stream[-1], WIDTH, D_OUT)
    cotangent = torch.randn(out.shape, generator=generator).double()
    grads = torch.autograd.grad(out, stream[:-1], cotangent, retain_graph=True)
    # the same, with the component along the stream x_{L−1} (per sample) taken out of ∂L/∂x_{L−1}
    direction = torch.nn.functional.normalize(stream[-2].detach(), dim=-1)
    last = grads[-1] - (grads[-1] * direction).sum(-1, keepdim=True) * direction
    projected = (*torch.autograd.grad(stream[-2], stream[:-2], last), last)
    # each (C, L): the mean over seeds, batch and units
    q, mean, g, g_projected = (
        torch.stack([v.detach().pow(p).mean(dim=(0, 2, 3)) for v in values], dim=-1).numpy()
        for values, p in ((stream[:-1], 2), (stream[:-1], 1), (grads, 2), (projected, 2))
    )
    return {pair: (q[c], mean[c], g[c], g_projected[c]) for c, pair in enumerate(pairs)}


def predict(activation, branch, norm, init, alpha):
    (prediction,) = predict_residual_profiles(
        activation, branch, norm, D_IN, WIDTH, DEPTH, D_OUT, [(init, None, 1.0, alpha)]
    )
    return prediction


def decades(predicted, simulated):
    """|log10(predicted / simulated)| per layer."""
    return np.abs(np.log10(predicted) - np.log10(simulated))


CASES = [
    (activation, branch, norm, init, alpha)
    for activation in ("relu", "tanh")
    for branch in ("preact", "postact")
    for norm in ("none", "layernorm")
    for init in INITS
    for alpha in ALPHAS
]
# ReLU postact without norm: its stream has a mean, so q grows faster than the gradient's
# 1 + α²χ per block; see test_relu_postact_gradient_excess_lies_along_the_stream.
OUTLIER_CASES = [c for c in CASES if c[:3] == ("relu", "postact", "none") and c[4] > 0.0]


@pytest.mark.parametrize(("activation", "branch", "norm", "init", "alpha"), CASES)
def test_predict_residual_profiles_signal_matches_monte_carlo(
    activation, branch, norm, init, alpha
):
    q_mc, mean_mc, _, _ = simulate(activation, branch, norm)[(init, alpha)]
    pred = predict(activation, branch, norm, init, alpha)
    dev = decades(np.sqrt(pred.q), np.sqrt(q_mc))
    worst = dev.argmax()
    assert dev[worst] <= TOLERANCE_DECADES, (
        f"sqrt(q) off by {dev[worst]:.3f} decades at stream layer {worst + 1}: "
        f"predicted {math.sqrt(pred.q[worst]):.4g}, simulated {math.sqrt(q_mc[worst]):.4g}"
    )
    # the mean (0 but for postact ReLU) within a tenth of the stream's RMS (measured: ≤ 0.05)
    off = np.abs(pred.mean - mean_mc) / np.sqrt(pred.q)
    worst = off.argmax()
    assert off[worst] <= 0.1, (
        f"stream mean off by {off[worst]:.3f} RMS at stream layer {worst + 1}: "
        f"predicted {pred.mean[worst]:.4g}, simulated {mean_mc[worst]:.4g}"
    )


@pytest.mark.parametrize(
    ("activation", "branch", "norm", "init", "alpha"), [c for c in CASES if c not in OUTLIER_CASES]
)
def test_predict_residual_profiles_gradient_matches_monte_carlo(
    activation, branch, norm, init, alpha
):
    _, _, g_mc, _ = simulate(activation, branch, norm)[(init, alpha)]
    pred = predict(activation, branch, norm, init, alpha)
    grad_mc = np.sqrt(g_mc / g_mc[-1])
    dev = decades(pred.grad_rms, grad_mc)
    worst = dev.argmax()
    assert dev[worst] <= TOLERANCE_DECADES, (
        f"grad_rms off by {dev[worst]:.3f} decades at stream layer {worst + 1}: "
        f"predicted {pred.grad_rms[worst]:.4g}, simulated {grad_mc[worst]:.4g}"
    )


@pytest.mark.parametrize(("activation", "branch", "norm", "init", "alpha"), OUTLIER_CASES)
def test_relu_postact_gradient_excess_lies_along_the_stream(activation, branch, norm, init, alpha):
    """Where the recursion misses, by one direction that the wide limit drops.

    A ReLU net without biases is 1-homogeneous, so the Jacobian from x_l to x_{L−1} maps x_l to
    x_{L−1}: along that direction ∂L/∂x grows like sqrt(q), not like the bulk's
    sqrt(Π(1 + α²χ)). Postact ReLU adds a mean to the stream and q grows faster (at α = 1 and He's
    init about 2.9 per block against 2), so the one direction's share of E[(∂L/∂x_l)²], 1/n at
    the top, reaches ~(2.9/2)^30 / 256 ≫ 1 at stream layer 1: at n = 256, L = 30, the measured
    ∂L/∂x_0 is 1.3-1.5 decades above the recursion at α = 1 (0.08-0.11 at α = 1/√L with He's init).
    Taking the component along x_{L−1} out of ∂L/∂x_{L−1} leaves the bulk, which the recursion
    predicts. In the wide limit at fixed depth the excess vanishes (it shrinks ~0.15 decade per
    doubling of n).
    """
    _, _, g_mc, g_bulk = simulate(activation, branch, norm)[(init, alpha)]
    pred = predict(activation, branch, norm, init, alpha)
    bulk = np.sqrt(g_bulk / g_bulk[-1])
    dev = decades(pred.grad_rms, bulk)
    assert dev.max() <= TOLERANCE_DECADES, (
        f"without the stream direction, grad_rms off by {dev.max():.3f} decades at stream layer "
        f"{dev.argmax() + 1}: predicted {pred.grad_rms[dev.argmax()]:.4g}, "
        f"simulated {bulk[dev.argmax()]:.4g}"
    )
    excess = np.log10(np.sqrt(g_mc / g_mc[-1])) - np.log10(pred.grad_rms)
    assert excess.min() >= -TOLERANCE_DECADES, f"simulated below the recursion: {excess.min():.3f}"
    if alpha == 1.0:
        assert excess[0] > 1.0, f"excess at stream layer 1 only {excess[0]:.3f} decades"


# --- closed forms and the API -------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.0, 0.5, 1.0 / math.sqrt(DEPTH), 0.0])
@pytest.mark.parametrize("init", ["kaiming_normal", "kaiming_uniform", "orthogonal"])
def test_predict_residual_profiles_relu_he_grows_by_one_plus_alpha_squared(init, alpha):
    (pred,) = predict_residual_profiles(
        "relu", "preact", "none", D_IN, WIDTH, DEPTH, D_OUT, [(init, None, 0.7, alpha)]
    )
    q_steps = pred.q[1:] / pred.q[:-1]
    grad_steps = (pred.grad_rms[:-1] / pred.grad_rms[1:]) ** 2
    for name, steps in (("q", q_steps), ("G", grad_steps)):
        err = np.abs(steps / (1.0 + alpha**2) - 1.0).max()
        assert err < 1e-12, f"{name} per block off 1 + α² = {1 + alpha**2} by {err:.2e} (relative)"
    # the stem: σ_w² = 2, or 2 d_in / n for an orthogonal d_in → n matrix's orthonormal rows
    q0 = 2.0 * 0.7 * (D_IN / WIDTH if init == "orthogonal" else 1.0)
    assert pred.q[0] == pytest.approx(q0, rel=1e-15), f"q_0 = {pred.q[0]}, expected {q0}"
    ratio = relu_he_grad_ratio(alpha, DEPTH)
    assert pred.first_last_ratio == pytest.approx(ratio, rel=1e-12), (
        f"first/last {pred.first_last_ratio} against (1 + α²)^((L−1)/2) = {ratio}"
    )


def test_predict_residual_profiles_relu_he_postact_gradient_grows_by_one_plus_alpha_squared():
    alpha = 0.5
    (pred,) = predict_residual_profiles(
        "relu", "postact", "none", D_IN, WIDTH, DEPTH, D_OUT, [("kaiming_normal", None, 1.0, alpha)]
    )
    grad_steps = (pred.grad_rms[:-1] / pred.grad_rms[1:]) ** 2
    assert np.abs(grad_steps / (1.0 + alpha**2) - 1.0).max() < 1e-12, grad_steps
    # relu of u ~ N(0, 2q): E[φ] = sqrt(q/π), E[φ²] = q; the stream's mean adds to q's growth
    q, m = pred.q[:-1], pred.mean[:-1]
    mean_step = m + alpha * np.sqrt(q / np.pi)
    q_step = (1.0 + alpha**2) * q + 2.0 * alpha * m * np.sqrt(q / np.pi)
    assert np.allclose(pred.mean[1:], mean_step, rtol=1e-12), (pred.mean[1:], mean_step)
    assert np.allclose(pred.q[1:], q_step, rtol=1e-12), (pred.q[1:], q_step)


def test_predict_residual_profiles_shapes_and_unpredicted_nets():
    nets = [
        ("kaiming_normal", None, 1.0, 1.0),
        ("lsuv", None, 1.0, 1.0),
        ("fixup", None, 1.0, 0.0),
        ("normal", 0.05, 2.0, 0.5),
        ("default", None, 1.0, 1.0),
        ("xavier_normal", None, math.nan, 1.0),
    ]
    preds = predict_residual_profiles("tanh", "postact", "layernorm", 5, 32, 7, 3, nets)
    assert [p is None for p in preds] == [False, True, True, False, False, True], preds
    for pred, net in zip(preds, nets, strict=True):
        if pred is None:
            continue
        for name in ("q", "chi1", "grad_rms", "mean"):
            assert getattr(pred, name).shape == (7,), f"{net}: {name} {getattr(pred, name).shape}"
        assert pred.grad_rms[-1] == 1.0, f"{net}: grad_rms not normalized at layer L"
        assert math.isnan(pred.q_fixed_point) and math.isnan(pred.depth_scale), net
        # the stack's prediction is each net's own
        (alone,) = predict_residual_profiles("tanh", "postact", "layernorm", 5, 32, 7, 3, [net])
        assert np.array_equal(alone.grad_rms, pred.grad_rms), f"{net}: stacked ≠ alone"
    for norm in ("batchnorm_pre", "batchnorm_post"):
        assert predict_residual_profiles("relu", "preact", norm, 5, 32, 7, 3, nets) == [None] * 6
    assert predict_residual_profiles("relu", "preact", "none", 5, 32, 7, 3, []) == []


@pytest.mark.parametrize(
    ("branch", "norm", "kind"),
    [("sandwich", "none", "residual_branch"), ("preact", "groupnorm", "norm_layer")],
)
def test_predict_residual_profiles_unknown_name_lists_choices(branch, norm, kind):
    with pytest.raises(ValueError, match=f"unknown {kind} .*expected one of"):
        predict_residual_profiles(
            "relu", branch, norm, 5, 32, 7, 3, [("kaiming_normal", None, 1, 1)]
        )


def test_the_theory_knows_every_branch_and_norm_a_residual_net_can_have():
    # its own tables (residual.py cannot import the theory: inits → residual → theory → inits)
    assert set(BRANCH_MAPS) == set(BRANCHES)
    assert set(RESIDUAL_NORMS) <= set(NORM_PREDICTIONS)
