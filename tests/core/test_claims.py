"""Reproduction claims: each measure, each check, the table they make, and their configuration."""

import math

import numpy as np
import pandas as pd
import pytest

from gradlab.core.claims import (
    CHECKS,
    CLAIM_COLUMNS,
    MEASURES,
    SELECT_AXES,
    ClaimInputs,
    check_claims,
    early_act_mean,
    epochs_to,
    final_val_metric,
    first_layer_grad_weight,
    grad_growth,
    init_grad_ratio,
    init_spread,
    jacobian_frac_well_conditioned,
    jacobian_spread,
    jacobian_spread_ratio,
    select,
    steps_to_loss,
    theory_gap,
    val_error_pct,
)
from gradlab.core.config import ConfigError, parse_claims, validate_parameters
from gradlab.core.grid import RunSpec, Study, expand
from tests.helpers.config import base_parameters

HISTORY_COLUMNS = ["run_id", "epoch", "metric", "value"]
STATS_COLUMNS = ["run_id", "phase", "step", "layer", "quantity", "value"]
NAN = math.nan


def study(name: str = "s", **axes) -> Study:
    return Study(name=name, question="?", axes={axis: tuple(v) for axis, v in axes.items()})


def make_runs(*studies: Study, seeds=(0,), baseline: RunSpec = RunSpec()) -> pd.DataFrame:
    """A runs table: the grid's rows plus summary columns (all NaN until a test sets them)."""
    runs = expand(baseline, studies, seeds).assign(
        status="finished",
        final_val_metric=NAN,
        init_grad_ratio=NAN,
        end_grad_ratio=NAN,
        end_saturation=NAN,
        end_dead_frac=NAN,
        steps=100,
    )
    runs["metric_name"] = np.where(runs["dataset"] == "poly", "val_r2", "val_accuracy")
    return runs


def with_values(runs: pd.DataFrame, by, values: dict, column="final_val_metric") -> pd.DataFrame:
    """Set ``column`` from ``values`` keyed by the value of axis ``by`` (or a tuple of axes); a
    list gives one value per seed (seeds 0, 1, …)."""
    axes = by if isinstance(by, tuple) else (by,)

    def value(row: pd.Series) -> float:
        key = tuple(row[axis] for axis in axes)
        found = values[key if isinstance(by, tuple) else key[0]]
        return found[row["seed"]] if isinstance(found, list) else found

    return runs.assign(**{column: runs.apply(value, axis=1).astype(float)})


def inputs(runs: pd.DataFrame, history=(), layer_stats=()) -> ClaimInputs:
    return ClaimInputs(
        runs,
        pd.DataFrame(list(history), columns=HISTORY_COLUMNS),
        pd.DataFrame(list(layer_stats), columns=STATS_COLUMNS),
    )


def ids_by(runs: pd.DataFrame, axis: str) -> dict:
    return dict(zip(runs[axis], runs["run_id"], strict=True))


def claim_fields(**fields) -> dict:
    return {
        "claim": "a statement",
        "source": "a paper",
        "paper": "a number",
        "measure": "final_val_metric",
        **fields,
    }


def claim(**fields):
    return parse_claims({"c": claim_fields(**fields)})["c"]


def check(runs: pd.DataFrame, history=(), layer_stats=(), **fields) -> dict:
    """The one row ``check_claims`` returns for a claim of ``fields``."""
    table = check_claims({"c": claim(**fields)}, inputs(runs, history, layer_stats))
    assert len(table) == 1
    return table.iloc[0].to_dict()


# -- measures -----------------------------------------------------------------------------------


def test_final_val_metric_and_init_grad_ratio_read_the_runs_table():
    runs = make_runs(study(depth=[2, 4]))
    runs = runs.assign(final_val_metric=[0.7, 0.9], init_grad_ratio=[0.5, 2.0])
    ids = ids_by(runs, "depth")
    assert final_val_metric(inputs(runs)).to_dict() == {ids[2]: 0.7, ids[4]: 0.9}
    assert init_grad_ratio(inputs(runs)).to_dict() == {ids[2]: 0.5, ids[4]: 2.0}


def test_theory_gap_is_the_decades_between_measured_and_predicted_ratio():
    runs = make_runs(study(depth=[2, 4, 8]))
    runs = runs.assign(init_grad_ratio=[200.0, 0.5, 1.0], theory_first_last_ratio=[2.0, 5.0, NAN])
    gap = theory_gap(inputs(runs))
    ids = ids_by(runs, "depth")
    assert gap[ids[2]] == pytest.approx(2.0) and gap[ids[4]] == pytest.approx(1.0)
    assert math.isnan(gap[ids[8]])  # no prediction: no gap


def test_val_error_pct_is_nan_for_regression_runs():
    runs = make_runs(study(dataset=["poly", "blobs", "digits"]))
    runs = with_values(runs, "dataset", {"poly": 0.9, "blobs": 0.75, "digits": 0.5})
    ids = ids_by(runs, "dataset")
    error = val_error_pct(inputs(runs))
    assert math.isnan(error[ids["poly"]])
    assert error[ids["blobs"]] == 25.0
    assert error[ids["digits"]] == 50.0


def test_first_layer_grad_weight_is_layer_one_at_init():
    runs = make_runs(study(depth=[2]))
    rid = runs["run_id"].iloc[0]
    stats = [
        (rid, "init", 0, 1, "grad_weight_norm", 0.3),
        (rid, "init", 0, 2, "grad_weight_norm", 5.0),
        (rid, "init", 0, 3, "grad_weight_norm", 9.0),  # the head
        (rid, "train", 10, 1, "grad_weight_norm", 7.0),
        (rid, "init", 0, 1, "grad_preact_rms", 8.0),
    ]
    assert first_layer_grad_weight(inputs(runs, layer_stats=stats)).to_dict() == {rid: 0.3}


