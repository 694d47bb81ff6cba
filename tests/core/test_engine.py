"""The stacked engine gives every replica the numbers an independent one-run loop gets.

The oracle is ``tests.helpers.solo_reference.train_alone``: a plain ``torch.nn`` +
``torch.optim`` loop that imports nothing of the engine and computes each probe statistic as the
quantity registry (``gradlab.core.quantities``) defines it. Per run, status, diverged step and
steps taken must be equal; every history metric, every layer_stats quantity (phases init and
train), and every final weight tensor must agree to 1e-4 relative, in norm: float32 sums in
another order differ in the last bits, not bitwise. The engine's phase ``theory`` rows must be
the mean-field prediction of that run's own probe batch.
"""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from gradlab.core import activations, bn_theory, theory
from gradlab.core.config import parse_data, parse_grid
from gradlab.core.grid import RunSpec, expand, specs_from_table
from gradlab.core.train import GROUP_AXES, RunOptions, RunResult, group_runs, train_group
from tests.helpers.comparison import assert_states_match, assert_tables_match
from tests.helpers.solo_reference import SoloRun, train_alone, weight_gain
from tests.helpers.training import SMALL, task

REPO = Path(__file__).resolve().parents[2]


def theory_rows(spec: RunSpec, data, q_in: float) -> pd.DataFrame:
    """The mean-field prediction of one run from its probe batch's mean squared input, as the
    rows of phase ``theory`` (BatchNorm before φ: Yang et al.'s growth; none with another
    normalization layer or LSUV: no a-priori profile)."""
    rows = []
    p = None
    if spec.norm_layer == "batchnorm_pre":  # BatchNorm's growth at the probe batch's size
        p = bn_theory.predict_bn_profile(spec.activation, spec.depth, min(256, len(data.x_train)))
    elif spec.norm_layer == "none" and spec.init != "lsuv":
        widths = [data.x_train.shape[1], *[spec.width] * spec.depth, data.n_outputs]
        bias = None if spec.bias_std is None else spec.bias_std**2
        p = theory.predict_profile(
            spec.activation,
            spec.init,
            widths,
            q_in,
            std=spec.init_std,
            sigma_b2=bias,
            # the oracle's own σ_w², 'critical' solved on its own
            gain=None if spec.sigma_w2 is None else weight_gain(spec),
        )
    if p is not None:
        for quantity, values in [
            ("grad_preact_rms", p.grad_rms),
            ("preact_std", np.sqrt(p.q)),
            ("chi1", p.chi1),
        ]:
            rows += [("theory", 0, layer, quantity, v) for layer, v in enumerate(values, 1)]
    return pd.DataFrame(rows, columns=["phase", "step", "layer", "quantity", "value"])


def assert_matches_oracle(got: RunResult, spec: RunSpec, data, rtol: float = 1e-4) -> SoloRun:
    """``got`` is what ``train_alone(spec, data)`` gets, to float rounding."""
    want = train_alone(spec, data)
    label = f"{spec.label} ({got.run_id})"
    assert got.run_id == spec.run_id
    assert (got.status, got.summary["diverged_step"], got.summary["steps"]) == (
        want.status,
        want.diverged_step,
        want.steps,
    ), label
    assert len(want.losses) == want.steps
    assert_tables_match(got.history, want.history, ["epoch", "metric"], f"{label} history", rtol)
    stats = got.layer_stats
    theory_phase = stats["phase"].astype(str) == "theory"
    keys = ["phase", "step", "layer", "quantity"]
    assert_tables_match(stats[~theory_phase], want.layer_stats, keys, f"{label} probes", rtol)
    predicted = theory_rows(spec, data, want.probe_q_in)
    if predicted.empty:
        assert not theory_phase.any(), label
    else:
        assert_tables_match(stats[theory_phase], predicted, keys, f"{label} theory", rtol)
    assert_states_match(got.state_dict, want.state_dict, label, rtol)
    return want


def smoke_specs() -> tuple[list[RunSpec], dict]:
    conf = REPO / "conf" / "smoke"
    data = parse_data(yaml.safe_load((conf / "parameters_data.yml").read_text())["data"])
    grid = parse_grid(yaml.safe_load((conf / "parameters_grid.yml").read_text())["grid"], data)
    return specs_from_table(expand(grid.baseline, grid.studies, grid.seeds)), data.datasets


def test_every_smoke_group_matches_its_solo_runs():
    specs, datasets = smoke_specs()
    # the smoke grid's residual net: tests/core/test_residual_engine.py compares every residual
    # variant with the oracle, its stream and theory rows included
    specs = [spec for spec in specs if spec.arch == "mlp"]
    assert len(specs) >= 6
    tasks = {}
    for group in group_runs(specs, max_replicas=16):
        key = group[0].dataset, group[0].input_norm
        if key not in tasks:
            tasks[key] = task(key[0], datasets[key[0]]["n_samples"], key[1])
        for spec, result in zip(group, train_group(group, tasks[key]), strict=True):
            assert_matches_oracle(result, spec, tasks[key])


