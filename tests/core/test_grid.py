"""Run specs, their ids and labels, and grid expansion."""

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from gradlab.core.grid import RunSpec, Study, expand, select, sigma_w2_value, specs_from_table

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"

# Pinned: a change here means every cached result and MLflow link would silently go stale.
BASELINE_ID = "8af07615cf"


def test_run_id_is_pinned_for_the_default_spec():
    assert RunSpec().run_id == BASELINE_ID


def test_run_id_is_stable_across_python_processes():
    code = "from gradlab.core.grid import RunSpec; print(RunSpec(activation='relu', lr=0.1).run_id)"
    ids = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(seed)},
        ).stdout.strip()
        for seed in (1, 2)
    }
    assert ids == {RunSpec(activation="relu", lr=0.1).run_id}


def test_run_id_changes_with_every_field():
    base = RunSpec()
    changed = [
        base.model_copy(update={"depth": 9}),
        base.model_copy(update={"lr": 0.02}),
        base.model_copy(update={"seed": 1}),
        base.model_copy(update={"clip": 1.0}),
    ]
    ids = {base.run_id} | {RunSpec(**spec.model_dump()).run_id for spec in changed}
    assert len(ids) == 5


def test_init_std_is_dropped_when_init_ignores_it():
    assert (
        RunSpec(init="xavier_uniform", init_std=1.0).run_id == RunSpec(init="xavier_uniform").run_id
    )
    assert RunSpec(init="normal", init_std=1.0).init_std == 1.0


def test_normal_init_without_std_is_rejected():
    with pytest.raises(ValidationError, match="init_std"):
        RunSpec(init="normal")


def test_label_is_readable():
    spec = RunSpec(activation="relu", init="normal", init_std=0.01, depth=16, schedule="cosine")
    assert spec.label == "relu·normal(0.01)·sgd·d16·zscore·cosine·lr0.05·poly·s0"


@pytest.mark.parametrize(
    ("axis", "values"),
    [
        ("width", (32, 64, 128)),
        ("batch_size", (16, 64)),
        ("weight_decay", (0.0, 1e-4, 0.0001000001)),
        ("epochs", (5, 10)),
        ("log_every", (1, 10)),
        ("clip", (None, 1.0)),
        ("lr", (0.1, 0.1000001)),
        ("init_std", (0.01, 0.010000001)),
    ],
)
def test_labels_are_unique_whichever_axis_a_study_varies(axis, values):
    baseline = RunSpec(init="normal", init_std=0.5)
    table = expand(baseline, [Study(name="s", question="?", axes={axis: values})], seeds=(0, 1))
    assert table["label"].is_unique, list(table["label"])
    assert table["name"].is_unique, list(table["name"])


def test_labels_of_the_default_grid_are_unique():
    params = yaml.safe_load((CONF / "parameters_grid.yml").read_text())["grid"]
    studies = [
        Study(name=name, question=s.pop("question"), axes={k: tuple(v) for k, v in s.items()})
        for name, s in params["studies"].items()
    ]
    table = expand(RunSpec(**params["baseline"]), studies, params["seeds"])
    assert table["label"].is_unique, table[table["label"].duplicated()]["label"].tolist()
    assert table["name"].is_unique, table[table["name"].duplicated()]["name"].tolist()
    assert table["name"].str.len().max() <= 40


def test_names_say_what_differs_from_the_baseline():
    baseline = RunSpec(activation="tanh", depth=8, lr=0.02)
    assert baseline.name_against(baseline) == "baseline·s0"
    relu = baseline.model_copy(update={"activation": "relu", "depth": 16, "seed": 1})
    assert relu.name_against(baseline) == "relu·d16·s1"
    normal = baseline.model_copy(update={"init": "normal", "init_std": 0.01})
    assert normal.name_against(baseline) == "normal(0.01)·s0"
    far = RunSpec(
        activation="leaky_relu",
        init="kaiming_uniform",
        optimizer="nesterov",
        depth=64,
        width=512,
        batch_size=256,
        schedule="warmup_cosine",
        lr=0.123,
    )
    name = far.name_against(baseline)
    assert len(name) == 40 and name.endswith(f"…{far.run_id}"), name