def test_grad_growth_fits_the_middle_layers_of_each_runs_profile():
    runs = make_runs(study(depth=[12], arch=["mlp", "resmlp"]))
    ids = ids_by(runs, "arch")
    stats = []
    for layer in range(1, 13):
        # ∂L/∂h grows 1.2× per layer towards the input in the middle, with transients at the ends
        middle = 1.2 ** (12 - layer)
        edge = 50.0 if layer in (1, 12) else 1.0
        stats += [
            (ids["mlp"], "init", 0, layer, "grad_preact_rms", middle * edge),
            (ids["mlp"], "theory", 0, layer, "grad_preact_rms", 1.1 ** (12 - layer)),
            (ids["resmlp"], "init", 0, layer, "grad_preact_rms", 7.0),  # the branch: not read
            (ids["resmlp"], "init", 0, layer, "grad_stream_rms", 0.9 ** (12 - layer)),
        ]
    measured = grad_growth(inputs(runs, layer_stats=stats))
    assert measured[ids["mlp"]] == pytest.approx(1.2**2)  # the squared norm's factor
    assert measured[ids["resmlp"]] == pytest.approx(0.81)
    theory = grad_growth(inputs(runs, layer_stats=stats), phase="theory")
    assert theory[ids["mlp"]] == pytest.approx(1.21) and math.isnan(theory[ids["resmlp"]])
    # in training, at the probe step asked for
    stats += [
        (ids["mlp"], "train", step, layer, "grad_preact_rms", (1 + step / 10) ** (12 - layer))
        for step in (0, 5)
        for layer in range(1, 13)
    ]
    at_five = grad_growth(inputs(runs, layer_stats=stats), phase="train", step=5)
    assert at_five[ids["mlp"]] == pytest.approx(1.5**2)


def test_init_spread_counts_hidden_layers_only():
    """Layer 3 is the head of the depth-2 run but a hidden layer of the depth-3 run."""
    runs = make_runs(study(depth=[2, 3]))
    ids = ids_by(runs, "depth")
    d2, d3 = ids[2], ids[3]
    stats = [
        (d2, "init", 0, 1, "act_std", 2.0),
        (d2, "init", 0, 2, "act_std", 0.5),
        (d2, "init", 0, 3, "act_std", 100.0),  # head: must not count
        (d2, "train", 10, 1, "act_std", 1000.0),  # not at init
        (d3, "init", 0, 1, "act_std", 1.0),
        (d3, "init", 0, 2, "act_std", 1.5),
        (d3, "init", 0, 3, "act_std", 3.0),
        (d3, "init", 0, 4, "act_std", 0.001),  # head
        (d2, "init", 0, 1, "grad_preact_rms", 1.0),
        (d2, "init", 0, 2, "grad_preact_rms", 1.0),
        (d3, "init", 0, 1, "grad_preact_rms", 1.0),
        (d3, "init", 0, 2, "grad_preact_rms", 0.5),
        (d3, "init", 0, 3, "grad_preact_rms", 0.25),
    ]
    given = inputs(runs, layer_stats=stats)
    assert init_spread(given).to_dict() == {d2: 4.0, d3: 3.0}
    assert init_spread(given, quantity="grad_preact_rms").to_dict() == {d2: 1.0, d3: 4.0}


def test_epochs_to_is_the_first_epoch_reaching_the_target_inf_when_never_nan_without_history():
    runs = make_runs(study(depth=[2, 4, 8, 16]))
    ids = ids_by(runs, "depth")
    history = [
        *[(ids[2], e, "val_metric", v) for e, v in enumerate([0.2, 0.4, 0.6, 0.3], start=1)],
        (ids[2], 1, "train_loss", 0.9),  # not the validation metric
        *[(ids[4], e, "val_metric", v) for e, v in enumerate([0.1, 0.5], start=1)],
        *[(ids[8], e, "val_metric", v) for e, v in enumerate([0.1, 0.2, 0.3], start=1)],
        # depth 16: no history at all
    ]
    given = inputs(runs, history=history)
    assert epochs_to(given).to_dict() == {ids[2]: 3, ids[4]: 2, ids[8]: math.inf}
    assert epochs_to(given, target=0.25).to_dict() == {
        ids[2]: 2,
        ids[4]: 2,
        ids[8]: 3,
    }


def _act_mean_stats(ids: dict) -> list:
    d2, d3 = ids[2], ids[3]
    return [
        # depth 3, 100 steps: the top hidden layer is 3; "early" is step <= 20
        (d3, "train", 0, 3, "act_mean", 0.5),
        (d3, "train", 10, 3, "act_mean", 0.2),
        (d3, "train", 20, 3, "act_mean", 0.3),
        (d3, "train", 30, 3, "act_mean", 0.01),  # too late
        (d3, "train", 10, 2, "act_mean", 0.0),  # not the top layer
        (d3, "train", 10, 1, "act_mean", 0.05),
        (d3, "init", 0, 3, "act_mean", -1.0),  # not training
        (d3, "train", 10, 3, "act_std", -5.0),  # another quantity
        # depth 2, 200 steps: the top hidden layer is 2; "early" is step <= 40
        (d2, "train", 0, 2, "act_mean", 0.4),
        (d2, "train", 40, 2, "act_mean", 0.1),
        (d2, "train", 41, 2, "act_mean", -0.5),
    ]


