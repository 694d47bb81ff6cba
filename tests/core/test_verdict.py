"""The verdict at init, the verdict over training, and how they are scored against the outcome."""

import math

import numpy as np
import pandas as pd
import pytest

from gradlab.core.verdict import (
    CONFUSION_COLUMNS,
    TRAINED_AT,
    VerdictRule,
    agreement,
    first_last_ratio,
    init_verdict,
    judge,
    verdict,
    verdict_confusion,
    verdicts_of,
)

NAN = math.nan
# Fixed thresholds, so these tests check the rules' order and edges, not the calibrated values.
RULE = VerdictRule(
    end_vanishing_ratio=0.3, end_exploding_ratio=30.0, saturated_frac=0.5, dead_frac=0.5
)


def test_first_last_ratio():
    assert first_last_ratio([2.0, 1.0, 0.5]) == 4.0
    assert math.isnan(first_last_ratio([1.0]))
    assert math.isnan(first_last_ratio([1.0, 0.0]))


@pytest.mark.parametrize(
    ("ratio", "expected"),
    [
        (1.0, "healthy"),
        (10.0, "healthy"),  # the thresholds themselves are healthy
        (10.000001, "exploding"),
        (1e6, "exploding"),
        (0.1, "healthy"),
        (0.099999, "vanishing"),
        (0.0, "vanishing"),
        (NAN, "n/a"),
    ],
)
def test_init_verdict_thresholds(ratio, expected):
    assert init_verdict(ratio) == expected


def test_init_verdict_with_other_thresholds():
    rule = VerdictRule(vanishing_ratio=0.5, exploding_ratio=2.0)
    assert [init_verdict(r, rule) for r in (0.4, 0.5, 1.5, 2.0, 3.0)] == [
        "vanishing",
        "healthy",
        "healthy",
        "healthy",
        "exploding",
    ]


def test_an_infinite_ratio_is_exploding():
    assert init_verdict(math.inf) == "exploding"
    assert verdict(math.inf, NAN, NAN, diverged=False) == "exploding"


@pytest.mark.parametrize(
    ("end_ratio", "saturation", "dead", "diverged", "expected"),
    [
        # diverged beats everything
        (1.0, 0.9, 0.9, True, "exploding"),
        (0.01, 0.9, 0.9, True, "exploding"),
        (NAN, NAN, NAN, True, "exploding"),
        # an exploding end ratio beats saturated and dead
        (31.0, 0.9, 0.9, False, "exploding"),
        (30.0, 0.0, 0.0, False, "healthy"),  # strictly above
        # vanishing beats saturated and dead
        (0.29, 0.9, 0.9, False, "vanishing"),
        (0.3, 0.0, 0.0, False, "healthy"),  # strictly below
        # saturated beats dead
        (1.0, 0.51, 0.9, False, "saturated"),
        (1.0, 0.5, 0.9, False, "dead"),  # strictly above
        (1.0, 0.1, 0.51, False, "dead"),
        (1.0, 0.1, 0.5, False, "healthy"),  # strictly above
        (1.0, 0.0, 0.0, False, "healthy"),
        # NaNs are no evidence either way
        (NAN, 0.9, 0.0, False, "saturated"),
        (NAN, NAN, 0.9, False, "dead"),
        (0.1, NAN, NAN, False, "vanishing"),
        (NAN, NAN, NAN, False, "healthy"),
    ],
)
def test_verdict_first_rule_that_holds_wins(end_ratio, saturation, dead, diverged, expected):
    assert verdict(end_ratio, saturation, dead, diverged, RULE) == expected


def test_verdict_with_other_thresholds():
    rule = VerdictRule(end_exploding_ratio=2.0, end_vanishing_ratio=0.5, saturated_frac=0.1)
    assert verdict(3.0, 0.0, 0.0, False, rule) == "exploding"
    assert verdict(0.4, 0.0, 0.0, False, rule) == "vanishing"
    assert verdict(1.0, 0.2, 0.0, False, rule) == "saturated"
    assert verdict(1.0, 0.0, 0.6, False, rule) == "dead"


@pytest.mark.parametrize(
    ("summary", "expected"),
    [
        (
            {
                "init_grad_ratio": None,
                "end_grad_ratio": None,
                "end_saturation": None,
                "end_dead_frac": None,
                "status": "finished",
            },
            ("n/a", "healthy"),
        ),
        (
            {
                "init_grad_ratio": 20.0,
                "end_grad_ratio": None,
                "end_saturation": 0.8,
                "status": "finished",
            },
            ("exploding", "saturated"),
        ),
        (
            {"init_grad_ratio": 0.05, "end_grad_ratio": None, "status": "diverged"},
            ("vanishing", "exploding"),
        ),
        (
            {"init_grad_ratio": np.float64(1.0), "end_dead_frac": np.float32(0.75)},
            ("healthy", "dead"),
        ),
        ({"init_grad_ratio": 3, "end_grad_ratio": 0}, ("healthy", "vanishing")),  # ints
        ({}, ("n/a", "healthy")),
    ],
)
def test_verdicts_of_a_summary_with_missing_numbers(summary, expected):
    result = verdicts_of(summary, RULE)
    assert (result["init_verdict"], result["verdict"]) == expected
    assert set(result) == {"init_verdict", "verdict"}


