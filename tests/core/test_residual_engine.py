"""Residual MLPs (issue 26) train in the stacked engine as an independent plain-torch net does.

The oracle is ``tests.helpers.solo_reference.train_alone``, which for ``arch: resmlp`` trains the
net of ``tests/helpers/residual_reference.py``: the contract written in ``torch.nn`` and
``torch.optim``, importing nothing of the engine. Every norm (none, layernorm, batchnorm_pre) ×
branch (preact, postact) × residual scale (1, 1/√L, ReZero, 0.5), and Fixup with each norm and
branch, trains as replicas of the stacks ``group_runs`` makes; per run, status and steps are
equal and every history metric, every probe value (hidden, stream and weight layers, phases init
and train), the theory rows and every final tensor agree to 1e-4 relative, in norm, as in
``test_engine.py``.
"""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gradlab.core import residual_theory
from gradlab.core.grid import RunSpec
from gradlab.core.residual import ResMLP
from gradlab.core.train import RunResult, group_runs, train_group
from tests.helpers.comparison import assert_states_match, assert_tables_match, relative_error
from tests.helpers.residual_reference import ResidualNet, StreamRecorder, resolve_scale
from tests.helpers.solo_reference import ACTIVATIONS, SoloRun, train_alone
from tests.helpers.training import SMALL, task

NORMS = ["none", "layernorm", "batchnorm_pre"]
BRANCHES = ["preact", "postact"]
SCALES = ["1", "1/sqrt(depth)", "rezero", "0.5"]
RESIDUAL = {**SMALL, "arch": "resmlp", "depth": 6}  # width 16, 2 epochs of 6 steps
KEYS = ["phase", "step", "layer", "quantity"]
STREAM = ["stream_mean", "stream_std", "grad_stream_rms", "grad_stream_mean", "grad_stream_std"]

# Per norm × branch: the activation, optimizer and data the group trains with (every step probed
# for some). Not Adam-like optimizers where a linear's bias sits right before BatchNorm (postact):
# its gradient is 0 but for rounding, which Adam turns into lr-sized steps (test_engine.py). The
# learning rates keep every run finite (a diverging step overflows the engine's float32 where the
# oracle's float64 statistics do not) and well-conditioned: RMSprop at lr 0.002–0.006 under
# batchnorm_pre (preact) moved the oracle's own probes by up to 3e-2 for a 1e-7 change of its
# init, so no two implementations could agree there to 1e-4.
SHAPES = {
    ("none", "preact"): {"activation": "relu", "optimizer": "sgd", "lr": 0.002, "log_every": 1},
    ("none", "postact"): {"activation": "tanh", "optimizer": "momentum"},
    ("layernorm", "preact"): {"activation": "gelu", "optimizer": "adam", "lr": 0.005},
    ("layernorm", "postact"): {
        "activation": "relu",
        "optimizer": "nesterov",
        "lr": 0.003,
        "log_every": 2,
    },
    ("batchnorm_pre", "preact"): {"activation": "tanh", "optimizer": "momentum", "lr": 0.005},
    ("batchnorm_pre", "postact"): {"activation": "elu", "optimizer": "sgd", "dataset": "blobs"},
}
# the replicas of each residual scale: they differ in init, seed, lr, schedule, clip and decay
REPLICAS = [
    {"init": "kaiming_normal", "seed": 0},
    {"init": "xavier_uniform", "seed": 1, "schedule": "cosine", "clip": 0.5},
    {"init": "default", "seed": 2, "weight_decay": 1e-3, "epochs": 1},
]


def residual_specs(norm: str, branch: str) -> list[RunSpec]:
    """Every residual scale × ``REPLICAS`` of one norm and branch, two Fixup runs and LSUV."""
    shape = {**RESIDUAL, "norm_layer": norm, "residual_branch": branch, **SHAPES[norm, branch]}
    lr = shape.pop("lr", 0.01)
    runs = [
        {**replica, "residual_scale": scale, "lr": lr * (1 + i)}
        for scale in SCALES
        for i, replica in enumerate(REPLICAS)
    ]
    runs += [
        {"init": "fixup", "residual_scale": "1", "seed": 3, "lr": lr},
        {"init": "fixup", "residual_scale": "1/sqrt(depth)", "seed": 4, "lr": 2 * lr},
        {"init": "lsuv", "residual_scale": "0.5", "seed": 5, "lr": lr},
    ]
    return [RunSpec(**{**shape, **run}) for run in runs]