def test_early_act_mean_takes_the_top_hidden_layer_over_the_early_steps():
    runs = make_runs(study(depth=[2, 3])).pipe(with_values, "depth", {2: 200, 3: 100}, "steps")
    ids = ids_by(runs, "depth")
    given = inputs(runs, layer_stats=_act_mean_stats(ids))
    assert early_act_mean(given).to_dict() == {ids[2]: 0.1, ids[3]: 0.2}
    assert early_act_mean(given, fraction=0.1).to_dict() == {ids[2]: 0.4, ids[3]: 0.2}
    assert early_act_mean(given, fraction=0.3).to_dict() == {ids[2]: -0.5, ids[3]: 0.01}
    assert early_act_mean(given, layer=2).to_dict() == {ids[2]: 0.1, ids[3]: 0.0}
    assert early_act_mean(given, layer=-2).to_dict() == {ids[3]: 0.0}
    assert early_act_mean(given, layer=1).to_dict() == {ids[3]: 0.05}


def _spectra(runs: pd.DataFrame) -> pd.DataFrame:
    """Depth 8: s² of mean 0.5 and variance 2 (v = 8) against a theory v of 4; depth 16: v = 0.25
    against 0.5 (theory's variance 2 at mean 2); depth 32: no theory."""
    return runs.assign(
        jacobian_mean_s2=[0.5, 2.0, 1.0],
        jacobian_var_s2=[2.0, 1.0, 3.0],
        jacobian_frac_well_conditioned=[0.25, 1.0, 0.5],
        theory_jacobian_mean_s2=[1.0, 2.0, NAN],
        theory_jacobian_var_s2=[4.0, 2.0, NAN],
    )


def test_jacobian_measures_read_the_spectrum_and_its_theory_from_the_runs_table():
    runs = _spectra(make_runs(study(depth=[8, 16, 32])))
    ids = ids_by(runs, "depth")
    given = inputs(runs)
    assert jacobian_frac_well_conditioned(given).to_dict() == {
        ids[8]: 0.25,
        ids[16]: 1.0,
        ids[32]: 0.5,
    }
    assert jacobian_spread(given).to_dict() == {ids[8]: 8.0, ids[16]: 0.25, ids[32]: 3.0}
    ratio = jacobian_spread_ratio(given)
    assert ratio[ids[8]] == pytest.approx(2.0) and ratio[ids[16]] == pytest.approx(0.5)
    assert math.isnan(ratio[ids[32]])  # no prediction: no ratio


def test_jacobian_measures_are_nan_where_no_spectrum_was_measured():
    runs = make_runs(study(depth=[8]))  # no jacobian_* columns at all
    for measure in (jacobian_frac_well_conditioned, jacobian_spread, jacobian_spread_ratio):
        assert measure(inputs(runs)).isna().all(), measure.__name__


def test_a_spread_ratio_claim_fails_off_the_theory_line():
    runs = _spectra(make_runs(study(depth=[8, 16, 32])))
    fields = {"measure": "jacobian_spread_ratio", "check": "between", "low": 0.5, "high": 2.0}
    assert check(runs, where={"depth": [8, 16]}, **fields)["result"] == "pass"
    row = check(runs, where={"depth": 8}, **{**fields, "high": 1.5})
    assert (row["result"], row["measured"]) == ("fail", "2")
    row = check(runs, where={"depth": 32}, **fields)  # no theory: nothing to judge
    assert (row["result"], row["measured"]) == ("fail", "n/a")


def _losses(ids: dict) -> list:
    return [
        # depth 2 reaches 0.5 at step 20 (and again later)
        *[(ids[2], "train", step, 0, "loss", v) for step, v in [(0, 2.3), (10, 0.9), (20, 0.5)]],
        (ids[2], "train", 30, 0, "loss", 0.1),
        (ids[2], "init", 0, 0, "loss", 0.01),  # not training
        (ids[2], "train", 5, 1, "grad_preact_rms", 0.01),  # another quantity
        # depth 4 never gets below 1; depth 8 diverges (NaN) after a step above the target
        *[(ids[4], "train", step, 0, "loss", v) for step, v in [(0, 2.3), (10, 1.5), (20, 1.2)]],
        *[(ids[8], "train", step, 0, "loss", v) for step, v in [(0, 2.3), (10, 40.0), (20, NAN)]],
        # depth 16: no loss rows (the run failed)
    ]


def test_steps_to_loss_is_the_first_probe_step_at_or_below_the_target():
    runs = make_runs(study(depth=[2, 4, 8, 16]))
    ids = ids_by(runs, "depth")
    given = inputs(runs, layer_stats=_losses(ids))
    assert steps_to_loss(given).to_dict() == {ids[2]: 20, ids[4]: math.inf, ids[8]: math.inf}
    assert steps_to_loss(given, target=1.2).to_dict() == {
        ids[2]: 10,
        ids[4]: 20,
        ids[8]: math.inf,
    }
    assert steps_to_loss(given, target=3.0).to_dict() == {ids[2]: 0, ids[4]: 0, ids[8]: 0}


def test_a_steps_to_loss_claim_fails_for_a_run_that_never_reaches_the_target():
    runs = make_runs(study(depth=[2, 4, 8]))
    ids = ids_by(runs, "depth")
    measure = {"name": "steps_to_loss", "target": 0.5}
    row = check(
        runs,
        layer_stats=_losses(ids),
        measure=measure,
        check="greater",
        a={"depth": 4},
        b={"depth": 2},
    )
    assert (row["result"], row["measured"]) == ("pass", "never vs 20")
    assert row["rule"].startswith("steps_to_loss(target=0.5): ")
    row = check(
        runs,
        layer_stats=_losses(ids),
        measure=measure,
        check="between",
        where={"depth": 4},
        high=100.0,
    )
    assert (row["result"], row["measured"]) == ("fail", "never")


