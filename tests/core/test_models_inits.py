"""Every activation × init builds and trains; init variances match their formulas; LSUV works;
the stack's tanh is tanh."""

import math

import pytest
import torch

from gradlab.core.activations import ACTIVATIONS, FAST_TANH_MIN, get_activation, stacked_tanh
from gradlab.core.inits import INITS, initialize
from gradlab.core.models import MLP, NORM_LAYERS
from gradlab.core.residual import ResMLP


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("init", sorted(INITS))
@pytest.mark.parametrize("net", [MLP, ResMLP])
def test_every_activation_and_init_builds_and_steps(activation, init, net):
    if net is MLP and INITS[init].zero_init:
        pytest.skip("fixup is for residual nets (test_fixup_refuses_an_mlp)")
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 5, generator=generator), torch.randn(32, generator=generator)
    model = net(5, 1, depth=3, width=16, activation=activation, norm_layer="none")
    initialize(model, init, activation, 0.1, generator, data_batch=x)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    loss = torch.nn.functional.mse_loss(model(x).squeeze(-1), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss), f"{activation}/{init}: loss {loss}"
    moved = sum(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert moved > 0, f"{activation}/{init}: no parameter moved"


def test_fixup_refuses_an_mlp():
    model = MLP(5, 1, depth=3, width=16, activation="relu", norm_layer="none")
    with pytest.raises(ValueError, match="fixup.*ResMLP"):
        initialize(model, "fixup", "relu", 0.0, torch.Generator().manual_seed(0))


def test_fixup_zeroes_the_branches_and_the_head_and_draws_only_the_stem():
    generator = torch.Generator().manual_seed(0)
    model = ResMLP(5, 2, depth=3, width=16, activation="relu", norm_layer="none")
    initialize(model, "fixup", "relu", 0.0, generator)
    for layer in [*model.linears, model.head]:
        assert not layer.weight.any() and not layer.bias.any()
    # He's rule on the stem, N(0, 2 / fan_in), from the run's generator and nothing after it
    want = torch.empty(16, 5)
    torch.nn.init.normal_(want, 0.0, (2 / 5) ** 0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.inp.weight, want)
    assert not model.inp.bias.any()


@pytest.mark.parametrize("norm_layer", sorted(NORM_LAYERS))
def test_norm_layers_sit_where_named(norm_layer):
    model = MLP(4, 2, depth=2, width=8, activation="relu", norm_layer=norm_layer)
    pre = [type(m).__name__ for m in model.pre_norms]
    post = [type(m).__name__ for m in model.post_norms]
    expected = {
        "none": ("Identity", "Identity"),
        "batchnorm_pre": ("BatchNorm1d", "Identity"),
        "batchnorm_post": ("Identity", "BatchNorm1d"),
        "layernorm": ("LayerNorm", "Identity"),
    }[norm_layer]
    assert (pre[0], post[0]) == expected
    assert model(torch.randn(3, 4)).shape == (3, 2)


def _weight_variance(init: str, activation: str, fan_in: int, fan_out: int) -> float:
    layer = torch.nn.Linear(fan_in, fan_out)
    gain = get_activation(activation).gain
    INITS[init].draw(layer.weight, gain, 0.0, torch.Generator().manual_seed(0))
    return layer.weight.var().item()


@pytest.mark.parametrize("init", ["xavier_uniform", "xavier_normal"])
def test_xavier_variance_matches_glorot(init):
    fan_in, fan_out = 1024, 512
    expected = 2.0 / (fan_in + fan_out)
    measured = _weight_variance(init, "tanh", fan_in, fan_out)
    assert abs(measured / expected - 1) < 0.05, (
        f"Var {measured:.3e} vs 2/(fan_in+fan_out) {expected:.3e}"
    )


@pytest.mark.parametrize("init", ["kaiming_uniform", "kaiming_normal"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_kaiming_variance_matches_he(init, activation):
    fan_in = 1024
    expected = get_activation(activation).gain ** 2 / fan_in
    measured = _weight_variance(init, activation, fan_in, 512)
    assert abs(measured / expected - 1) < 0.05, f"Var {measured:.3e} vs gain²/fan_in {expected:.3e}"


def test_default_init_is_pytorch_standard():
    measured = _weight_variance("default", "tanh", 1024, 512)
    expected = 1.0 / (3 * 1024)
    assert abs(measured / expected - 1) < 0.05, f"fan_in·Var = {measured * 1024:.3f}, expected 1/3"


def test_lecun_and_normal_variances():
    assert abs(_weight_variance("lecun_normal", "selu", 1024, 512) * 1024 - 1) < 0.05
    layer = torch.nn.Linear(1024, 512)
    INITS["normal"].draw(layer.weight, math.sqrt(2), 0.01, torch.Generator().manual_seed(0))
    assert abs(layer.weight.std().item() / 0.01 - 1) < 0.05


def test_initialize_seeds_make_identical_weights():
    def weights(seed: int) -> list[torch.Tensor]:
        model = MLP(4, 1, depth=3, width=8, activation="tanh", norm_layer="none")
        initialize(model, "default", "tanh", 0.0, torch.Generator().manual_seed(seed))
        return [p.detach().clone() for p in model.parameters()]

    assert all(torch.equal(a, b) for a, b in zip(weights(3), weights(3), strict=True))
    assert not torch.equal(weights(3)[0], weights(4)[0])


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_lsuv_reaches_unit_output_variance(activation):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(512, 10, generator=generator) * 3 + 1
    model = MLP(10, 1, depth=6, width=64, activation=activation, norm_layer="none")
    initialize(model, "lsuv", activation, 0.0, generator, data_batch=x)
    outputs: list[torch.Tensor] = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: outputs.append(o)) for m in model.all_linears()
    ]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    variances = [o.var().item() for o in outputs]
    assert all(abs(v - 1) < 0.1 for v in variances), f"layer output variances {variances}"


def test_lsuv_without_data_names_what_is_missing():
    model = MLP(4, 1, depth=2, width=8, activation="tanh", norm_layer="none")
    with pytest.raises(ValueError, match="lsuv.*data batch"):
        initialize(model, "lsuv", "tanh", 0.0, torch.Generator())


def test_unknown_init_lists_choices():
    model = MLP(4, 1, depth=2, width=8, activation="tanh", norm_layer="none")
    with pytest.raises(ValueError, match=r"unknown init 'he'; expected one of \["):
        initialize(model, "he", "tanh", 0.0, torch.Generator())


@pytest.mark.parametrize("init", sorted(set(INITS) - {"lsuv"}))
@pytest.mark.parametrize(("fan_in", "fan_out"), [(1024, 512), (256, 1024)])
def test_each_init_draws_the_variances_it_states(init, fan_in, fan_out):
    # the registry entry's formula (what theory starts from) against its own draw
    layer = torch.nn.Linear(fan_in, fan_out)
    scheme = INITS[init]
    gain, std = get_activation("tanh").gain, 0.02
    scheme.draw(layer.weight, gain, std, torch.Generator().manual_seed(0))
    sigma_w2, sigma_b2 = scheme.variances(fan_in, fan_out, gain, std)
    measured = fan_in * layer.weight.double().pow(2).mean().item()
    assert abs(measured / sigma_w2 - 1) < 0.05, f"{init}: fan_in·E[W²] {measured} vs {sigma_w2}"
    assert sigma_b2 == (1 / (3 * fan_in) if init == "default" else 0.0)


def test_relu_gain_is_he():
    assert math.isclose(get_activation("relu").gain, math.sqrt(2))


def test_stacked_tanh_is_tanh_to_float32_rounding():
    # every magnitude from float32's subnormals (1e-38) to saturation, both signs
    magnitudes = torch.logspace(-38, 2, 100_000)
    special = torch.tensor([0.0, -0.0, math.inf, -math.inf, 1e-45, 9.0, 44.0, 89.0])
    h = torch.cat([magnitudes, -magnitudes, special]).requires_grad_()
    assert h.numel() >= FAST_TANH_MIN  # the expm1 path
    y = stacked_tanh(h)
    want = torch.tanh(h.detach().double())
    relative = (y.detach().double() - want).abs() / want.abs()
    assert relative[want != 0].max() < 2e-7
    assert torch.equal(y[want == 0], want[want == 0].float())  # ±0 keep their sign bit
    assert torch.equal(torch.signbit(y[want == 0]), torch.signbit(want[want == 0]))
    nan = stacked_tanh(torch.full((FAST_TANH_MIN,), math.nan))
    assert nan.isnan().all()  # a diverged net's NaN stays NaN

    grad = torch.linspace(-1, 1, h.numel())
    (got,) = torch.autograd.grad(y, h, grad)
    h_ref = h.detach().clone().requires_grad_()
    (expected,) = torch.autograd.grad(torch.tanh(h_ref), h_ref, grad)
    # (1 − y²)·grad: near saturation one ulp of y (6e-8 below 1) moves 1 − y² by 1.2e-7
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=3e-7)