# replicas that differ in everything a group allows: seed, init, lr, schedule, wd, clip, epochs
MIXED = [
    {"init": "xavier_uniform", "lr": 0.05, "seed": 0},
    {"init": "kaiming_normal", "lr": 0.02, "seed": 1, "schedule": "cosine"},
    {"init": "normal", "init_std": 0.5, "lr": 0.01, "schedule": "one_cycle", "clip": 0.5},
    {"init": "orthogonal", "lr": 0.03, "weight_decay": 1e-3, "schedule": "warmup_cosine"},
    {"init": "lsuv", "lr": 0.01, "epochs": 1, "schedule": "step"},
    {"init": "default", "lr": 0.05, "seed": 2, "schedule": "exponential", "epochs": 3},
]


# Not Adam with batchnorm_pre: the gradient of a bias right before BatchNorm is zero but for
# float rounding, and Adam divides by its RMS, so that rounding noise becomes lr-sized steps that
# two correct implementations take differently (train losses agree; eval-mode outputs do not).
# The sgd group probes every step, so each step's loss and statistics are compared.
@pytest.mark.parametrize(
    "shape",
    [
        {"optimizer": "sgd", "log_every": 1},
        {"optimizer": "nesterov", "activation": "relu", "norm_layer": "batchnorm_pre"},
        {"optimizer": "adam", "activation": "tanh", "norm_layer": "batchnorm_post"},
        {"optimizer": "momentum", "activation": "gelu", "norm_layer": "batchnorm_post"},
        {"optimizer": "rmsprop", "activation": "sigmoid", "norm_layer": "layernorm"},
        {"optimizer": "adamw", "dataset": "blobs", "activation": "elu"},
    ],
    ids=lambda shape: "-".join(str(value) for value in shape.values()),
)
def test_mixed_group_matches_solo_runs(shape):
    # adaptive optimizers at SGD's learning rates amplify rounding into chaos: a tenth of them
    scale = 0.1 if shape["optimizer"] in {"adam", "adamw", "rmsprop"} else 1.0
    specs = [
        RunSpec(**{**SMALL, **shape, **replica, "lr": replica["lr"] * scale}) for replica in MIXED
    ]
    data = task(shape.get("dataset", "poly"))
    results = train_group(specs, data)
    assert [r.status for r in results].count("finished") >= 5
    for spec, result in zip(specs, results, strict=True):
        assert_matches_oracle(result, spec, data)


# the activations, inits and optimizer the groups above leave out, two replicas a group
@pytest.mark.parametrize(
    "shape, replicas",
    [
        (
            {"activation": "selu", "optimizer": "adagrad", "norm_layer": "layernorm"},
            [{"init": "lecun_normal", "lr": 0.005}, {"init": "kaiming_uniform", "lr": 0.01}],
        ),
        (
            {"activation": "softsign", "optimizer": "sgd", "dataset": "blobs"},
            [
                {"init": "xavier_normal"},
                {"init": "kaiming_uniform", "seed": 4, "clip": 1.0},
                {"init": "normal", "init_std": 0.15, "bias_std": 0.22, "seed": 2},
                {"init": "default", "bias_std": 0.1, "seed": 3},
            ],
        ),
        (
            {"activation": "leaky_relu", "optimizer": "momentum", "norm_layer": "batchnorm_post"},
            [{"init": "kaiming_uniform", "lr": 0.02}, {"init": "lecun_normal", "seed": 5}],
        ),
        (
            {"activation": "identity", "optimizer": "adam", "dataset": "blobs"},
            [{"init": "xavier_normal", "lr": 0.005}, {"init": "orthogonal", "lr": 0.002}],
        ),
        (  # σ_w² chosen: a number, and the critical point with and without biases
            {"activation": "tanh", "optimizer": "sgd"},
            [
                {"init": "orthogonal", "sigma_w2": "1.3"},
                {"init": "orthogonal", "sigma_w2": "critical", "bias_std": 0.2},
                {"init": "kaiming_normal", "sigma_w2": "critical", "seed": 4},
            ],
        ),
    ],
    ids=[
        "selu-adagrad-layernorm",
        "softsign-sgd-blobs",
        "leaky_relu-batchnorm_post",
        "identity-adam",
        "tanh-sigma_w2",
    ],
)
def test_the_other_activations_and_inits_match_solo_runs(shape, replicas):
    specs = [RunSpec(**{**SMALL, **shape, **replica}) for replica in replicas]
    data = task(shape.get("dataset", "poly"))
    for spec, result in zip(specs, train_group(specs, data), strict=True):
        assert result.status == "finished"
        assert_matches_oracle(result, spec, data)