# -- checks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "result"),
    [
        ({16: 1.0, 2: 3.0, 4: 2.0}, "pass"),
        ({16: 2.0, 2: 3.0, 4: 1.0}, "fail"),  # the middle step goes down too far, then up
        ({16: 1.0, 2: 3.0, 4: 3.0}, "fail"),  # a flat step is no fall
        ({16: 3.0, 2: 1.0, 4: 2.0}, "fail"),
    ],
)
def test_decreasing_needs_a_fall_at_every_step_in_axis_order(values, result):
    runs = make_runs(study(depth=[16, 2, 4])).pipe(with_values, "depth", values)
    row = check(runs, check="decreasing", along="depth")
    assert row["result"] == result
    assert row["measured"] == ", ".join(f"depth {d}: {values[d]:g}" for d in (2, 4, 16))
    assert row["rule"] == "final_val_metric: median falls at every step of depth"


def test_decreasing_with_one_level_fails():
    runs = make_runs(study(depth=[2])).pipe(with_values, "depth", {2: 1.0})
    assert check(runs, check="decreasing", along="depth")["result"] == "fail"


GREATER_RUNS = make_runs(study(init=["default", "xavier_uniform"]))
A_DEFAULT = {"a": {"init": "default"}, "b": {"init": "xavier_uniform"}}


@pytest.mark.parametrize(
    ("a", "b", "factor", "result"),
    [
        (0.9, 0.6, 1.0, "pass"),
        (0.6, 0.9, 1.0, "fail"),
        (0.6, 0.6, 1.0, "fail"),  # not above
        (0.9, 0.4, 2.0, "pass"),
        (0.9, 0.4, 3.0, "fail"),
        (0.8, 0.4, 2.0, "fail"),  # exactly the factor is not above it
    ],
)
def test_greater_compares_a_with_factor_times_b(a, b, factor, result):
    runs = GREATER_RUNS.pipe(with_values, "init", {"default": a, "xavier_uniform": b})
    fields = {"factor": factor} if factor != 1.0 else {}
    row = check(runs, check="greater", **A_DEFAULT, **fields)
    assert row["result"] == result
    assert row["measured"] == f"{a:g} vs {b:g}"
    times = f"{factor:g} × " if factor != 1.0 else ""
    assert row["rule"] == (
        f"final_val_metric: median[init=default] > {times}median[init=xavier_uniform]"
    )


@pytest.mark.parametrize(
    ("values", "result"),
    [
        ({("default", 2): 0.9, ("xavier_uniform", 2): 0.6, ("default", 4): 0.8}, "pass"),
        ({("default", 2): 0.9, ("xavier_uniform", 2): 0.6, ("default", 4): 0.6}, "fail"),
    ],
)
def test_greater_per_level_fails_if_one_level_fails(values, result):
    runs = make_runs(study(init=["default", "xavier_uniform"], depth=[2, 4]))
    runs = runs.pipe(with_values, ("init", "depth"), {("xavier_uniform", 4): 0.7, **values})
    row = check(runs, check="greater", per="depth", **A_DEFAULT)
    assert row["result"] == result
    a4 = values[("default", 4)]
    assert row["measured"] == f"0.9 vs 0.6 (depth 2); {a4:g} vs 0.7 (depth 4)"
    assert row["rule"].endswith(", at every depth")


def test_greater_per_level_fails_where_a_level_lacks_a_group():
    runs = make_runs(
        study("both", init=["default", "xavier_uniform"], depth=[2]),
        study("one", init=["xavier_uniform"], depth=[4]),
    )
    runs = runs.pipe(
        with_values,
        ("init", "depth"),
        {("default", 2): 0.9, ("xavier_uniform", 2): 0.6, ("xavier_uniform", 4): 0.7},
    )
    row = check(runs, check="greater", per="depth", **A_DEFAULT)
    assert row["result"] == "fail"
    assert row["measured"] == "0.9 vs 0.6 (depth 2); n/a vs 0.7 (depth 4)"


EXTREME_VALUES = {"tanh": 1.0, "relu": 3.0, "sigmoid": 2.0}


@pytest.mark.parametrize(
    ("expect", "side", "result", "measured"),
    [
        ("relu", "highest", "pass", "relu 3, sigmoid 2, tanh 1"),
        ("sigmoid", "highest", "fail", "relu 3, sigmoid 2, tanh 1"),
        ("tanh", "lowest", "pass", "tanh 1, sigmoid 2, relu 3"),
        ("relu", "lowest", "fail", "tanh 1, sigmoid 2, relu 3"),
        (["tanh", "relu"], "highest", "pass", "relu 3, sigmoid 2, tanh 1"),
    ],
)
def test_extreme_expects_a_group_at_one_end(expect, side, result, measured):
    runs = make_runs(study(activation=["tanh", "relu", "sigmoid"]))
    runs = runs.pipe(with_values, "activation", EXTREME_VALUES)
    row = check(runs, check="extreme", by=["activation"], expect={"activation": expect}, side=side)
    assert (row["result"], row["measured"]) == (result, measured)
    shown = "/".join(expect) if isinstance(expect, list) else expect
    assert row["rule"] == (
        f"final_val_metric: activation={shown} has the {side} median of the groups by activation"
    )


def test_extreme_with_a_tie_at_the_top_fails():
    """Two groups sharing the extreme are no ordering, whichever of them was expected."""
    runs = make_runs(study(activation=["tanh", "relu", "sigmoid"]))
    runs = runs.pipe(with_values, "activation", {"tanh": 3.0, "relu": 3.0, "sigmoid": 1.0})
    for expect in ("tanh", "relu"):
        row = check(
            runs, check="extreme", by=["activation"], expect={"activation": expect}, side="highest"
        )
        assert row["result"] == "fail", (expect, row)


