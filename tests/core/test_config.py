"""Every parameter is validated before anything runs; errors name the key path and the choices."""

import copy
import math

import pytest
import torch
import yaml

from gradlab.core.config import NAME_RULE, ConfigError, validate_parameters
from tests.helpers.config import CONF, base_parameters


def test_default_parameters_are_valid():
    parsed = validate_parameters(base_parameters())
    assert len(parsed.grid.studies) >= 6
    assert parsed.grid.baseline.depth == 8


def _set(params: dict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    node = params
    for key in parents:
        node = node[key]
    node[leaf] = value


BAD = [
    # (key path to set, bad value, expected path in the message, expected words)
    ("grid.baseline.activation", "swish", "grid.baseline.activation", "expected one of"),
    ("grid.baseline.depth", 0, "grid.baseline.depth", "greater than 0"),
    ("grid.baseline.width", -4, "grid.baseline.width", "greater than 0"),
    ("grid.baseline.lr", 0.0, "grid.baseline.lr", "greater than 0"),
    ("grid.baseline.batch_size", 0, "grid.baseline.batch_size", "greater than 0"),
    ("grid.baseline.epochs", -1, "grid.baseline.epochs", "greater than 0"),
    ("grid.baseline.depth", "eight", "grid.baseline.depth", "valid integer"),
    ("grid.baseline.lr", "fast", "grid.baseline.lr", "valid number"),
    ("grid.baseline.optimiser", "adam", "grid.baseline.optimiser", "unknown key"),
    ("grid.baseline.init", "he", "grid.baseline.init", "expected one of"),
    ("grid.baseline.schedule", "linear", "grid.baseline.schedule", "expected one of"),
    ("grid.baseline.norm_layer", "groupnorm", "grid.baseline.norm_layer", "expected one of"),
    ("grid.baseline.dataset", "mnist", "grid.baseline.dataset", "expected one of"),
    (
        "grid.studies.activation_init.activation",
        ["tanh", "relu", "swish"],
        "grid.studies.activation_init.activation[2]",
        "expected one of",
    ),
    (
        "grid.studies.optimizer.optimizer",
        ["sgd", "adamm"],
        "grid.studies.optimizer.optimizer[1]",
        "expected one of",
    ),
    (
        "grid.studies.activation_depth.depth",
        [2, 0],
        "grid.studies.activation_depth.depth[1]",
        "greater than 0",
    ),
    (
        "grid.studies.activation_depth.dpeth",
        [2],
        "grid.studies.activation_depth.dpeth",
        "not a run-spec field",
    ),
    (
        "grid.studies.activation_depth.activation",
        [],
        "grid.studies.activation_depth.activation",
        "non-empty list",
    ),
    (
        "grid.studies.empty",
        {"question": "nothing varies?"},
        "grid.studies.empty",
        "varies at least one axis",
    ),
    ("grid.studies", {}, "grid.studies", "non-empty"),
    ("grid.seeds", [], "grid.seeds", "non-empty list"),
    ("grid.seeds", [0, 0], "grid.seeds", "distinct"),
    ("grid.baseline.input_norm", "robust", "grid.baseline.input_norm", "expected one of"),
    ("data.input_norms", ["raw", "zcore"], "data.input_norms[1]", "expected one of"),
    ("data.split.val", 1.5, "data.split.val", "less than 1"),
    ("data.datasets.poly.n_samples", -10, "data.datasets.poly.n_samples", "greater than 0"),
    ("data.datasets.poly.degre", 3, "data.datasets.poly.degre", "unknown key"),
    ("data.datasets.mnist", {}, "data.datasets.mnist", "expected one of"),
    ("train.workers", 0, "train.workers", "'auto' or an integer"),
    ("train.device", "tpu", "train.device", "expected one of"),
    ("train.force", "yes", "train.force", "valid boolean"),
    ("train.divergence_factor", 0.5, "train.divergence_factor", "greater than 1"),
    (
        "train.mlflow_quantities",
        ["grad_preact_rms", "gradnorm"],
        "train.mlflow_quantities[1]",
        "expected one of",
    ),
    ("train.mlflow_layer_every", 0, "train.mlflow_layer_every", "greater than 0"),
    ("train.mlflow_layers", "both", "train.mlflow_layers", "'ends' or 'all'"),
    ("train.mlflow", "off", "train.mlflow", "valid boolean"),
    ("train.probe_batch_size", -1, "train.probe_batch_size", "greater than 0"),
    ("train.spectrum.points", -1, "train.spectrum.points", "greater than or equal to 0"),
    ("train.spectrum.points", 100, "train.spectrum.points", "less than or equal to 64"),
    ("train.spectrum.checkpoints", "often", "train.spectrum.checkpoints", "valid boolean"),
    ("train.spectrum.pionts", 2, "train.spectrum.pionts", "unknown key"),
    ("train.probe_batch_size", 2, "train", "spectrum.points 4 is more than the probe batch"),
    ("train.max_replicas", 0, "train.max_replicas", "greater than 0"),
    ("train.max_replicas", 5000, "train.max_replicas", "less than or equal to 1024"),
    ("train.executor", "ray", "train.executor", "'local' or 'dask'"),
    ("train.dask.address", "localhost:8786", "train.dask.address", "such as tcp://host:8786"),
    ("train.dask.address", "tcp://host:8786/x", "train.dask.address", "such as tcp://host:8786"),
    ("train.dask.adress", "tcp://host:8786", "train.dask.adress", "unknown key"),
    ("train.store", "", "train.store", "at least 1 character"),
    ("gird", {}, "gird", "unknown parameters section"),
    ("report.max_layers_violin", 0, "report.max_layers_violin", "greater than 0"),
    ("report.max_layers_lines", 50, "report.max_layers_lines", "less than or equal to 20"),
    ("report.phase_resolution", 5, "report.phase_resolution", "greater than or equal to 10"),
    ("report.loss_curve", "test_loss", "report.loss_curve", "'val_loss' or 'train_loss'"),
    # values that only this machine or the whole config can rule out
    ("train.device", "cuda:abc", "train.device", "not a device of this machine"),
    ("train.device", "cpu:7", "train.device", "expected one of ['auto', 'cpu'"),
    ("data.split.val", 0.8, "data.split", "leaves no train split"),
    ("data.datasets.poly.n_samples", 4, "data.datasets.poly.n_samples", "leaves 2 train"),
    ("grid.baseline.lr", math.inf, "grid.baseline.lr", "finite number"),
    ("grid.studies.activation_init.init_std", [math.nan], "grid.studies.activation_init", "finite"),
    ("grid.studies.optimizer.lr", [0.01, math.inf], "grid.studies.optimizer.lr[1]", "finite"),
    ("train.divergence_factor", math.inf, "train.divergence_factor", "finite number"),
    ("grid.studies", {}, "grid.studies", "non-empty mapping of studies"),
    ("train.max_runs", 100, "grid", "more than train.max_runs = 100"),
    ("train.only", ["optimizer", "nope*"], "train.only[1]", "selects no run"),
    ("train.max_steps", 0, "train.max_steps", "greater than 0"),
    ("grid.baseline.epochs", 10**8, "grid", "more than train.max_steps = 5,000,000"),
    ("grid.baseline.epochs", 2**62, "grid", "more than train.max_steps"),  # no int64 wrap-around
    ("grid.baseline.batch_size", 5000, "grid", "larger than the 1200 train rows of poly"),
    (
        "grid.studies.dataset.batch_size",
        [1100],
        "grid",
        "larger than the 1079 train rows of digits",
    ),
]


@pytest.mark.parametrize(("key", "value", "path", "words"), BAD, ids=[b[2] for b in BAD])
def test_validate_parameters_rejects_bad_value_naming_its_path(key, value, path, words):
    params = copy.deepcopy(base_parameters())
    _set(params, key, value)
    with pytest.raises(ConfigError) as caught:
        validate_parameters(params)
    message = str(caught.value)
    assert f"  {path} = " in message, message
    assert words in message, message


def test_study_normal_init_without_std_is_rejected():
    params = base_parameters()
    params["grid"]["studies"]["activation_init"].pop("init_std")
    with pytest.raises(ConfigError, match=r"grid\.studies\.activation_init = .*init_std"):
        validate_parameters(params)


def _study_problems(**axes) -> str:
    params = base_parameters()
    params["grid"]["studies"]["res"] = {"question": "Do skips help?", **axes}
    with pytest.raises(ConfigError) as caught:
        validate_parameters(params)
    return str(caught.value)


def test_bad_residual_values_are_refused_naming_key_value_and_choices():
    # checked on a residual net even though the baseline is an MLP (which would drop them)
    message = _study_problems(
        residual_scale=["foo", 0.5, -1], residual_branch=["mid"], arch=["mlp", "resnet"]
    )
    assert (
        "grid.studies.res.residual_scale[0] = 'foo': residual_scale 'foo': expected a number "
        ">= 0 or one of ['1/sqrt(depth)', 'rezero']"
    ) in message
    assert "grid.studies.res.residual_scale[2] = -1:" in message
    assert "residual_scale[1]" not in message  # 0.5 is a fixed α
    assert "residual_branch[0] = 'mid': unknown residual_branch 'mid'; expected one of " in message
    assert "arch[1] = 'resnet': unknown arch 'resnet'; expected one of ['mlp', 'resmlp']" in message


def test_residual_combinations_that_cannot_be_built_are_refused():
    message = _study_problems(arch=["resmlp"], norm_layer=["batchnorm_post"])
    assert "norm_layer 'batchnorm_post' has no place in a residual branch" in message
    assert "['none', 'batchnorm_pre', 'layernorm']" in message
    assert "init 'fixup' zero-initializes residual branches: it needs arch resmlp" in (
        _study_problems(init=["fixup"])
    )


def test_dataset_not_produced_by_data_stage_is_rejected():
    params = base_parameters()
    params["data"]["datasets"].pop("digits")
    with pytest.raises(ConfigError, match=r"grid\.studies\.dataset\.dataset\[2\] = 'digits'"):
        validate_parameters(params)


def test_all_problems_are_reported_at_once():
    params = base_parameters()
    params["grid"]["baseline"]["depth"] = 0
    params["train"]["workers"] = -1
    with pytest.raises(ConfigError) as caught:
        validate_parameters(params)
    assert len(caught.value.problems) == 2, caught.value


def test_study_without_question_names_the_missing_key():
    params = base_parameters()
    params["grid"]["studies"]["optimizer"].pop("question")
    with pytest.raises(ConfigError) as caught:
        validate_parameters(params)
    assert "grid.studies.optimizer.question = (not set): expected the question" in str(caught.value)


def test_cuda_is_refused_on_a_machine_without_it():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    params = base_parameters()
    params["train"]["device"] = "cuda"
    with pytest.raises(ConfigError, match=r"train\.device = 'cuda': not a device of this machine"):
        validate_parameters(params)


def test_max_runs_lets_a_big_grid_through_when_raised():
    params = base_parameters()
    params["grid"]["studies"]["big"] = {"question": "Width?", "width": list(range(1, 1201))}
    with pytest.raises(ConfigError, match=r"grid = '2\d{3} runs': more than train.max_runs"):
        validate_parameters(params)
    params["train"]["max_runs"] = 5000
    validate_parameters(params)


def test_max_steps_names_the_longest_run_and_lets_a_long_grid_through_when_raised():
    params = base_parameters()
    params["grid"]["studies"]["optimizer"]["epochs"] = [20, 50_000]
    with pytest.raises(ConfigError) as caught:
        validate_parameters(params)
    message = str(caught.value)
    # 28 runs of 50,000 epochs × 19 batches of 64 of 1,200 train rows, and the rest of the grid
    assert "'26,649,392 optimizer steps': more than train.max_steps" in message, message
    assert "e50000·lr0.003·poly·s0, takes 950,000: 50,000 epochs); to train" in message, message
    assert "raise it (--params train.max_steps=26649392)" in message, message
    params["train"]["max_steps"] = 26_649_392
    validate_parameters(params)


@pytest.mark.parametrize(
    "name", ["/tmp/<b>study</b>", "../../outside", "a/b", "two,studies", "dot.ted", "", "x" * 65]
)
def test_a_study_name_that_is_no_plain_name_is_refused(name):
    params = base_parameters()
    studies = params["grid"]["studies"]
    studies[name] = studies.pop("optimizer")
    with pytest.raises(ConfigError) as caught:
        validate_parameters(params)
    assert caught.value.problems == [
        (f"grid.studies.{name}", name, "not a usable name: " + NAME_RULE)
    ]


def test_a_claim_id_that_is_no_plain_name_is_refused():
    claims = yaml.safe_load((CONF.parent / "he2015" / "parameters_claims.yml").read_text())
    claim = next(iter(claims["claims"].values()))
    params = base_parameters() | {"claims": {"../tag": claim}}
    with pytest.raises(ConfigError) as caught:
        validate_parameters(params)
    assert ("claims.../tag", "../tag", "not a usable name: " + NAME_RULE) in caught.value.problems


@pytest.mark.parametrize(
    "address", ["", "tcp://10.0.0.5:8786", "tls://scheduler.lab:8786", "tcp://[::1]:8786"]
)
def test_dask_scheduler_addresses_are_accepted(address):
    params = base_parameters()
    params["train"] |= {"executor": "dask", "dask": {"address": address}}
    assert validate_parameters(params).train.dask.address == address


def _baseline_problems(**fields) -> str:
    params = base_parameters()
    params["grid"]["baseline"].update(fields)
    with pytest.raises(ConfigError) as caught:
        validate_parameters(params)
    return str(caught.value)


@pytest.mark.parametrize(
    ("value", "text"), [("big", "big"), (-1, "-1"), (0, "0"), (math.inf, "inf")]
)
def test_a_sigma_w2_that_is_no_positive_number_or_critical_is_refused(value, text):
    # a number is kept as its text before it is checked, and named so
    message = _baseline_problems(init="orthogonal", sigma_w2=value)
    assert f"  grid.baseline.sigma_w2 = {text!r}: sigma_w2 {text!r}: " in message, message
    assert "expected a number > 0 or 'critical'" in message, message
    study = _study_problems(init=["orthogonal"], sigma_w2=[1, value])
    assert f"  grid.studies.res.sigma_w2[1] = {value!r}: sigma_w2 {text!r}: " in study, study


def test_sigma_w2_on_an_init_without_a_gain_is_refused_naming_the_inits():
    message = _baseline_problems(sigma_w2=2)  # the baseline's init is xavier_uniform
    assert (
        "sigma_w2 applies to inits ['kaiming_uniform', 'kaiming_normal', 'orthogonal'], whose "
        "σ_w² is their gain²; got init 'xavier_uniform'"
    ) in message, message
    # in a study, the combination that cannot be built is named
    study = _study_problems(init=["orthogonal", "lecun_normal"], sigma_w2=[1, "critical"])
    assert "'init': 'lecun_normal'" in study and "got init 'lecun_normal'" in study, study


def test_critical_sigma_w2_without_a_crossing_is_refused():
    message = _baseline_problems(
        init="orthogonal", activation="sigmoid", bias_std=1000.0, sigma_w2="critical"
    )
    assert "sigma_w2 'critical': χ₁(q*) does not cross 1" in message, message
    assert "activation 'sigmoid' with σ_b² = 1e+06" in message, message


def test_a_study_of_sigma_w2_is_valid():
    params = base_parameters()
    params["grid"]["studies"]["sigma_w2"] = {
        "question": "Do orthogonal nets train at any σ_w²?",
        "init": ["orthogonal", "kaiming_normal"],
        "sigma_w2": [0.5, 1, "critical"],
    }
    parsed = validate_parameters(params)
    assert parsed.grid.studies[-1].axes["sigma_w2"] == (0.5, 1, "critical")