def test_a_stack_large_enough_for_the_fast_tanh_matches_solo_runs(monkeypatch):
    # K · batch · width ≥ FAST_TANH_MIN: the stack's tanh runs through expm1, the oracle's not
    shape = {**SMALL, "activation": "tanh", "width": 64, "batch_size": 64}
    specs = [RunSpec(**{**shape, **replica}) for replica in MIXED[:4]]
    assert len(specs) * 64 * 64 >= activations.FAST_TANH_MIN
    calls = []
    fast = activations._ExpTanh.apply
    monkeypatch.setattr(activations._ExpTanh, "apply", lambda h: calls.append(h.shape) or fast(h))
    data = task("poly")
    results = train_group(specs, data)
    assert (len(specs), 64, 64) in calls  # the training steps took the expm1 path
    for spec, result in zip(specs, results, strict=True):
        assert_matches_oracle(result, spec, data)


@pytest.mark.parametrize("log_every", [5, 2], ids=["at-epoch-end", "mid-epoch"])
def test_a_diverging_replica_leaves_the_others_as_they_were(log_every, caplog):
    data = task("poly")
    healthy = [RunSpec(**{**SMALL, **replica, "log_every": log_every}) for replica in MIXED[:3]]
    exploding = RunSpec(**{**SMALL, "lr": 1e6, "log_every": log_every})
    results = train_group([healthy[0], exploding, *healthy[1:]], data)
    assert "raised" not in caplog.text  # the stack went on without falling back to lone runs
    assert results[1].status == "diverged"
    alone = train_alone(exploding, data)
    assert results[1].summary["diverged_step"] == alone.diverged_step
    assert results[1].summary["steps"] == alone.steps
    assert (alone.steps < 6) == (log_every == 2)  # 6 steps an epoch
    init = results[1].layer_stats["phase"].astype(str) == "init"
    keys = ["phase", "step", "layer", "quantity"]
    at_init = alone.layer_stats[alone.layer_stats["phase"] == "init"]
    assert_tables_match(results[1].layer_stats[init], at_init, keys, "exploding", 1e-4)
    for spec, result in zip(healthy, [results[0], *results[2:]], strict=True):
        assert_matches_oracle(result, spec, data)


def test_a_replica_that_cannot_start_fails_alone():
    data = task("poly")
    broken = RunSpec(**SMALL, optimizer="adagrad", schedule="one_cycle")  # torch refuses it
    fine = RunSpec(**SMALL, optimizer="adagrad", seed=3)
    results = train_group([broken, fine], data)
    assert results[0].status == "failed"
    assert "one_cycle" in results[0].summary["error"] or "momentum" in results[0].summary["error"]
    assert_matches_oracle(results[1], fine, data)


def test_group_runs_keeps_shapes_apart_and_bounds_the_size():
    base = RunSpec(**SMALL)
    seeds = [base.model_copy(update={"seed": seed}) for seed in range(17)]
    wider = [base.model_copy(update={"width": 32, "seed": seed}) for seed in range(3)]
    groups = group_runs([*seeds, *wider], max_replicas=8)
    assert sorted(len(g) for g in groups) == [3, 5, 6, 6]  # 17 → 6 + 6 + 5, never 8 + 8 + 1
    for group in groups:
        assert len({tuple(getattr(s, a) for a in GROUP_AXES) for s in group}) == 1
    assert sorted(s.run_id for g in groups for s in g) == sorted(s.run_id for s in [*seeds, *wider])
    with pytest.raises(ValueError, match="must agree"):
        train_group([base, wider[0]], task("poly"))


def test_probes_off_trains_the_same_weights():
    data = task("poly")
    specs = [RunSpec(**{**SMALL, **replica}) for replica in MIXED[:2]]
    probed = train_group(specs, data)
    bare = train_group(specs, data, RunOptions(probe=False))
    for with_probes, without in zip(probed, bare, strict=True):
        assert without.layer_stats.empty or set(without.layer_stats["phase"]) <= {"theory"}
        for name, tensor in with_probes.state_dict.items():
            torch.testing.assert_close(without.state_dict[name], tensor, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_group_matches_cpu():
    data = task("poly")
    specs = [RunSpec(**{**SMALL, **replica}) for replica in MIXED[:4]]
    on_cpu = train_group(specs, data, RunOptions(device="cpu"))
    on_gpu = train_group(specs, data, RunOptions(device="cuda"))
    keys = ["phase", "step", "layer", "quantity"]
    for gpu, cpu in zip(on_gpu, on_cpu, strict=True):
        assert (gpu.status, gpu.summary["steps"]) == (cpu.status, cpu.summary["steps"])
        assert_tables_match(gpu.history, cpu.history, ["epoch", "metric"], cpu.run_id, 1e-3)
        assert_tables_match(gpu.layer_stats, cpu.layer_stats, keys, cpu.run_id, 1e-3)
        assert_states_match(gpu.state_dict, cpu.state_dict, cpu.run_id, 1e-3)
        assert math.isfinite(gpu.summary["final_val_metric"])