def test_first_layer_grad_weight_without_layer_one_rows_fails_the_claim():
    runs = make_runs(study(depth=[2, 4]))
    stats = [(rid, "init", 0, 2, "grad_weight_norm", 1.0) for rid in runs["run_id"]]
    row = check(
        runs,
        layer_stats=stats,
        measure="first_layer_grad_weight",
        check="decreasing",
        along="depth",
    )
    assert (row["result"], row["measured"]) == ("fail", "depth 2: n/a, depth 4: n/a")


@pytest.mark.parametrize(
    ("measure", "reason"),
    [
        ({"name": "epochs_to", "target": "high"}, "target must be float, not 'high'"),
        ({"name": "early_act_mean", "layer": 0}, "layer = 0; expected a hidden layer"),
        ({"name": "early_act_mean", "fraction": 1.5}, "fraction = 1.5; expected a share"),
        ({"name": "init_spread", "quantity": "act_stdd"}, "quantity = 'act_stdd'; expected a per-"),
        ({"name": "steps_to_loss", "target": "low"}, "target must be float, not 'low'"),
        ({"name": "steps_to_loss", "steps": 10}, "takes no 'steps'; it takes ['target']"),
        ({"name": "jacobian_spread", "points": 4}, "takes no 'points'; it takes none"),
    ],
)
def test_a_measure_argument_is_checked_before_anything_runs(measure, reason):
    with pytest.raises(ConfigError) as error:
        parse_claims({"c": claim_fields(measure=measure, check="between", low=0.0)})
    assert reason in str(error.value), str(error.value)


def test_extreme_by_two_axes_names_groups_by_both():
    runs = make_runs(study(activation=["tanh", "relu"], init=["default", "xavier_uniform"]))
    values = {
        ("tanh", "default"): 1.0,
        ("tanh", "xavier_uniform"): 2.0,
        ("relu", "default"): 4.0,
        ("relu", "xavier_uniform"): 3.0,
    }
    runs = runs.pipe(with_values, ("activation", "init"), values)
    fields = {"check": "extreme", "by": ["activation", "init"], "side": "highest"}
    row = check(runs, expect={"activation": "relu", "init": "default"}, **fields)
    assert row["result"] == "pass"
    assert row["measured"] == (
        "relu·default 4, relu·xavier_uniform 3, tanh·xavier_uniform 2, tanh·default 1"
    )
    assert check(runs, expect={"init": "xavier_uniform"}, **fields)["result"] == "fail"


def test_extreme_with_one_group_fails():
    runs = make_runs(study(activation=["tanh"])).pipe(with_values, "activation", {"tanh": 1.0})
    fields = {"by": ["activation"], "expect": {"activation": "tanh"}, "side": "highest"}
    assert check(runs, check="extreme", **fields)["result"] == "fail"


@pytest.mark.parametrize(
    ("a", "b", "tolerance", "result", "measured"),
    [
        (0.8, 0.85, 0.1, "pass", "0.8 vs 0.85 (gap 0.05)"),
        (0.85, 0.8, 0.1, "pass", "0.85 vs 0.8 (gap 0.05)"),
        (0.8, 0.85, 0.01, "fail", "0.8 vs 0.85 (gap 0.05)"),
        (1.0, 1.5, 0.5, "pass", "1 vs 1.5 (gap 0.5)"),  # the tolerance itself is close enough
        (1.0, 1.75, 0.5, "fail", "1 vs 1.75 (gap 0.75)"),
    ],
)
def test_close_within_tolerance(a, b, tolerance, result, measured):
    runs = GREATER_RUNS.pipe(with_values, "init", {"default": a, "xavier_uniform": b})
    row = check(runs, check="close", tolerance=tolerance, **A_DEFAULT)
    assert (row["result"], row["measured"]) == (result, measured)
    assert row["rule"] == (
        f"final_val_metric: |median[init=default] − median[init=xavier_uniform]| ≤ {tolerance:g}"
    )


@pytest.mark.parametrize(
    ("bounds", "value", "result", "rule"),
    [
        ({"low": 0.5}, 0.7, "pass", "median ≥ 0.5"),
        ({"low": 0.5}, 0.5, "pass", "median ≥ 0.5"),
        ({"low": 0.5}, 0.3, "fail", "median ≥ 0.5"),
        ({"high": 0.5}, 0.3, "pass", "median ≤ 0.5"),
        ({"high": 0.5}, 0.5, "pass", "median ≤ 0.5"),
        ({"high": 0.5}, 0.7, "fail", "median ≤ 0.5"),
        ({"low": 0.2, "high": 0.8}, 0.5, "pass", "0.2 ≤ median ≤ 0.8"),
        ({"low": 0.2, "high": 0.8}, 0.1, "fail", "0.2 ≤ median ≤ 0.8"),
        ({"low": 0.2, "high": 0.8}, 0.9, "fail", "0.2 ≤ median ≤ 0.8"),
    ],
)
def test_between_with_either_or_both_bounds(bounds, value, result, rule):
    runs = make_runs(study(depth=[2])).pipe(with_values, "depth", {2: value})
    row = check(runs, check="between", **bounds)
    assert (row["result"], row["measured"], row["rule"]) == (
        result,
        f"{value:g}",
        f"final_val_metric: {rule}",
    )


@pytest.mark.parametrize(
    ("values", "result"),
    [
        ({2: 1.0, 4: 1.5, 8: 0.8}, "pass"),
        ({2: 1.0, 4: 2.5, 8: 0.8}, "fail"),  # one level outside fails the claim
        ({2: 1.0, 4: 1.5, 8: NAN}, "fail"),  # as does one without a value
    ],
)
def test_between_per_level_needs_every_level_within_the_bounds(values, result):
    runs = make_runs(study(depth=[8, 2, 4])).pipe(with_values, "depth", values)
    row = check(runs, check="between", low=0.5, high=2.0, per="depth")
    assert row["result"] == result
    shown = {d: "n/a" if math.isnan(v) else f"{v:g}" for d, v in values.items()}
    assert row["measured"] == f"depth 2: {shown[2]}, depth 4: {shown[4]}, depth 8: {shown[8]}"
    assert row["rule"] == "final_val_metric: 0.5 ≤ median ≤ 2, at every depth"


