"""The Jacobian spectrum measurement against independent computations."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from gradlab.core import spectrum
from gradlab.core.architectures import get_architecture
from gradlab.core.grid import RunSpec
from gradlab.core.inits import initialize
from gradlab.core.models import MLP, StackedNet
from gradlab.core.residual import ResMLP
from gradlab.core.schema import empty_table
from gradlab.core.train import RunOptions, train_group, train_run
from tests.helpers.training import SMALL, task

D_IN, D_OUT = 5, 3


def _nets(spec: RunSpec, replicas: int) -> list[nn.Module]:
    arch = get_architecture(spec.arch)
    nets = []
    for seed in range(replicas):
        net = arch.build(D_IN, D_OUT, spec)
        initialize(net, spec.init, spec.activation, 0.0, torch.Generator().manual_seed(seed))
        nets.append(net)
    return nets


def _stacked(spec: RunSpec, nets: list[nn.Module]) -> StackedNet:
    return get_architecture(spec.arch).stacked(nets, spec.activation, spec.norm_layer)


def _reference_jacobian(net: nn.Module, point: torch.Tensor) -> torch.Tensor:
    """∂x_L/∂x_1 (MLP) or ∂x_L/∂x_0 (residual) of one plain ``nn.Module`` by ``jacrev``."""
    net = net.double()
    if isinstance(net, MLP):
        blocks = list(zip(net.linears, net.pre_norms, net.acts, net.post_norms, strict=True))

        def block(x: torch.Tensor, i: int) -> torch.Tensor:
            linear, pre, act, post = blocks[i]
            return post(act(pre(linear(x))))

        start = block(point, 0)
        rest = range(1, len(blocks))
    else:
        assert isinstance(net, ResMLP)
        start = net.inp(point)
        rest = range(len(net.linears))

        def block(x: torch.Tensor, i: int) -> torch.Tensor:
            layer, norm, act = net.linears[i], net.norms[i], net.acts[i]
            branch = layer(act(norm(x))) if net.branch == "preact" else act(norm(layer(x)))
            return x + net.alpha[i] * branch

    def body(x: torch.Tensor) -> torch.Tensor:
        for i in rest:
            x = block(x, i)
        return x

    with torch.no_grad():
        start = start.detach()
    return torch.func.jacrev(body)(start).detach()


CASES = [
    {"activation": "tanh", "init": "orthogonal", "depth": 6},
    {"activation": "relu", "init": "kaiming_normal", "depth": 5},
    {"activation": "gelu", "init": "xavier_uniform", "depth": 4, "norm_layer": "layernorm"},
    {"activation": "relu", "init": "kaiming_normal", "depth": 4, "arch": "resmlp"},
    {
        "activation": "tanh",
        "init": "xavier_normal",
        "depth": 3,
        "arch": "resmlp",
        "residual_branch": "postact",
        "norm_layer": "layernorm",
        "residual_scale": "0.5",
    },
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_the_stacked_jacobian_is_each_replicas_jacrev(case):
    spec = RunSpec(width=12, **case)
    nets = _nets(spec, replicas=3)
    stacked = _stacked(spec, nets)
    points = torch.randn(3, 2, D_IN, generator=torch.Generator().manual_seed(1))
    arch = get_architecture(spec.arch)
    measured = spectrum.jacobians(stacked, points, arch.stream)
    assert measured.shape == (3, 2, 12, 12)
    for k, net in enumerate(nets):
        for p in range(2):
            expected = _reference_jacobian(net, points[k, p].double())
            torch.testing.assert_close(measured[k, p], expected, rtol=1e-10, atol=1e-12)
            s_measured = torch.linalg.svdvals(measured[k, p])
            s_expected = torch.linalg.svdvals(expected)
            assert torch.allclose(s_measured, s_expected, rtol=1e-4)


def test_chunks_of_replicas_give_the_same_jacobians(monkeypatch):
    spec = RunSpec(width=8, depth=3, activation="tanh", init="orthogonal")
    stacked = _stacked(spec, _nets(spec, replicas=5))
    points = torch.randn(5, 3, D_IN, generator=torch.Generator().manual_seed(2))
    whole = spectrum.jacobians(stacked, points, stream=False)
    monkeypatch.setattr(spectrum, "_MAX_ELEMENTS", 8 * 8 * 4 * 2)  # two pairs a pass
    assert torch.equal(spectrum.jacobians(stacked, points, stream=False), whole)


def test_a_linear_nets_spectrum_is_the_product_of_its_weights_singular_values():
    # identity activation, depth 3: J = W_3 W_2. With W_2 = U diag(a) Vᵀ and W_3 = Q diag(b) Uᵀ
    # the singular values multiply; for any weights the determinants do.
    width = 6
    spec = RunSpec(width=width, depth=3, activation="identity", init="xavier_normal")
    generator = torch.Generator().manual_seed(3)
    u, v, q = (torch.linalg.qr(torch.randn(width, width, generator=generator))[0] for _ in "uvq")
    a = torch.tensor([3.0, 2.0, 1.5, 1.0, 0.5, 0.1])
    b = torch.tensor([0.2, 1.0, 4.0, 0.3, 2.0, 10.0])
    aligned, generic = _nets(spec, replicas=2)
    with torch.no_grad():
        aligned.linears[1].weight.copy_(u @ torch.diag(a) @ v.T)  # nn.Linear: out × in
        aligned.linears[2].weight.copy_(q @ torch.diag(b) @ u.T)
    points = torch.randn(2, 1, D_IN, generator=generator)
    jac = spectrum.jacobians(_stacked(spec, [aligned, generic]), points, stream=False)
    s = torch.linalg.svdvals(jac[0, 0])
    expected = torch.sort((a * b).double(), descending=True).values
    torch.testing.assert_close(s, expected, rtol=1e-5, atol=0)
    weights = [generic.linears[i].weight.double() for i in (1, 2)]
    log_product = sum(torch.linalg.svdvals(w).log().sum() for w in weights)
    torch.testing.assert_close(torch.linalg.svdvals(jac[1, 0]).log().sum(), log_product)


def test_statistics_and_sample_of_a_known_spectrum():
    s = torch.tensor([20.0, 5.0, 1.0, 0.5, 0.05, 0.0], dtype=torch.float64)
    jacobian = torch.diag(s)[None]
    stats, sample = spectrum.spectrum_statistics(jacobian, sample_size=3)
    by_name = dict(zip(spectrum.STATISTICS, stats[0].tolist(), strict=True))
    assert by_name["mean_s2"] == pytest.approx(float(s.square().mean()))
    assert by_name["var_s2"] == pytest.approx(float(s.square().var(unbiased=False)))
    assert (by_name["s_max"], by_name["s_min"]) == (20.0, 0.0)
    assert by_name["frac_well_conditioned"] == pytest.approx(3 / 6)  # 5, 1, 0.5
    # order statistics at (i + ½)·n/m = 1, 3, 5 of the ascending values
    assert sample[0].tolist() == pytest.approx([math.log10(0.05), 0.0, math.log10(20.0)])
    _, whole = spectrum.spectrum_statistics(jacobian, sample_size=64)
    assert whole.shape == (1, 6)  # every value when the sample would be larger
    assert -330 < whole[0, 0] < -300  # a zero singular value stays finite, far below the rest


def test_the_log_keeps_one_row_per_point_and_statistic():
    log = spectrum.SpectrumLog()
    assert all(math.isnan(v) for v in log.at_init().values())
    assert log.table().dtypes.to_dict() == empty_table("spectrum").dtypes.to_dict()
    stats = np.arange(10.0).reshape(2, 5)
    log.add("init", 0, stats, np.full((2, 3), -1.0))
    log.add("train", 40, stats + 1, np.ones((2, 3)))
    table = log.table()
    assert table.dtypes.to_dict() == empty_table("spectrum").dtypes.to_dict()
    assert len(table) == 2 * 2 * (5 + 3)
    assert table["statistic"][:8].tolist() == [*spectrum.STATISTICS, *[spectrum.SAMPLE] * 3]
    assert table.iloc[16][["phase", "step", "point"]].tolist() == ["train", 40, 0]
    assert table.iloc[24][["phase", "step", "point", "value"]].tolist() == ["train", 40, 1, 6.0]
    assert table.iloc[13]["value"] == -1.0  # init, point 1's first sample value
    assert log.at_init() == dict(zip(spectrum.STATISTICS, [2.5, 3.5, 4.5, 5.5, 6.5], strict=True))


def test_batchnorm_nets_are_not_measured():
    assert spectrum.measurable("none") and spectrum.measurable("layernorm")
    assert not spectrum.measurable("batchnorm_pre")
    assert not spectrum.measurable("batchnorm_post")


# --- in the engine ---------------------------------------------------------------------------

ENGINE_RUNS = [
    {"activation": "tanh", "init": "orthogonal", "seed": 0},
    {"activation": "tanh", "init": "xavier_normal", "seed": 1, "lr": 0.02},
    {"activation": "tanh", "init": "kaiming_uniform", "seed": 2},
]
POINTS = 3


def _init_model(spec: RunSpec, data) -> tuple[nn.Module, torch.Tensor]:
    """Run ``spec``'s net as initialized and its probe batch, drawn as a lone run draws them."""
    generator = torch.Generator().manual_seed(spec.seed)
    rows = torch.randperm(len(data.x_train), generator=generator)[:256]
    net = get_architecture(spec.arch).build(data.x_train.shape[1], data.n_outputs, spec)
    initialize(net, spec.init, spec.activation, 0.0, generator, data.x_train[rows])
    return net, rows