def test_select_takes_study_names_and_label_globs():
    studies = [
        Study(name="acts", question="?", axes={"activation": ("tanh", "relu")}),
        Study(name="deep", question="?", axes={"depth": (8, 16)}),
    ]
    table = expand(RunSpec(), studies, seeds=(0,))
    assert set(select(table, ["deep"])["depth"]) == {8, 16}
    assert list(select(table, ["relu·*"])["activation"]) == ["relu"]
    assert len(select(table, ["deep", "relu·*"])) == 3
    assert select(table, ["nothing*"]).empty


def test_expand_deduplicates_runs_shared_by_studies():
    studies = [
        Study(name="a", question="?", axes={"activation": ("tanh", "relu")}),
        Study(name="b", question="?", axes={"depth": (8, 4)}),
    ]
    table = expand(RunSpec(), studies, seeds=(0, 1))
    # a: tanh·d8, relu·d8; b: tanh·d8 (the baseline, shared), tanh·d4 → 3 specs × 2 seeds
    assert len(table) == 6, table[["label", "studies"]]
    assert table["run_id"].is_unique
    shared = table.loc[table["run_id"] == RunSpec(seed=0).run_id, "studies"].item()
    assert shared == "a,b"


def test_expand_merges_init_std_duplicates():
    study = Study(
        name="init",
        question="?",
        axes={"init": ("default", "normal"), "init_std": (0.01, 1.0)},
    )
    table = expand(RunSpec(), [study], seeds=(0,))
    assert sorted(table["init_name"]) == ["default", "normal(0.01)", "normal(1)"]


def test_specs_from_table_round_trips(tmp_path):
    study = Study(name="s", question="?", axes={"clip": (1.0, 2.0), "init": ("default",)})
    table = expand(RunSpec(), [study], seeds=(0, 3))
    table.to_parquet(tmp_path / "t.parquet")
    specs = specs_from_table(pd.read_parquet(tmp_path / "t.parquet"))
    assert [s.run_id for s in specs] == table["run_id"].tolist()


def test_an_mlp_keeps_its_run_id_and_drops_the_residual_fields():
    # the id every MLP had before residual nets existed (its canonical form has no arch)
    assert RunSpec().run_id == "8af07615cf"
    mlp = RunSpec(arch="mlp", residual_scale="0.5", residual_branch="postact")
    assert mlp == RunSpec() and mlp.residual_scale is None and not mlp.residual_learnable


def test_a_residual_net_gets_its_defaults_and_one_id_per_alpha():
    spec = RunSpec(arch="resmlp")
    assert (spec.residual_scale, spec.residual_branch) == ("1", "preact")
    same = [RunSpec(arch="resmlp", residual_scale=v) for v in (1, 1.0, "1", "1.0", None)]
    assert {s.run_id for s in same} == {spec.run_id}
    assert RunSpec(arch="resmlp", residual_scale=0.25).residual_scale == "0.25"
    assert RunSpec(arch="resmlp", residual_scale="rezero").residual_learnable
    assert not RunSpec(arch="resmlp", residual_scale="1/sqrt(depth)").residual_learnable


def test_a_residual_label_names_arch_and_alpha_and_a_postact_branch():
    label = RunSpec(arch="resmlp", residual_scale="1/sqrt(depth)").label
    assert "·resmlp·α1/sqrt(depth)·" in label and "preact" not in label
    assert "·postact·" in RunSpec(arch="resmlp", residual_branch="postact").label


def test_sigma_w2_unset_keeps_every_run_id():
    assert "sigma_w2" not in RunSpec(init="orthogonal").canonical()
    assert RunSpec(init="orthogonal", sigma_w2=None).run_id == RunSpec(init="orthogonal").run_id
    assert RunSpec().weight_gain is None