def theory_rows(spec: RunSpec, data, q_in: float) -> pd.DataFrame:
    """The residual mean-field prediction of one run from its probe batch's mean squared input,
    as phase ``theory`` rows (none under BatchNorm, LSUV or Fixup), α resolved by the oracle."""
    alpha, _ = resolve_scale(spec.residual_scale, spec.depth)
    (p,) = residual_theory.predict_residual_profiles(
        spec.activation,
        spec.residual_branch,
        spec.norm_layer,
        data.x_train.shape[1],
        spec.width,
        spec.depth,
        data.n_outputs,
        [(spec.init, spec.init_std, q_in, alpha)],
    )
    rows = []
    if p is not None:
        mean = np.zeros_like(p.q) if p.mean is None else p.mean
        for quantity, values in [
            ("grad_stream_rms", p.grad_rms),
            ("stream_std", np.sqrt(p.q - mean**2)),
            ("chi1", p.chi1),
        ]:
            rows += [("theory", 0, layer, quantity, v) for layer, v in enumerate(values, 1)]
    return pd.DataFrame(rows, columns=["phase", "step", "layer", "quantity", "value"])


def stream_grad_ratio(layer_stats: pd.DataFrame, phase: str) -> float:
    """grad_stream_rms at stream layer 1 over layer L at the last probe step of ``phase`` (NaN
    when the last is 0: Fixup's stream at init)."""
    rows = layer_stats[
        (layer_stats["phase"] == phase) & (layer_stats["quantity"] == "grad_stream_rms")
    ]
    rms = rows[rows["step"] == rows["step"].max()].sort_values("layer")["value"].to_numpy()
    return rms[0] / rms[-1] if rms[-1] != 0 else math.nan


def assert_matches_residual_oracle(
    got: RunResult, spec: RunSpec, data, rtol: float = 1e-4
) -> SoloRun:
    """``got`` is what ``train_alone(spec, data)`` gets, to float rounding."""
    want = train_alone(spec, data)
    label = f"{spec.label} {spec.residual_branch} α={spec.residual_scale} ({got.run_id})"
    assert got.run_id == spec.run_id
    assert got.status != "failed", f"{label}: {got.summary['error']}"
    assert (got.status, got.summary["diverged_step"], got.summary["steps"]) == (
        want.status,
        want.diverged_step,
        want.steps,
    ), label
    assert_tables_match(got.history, want.history, ["epoch", "metric"], f"{label} history", rtol)
    stats = got.layer_stats
    theory_phase = stats["phase"].astype(str) == "theory"
    assert_tables_match(stats[~theory_phase], want.layer_stats, KEYS, f"{label} probes", rtol)
    predicted = theory_rows(spec, data, want.probe_q_in)
    if predicted.empty:
        assert not theory_phase.any(), label
    else:
        assert_tables_match(stats[theory_phase], predicted, KEYS, f"{label} theory", rtol)
    # grad_ratio reads the stream: RMS ∂L/∂x_0 over RMS ∂L/∂x_{L-1}, at init and the last probe
    for phase, key in [("init", "init_grad_ratio"), ("train", "end_grad_ratio")]:
        want_ratio = stream_grad_ratio(want.layer_stats, phase)
        assert relative_error(got.summary[key], want_ratio) <= rtol, f"{label} {key}"
    # a linear right before BatchNorm (postact): its bias' gradient is 0 but for rounding
    before_batchnorm = (
        [f"linears.{i}.bias" for i in range(spec.depth)]
        if spec.norm_layer == "batchnorm_pre" and spec.residual_branch == "postact"
        else []
    )
    assert_states_match(got.state_dict, want.state_dict, label, rtol, before_batchnorm)
    return want