def _spectrum_rows(result, phase: str) -> pd.DataFrame:
    table = result.spectrum
    return table[table["phase"] == phase].reset_index(drop=True)


def test_each_run_measures_its_own_nets_spectrum_at_its_probe_inputs():
    data = task("poly")
    specs = [RunSpec(**{**SMALL, **run}) for run in ENGINE_RUNS]
    options = RunOptions(spectrum_points=POINTS)
    for spec, result in zip(specs, train_group(specs, data, options), strict=True):
        net, rows = _init_model(spec, data)
        at_init = _spectrum_rows(result, "init")
        assert set(at_init["point"]) == set(range(POINTS))
        for point in range(POINTS):
            jac = _reference_jacobian(net, data.x_train[rows[point]].double())
            s = torch.linalg.svdvals(jac)
            mine = at_init[at_init["point"] == point].groupby("statistic", sort=False)["value"]
            assert mine.first()["s_max"] == pytest.approx(float(s[0]), rel=1e-6)
            assert mine.first()["s_min"] == pytest.approx(float(s[-1]), rel=1e-6)
            assert mine.first()["mean_s2"] == pytest.approx(float(s.square().mean()), rel=1e-6)
            sample = at_init[(at_init["point"] == point) & (at_init["statistic"] == "log10_s")]
            assert len(sample) == SMALL["width"]  # every value: the width is below the sample size
            np.testing.assert_allclose(
                np.sort(sample["value"]), np.sort(s.log10().numpy()), rtol=1e-6
            )
        means = at_init.pivot_table("value", "point", "statistic").mean()
        for name in spectrum.STATISTICS:
            assert result.summary[f"jacobian_{name}"] == pytest.approx(means[name])


