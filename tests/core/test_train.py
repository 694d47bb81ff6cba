"""One run: reproducible, diverging as a result, failing as a result; executors agree."""

import math

import pandas as pd
import pytest
import torch

from gradlab.core import quantities
from gradlab.core.execute import ProcessPoolExecutor, SequentialExecutor
from gradlab.core.grid import RunSpec
from gradlab.core.recording import ProbeLog, keep_samples
from gradlab.core.schema import empty_table
from gradlab.core.train import RunOptions, TaskData, train_run
from tests.helpers.training import SMALL, broken, task


@pytest.fixture(scope="module")
def poly() -> TaskData:
    return task()


def test_same_spec_twice_gives_identical_history(poly):
    spec = RunSpec(**SMALL, activation="relu", init="kaiming_normal", optimizer="adam", lr=0.01)
    first, second = train_run(spec, poly), train_run(spec, poly)
    assert first.status == second.status == "finished"
    pd.testing.assert_frame_equal(first.history, second.history)
    pd.testing.assert_frame_equal(first.layer_stats, second.layer_stats)
    for name, tensor in first.state_dict.items():
        assert torch.equal(tensor, second.state_dict[name]), name


def test_different_seeds_differ(poly):
    first = train_run(RunSpec(**SMALL, seed=0), poly)
    second = train_run(RunSpec(**SMALL, seed=1), poly)
    assert not first.history["value"].equals(second.history["value"])


def test_history_has_every_epoch_metric(poly):
    result = train_run(RunSpec(**SMALL), poly)
    table = result.history.pivot(index="epoch", columns="metric", values="value")
    assert list(table.index) == [1, 2]
    assert set(table.columns) == {"train_loss", "val_loss", "val_metric", "lr", "grad_norm"}
    assert result.summary["metric_name"] == "val_r2"
    assert result.summary["final_val_loss"] == table.loc[2, "val_loss"]


def test_layer_stats_cover_both_phases_and_every_layer(poly):
    spec = RunSpec(**SMALL)
    result = train_run(spec, poly)
    stats = result.layer_stats
    steps_per_epoch = math.ceil(len(poly.x_train) / spec.batch_size)
    train_steps = sorted(stats.loc[stats["phase"] == "train", "step"].unique())
    assert train_steps == list(range(0, 2 * steps_per_epoch, spec.log_every))
    init = stats[stats["phase"] == "init"]
    assert set(init["layer"]) == set(range(0, spec.depth + 2))
    rms = init[init["quantity"] == "grad_preact_rms"]
    assert sorted(rms["layer"]) == [1, 2, 3]
    assert set(stats["phase"]) == {"init", "train", "theory"}
    assert set(result.distributions["quantity"]) == {"grad_preact", "preact", "act", "grad_weight"}


def test_distribution_samples_come_from_their_own_replica_layer_and_quantity():
    # replica r's tensors hold only values 1000·r + 100·quantity + 10·layer (+ < 6 that tells
    # entries apart, exact in float32); two runs sample replicas 2 and 0 of a stack of 3
    depth, size, replicas = 3, 64, 3
    shapes = (
        [(32, 16)] * depth,
        [(32, 16)] * depth,
        [(32, 16)] * depth,
        [(2, 16), (16, 16), (16, 16), (16, 1)],
    )
    stacks = [
        [
            torch.stack(
                [
                    1000 * r
                    + 100 * q
                    + 10 * layer
                    + torch.arange(math.prod(shape)).reshape(shape) / 1e2
                    for r in range(replicas)
                ]
            )
            for layer, shape in enumerate(layers, 1)
        ]
        for q, layers in enumerate(shapes)
    ]
    rows = [2, 0]
    logs = [ProbeLog(depth, size, seed=7), ProbeLog(depth, size, seed=8)]
    keep_samples(logs, rows, "init", 0, stacks)
    keep_samples(logs, rows, "train", 30, stacks)
    for log, row in zip(logs, rows, strict=True):
        table = log.distributions()
        assert len(table) == 2 * sum(len(layers) for layers in shapes) * size
        for (phase, step, quantity, layer), values in table.groupby(
            ["phase", "step", "quantity", "layer"]
        ):
            assert (phase, step) in {("init", 0), ("train", 30)}
            q = quantities.names("distribution").index(quantity)
            source = stacks[q][layer - 1][row].flatten()
            assert len(values) == size
            assert values["value"].isin(source.double().numpy()).all(), (row, quantity, layer)
            if source.numel() <= 32:  # 64 draws with replacement reach most of a small tensor
                assert values["value"].nunique() >= source.numel() // 2
    # a run's draws come from its own seed, whichever group it is sampled in
    alone = ProbeLog(depth, size, seed=7)
    keep_samples([alone], [0], "init", 0, [[s[2:] for s in q] for q in stacks])
    keep_samples([alone], [0], "train", 30, [[s[2:] for s in q] for q in stacks])
    pd.testing.assert_frame_equal(alone.distributions(), logs[0].distributions())
    with pytest.raises(ValueError, match="non-empty"):
        keep_samples(logs, rows, "train", 60, [*stacks[:3], [torch.zeros(3, 0)] * 4])
    with pytest.raises(ValueError, match="non-empty"):
        keep_samples(logs, rows, "train", 60, stacks[:3])