def test_sigma_w2_is_kept_as_its_shortest_text_one_id_per_value():
    same = [RunSpec(init="orthogonal", sigma_w2=v) for v in (1.5, "1.5", "1.50", "15e-1")]
    assert {s.sigma_w2 for s in same} == {"1.5"}
    assert len({s.run_id for s in same}) == 1
    assert RunSpec(init="orthogonal", sigma_w2=2).sigma_w2 == "2"
    assert RunSpec(init="orthogonal", sigma_w2=2).run_id != RunSpec(init="orthogonal").run_id
    spec = RunSpec(init="kaiming_normal", sigma_w2=1.5)
    assert spec.weight_gain == pytest.approx(math.sqrt(1.5), rel=1e-15)
    assert "·σw²1.5·" in spec.label
    assert "·σw²critical·" in RunSpec(init="orthogonal", sigma_w2="critical").label


@pytest.mark.parametrize(
    ("activation", "bias_std", "sigma_w2"),
    [
        ("tanh", None, 1.0),
        ("relu", None, 2.0),
        ("relu", 0.5, 2.0),
        ("tanh", math.sqrt(0.05), 1.761),
    ],
)
def test_critical_sigma_w2_is_where_chi1_is_one(activation, bias_std, sigma_w2):
    spec = RunSpec(init="orthogonal", activation=activation, bias_std=bias_std, sigma_w2="critical")
    tolerance = 1e-3 if sigma_w2 == 1.761 else 1e-12
    assert spec.weight_gain**2 == pytest.approx(sigma_w2, abs=tolerance)
    assert spec.weight_gain == math.sqrt(sigma_w2_value("critical", activation, bias_std))


def test_a_study_varies_sigma_w2_and_the_table_round_trips(tmp_path):
    study = Study(name="s", question="?", axes={"sigma_w2": (1, 2.0, "critical")})
    table = expand(RunSpec(init="orthogonal"), [study], seeds=(0,))
    assert table["sigma_w2"].tolist() == ["1", "2", "critical"]
    assert table["label"].is_unique and table["name"].is_unique
    table.to_parquet(tmp_path / "t.parquet")
    specs = specs_from_table(pd.read_parquet(tmp_path / "t.parquet"))
    assert [s.run_id for s in specs] == table["run_id"].tolist()


def test_specs_from_a_table_without_sigma_w2_leave_it_unset():
    table = expand(RunSpec(), [Study(name="s", question="?", axes={"depth": (2, 4)})], (0,))
    specs = specs_from_table(table.drop(columns="sigma_w2"))
    assert [s.run_id for s in specs] == table["run_id"].tolist()
    assert all(s.sigma_w2 is None for s in specs)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"init": "orthogonal", "sigma_w2": "big"}, "sigma_w2 'big': expected a number > 0 or"),
        ({"init": "orthogonal", "sigma_w2": -1}, "sigma_w2 '-1': expected a number > 0 or"),
        ({"init": "orthogonal", "sigma_w2": 0.0}, "sigma_w2 '0': expected a number > 0 or"),
        ({"init": "orthogonal", "sigma_w2": math.inf}, "sigma_w2 'inf': expected a number > 0"),
        (
            {"init": "xavier_uniform", "sigma_w2": 2},
            "sigma_w2 applies to inits ['kaiming_uniform', 'kaiming_normal', 'orthogonal'], "
            "whose σ_w² is their gain²; got init 'xavier_uniform'",
        ),
        (
            {
                "init": "orthogonal",
                "activation": "sigmoid",
                "bias_std": 1000.0,
                "sigma_w2": "critical",
            },
            "sigma_w2 'critical': χ₁(q*) does not cross 1",
        ),
    ],
)
def test_bad_sigma_w2_is_refused_naming_value_and_choices(fields, words):
    with pytest.raises(ValidationError) as caught:
        RunSpec(**fields)
    assert words in str(caught.value)