def test_between_per_level_takes_the_median_over_seeds_within_where():
    runs = make_runs(study(depth=[2, 4], init=["default", "xavier_uniform"]), seeds=(0, 1, 2))
    values = {
        ("default", 2): [0.1, 0.9, 0.8],
        ("default", 4): [0.7, 0.0, 0.6],
        ("xavier_uniform", 2): 5.0,
        ("xavier_uniform", 4): 5.0,
    }
    runs = runs.pipe(with_values, ("init", "depth"), values)
    row = check(runs, check="between", where={"init": "default"}, low=0.5, per="depth")
    assert (row["result"], row["measured"]) == ("pass", "depth 2: 0.8, depth 4: 0.6")


# -- medians over seeds, missing values ----------------------------------------------------------


def test_one_outlier_seed_does_not_flip_a_greater_claim():
    runs = make_runs(study(init=["default", "xavier_uniform"]), seeds=(0, 1, 2))
    values = {"default": [0.6, -10.0, 0.6], "xavier_uniform": [0.5, 0.5, 0.5]}
    row = check(runs.pipe(with_values, "init", values), check="greater", **A_DEFAULT)
    assert (row["result"], row["measured"]) == ("pass", "0.6 vs 0.5")


def test_one_outlier_seed_does_not_flip_a_decreasing_claim():
    runs = make_runs(study(depth=[2, 4, 8]), seeds=(0, 1, 2))
    values = {2: [3.0, 3.0, 0.0], 4: [2.0, 9.0, 2.0], 8: [1.0, 1.0, 1.0]}
    row = check(runs.pipe(with_values, "depth", values), check="decreasing", along="depth")
    assert (row["result"], row["measured"]) == ("pass", "depth 2: 3, depth 4: 2, depth 8: 1")


@pytest.mark.parametrize(
    ("seed_values", "measured"),
    [([1.0, 3.0], "2"), ([0.6, NAN, 0.8], "0.7"), ([NAN, 0.4, NAN], "0.4")],
)
def test_median_is_over_the_seeds_with_a_value(seed_values, measured):
    runs = make_runs(study(depth=[2]), seeds=range(len(seed_values)))
    row = check(runs.pipe(with_values, "depth", {2: seed_values}), check="between", low=0.0)
    assert row["measured"] == measured


def test_where_restricts_the_runs_measured():
    runs = make_runs(study(depth=[2, 4, 8])).pipe(with_values, "depth", {2: 1.0, 4: 3.0, 8: 100})
    row = check(runs, check="between", where={"depth": [2, 4]}, high=2.0)
    assert (row["result"], row["measured"]) == ("pass", "2")
    assert row["rule"] == "final_val_metric over depth=2/4: median ≤ 2"


def test_a_group_without_finite_values_fails_and_says_n_a():
    runs = make_runs(study(dataset=["poly", "blobs"])).pipe(
        with_values, "dataset", {"poly": 0.9, "blobs": 0.75}
    )
    measure = {"measure": "val_error_pct"}
    row = check(runs, check="between", where={"dataset": "poly"}, low=0.0, **measure)
    assert (row["result"], row["measured"]) == ("fail", "n/a")
    a_blobs = {"a": {"dataset": "blobs"}, "b": {"dataset": "poly"}}
    row = check(runs, check="greater", **a_blobs, **measure)
    assert (row["result"], row["measured"]) == ("fail", "25 vs n/a")
    row = check(runs, check="greater", a=a_blobs["b"], b=a_blobs["a"], **measure)
    assert (row["result"], row["measured"]) == ("fail", "n/a vs 25")
    row = check(runs, check="close", tolerance=100.0, **a_blobs, **measure)
    assert (row["result"], row["measured"]) == ("fail", "25 vs n/a (gap n/a)")


OVER_LEVELS = [
    {"check": "decreasing", "along": "depth"},
    {"check": "extreme", "by": ["depth"], "expect": {"depth": 4}, "side": "highest"},
]


@pytest.mark.parametrize("fields", OVER_LEVELS)
def test_decreasing_and_extreme_fail_when_no_level_has_a_value(fields):
    runs = make_runs(study(depth=[2, 4])).pipe(with_values, "depth", {2: 0.9, 4: 0.8})
    row = check(runs, measure="val_error_pct", **fields)  # poly: a regression, no error %
    assert row["result"] == "fail"


@pytest.mark.parametrize("fields", OVER_LEVELS)
def test_a_level_without_values_fails_a_claim_over_levels(fields):
    runs = make_runs(study(depth=[2, 4, 8])).pipe(with_values, "depth", {2: NAN, 4: 2.0, 8: 1.0})
    row = check(runs, **fields)
    assert row["result"] == "fail"
    assert "n/a" in row["measured"]