def test_a_stack_measures_what_lone_runs_measure_and_checkpoints_when_asked():
    data = task("poly")
    specs = [RunSpec(**{**SMALL, **run}) for run in ENGINE_RUNS]
    options = RunOptions(spectrum_points=POINTS, spectrum_checkpoints=True)
    stacked = train_group(specs, data, options)
    for spec, result in zip(specs, stacked, strict=True):
        alone = train_run(spec, data, options)
        pd.testing.assert_frame_equal(
            _spectrum_rows(result, "init"), _spectrum_rows(alone, "init"), rtol=1e-9
        )
        # trained weights agree to float32 rounding, so their spectra nearly do
        pd.testing.assert_frame_equal(
            _spectrum_rows(result, "train"), _spectrum_rows(alone, "train"), rtol=1e-3
        )
        steps = set(_spectrum_rows(result, "train")["step"])
        assert steps and 0 not in steps  # step 0's weights are init's: measured once
        probed = set(result.distributions.query("phase == 'train'")["step"])
        assert steps == probed - {0}


def test_no_spectrum_without_points_or_with_batchnorm():
    data = task("poly")
    spec = RunSpec(**SMALL)
    (off,) = train_group([spec], data, RunOptions(spectrum_points=0))
    assert off.spectrum.empty and math.isnan(off.summary["jacobian_mean_s2"])
    batchnorm = RunSpec(**SMALL, norm_layer="batchnorm_pre")
    (result,) = train_group([batchnorm], data, RunOptions(spectrum_points=POINTS))
    assert result.status == "finished" and result.spectrum.empty
    (on,) = train_group([spec], data, RunOptions(spectrum_points=POINTS))
    assert not on.spectrum.empty
    torch.testing.assert_close(on.state_dict, off.state_dict, rtol=0, atol=0)  # measuring is inert
