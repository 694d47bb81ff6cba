"""An activation and a quantity registered here, and nowhere else, reach every part of the lab:
the grid's validation, the stacked training, the probes and ``layer_stats``, the mean-field
prediction, the MLflow child's metrics and the report's glossary."""

import math

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from scipy import integrate, special
from torch import nn

from gradlab.core import quantities
from gradlab.core.activations import ACTIVATIONS, Activation, register_activation
from gradlab.core.config import parse_train
from gradlab.core.grid import RunSpec
from gradlab.core.quantities import QUANTITIES, Quantity, register_quantity
from gradlab.core.report.page import build_html
from gradlab.core.theory import init_variances, predict_profile
from gradlab.core.train import train_run
from gradlab.tracking import Child, Tracker
from tests.helpers.config import base_parameters
from tests.helpers.training import SMALL, task


def _swish(x: np.ndarray) -> np.ndarray:
    return x * special.expit(x)


def _swish_grad(x: np.ndarray) -> np.ndarray:
    s = special.expit(x)
    return s * (1.0 + x * (1.0 - s))


@pytest.fixture
def registered():
    """swish (torch's SiLU) and ``act_abs_max``, taken out of the registries again after."""
    swish = register_activation(
        Activation(
            "swish", nn.SiLU, _swish, _swish_grad, gain=1.0, relu_like=True, paper="Ramachandran"
        )
    )
    abs_max = register_quantity(
        Quantity(
            "act_abs_max",
            "hidden",
            "activation units",
            "max |·| over units and batch",
            "largest |φ(h)| in the layer",
            measure=lambda h, a, g: a.abs().amax((1, 2)),
        )
    )
    yield swish, abs_max
    del ACTIVATIONS[swish.name], QUANTITIES[abs_max.name]


def test_a_registered_activation_and_quantity_reach_every_part(registered, tmp_path):
    spec = RunSpec(**SMALL, activation="swish", init="kaiming_normal", seed=3)
    data = task()
    result = train_run(spec, data)
    assert result.status == "finished", result.summary.get("error")

    # probed at init and in training, beside the built-in quantities it does not displace
    stats = result.layer_stats
    mine = stats[stats["quantity"] == "act_abs_max"]
    assert set(mine["phase"]) == {"init", "train"}
    assert sorted(mine["layer"].unique()) == [1, 2, 3]
    std = stats[stats["quantity"] == "act_std"].set_index(["phase", "step", "layer"])["value"]
    top = mine.set_index(["phase", "step", "layer"])["value"]
    assert (top >= std.loc[top.index]).all()  # the largest |φ(h)| is at least φ(h)'s spread
    assert set(quantities.measured()) <= set(stats["quantity"])

    # theory predicts with swish's φ': χ₁ = σ_w² E[φ'(√q z)²], integrated here by scipy
    theory = stats[stats["phase"] == "theory"]
    chi1 = theory[theory["quantity"] == "chi1"].sort_values("layer")["value"].to_numpy()
    q = theory[theory["quantity"] == "preact_std"].sort_values("layer")["value"].to_numpy() ** 2
    sigma_w2, _ = init_variances("kaiming_normal", "swish", spec.width, spec.width)
    for q_l, chi in zip(q, chi1, strict=True):

        def density(z: float, q_l: float = q_l) -> float:
            return _swish_grad(math.sqrt(q_l) * z) ** 2 * math.exp(-z * z / 2)

        expected = sigma_w2 * integrate.quad(density, -np.inf, np.inf)[0] / math.sqrt(2 * math.pi)
        assert chi == pytest.approx(expected, rel=1e-8)
    widths = [data.x_train.shape[1], *[spec.width] * spec.depth, data.n_outputs]
    assert predict_profile("swish", "kaiming_normal", widths, 1.0).chi1.shape == (spec.depth,)
    assert math.isfinite(result.summary["theory_log_slope"])

    # the MLflow child run carries the new quantity's metrics
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        mlflow.set_experiment("extend")
        with mlflow.start_run():
            child = Tracker().log_run(spec, result, Child("s"))
        keys = set(MlflowClient().get_run(child).data.metrics)
    finally:
        mlflow.set_tracking_uri(None)
    assert {"act_abs_max/first", "act_abs_max/last"} <= keys

    # the parameters accept it, and the report explains it
    train = {**base_parameters()["train"], "mlflow_quantities": ["act_abs_max"]}
    assert parse_train(train).mlflow_quantities == ["act_abs_max"]
    assert "act_abs_max</dt><dd>largest |φ(h)| in the layer" in build_html("t", "o", [])


def test_registering_needs_a_new_name_and_a_measure():
    with pytest.raises(ValueError, match="'tanh' is already registered"):
        register_activation(ACTIVATIONS["tanh"])
    with pytest.raises(ValueError, match="needs a measure"):
        register_quantity(Quantity("act_p99", "hidden", "units", "99 % quantile", "tail of φ(h)"))
    expected = r"unknown quantity scope 'global'; expected one of \['hidden', 'weight'\]"
    with pytest.raises(ValueError, match=expected):
        register_quantity(Quantity("x", "global", "units", "max", "x", measure=torch.max))
    with pytest.raises(ValueError, match="unknown quantity scope 'layer'"):
        register_quantity(Quantity("x", "layer", "units", "max", "x", measure=torch.max))