def test_epochs_to_never_sorts_last():
    """``inf`` (the target never reached) is a value: above every finite number of epochs."""
    runs = make_runs(study(init=["default", "xavier_uniform"]))
    ids = ids_by(runs, "init")
    history = [
        (ids["default"], 1, "val_metric", 0.1),
        (ids["xavier_uniform"], 1, "val_metric", 0.2),
        (ids["xavier_uniform"], 2, "val_metric", 0.6),
    ]
    measure = {"measure": {"name": "epochs_to", "target": 0.5}}
    row = check(runs, history, check="greater", **A_DEFAULT, **measure)
    assert (row["result"], row["measured"]) == ("pass", "never vs 2")
    assert row["rule"].startswith("epochs_to(target=0.5): ")
    swapped = {"a": A_DEFAULT["b"], "b": A_DEFAULT["a"]}
    row = check(runs, history, check="greater", **swapped, **measure)
    assert (row["result"], row["measured"]) == ("fail", "2 vs never")
    row = check(runs, history, check="between", where={"init": "default"}, high=5.0, **measure)
    assert (row["result"], row["measured"]) == ("fail", "never")


def test_a_claim_on_a_measure_from_layer_stats():
    runs = make_runs(study(depth=[2, 3])).pipe(with_values, "depth", {2: 200, 3: 100}, "steps")
    stats = _act_mean_stats(ids_by(runs, "depth"))
    measure = {"name": "early_act_mean", "layer": -1, "fraction": 0.2}
    row = check(runs, layer_stats=stats, measure=measure, check="between", high=0.1)
    # medians of 0.1 (depth 2) and 0.2 (depth 3)
    assert (row["result"], row["measured"]) == ("fail", "0.15")
    assert row["rule"] == "early_act_mean(layer=-1, fraction=0.2): median ≤ 0.1"


# -- selection and the table ----------------------------------------------------------------------


def _two_study_runs() -> pd.DataFrame:
    """tanh·d8·w64 is in studies a and b; study ab's name contains a's and b's."""
    return make_runs(
        study("a", activation=["tanh", "relu"]),
        study("b", depth=[8, 4]),
        study("ab", width=[32]),
        baseline=RunSpec(activation="tanh", depth=8, width=64),
    )


def _picked(runs: pd.DataFrame, selection: dict) -> list[tuple]:
    chosen = select(runs, selection)
    return list(zip(chosen["activation"], chosen["depth"], chosen["width"], strict=True))


def test_select_by_study_membership():
    runs = _two_study_runs()
    assert runs["studies"].tolist() == ["a,b", "a", "b", "ab"]
    assert _picked(runs, {"study": "a"}) == [("tanh", 8, 64), ("relu", 8, 64)]
    assert _picked(runs, {"study": "b"}) == [("tanh", 8, 64), ("tanh", 4, 64)]
    assert _picked(runs, {"study": "ab"}) == [("tanh", 8, 32)]
    assert _picked(runs, {"study": ["a", "ab"]}) == [
        ("tanh", 8, 64),
        ("relu", 8, 64),
        ("tanh", 8, 32),
    ]
    assert _picked(runs, {"study": "a,b"}) == []
    assert _picked(runs, {"study": "c"}) == []


def test_select_with_lists_and_several_axes():
    runs = _two_study_runs()
    assert len(select(runs, {})) == 4
    assert _picked(runs, {"activation": ["relu", "sigmoid"]}) == [("relu", 8, 64)]
    assert _picked(runs, {"depth": [4, 8], "width": 64}) == [
        ("tanh", 8, 64),
        ("relu", 8, 64),
        ("tanh", 4, 64),
    ]
    assert _picked(runs, {"study": "b", "activation": "tanh", "depth": 4}) == [("tanh", 4, 64)]
    assert _picked(runs, {"study": "ab", "width": 64}) == []


def test_check_claims_returns_one_row_per_claim_in_order():
    runs = make_runs(study(depth=[2, 4])).pipe(with_values, "depth", {2: 0.9, 4: 0.4})
    claims = parse_claims(
        {
            "zeta": claim_fields(check="between", low=0.5, where={"depth": 2}),
            "alpha": claim_fields(check="decreasing", along="depth", claim="depth hurts"),
            "mid": claim_fields(check="greater", a={"depth": 4}, b={"depth": 2}, paper="3 vs 1"),
        }
    )
    table = check_claims(claims, inputs(runs))
    assert list(table.columns) == CLAIM_COLUMNS
    assert table["claim_id"].tolist() == ["zeta", "alpha", "mid"]
    assert table["result"].tolist() == ["pass", "pass", "fail"]
    assert table["claim"].tolist() == ["a statement", "depth hurts", "a statement"]
    assert table["paper"].tolist() == ["a number", "a number", "3 vs 1"]
    assert table["source"].tolist() == ["a paper"] * 3


def test_check_claims_without_claims_is_an_empty_table():
    table = check_claims({}, inputs(make_runs(study(depth=[2]))))
    assert table.empty
    assert list(table.columns) == CLAIM_COLUMNS


# -- configuration --------------------------------------------------------------------------------