def test_verdicts_of_with_a_rule():
    rule = VerdictRule(exploding_ratio=1.0, end_vanishing_ratio=2.0)
    summary = {"init_grad_ratio": 1.5, "end_grad_ratio": 1.5, "status": "finished"}
    assert verdicts_of(summary, rule) == {"init_verdict": "exploding", "verdict": "vanishing"}


def _summaries() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": ["r1", "r2", "r3", "r4", "r5", "r6"],
            "status": ["finished", "diverged", "finished", "finished", "failed", "finished"],
            "metric_name": ["val_r2"] * 6,
            "final_val_metric": [0.9, 0.95, TRAINED_AT, 0.4999, NAN, NAN],
            "init_grad_ratio": [1.0, 50.0, 0.01, NAN, NAN, 1.0],
            "end_grad_ratio": [1.0, 1.0, 0.1, 1.0, NAN, 1.0],
            "end_saturation": [0.0, 0.0, 0.0, 0.9, NAN, 0.0],
            "end_dead_frac": [0.0, 0.0, 0.0, 0.0, NAN, 0.0],
        },
        index=[10, 11, 12, 13, 14, 15],
    )


def test_judge_adds_verdicts_and_trained():
    runs = _summaries()
    judged = judge(runs, RULE)
    assert list(judged.columns) == [*runs.columns, "init_verdict", "verdict", "trained"]
    assert judged.index.tolist() == runs.index.tolist()
    assert judged["init_verdict"].tolist() == [
        "healthy",
        "exploding",
        "vanishing",
        "n/a",
        "n/a",
        "healthy",
    ]
    assert judged["verdict"].tolist() == [
        "healthy",
        "exploding",  # diverged
        "vanishing",
        "saturated",
        "n/a",  # r5 failed: there is nothing to judge
        "healthy",
    ]
    # r2 diverged with a high metric: not trained; r3 is exactly at TRAINED_AT: trained
    assert judged["trained"].tolist() == [True, False, True, False, False, False]
    assert "trained" not in runs.columns  # the input is left alone


def test_judge_with_a_rule_rereads_the_stored_numbers():
    judged = judge(_summaries(), VerdictRule(exploding_ratio=0.5, end_vanishing_ratio=0.05))
    assert judged["init_verdict"].tolist() == [
        "exploding",
        "exploding",
        "vanishing",
        "n/a",
        "n/a",
        "exploding",
    ]
    assert judged["verdict"].iloc[2] == "healthy"


def test_judge_of_no_runs():
    judged = judge(_summaries().iloc[:0])
    assert judged.empty
    assert {"init_verdict", "verdict", "trained"} <= set(judged.columns)


def _judged() -> pd.DataFrame:
    """Six runs to count by hand."""
    return pd.DataFrame(
        [
            ("healthy", "healthy", True),  # agrees at init and over training
            ("healthy", "healthy", False),  # disagrees at both
            ("vanishing", "vanishing", False),  # agrees at both
            ("exploding", "exploding", False),  # agrees at both
            ("n/a", "saturated", True),  # no say at init; disagrees over training
            ("n/a", "healthy", True),  # no say at init; agrees over training
        ],
        columns=["init_verdict", "verdict", "trained"],
    )


def test_verdict_confusion_counts_by_hand():
    expected = pd.DataFrame(
        [
            ("at init", "exploding", 1, 0, 1, 1.0),
            ("at init", "vanishing", 1, 0, 1, 1.0),
            ("at init", "healthy", 2, 1, 1, 1.0),
            ("at init", "n/a", 2, 2, 0, NAN),
            ("over training", "exploding", 1, 0, 1, 1.0),
            ("over training", "vanishing", 1, 0, 1, 1.0),
            ("over training", "saturated", 1, 1, 0, 0.0),
            ("over training", "healthy", 3, 2, 1, 2.0),
        ],
        columns=CONFUSION_COLUMNS,
    )
    pd.testing.assert_frame_equal(verdict_confusion(_judged()), expected)


def test_verdict_confusion_of_no_runs_has_its_columns():
    table = verdict_confusion(_judged().iloc[:0])
    assert table.empty
    assert list(table.columns) == CONFUSION_COLUMNS


def test_agreement_leaves_n_a_out():
    runs = _judged()
    assert agreement(runs, "init_verdict") == 0.75  # 3 of the 4 judged
    assert agreement(runs, "verdict") == pytest.approx(4 / 6)
    assert math.isnan(agreement(runs[runs["init_verdict"] == "n/a"], "init_verdict"))


def test_agreement_matches_the_confusion_table():
    runs = _judged()
    table = verdict_confusion(runs)
    for when, column in (("at init", "init_verdict"), ("over training", "verdict")):
        rows = table[(table["when"] == when) & (table["verdict"] != "n/a")]
        assert agreement(runs, column) == rows["agree"].sum() / rows["runs"].sum()


def test_judge_then_confusion():
    table = verdict_confusion(judge(_summaries(), RULE))
    over_training = table[table["when"] == "over training"].set_index("verdict")
    assert over_training["runs"].to_dict() == {
        "exploding": 1,
        "vanishing": 1,
        "saturated": 1,
        "healthy": 2,
        "n/a": 1,
    }
    # healthy: r1 trained; r6 has no metric
    assert over_training.loc["healthy", ["trained", "agree"]].tolist() == [1, 1]