def test_result_tables_have_the_schema_dtypes(poly):
    result = train_run(RunSpec(**SMALL), poly)
    for name in ("history", "layer_stats", "distributions"):
        table = getattr(result, name)
        expected = empty_table(name)
        assert list(table.columns) == list(expected.columns), name
        assert (table.dtypes == expected.dtypes).all(), f"{name}: {dict(table.dtypes)}"
    assert result.layer_stats.index.equals(pd.RangeIndex(len(result.layer_stats)))


def test_exploding_spec_diverges_and_reports_its_step(poly):
    spec = RunSpec(
        **{**SMALL, "depth": 20},
        activation="relu",
        init="normal",
        init_std=1.0,
        lr=1.0,
    )
    result = train_run(spec, poly)
    assert result.status == "diverged"
    assert result.summary["diverged_step"] is not None and result.summary["diverged_step"] >= 0
    assert result.summary["verdict"] == "exploding"
    assert result.summary["theory_verdict"] == "exploding"


def test_loss_blowup_counts_as_divergence(poly):
    spec = RunSpec(
        **{**SMALL, "epochs": 5}, optimizer="sgd", lr=3.0, activation="relu", init="kaiming_normal"
    )
    result = train_run(spec, poly, RunOptions(divergence_factor=2.0))
    assert result.status == "diverged", result.summary


def test_broken_data_fails_the_run_without_raising(poly):
    result = train_run(RunSpec(**SMALL), broken(poly))
    assert result.status == "failed"
    assert "RuntimeError: Expected size" in result.summary["error"]


def test_classification_reports_accuracy():
    blobs = task("blobs")
    result = train_run(RunSpec(**SMALL, dataset="blobs", optimizer="adam", lr=0.01), blobs)
    assert result.summary["metric_name"] == "val_accuracy"
    assert 0.5 < result.summary["final_val_metric"] <= 1.0, result.summary


@pytest.mark.parametrize(
    "spec_kw",
    [
        {"norm_layer": "batchnorm_pre"},
        {"norm_layer": "layernorm", "init": "lsuv"},
        {"schedule": "one_cycle"},
        {"schedule": "warmup_cosine", "clip": 1.0},
    ],
)
def test_variants_train(poly, spec_kw):
    result = train_run(RunSpec(**SMALL, **spec_kw), poly)
    assert result.status == "finished", result.summary.get("error")


@pytest.mark.slow
def test_process_pool_and_sequential_give_identical_results(poly):
    specs = [RunSpec(**SMALL, activation=a, seed=s) for a in ("tanh", "relu") for s in (0, 1)]
    tasks = [(spec, poly, RunOptions()) for spec in specs]
    sequential = dict(SequentialExecutor().map(train_run, tasks))
    pooled = dict(ProcessPoolExecutor(2).map(train_run, tasks))
    assert sorted(pooled) == list(range(len(specs)))
    for index, result in sequential.items():
        pd.testing.assert_frame_equal(result.history, pooled[index].history)
        pd.testing.assert_frame_equal(result.layer_stats, pooled[index].layer_stats)