def test_stacked_tanh_below_the_threshold_is_torch_tanh():
    h = torch.randn(FAST_TANH_MIN - 1)
    assert torch.equal(stacked_tanh(h), torch.tanh(h))
    assert torch.equal(stacked_tanh(h.double()), torch.tanh(h.double()))


def test_the_scalable_inits_are_kaiming_and_orthogonal():
    assert {name for name, init in INITS.items() if init.scalable} == {
        "kaiming_uniform",
        "kaiming_normal",
        "orthogonal",
    }


def test_orthogonal_with_a_gain_draws_sqrt_sigma_w2_times_an_orthogonal_matrix():
    # every layer draws with the gain: the first (tall), the hidden (square) and the head (wide)
    sigma_w2 = 1.7
    model = MLP(16, 8, depth=3, width=32, activation="tanh", norm_layer="none")
    initialize(
        model, "orthogonal", "tanh", 0.0, torch.Generator().manual_seed(0), gain=math.sqrt(sigma_w2)
    )
    for layer in model.all_linears():
        w = layer.weight.double()  # (fan_out, fan_in)
        gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
        eye = torch.eye(min(w.shape), dtype=torch.float64)
        torch.testing.assert_close(gram, sigma_w2 * eye, atol=1e-5, rtol=0)


@pytest.mark.parametrize("init", ["kaiming_normal", "kaiming_uniform"])
def test_kaiming_with_a_gain_draws_variance_sigma_w2_over_fan_in(init):
    sigma_w2 = 0.6  # below tanh's 25/9, so the registered gain would miss by far
    model = MLP(512, 4, depth=2, width=512, activation="tanh", norm_layer="none")
    initialize(model, init, "tanh", 0.0, torch.Generator().manual_seed(0), gain=sigma_w2**0.5)
    for layer in model.all_linears()[:-1]:
        measured = layer.in_features * layer.weight.double().var().item()
        assert abs(measured / sigma_w2 - 1) < 0.02, f"{init}: fan_in·Var[W] {measured}"


def test_a_gain_for_an_init_without_one_is_refused():
    model = MLP(4, 1, depth=2, width=8, activation="tanh", norm_layer="none")
    with pytest.raises(ValueError, match=r"init 'xavier_uniform' has no gain to replace; a gain "):
        initialize(model, "xavier_uniform", "tanh", 0.0, torch.Generator(), gain=1.0)
