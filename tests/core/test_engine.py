"""The stacked engine gives every replica the numbers it would get alone.

The reference is the one-model loop (``solo_reference.py``: ``nn.Module``, ``torch.optim``,
``torch.optim.lr_scheduler``). Float32 sums in another order differ in the last bits, so the
comparison is to 1e-4 relative (in norm), not bitwise.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from gradlab.core import data as data_core
from gradlab.core import models
from gradlab.core.config import parse_data, parse_grid
from gradlab.core.grid import RunSpec, expand, specs_from_table
from gradlab.core.models import FAST_TANH_MIN
from gradlab.core.train import (
    GROUP_AXES,
    RunOptions,
    RunResult,
    TaskData,
    group_runs,
    train_group,
)
from tests.core.solo_reference import solo_train

REPO = Path(__file__).resolve().parents[2]
SMALL = {"depth": 3, "width": 16, "epochs": 2, "batch_size": 32, "log_every": 5}


def make_task(name: str, n_samples: int = 300, norm: str = "zscore") -> TaskData:
    kind = data_core.DATASETS[name]
    frame = kind.generate(0, kind.params(n_samples=n_samples, offset=3.0))
    split = data_core.split(frame, 0, 0.2, 0.2)
    frame, _ = data_core.normalize(split, data_core.INPUT_NORMS[norm])
    return TaskData.from_frame(frame, kind.task)


# fractions counted over units × samples move by one unit's share when a value sits on a threshold
COUNTED = {"act_saturation", "act_dead_frac", "grad_weight_zero_frac"}


def relative_error(got, want) -> float:
    """‖got − want‖ / ‖want‖ over the finite entries (NaN and ±inf must sit in the same places).

    Relative to the whole tensor, not entry by entry: an entry near zero (a bias, a mean
    gradient) carries the rounding of its neighbours' scale, so its own ratio means nothing.
    """
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    finite = np.isfinite(want)
    np.testing.assert_array_equal(np.isfinite(got), finite)
    np.testing.assert_array_equal(got[~finite], want[~finite])
    scale = np.linalg.norm(want[finite])
    return float(np.linalg.norm(got[finite] - want[finite]) / scale) if scale > 0 else 0.0


def assert_matches(got: RunResult, want: RunResult, rtol: float = 1e-4) -> None:
    """``got`` is ``want`` to float rounding: status, history, layer stats, final weights.

    Each metric, layer-stat quantity and weight tensor is within ``rtol`` relative (in norm).
    """
    label = want.run_id
    assert got.status == want.status, label
    assert got.summary["diverged_step"] == want.summary["diverged_step"], label
    assert got.summary["steps"] == want.summary["steps"], label
    for name, table, keys in [
        ("history", "history", ["epoch", "metric"]),
        ("layer_stats", "layer_stats", ["phase", "step", "layer", "quantity"]),
    ]:
        got_table, want_table = getattr(got, table), getattr(want, table)
        assert got_table[keys].equals(want_table[keys]), f"{label} {name}: other rows"
        kind = keys[-1]
        for value, rows in want_table.groupby(kind).groups.items():
            errors = relative_error(got_table.loc[rows, "value"], want_table.loc[rows, "value"])
            if value in COUNTED:
                delta = (got_table.loc[rows, "value"] - want_table.loc[rows, "value"]).abs()
                assert delta.max() <= 0.01 or delta.isna().all(), f"{label} {value}"
            else:
                assert errors <= rtol, f"{label} {name} {value}: relative error {errors:.2e}"
    assert got.state_dict.keys() == want.state_dict.keys(), label
    before_batchnorm = "pre_norms.0.running_mean" in want.state_dict
    for name, tensor in want.state_dict.items():
        if before_batchnorm and name.startswith("linears.") and name.endswith(".bias"):
            # BatchNorm subtracts it again: its gradient is 0 but for rounding, and so are its
            # steps; compared in absolute terms
            torch.testing.assert_close(got.state_dict[name], tensor, rtol=0, atol=1e-5)
            continue
        errors = relative_error(got.state_dict[name].numpy(), tensor.numpy())
        assert errors <= rtol, f"{label} {name}: relative error {errors:.2e}"


def smoke_specs() -> tuple[list[RunSpec], dict]:
    conf = REPO / "conf" / "smoke"
    data = parse_data(yaml.safe_load((conf / "parameters_data.yml").read_text())["data"])
    grid = parse_grid(yaml.safe_load((conf / "parameters_grid.yml").read_text())["grid"], data)
    return specs_from_table(expand(grid.baseline, grid.studies, grid.seeds)), data.datasets


def test_every_smoke_group_matches_its_solo_runs():
    specs, datasets = smoke_specs()
    tasks = {}
    for group in group_runs(specs, max_replicas=16):
        key = group[0].dataset, group[0].input_norm
        if key not in tasks:
            tasks[key] = make_task(key[0], datasets[key[0]]["n_samples"], key[1])
        for spec, result in zip(group, train_group(group, tasks[key]), strict=True):
            assert_matches(result, solo_train(spec, tasks[key]))


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
@pytest.mark.parametrize(
    "shape",
    [
        {"optimizer": "sgd"},
        {"optimizer": "nesterov", "activation": "relu", "norm_layer": "batchnorm_pre"},
        {"optimizer": "adam", "activation": "tanh", "norm_layer": "batchnorm_post"},
        {"optimizer": "momentum", "activation": "gelu", "norm_layer": "batchnorm_post"},
        {"optimizer": "rmsprop", "activation": "sigmoid", "norm_layer": "layernorm"},
        {"optimizer": "adamw", "dataset": "blobs", "activation": "elu"},
    ],
    ids=lambda shape: "-".join(shape.values()),
)
def test_mixed_group_matches_solo_runs(shape):
    # adaptive optimizers at SGD's learning rates amplify rounding into chaos: a tenth of them
    scale = 0.1 if shape["optimizer"] in {"adam", "adamw", "rmsprop"} else 1.0
    specs = [
        RunSpec(**{**SMALL, **shape, **replica, "lr": replica["lr"] * scale}) for replica in MIXED
    ]
    data = make_task(shape.get("dataset", "poly"))
    results = train_group(specs, data)
    assert [r.status for r in results].count("finished") >= 5
    for spec, result in zip(specs, results, strict=True):
        assert_matches(result, solo_train(spec, data))


def test_a_stack_large_enough_for_the_fast_tanh_matches_solo_runs(monkeypatch):
    # K · batch · width ≥ FAST_TANH_MIN: the stack's tanh runs through expm1, the solo loop's not
    shape = {**SMALL, "activation": "tanh", "width": 64, "batch_size": 64}
    specs = [RunSpec(**{**shape, **replica}) for replica in MIXED[:4]]
    assert len(specs) * 64 * 64 >= FAST_TANH_MIN
    calls = []
    fast = models._ExpTanh.apply
    monkeypatch.setattr(models._ExpTanh, "apply", lambda h: calls.append(h.shape) or fast(h))
    data = make_task("poly")
    results = train_group(specs, data)
    assert (len(specs), 64, 64) in calls  # the training steps took the expm1 path
    for spec, result in zip(specs, results, strict=True):
        assert_matches(result, solo_train(spec, data))


@pytest.mark.parametrize("log_every", [5, 2], ids=["at-epoch-end", "mid-epoch"])
def test_a_diverging_replica_leaves_the_others_as_they_were(log_every, caplog):
    data = make_task("poly")
    healthy = [RunSpec(**{**SMALL, **replica, "log_every": log_every}) for replica in MIXED[:3]]
    exploding = RunSpec(**{**SMALL, "lr": 1e6, "log_every": log_every})
    results = train_group([healthy[0], exploding, *healthy[1:]], data)
    assert "raised" not in caplog.text  # the stack went on without falling back to lone runs
    assert results[1].status == "diverged"
    solo = solo_train(exploding, data)
    assert results[1].summary["diverged_step"] == solo.summary["diverged_step"]
    assert results[1].summary["steps"] == solo.summary["steps"]
    assert (results[1].summary["steps"] < 6) == (log_every == 2)  # 6 steps an epoch
    for spec, result in zip(healthy, [results[0], *results[2:]], strict=True):
        assert_matches(result, solo_train(spec, data))


def test_a_replica_that_cannot_start_fails_alone():
    data = make_task("poly")
    broken = RunSpec(**SMALL, optimizer="adagrad", schedule="one_cycle")  # torch refuses it
    fine = RunSpec(**SMALL, optimizer="adagrad", seed=3)
    results = train_group([broken, fine], data)
    assert results[0].status == "failed"
    assert "one_cycle" in results[0].summary["error"] or "momentum" in results[0].summary["error"]
    assert_matches(results[1], solo_train(fine, data))


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
        train_group([base, wider[0]], make_task("poly"))


def test_probes_off_trains_the_same_weights():
    data = make_task("poly")
    specs = [RunSpec(**{**SMALL, **replica}) for replica in MIXED[:2]]
    probed = train_group(specs, data)
    bare = train_group(specs, data, RunOptions(probe=False))
    for with_probes, without in zip(probed, bare, strict=True):
        assert without.layer_stats.empty or set(without.layer_stats["phase"]) <= {"theory"}
        for name, tensor in with_probes.state_dict.items():
            torch.testing.assert_close(without.state_dict[name], tensor, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_group_matches_cpu():
    data = make_task("poly")
    specs = [RunSpec(**{**SMALL, **replica}) for replica in MIXED[:4]]
    on_cpu = train_group(specs, data, RunOptions(device="cpu"))
    on_gpu = train_group(specs, data, RunOptions(device="cuda"))
    for gpu, cpu in zip(on_gpu, on_cpu, strict=True):
        assert_matches(gpu, cpu, rtol=1e-3)
        assert math.isfinite(gpu.summary["final_val_metric"])
