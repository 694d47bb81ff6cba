"""Probes measure what they claim, leave no hooks, and show the textbook effects at init."""

import numpy as np
import pytest
import torch

from gradlab.core import probes
from gradlab.core.activations import get_activation
from gradlab.core.inits import initialize
from gradlab.core.models import MLP


# noqa reason: a net's every knob, as the tests vary them
def _net(  # noqa: PLR0913, PLR0917
    activation: str, init: str, depth: int, width: int, seed: int, std: float = 0.0
):
    generator = torch.Generator().manual_seed(seed)
    model = MLP(16, 1, depth=depth, width=width, activation=activation, norm_layer="none")
    initialize(model, init, activation, std, generator)
    x = torch.randn(256, 16, generator=generator)
    y = torch.randn(256, generator=generator)
    return model, x, y


def _probe(model: MLP, x: torch.Tensor, y: torch.Tensor, activation: str) -> dict[str, np.ndarray]:
    with probes.capture(model.acts) as cap:
        loss = torch.nn.functional.mse_loss(model(x).squeeze(-1), y)
        loss.backward()
    stats = probes.hidden_stats(cap, get_activation(activation), probes.Workspace())
    return {name: values.numpy()[0] for name, values in stats.items()}  # replica 0 of 1


def test_capture_grad_equals_autograd_of_retained_preactivation():
    model, x, y = _net("tanh", "xavier_uniform", depth=4, width=12, seed=0)
    kept: list[torch.Tensor] = []
    handles = [a.register_forward_hook(lambda m, i, o: kept.append(i[0])) for a in model.acts]
    loss = torch.nn.functional.mse_loss(model(x).squeeze(-1), y)
    expected = torch.autograd.grad(loss, kept)
    for handle in handles:
        handle.remove()
    with probes.capture(model.acts) as cap:
        torch.nn.functional.mse_loss(model(x).squeeze(-1), y).backward()
    for layer, (got, want) in enumerate(zip(cap.grads, expected, strict=True), start=1):
        assert torch.allclose(got, want, atol=1e-7), (
            f"layer {layer}: max |Δ| {(got - want).abs().max()}"
        )


def test_capture_leaves_no_hooks():
    model, x, y = _net("relu", "default", depth=3, width=8, seed=0)
    with probes.capture(model.acts):
        model(x)
    assert all(not act._forward_hooks for act in model.acts)
    with pytest.raises(RuntimeError), probes.capture(model.acts):
        raise RuntimeError("a failing step must still remove the hooks")
    assert all(not act._forward_hooks for act in model.acts)


def _mean_rms_profile(activation: str, init: str, depth: int = 24, seeds: int = 3) -> np.ndarray:
    profiles = []
    for seed in range(seeds):
        model, x, y = _net(activation, init, depth=depth, width=256, seed=seed)
        profiles.append(np.log(_probe(model, x, y, activation)["grad_preact_rms"]))
    return np.mean(profiles, axis=0)


def test_relu_he_init_keeps_backprop_gradient_level():
    log_rms = _mean_rms_profile("relu", "kaiming_normal")
    ratio = float(np.exp(log_rms[0] - log_rms[-1]))
    assert 0.5 < ratio < 2.0, f"first/last ∂L/∂h RMS {ratio:.3f}, expected within a factor 2"


def test_relu_default_init_shrinks_backprop_gradient_geometrically():
    log_rms = _mean_rms_profile("relu", "default")
    layers = np.arange(1, len(log_rms) + 1)
    slope, intercept = np.polyfit(layers, log_rms, 1)
    residual = log_rms - (slope * layers + intercept)
    r2 = 1 - residual.var() / log_rms.var()
    # theory: each layer back multiplies E[(∂L/∂h)²] by χ₁ = σ_w²/2 = 1/6, i.e. ln RMS by ln(6)/2
    assert slope > 0.8, f"log-slope {slope:.3f} per layer, expected ≈ {np.log(6) / 2:.3f}"
    assert r2 > 0.99, f"ln RMS vs layer should be a straight line: R² {r2:.4f}"
    assert np.exp(log_rms[0] - log_rms[-1]) < 1e-6


def test_sigmoid_saturation_rises_with_large_normal_init():
    saturation = {}
    for std in (0.1, 2.0):
        model, x, y = _net("sigmoid", "normal", depth=6, width=64, seed=0, std=std)
        saturation[std] = _probe(model, x, y, "sigmoid")["act_saturation"].mean()
    assert saturation[0.1] < 0.01, saturation
    assert saturation[2.0] > 0.5, saturation


def test_relu_dead_fraction_rises_with_negative_bias():
    dead = {}
    for bias in (0.0, -3.0):
        model, x, y = _net("relu", "kaiming_normal", depth=4, width=64, seed=0)
        with torch.no_grad():
            for layer in model.linears:
                layer.bias.fill_(bias)
        dead[bias] = _probe(model, x, y, "relu")["act_dead_frac"].mean()
    assert dead[0.0] < 0.05 and dead[-3.0] > 0.5, dead


# each activation's flat region, as the probes' docs state it (strict inequalities)
SATURATED = {
    "sigmoid": lambda h, a: (a < 0.01) | (a > 0.99),
    "tanh": lambda h, a: a.abs() > 0.99,
    "softsign": lambda h, a: a.abs() > 0.9,
    "elu": lambda h, a: a < -0.99,
    "selu": lambda h, a: h < -4.6,
}