MEASURE_CHOICES = sorted(MEASURES)
AXIS_CHOICES = sorted(SELECT_AXES)


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        (
            {"check": "bigger"},
            f"claims.c.check = 'bigger': expected one of {list(CHECKS)}",
        ),
        ({}, f"claims.c.check = (not set): expected one of {list(CHECKS)}"),
        (
            {"check": "between", "low": 0.0, "measure": "accuracy"},
            f"claims.c.measure = 'accuracy': unknown measure 'accuracy'; "
            f"expected one of {MEASURE_CHOICES}",
        ),
        (
            {"check": "between", "low": 0.0, "measure": {"name": "epochs_to", "targte": 0.5}},
            "claims.c.measure = {'name': 'epochs_to', 'targte': 0.5}: "
            "measure 'epochs_to' takes no 'targte'; it takes ['target']",
        ),
        (
            {"check": "between", "low": 0.0, "measure": {"name": "val_error_pct", "target": 1}},
            "claims.c.measure = {'name': 'val_error_pct', 'target': 1}: "
            "measure 'val_error_pct' takes no 'target'; it takes none",
        ),
        (
            {"check": "between", "low": 0.0, "measure": {"name": "epochs_to", "target": [1]}},
            "claims.c.measure = {'name': 'epochs_to', 'target': [1]}: "
            "measure 'epochs_to': target must be float, not [1]",
        ),
        (
            {"check": "between", "low": 0.0, "measure": {"target": 0.5}},
            "claims.c.measure = {'target': 0.5}: a measure given as a mapping needs 'name': "
            f"one of {list(MEASURES)}",
        ),
        (
            {"check": "between", "low": 0.0, "where": {"activaton": "tanh"}},
            "claims.c.where = {'activaton': 'tanh'}: unknown axis to select runs by "
            f"'activaton'; expected one of {AXIS_CHOICES}",
        ),
        (
            {"check": "greater", "a": {"optimiser": "sgd"}, "b": {}},
            "claims.c.a = {'optimiser': 'sgd'}: unknown axis to select runs by 'optimiser'; "
            f"expected one of {AXIS_CHOICES}",
        ),
        (
            {"check": "greater", "b": {}},
            "claims.c.a = (not set): Field required",
        ),
        (
            {"check": "decreasing", "along": "dpeth"},
            f"claims.c.along = 'dpeth': unknown axis 'dpeth'; expected one of {AXIS_CHOICES}",
        ),
        (
            {"check": "extreme", "by": ["activation", "nit"], "expect": {}, "side": "highest"},
            f"claims.c.by[1] = 'nit': unknown axis 'nit'; expected one of {AXIS_CHOICES}",
        ),
        (
            {"check": "between", "low": 1.0, "hihg": 2.0},
            "claims.c.hihg = 2.0: unknown key (a typo?)",
        ),
    ],
)
def test_parse_claims_names_path_value_and_choices(fields, line):
    with pytest.raises(ConfigError) as error:
        parse_claims({"c": claim_fields(**fields)})
    assert str(error.value).splitlines()[1:] == [f"  {line}"]


@pytest.mark.parametrize(
    ("bounds", "reason"),
    [({}, "a 'between' check needs low, high or both"), ({"low": 2.0, "high": 1.0}, None)],
)
def test_parse_claims_rejects_between_without_a_bound_or_with_low_above_high(bounds, reason):
    fields = claim_fields(check="between", **bounds)
    with pytest.raises(ConfigError) as error:
        parse_claims({"c": fields})
    reason = reason or "low 2.0 is above high 1.0"
    # the problem is the claim as a whole: its path is the claim's, its value the whole mapping
    assert error.value.problems == [("claims.c", fields, reason)]


def test_parse_claims_lists_every_bad_claim():
    with pytest.raises(ConfigError) as error:
        parse_claims(
            {
                "one": claim_fields(check="between"),
                "two": claim_fields(check="close", a={}, b={}, tolerance=0.0),
            }
        )
    assert [path for path, _, _ in error.value.problems] == ["claims.one", "claims.two.tolerance"]


def test_parse_claims_accepts_nothing_and_valid_claims():
    assert parse_claims(None) == {}
    assert parse_claims({}) == {}
    parsed = parse_claims(
        {"c": claim_fields(check="between", low=1, measure={"name": "init_spread"})}
    )
    assert parsed["c"].check == "between"
    assert parsed["c"].low == 1.0


def _params_with(claim_extra: dict) -> dict:
    params = base_parameters()
    params["claims"] = {"x": claim_fields(**claim_extra)}
    return params


def test_validate_parameters_accepts_claims_that_select_runs():
    extra = {
        "where": {"study": "activation_depth"},
        "check": "greater",
        "a": {"activation": "relu"},
        "b": {"activation": ["sigmoid", "tanh"]},
    }
    parsed = validate_parameters(_params_with(extra))
    assert parsed.claims["x"].check == "greater"


def test_validate_parameters_flags_a_selection_that_selects_no_run():
    where = {"study": "activation_depth"}
    extra = {"where": where, "check": "greater", "a": {"optimizer": "adam"}, "b": {}}
    with pytest.raises(ConfigError) as error:
        validate_parameters(_params_with(extra))
    # the value shown is the selection as checked: ``where`` merged into ``a``
    assert error.value.problems == [
        ("claims.x.a", {**where, "optimizer": "adam"}, "selects no run of the grid")
    ]
    assert (
        "  claims.x.a = {'study': 'activation_depth', 'optimizer': 'adam'}: "
        "selects no run of the grid"
    ) in str(error.value)


def test_validate_parameters_flags_every_selection_of_a_claim_on_a_missing_study():
    where = {"study": "no_such_study"}
    extra = {"where": where, "check": "close", "a": {"depth": 2}, "b": {}, "tolerance": 1.0}
    with pytest.raises(ConfigError) as error:
        validate_parameters(_params_with(extra))
    assert error.value.problems == [
        ("claims.x.where", where, "selects no run of the grid"),
        ("claims.x.a", {**where, "depth": 2}, "selects no run of the grid"),
        ("claims.x.b", where, "selects no run of the grid"),
    ]


def test_validate_parameters_flags_an_extreme_expect_on_a_value_not_in_the_grid():
    extra = {"check": "extreme", "by": ["activation"], "expect": {"activation": "swish"}}
    with pytest.raises(ConfigError) as error:
        validate_parameters(_params_with({**extra, "side": "lowest"}))
    assert error.value.problems == [
        ("claims.x.expect", {"activation": "swish"}, "selects no run of the grid")
    ]


def test_validate_parameters_reports_a_bad_claim_with_its_path():
    with pytest.raises(ConfigError) as error:
        validate_parameters(_params_with({"check": "bigger"}))
    assert error.value.problems == [("claims.x.check", "bigger", f"expected one of {list(CHECKS)}")]