def assert_weights_load(result: RunResult, spec: RunSpec, data, path: Path) -> None:
    """The run's ``weights.pt`` loads strictly into ``gradlab.core.residual.ResMLP`` of the
    spec's shape and gives the reference net's outputs and the history's last validation loss."""
    torch.save(result.state_dict, path)
    state = torch.load(path, weights_only=True)
    d_in = data.x_train.shape[1]
    shape = (d_in, data.n_outputs, spec.depth, spec.width)
    engine_net = ResMLP(
        *shape, spec.activation, spec.norm_layer, spec.residual_branch, spec.residual_scale
    )
    engine_net.load_state_dict(state, strict=True)
    reference = ResidualNet(
        *shape,
        ACTIVATIONS[spec.activation],
        spec.norm_layer,
        spec.residual_branch,
        spec.residual_scale,
    )
    reference.load_state_dict(state, strict=True)
    assert isinstance(engine_net.alpha, torch.nn.Parameter) == (spec.residual_scale == "rezero")
    engine_net.eval()
    reference.eval()
    with torch.no_grad():
        out, want = engine_net(data.x_val), reference(data.x_val)
    torch.testing.assert_close(out, want)
    if data.task == "regression":
        val_loss = (out.squeeze(-1) - data.y_val).pow(2).mean().item()
    else:
        val_loss = torch.nn.functional.cross_entropy(out, data.y_val).item()
    history = result.history
    last = history[(history["epoch"] == spec.epochs) & (history["metric"] == "val_loss")]
    assert relative_error(val_loss, last["value"].item()) <= 1e-4


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("branch", BRANCHES)
def test_every_scale_and_fixup_matches_the_plain_torch_net(norm, branch, tmp_path):
    specs = residual_specs(norm, branch)
    data = task(SHAPES[norm, branch].get("dataset", "poly"))
    groups = group_runs(specs, max_replicas=16)
    assert max(len(group) for group in groups) > 1  # replicas share a stack
    finished = 0
    for group in groups:
        for spec, result in zip(group, train_group(group, data), strict=True):
            assert_matches_residual_oracle(result, spec, data)
            if result.status == "finished":
                finished += 1
                assert_weights_load(result, spec, data, tmp_path / f"{spec.run_id}.pt")
    assert finished == len(specs)  # a diverging step overflows float32, not the oracle's float64


def test_a_stream_probe_sees_the_stream_and_the_branch_apart():
    # the reference's own hooks: in preact without a norm φ reads the stream itself, and the
    # stream's total gradient is the next block's plus this block's branch share
    torch.manual_seed(0)
    net = ResidualNet(3, 1, 4, 8, ACTIVATIONS["tanh"], "none", "preact", "0.5")
    recorder = StreamRecorder(net)
    recorder.on = True
    net(torch.randn(32, 3)).pow(2).mean().backward()
    for layer in range(3):
        torch.testing.assert_close(recorder.h[layer], recorder.x[layer])
        torch.testing.assert_close(recorder.dx[layer], recorder.dx[layer + 1] + recorder.dh[layer])
        assert recorder.dh[layer].norm() < recorder.dx[layer].norm()


def test_the_oracle_records_the_stream_and_the_stem():
    spec = residual_specs("none", "preact")[0]
    stats = train_alone(spec, task("poly")).layer_stats
    layers = stats.groupby("quantity")["layer"].agg(lambda at: sorted(set(at)))
    for quantity in [*STREAM, "grad_preact_rms", "preact_std"]:
        assert layers[quantity] == list(range(1, spec.depth + 1)), quantity
    for quantity in ["grad_weight_norm", "update_ratio"]:
        assert layers[quantity] == list(range(spec.depth + 2)), quantity
    init_updates = stats[(stats["phase"] == "init") & (stats["quantity"] == "update_ratio")]
    assert init_updates["value"].isna().all()


@pytest.mark.parametrize("norm, branch", [("batchnorm_pre", "postact"), ("layernorm", "preact")])
def test_the_stack_is_bitwise_reproducible_on_cpu(norm, branch):
    data = task(SHAPES[norm, branch].get("dataset", "poly"))
    for group in group_runs(residual_specs(norm, branch), max_replicas=16):
        first, second = train_group(group, data), train_group(group, data)
        for one, other in zip(first, second, strict=True):
            assert (one.status, one.summary["steps"]) == (other.status, other.summary["steps"])
            for table in ("history", "layer_stats"):
                pd.testing.assert_frame_equal(
                    getattr(one, table), getattr(other, table), check_exact=True
                )
            assert one.state_dict.keys() == other.state_dict.keys()
            for name, tensor in one.state_dict.items():
                assert torch.equal(tensor, other.state_dict[name]), (one.run_id, name)


def test_a_residual_run_with_bias_std_gets_no_prediction_the_others_keep_theirs():
    # the residual recursion takes σ_b² from the init: a bias_std run is not predicted wrongly
    base = {**SMALL, "arch": "resmlp", "activation": "relu", "init": "kaiming_normal"}
    plain, biased = RunSpec(**base), RunSpec(**base, bias_std=0.2)
    results = train_group([plain, biased], task())
    theory_rows = [r.layer_stats[r.layer_stats["phase"] == "theory"] for r in results]
    assert len(theory_rows[0]) > 0 and theory_rows[1].empty
    assert math.isfinite(results[0].summary["theory_first_last_ratio"])
    assert math.isnan(results[1].summary["theory_first_last_ratio"])