@pytest.mark.parametrize("activation", sorted(SATURATED))
def test_saturation_rules_mark_the_flat_region_exactly(activation):
    h = torch.cat([torch.linspace(-12, 12, 20_001), torch.tensor([float("nan")])])
    a = get_activation(activation).module()(h)
    # the thresholds themselves, on both sides of every region's edge
    edges = torch.tensor([0.01, 0.99, -0.99, 0.9, -0.9, -4.6])
    a = torch.cat([a, edges, torch.nextafter(edges, edges + 1), torch.nextafter(edges, edges - 1)])
    h = torch.cat([h, edges, torch.nextafter(edges, edges + 1), torch.nextafter(edges, edges - 1)])
    mask = get_activation(activation).saturated(h, a, torch.empty_like(h))
    assert mask.dtype == h.dtype
    assert torch.equal(mask, SATURATED[activation](h, a).to(h.dtype))
    assert 0 < mask.sum() < len(mask)


def test_dead_units_are_those_never_positive():
    # (replica, layer, batch, width): unit 0 never positive, unit 1 positive once, unit 2 NaN,
    # unit 3 positive once but NaN for another input (a diverged step: not active)
    h = torch.full((1, 1, 4, 4), -1.0)
    h[0, 0, 2, 1] = 1e-30
    h[0, 0, :, 2] = float("nan")
    h[0, 0, 0, 3], h[0, 0, 1, 3] = 5.0, float("nan")
    cap = probes.Capture([h.view(1, 4, 4)], [h.view(1, 4, 4).relu()], [torch.ones(1, 4, 4)])
    stats = probes.hidden_stats(cap, get_activation("relu"), probes.Workspace())
    dead = stats["act_dead_frac"][0, 0]
    assert dead.item() == pytest.approx(3 / 4)


def test_tanh_has_no_dead_fraction_and_relu_no_saturation():
    model, x, y = _net("tanh", "xavier_uniform", depth=2, width=8, seed=0)
    assert np.isnan(_probe(model, x, y, "tanh")["act_dead_frac"]).all()
    model, x, y = _net("relu", "xavier_uniform", depth=2, width=8, seed=0)
    assert np.isnan(_probe(model, x, y, "relu")["act_saturation"]).all()


@pytest.mark.parametrize("replica", [0, 1])
def test_weight_grad_stats_match_direct_computation(replica):
    generator = torch.Generator().manual_seed(0)
    # two replicas of three layers, two of one shape: each replica's stats are its own
    grads = [torch.randn(2, 8, 5, generator=generator), torch.randn(2, 64, 64, generator=generator)]
    grads[1][replica, 0, :40] = 0.0
    grads.append(torch.randn(2, 64, 64, generator=generator) * (1 + replica))
    named = probes.weight_grad_stats(grads)
    stats = torch.stack([values[replica] for values in named.values()], -1)  # (layers, 8)
    assert list(named)[:4] == ["grad_weight_norm", "grad_weight_mean", "grad_weight_std"] + [
        "grad_weight_absmax"
    ]
    for i, g in enumerate(g[replica] for g in grads):
        magnitude = g.abs().flatten()
        exact = [g.norm(), g.mean(), g.std(correction=0), magnitude.max()]
        got = stats[i, :4]
        assert torch.allclose(got, torch.stack(exact), atol=1e-5), f"layer {i}: {got} vs {exact}"
        # quantiles are nearest-rank order statistics of a fixed subset of QUANTILE_SAMPLE entries
        subset = magnitude[probes._subset(magnitude.numel(), magnitude.device)]
        ranks = [round(level * (probes.QUANTILE_SAMPLE - 1)) + 1 for level in (0.05, 0.5, 0.95)]
        exact_on_subset = torch.stack([subset.kthvalue(k).values for k in ranks])
        assert torch.equal(stats[i, 4:7], exact_on_subset), f"layer {i}"
        # and estimate the whole layer's: within 4 standard errors of a 512-entry estimate
        quantiles = torch.quantile(magnitude, torch.tensor([0.05, 0.5, 0.95]))
        # relative error for the median and q95; q05 sits near 0, so against the median's scale
        error = (stats[i, 4:7] - quantiles).abs() / quantiles[[1, 1, 2]]
        assert (error < 0.2).all(), f"layer {i}: {stats[i, 4:7]} vs {quantiles}"
        assert (stats[i, 4:7].diff() >= 0).all()
        zero = (g == 0).float().mean()
        assert abs(stats[i, 7] - zero) < 0.05, f"layer {i}: zero fraction {stats[i, 7]} vs {zero}"


def test_update_ratio_is_relative_step_size():
    before = [torch.ones(2, 3, 3), torch.full((2, 2), 2.0)]  # two replicas, two layers
    after = [torch.ones(2, 3, 3) * torch.tensor([1.1, 1.5])[:, None, None], before[1].clone()]
    after[1][1] = 3.0
    ratios = probes.update_ratios(before, after)
    assert torch.allclose(ratios, torch.tensor([[0.1, 0.0], [0.5, 0.5]]), atol=1e-6), ratios


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "softsign", "elu", "selu"])
def test_saturation_is_where_the_slope_is_below_two_hundredths(name):
    # what the registry promises of its saturation rules: φ' < 0.02 wherever they mark
    activation = get_activation(name)
    h = torch.linspace(-12, 12, 24_001, requires_grad=True)
    a = activation.module()(h)
    (slope,) = torch.autograd.grad(a.sum(), h)
    marked = activation.saturated(h.detach(), a.detach(), torch.empty_like(h)).bool()
    assert marked.any()
    assert slope[marked].abs().max() < 0.02, f"{name}: slope up to {slope[marked].abs().max()}"
