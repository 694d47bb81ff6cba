"""Validation of every parameter before anything runs.

``validate_parameters`` checks the whole ``parameters`` dict (data, grid, train, report) and
raises one ``ConfigError`` listing every problem as ``key.path[i] = value: what is allowed``.
"""

import itertools
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar

import pandas as pd
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gradlab.core import quantities
from gradlab.core.claims import CHECKS, Claim
from gradlab.core.claims import select as select_claim_runs
from gradlab.core.data import DATASETS, INPUT_NORMS, split_sizes
from gradlab.core.grid import AXES, RESIDUAL_FIELDS, RunSpec, Study, expand, select
from gradlab.core.registry import lookup
from gradlab.core.task import available_devices


class ConfigError(ValueError):
    """Bad parameters: each problem names its key path, the bad value and what is allowed."""

    def __init__(self, problems: Sequence[tuple[str, Any, str]]) -> None:
        self.problems = list(problems)
        lines = [f"  {path} = {value!r}: {reason}" for path, value, reason in self.problems]
        count = f"{len(lines)} problem{'s' * (len(lines) != 1)}"
        super().__init__(f"invalid parameters ({count}):\n" + "\n".join(lines))


class _Missing:
    """A key that is not set; shown as such in a problem, and never mistaken for a value."""

    def __repr__(self) -> str:
        return "(not set)"


_MISSING = _Missing()


def _path(prefix: str, loc: Sequence[int | str]) -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _problems(prefix: str, error: ValidationError) -> list[tuple[str, Any, str]]:
    problems = []
    for item in error.errors():
        reason = item["msg"].removeprefix("Value error, ")
        value = _MISSING if item["type"] == "missing" else item.get("input")
        # a claim's location carries its check's name (the union's tag): the user never wrote it
        loc = list(item["loc"])
        if len(loc) > 2 and loc[0] == "claims" and loc[2] in CHECKS:
            del loc[2]
        if item["type"] == "extra_forbidden":
            reason = "unknown key (a typo?)"
        elif item["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc.append("check")
            value = value.get("check", _MISSING) if isinstance(value, Mapping) else value
            reason = f"expected one of {list(CHECKS)}"
        problems.append((_path(prefix, loc), value, reason))
    return problems


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


class SplitConfig(_Strict):
    """Fractions of each dataset held out; the rest is the train split."""

    val: float = Field(gt=0, lt=1)
    test: float = Field(ge=0, lt=1)

    @model_validator(mode="after")
    def _leaves_a_train_split(self) -> "SplitConfig":
        if self.val + self.test >= 1:
            raise ValueError(
                f"val + test = {self.val + self.test:g} leaves no train split; expected < 1"
            )
        return self


def _input_norm(name: str) -> str:
    lookup(INPUT_NORMS, name, "input_norm")
    return name


class DataConfig(_Strict):
    """``params:data``."""

    seed: int = Field(ge=0)
    split: SplitConfig
    input_norms: list[
        Annotated[
            str, AfterValidator(lambda name: lookup(INPUT_NORMS, name, "input_norm") and name)
        ]
    ] = Field(min_length=1)
    datasets: dict[str, dict[str, Any] | None] = Field(min_length=1)


# Per-layer quantities a child run gets in MLflow; the parquet tables always hold all of them.
# Each metric point costs ~0.1 ms in the sqlite store, so the default is the headline few.
DEFAULT_MLFLOW_QUANTITIES = (
    "grad_preact_rms",
    "grad_stream_rms",  # residual nets only
    "grad_weight_norm",
    "act_std",
    "act_saturation",
    "act_dead_frac",
    "update_ratio",
    "grad_global_norm",
    "loss",
)


def _quantity(name: str) -> str:
    lookup(dict.fromkeys(quantities.measured(stream=True)), name, "probe quantity")
    return name


# a Dask scheduler: scheme://host[:port], the host a name, an IPv4 or a bracketed IPv6 address
SCHEDULER_ADDRESS = re.compile(r"(tcp|tls|ws|wss|ucx)://(\[[0-9a-fA-F:.]+\]|[^\s/:\[\]]+)(:\d+)?")


class DaskConfig(_Strict):
    """``params:train.dask``: where ``executor: dask`` sends the groups of runs."""

    # empty: a LocalCluster of `workers` processes on this machine; else a running scheduler
    address: str = ""

    @field_validator("address")
    @classmethod
    def _scheduler_address(cls, address: str) -> str:
        if address and not SCHEDULER_ADDRESS.fullmatch(address):
            raise ValueError(
                "expected empty (a LocalCluster on this machine) or a scheduler address "
                "such as tcp://host:8786 (scheme tcp, tls, ws, wss or ucx)"
            )
        return address


class SpectrumConfig(_Strict):
    """``params:train.spectrum``: the input–output Jacobian's singular values
    (``gradlab.core.spectrum``), measured at init at the first ``points`` inputs of each run's
    probe batch, and at its distribution checkpoints too with ``checkpoints``."""

    points: int = Field(default=4, ge=0, le=64)  # 0: not measured
    checkpoints: bool = False


class TrainConfig(_Strict):
    """``params:train``: how the grid is executed, not what is trained (that is the run spec)."""

    executor: Literal["local", "dask"] = "local"
    dask: DaskConfig = Field(default_factory=DaskConfig)
    workers: int | str = "auto"
    device: str = "auto"
    force: bool = False
    # study names or label globs ("relu·*"): train (or, with force, retrain) just these runs
    only: list[str] = Field(default_factory=list)
    # a grid above this many runs is refused until this is raised: a typo must not start 10,000 runs
    max_runs: int = Field(default=2000, gt=0)
    # nor above this many optimizer steps, summed over its runs (epochs × batches per epoch): an
    # extra zero on epochs must not train for days
    max_steps: int = Field(default=5_000_000, gt=0)
    # runs of one model shape train together as one stacked model of at most this many replicas
    max_replicas: int = Field(default=32, gt=0, le=1024)
    divergence_factor: float = Field(default=1e4, gt=1)
    probe_batch_size: int = Field(default=256, gt=0)
    spectrum: SpectrumConfig = Field(default_factory=SpectrumConfig)
    store: str = Field(min_length=1)
    mlflow: bool = True  # False: no child run per run (the parquet tables hold everything)
    mlflow_layer_every: int = Field(default=4, gt=0)
    # per-layer metrics of the first and last layer (one chart across depths), or of every layer
    mlflow_layers: Literal["ends", "all"] = "ends"
    mlflow_quantities: list[Annotated[str, AfterValidator(_quantity)]] = Field(
        default_factory=lambda: list(DEFAULT_MLFLOW_QUANTITIES)
    )

    @field_validator("workers")
    @classmethod
    def _positive(cls, workers: int | str) -> int | str:
        if workers != "auto" and not (isinstance(workers, int) and workers >= 1):
            raise ValueError("expected 'auto' or an integer >= 1")
        return workers

    @field_validator("device")
    @classmethod
    def _device_of_this_machine(cls, device: str) -> str:
        if device not in (choices := available_devices()):
            raise ValueError(f"not a device of this machine; expected one of {choices}")
        return device

    @model_validator(mode="after")
    def _spectrum_points_in_probe_batch(self) -> "TrainConfig":
        if self.spectrum.points > self.probe_batch_size:
            raise ValueError(
                f"train.spectrum.points {self.spectrum.points} is more than the probe batch "
                f"(train.probe_batch_size {self.probe_batch_size}) it takes its inputs from"
            )
        return self

    @property
    def n_workers(self) -> int:
        """``workers`` with ``auto`` resolved to the number of cores."""
        return os.cpu_count() or 1 if self.workers == "auto" else int(self.workers)


class ReportConfig(_Strict):
    """``params:report``: how the report draws the stored results (it trains nothing)."""

    max_layers_violin: int = Field(default=8, gt=0, le=64)
    # layers drawn as separate lines in the per-layer histograms, saturation curves
    max_layers_lines: int = Field(default=8, gt=0, le=20)
    # mesh points along σ_w² of the phase diagram (σ_b² gets 5/8 as many); cost grows as its square
    phase_resolution: int = Field(default=80, ge=10, le=400)
    loss_curve: Literal["val_loss", "train_loss"] = "val_loss"


class GridConfig(_Strict):
    """``params:grid``, validated: a baseline, named studies and the seeds."""

    baseline: RunSpec
    studies: tuple[Study, ...]
    seeds: tuple[int, ...]

    def expanded(self) -> pd.DataFrame:
        """The grid's ``run_specs`` table (``expand``), expanded once for every caller of the
        same grid (validation, the hooks, the grid node); each gets its own copy."""
        key = self.model_dump_json()
        if key not in _EXPANDED:
            _EXPANDED.clear()  # the grid of this run only
            _EXPANDED[key] = expand(self.baseline, self.studies, self.seeds)
        return _EXPANDED[key].copy()


_EXPANDED: dict[str, pd.DataFrame] = {}  # GridConfig.expanded's table, by the grid's JSON


class Parameters(_Strict):
    """Every section of ``parameters``, validated."""

    data: DataConfig
    grid: GridConfig
    train: TrainConfig
    report: ReportConfig
    # a reproduction's claims (gradlab.core.claims), by id; none in the default environment
    claims: dict[str, Claim] = Field(default_factory=dict)


def _validate_datasets(data: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    problems: list[tuple[str, Any, str]] = []
    datasets = data.get("datasets")
    if not isinstance(datasets, Mapping):
        return problems  # DataConfig reports the type
    for name, kwargs in datasets.items():
        try:
            kind = lookup(DATASETS, name, "dataset")
        except ValueError as error:
            problems.append((f"data.datasets.{name}", name, str(error)))
            continue
        try:
            dataset_params = kind.params.model_validate(kwargs or {})
        except ValidationError as error:
            problems += _problems(f"data.datasets.{name}", error)
            continue
        problems += _check_split_sizes(name, getattr(dataset_params, "n_samples", None), data)
    return problems


# Names that become file names (a study's figure), MLflow keys (``claim.<id>`` tags, flattened
# params) and comma-separated lists (a run's studies): no separators, no dots, no markup.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
NAME_RULE = "expected 1–64 letters, digits, '_' or '-', starting with a letter or digit"


def _name_problems(path: str, name: Any) -> list[tuple[str, Any, str]]:
    if isinstance(name, str) and NAME.fullmatch(name):
        return []
    return [(path, name, f"not a usable name: {NAME_RULE}")]


def train_rows(data: DataConfig) -> dict[str, int]:
    """Rows of each dataset's train split, for those whose size the parameters fix."""
    rows = {}
    for name, kwargs in data.datasets.items():
        try:
            params = DATASETS[name].params.model_validate(kwargs or {})
        except (KeyError, ValidationError):
            continue  # _validate_datasets reports it
        n_samples = getattr(params, "n_samples", None)
        if n_samples is not None:
            rows[name] = split_sizes(n_samples, data.split.val, data.split.test)[0]
    return rows


def _check_split_sizes(name: str, n_samples: int | None, data: Mapping[str, Any]) -> list:
    """Each split of a generated dataset must hold rows: a model cannot train on none."""
    split = data.get("split")
    try:
        fractions = SplitConfig.model_validate(split)
    except ValidationError:
        return []  # DataConfig reports the split itself
    if n_samples is None:
        return []
    n_train, n_val, _ = split_sizes(n_samples, fractions.val, fractions.test)
    if min(n_train, n_val) >= 2:
        return []
    reason = (
        f"with split val={fractions.val:g}, test={fractions.test:g} this leaves {n_train} train "
        f"and {n_val} validation rows; expected at least 2 of each"
    )
    return [(f"data.datasets.{name}.n_samples", n_samples, reason)]


def _validate_grid(
    grid: Any, data: DataConfig | None
) -> tuple[GridConfig | None, list[tuple[str, Any, str]]]:
    if not isinstance(grid, Mapping):
        return None, [("grid", grid, "expected a mapping with baseline, studies and seeds")]
    problems: list[tuple[str, Any, str]] = [
        (f"grid.{key}", grid[key], "unknown key (a typo?); expected baseline, studies, seeds")
        for key in grid
        if key not in {"baseline", "studies", "seeds"}
    ]
    seeds = grid.get("seeds", _MISSING)
    problems += _seed_problems(seeds)
    baseline, baseline_problems = _validate_baseline(grid.get("baseline", _MISSING))
    problems += baseline_problems
    studies, study_problems = _validate_studies(grid.get("studies", _MISSING), baseline)
    problems += study_problems

    if data is not None and baseline is not None:
        problems += _cross_check(baseline, studies, data)
    if problems or baseline is None:
        return None, problems
    return GridConfig(baseline=baseline, studies=tuple(studies), seeds=tuple(seeds)), []


def _seed_problems(seeds: Any) -> list[tuple[str, Any, str]]:
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    ):
        return [("grid.seeds", seeds, "expected a non-empty list of integers >= 0")]
    if len(set(seeds)) != len(seeds):
        return [("grid.seeds", seeds, "seeds must be distinct")]
    return []


def _validate_baseline(raw: Any) -> tuple[RunSpec | None, list[tuple[str, Any, str]]]:
    if not isinstance(raw, Mapping):
        return None, [("grid.baseline", raw, "expected a mapping of run-spec fields")]
    if "seed" in raw:
        return None, [("grid.baseline.seed", raw["seed"], "seeds come from grid.seeds")]
    try:
        return RunSpec(**raw), []
    except ValidationError as error:
        return None, _problems("grid.baseline", error)


def _validate_studies(
    raw_studies: Any, baseline: RunSpec | None
) -> tuple[list[Study], list[tuple[str, Any, str]]]:
    problems: list[tuple[str, Any, str]] = []
    studies: list[Study] = []
    if not isinstance(raw_studies, Mapping) or not raw_studies:
        problems.append(("grid.studies", raw_studies, "expected a non-empty mapping of studies"))
        raw_studies = {}
    for name, raw in raw_studies.items():
        if name_problems := _name_problems(f"grid.studies.{name}", name):
            problems += name_problems
            continue
        # against the defaults when the baseline is broken, so study typos still show up now
        study, study_problems = _validate_study(
            f"grid.studies.{name}", name, raw, baseline or RunSpec()
        )
        problems += study_problems
        if study is not None:
            studies.append(study)
    return studies, problems


# Above this many runs before de-duplication the grid is not expanded just to be counted.
_COUNT_LIMIT = 100_000


def _runs_bound(grid: GridConfig) -> int:
    """How many runs the grid makes before de-duplication (an upper bound)."""
    return len(grid.seeds) * sum(
        math.prod(len(values) for values in study.axes.values()) for study in grid.studies
    )


def _check_grid_against_train(
    grid: GridConfig, train: TrainConfig, table: pd.DataFrame | None, data: DataConfig | None
) -> list[tuple[str, Any, str]]:
    """The grid's size against ``train.max_runs`` and ``train.max_steps``; every ``train.only``
    entry selects a run. ``table`` is the expanded grid, None when it is too large to expand."""
    problems: list[tuple[str, Any, str]] = []
    n_runs = _runs_bound(grid) if table is None else len(table)
    if n_runs > train.max_runs:
        problems.append(
            (
                "grid",
                f"{n_runs} runs",
                f"more than train.max_runs = {train.max_runs}; to train a grid this size, raise "
                f"it (--params train.max_runs={n_runs})",
            )
        )
        return problems
    if table is None:
        return problems
    if data is not None:
        problems += _check_steps(table, train, train_rows(data))
    study_names = [study.name for study in grid.studies]
    for i, pattern in enumerate(train.only):
        if select(table, [pattern]).empty:
            reason = f"selects no run; expected a study of {study_names} or a label glob"
            problems.append((f"train.only[{i}]", pattern, reason))
    return problems


def _check_steps(
    table: pd.DataFrame, train: TrainConfig, rows: Mapping[str, int]
) -> list[tuple[str, Any, str]]:
    """A batch must fit the train split, and the grid's optimizer steps must stay below
    ``train.max_steps``. ``rows``: train rows per dataset (those whose size is known)."""
    known = table[table["dataset"].isin(list(rows))]
    if known.empty:
        return []
    n_train = known["dataset"].map(rows)
    too_big = known[known["batch_size"] > n_train]
    if not too_big.empty:
        run = too_big.iloc[0]
        return [
            (
                "grid",
                f"batch_size {run['batch_size']} ({run['label']})",
                f"larger than the {rows[run['dataset']]} train rows of {run['dataset']}; "
                f"{len(too_big)} run(s) would silently train full-batch: lower batch_size",
            )
        ]
    # Python integers: an epochs of 2**62 must not wrap around in int64 to a small total
    steps = [
        int(epochs) * -(-int(n) // int(batch))  # epochs × batches an epoch
        for epochs, n, batch in zip(known["epochs"], n_train, known["batch_size"], strict=True)
    ]
    total = sum(steps)
    if total <= train.max_steps:
        return []
    longest = known.iloc[max(range(len(steps)), key=steps.__getitem__)]
    return [
        (
            "grid",
            f"{total:,} optimizer steps",
            f"more than train.max_steps = {train.max_steps:,} (the longest run, "
            f"{longest['label']}, takes {max(steps):,}: {longest['epochs']:,} epochs); "
            f"to train a grid this long, raise it (--params train.max_steps={total})",
        )
    ]


def _validate_study(
    prefix: str, name: str, raw: Any, baseline: RunSpec
) -> tuple[Study | None, list[tuple[str, Any, str]]]:
    if not isinstance(raw, Mapping):
        return None, [(prefix, raw, "expected a mapping: question and one or more axes")]
    problems: list[tuple[str, Any, str]] = []
    question = raw.get("question", _MISSING)
    if not isinstance(question, str) or not question.strip():
        problems.append((f"{prefix}.question", question, "expected the question the study asks"))
    axes = {k: v for k, v in raw.items() if k != "question"}
    if not axes:
        problems.append((prefix, dict(raw), f"a study varies at least one axis of {list(AXES)}"))
    for axis, values in axes.items():
        if axis not in AXES:
            reason = (
                "seeds come from grid.seeds"
                if axis == "seed"
                else f"not a run-spec field; expected one of {list(AXES)}"
            )
            problems.append((f"{prefix}.{axis}", values, reason))
        elif not isinstance(values, list) or not values:
            problems.append((f"{prefix}.{axis}", values, "expected a non-empty list of values"))
        else:
            # a value is checked where it applies: init_std under init normal, a residual
            # field on a residual net (elsewhere each is dropped, unchecked)
            applies = {"init_std": 1.0, **({"arch": "resmlp"} if axis in RESIDUAL_FIELDS else {})}
            for i, value in enumerate(values):
                try:
                    RunSpec(**{**baseline.model_dump(), axis: value, **applies})
                except ValidationError as error:
                    problems += [
                        (f"{prefix}.{axis}[{i}]", value, reason)
                        for path, _, reason in _problems("", error)
                        if path == f".{axis}"
                    ]
    if problems:
        return None, problems
    study = Study(name=name, question=question, axes={k: tuple(v) for k, v in axes.items()})
    problems = _check_combinations(prefix, study, baseline)
    return (None, problems) if problems else (study, [])


def _check_combinations(prefix: str, study: Study, baseline: RunSpec) -> list[tuple[str, Any, str]]:
    """Cross-field rules (e.g. init 'normal' needs init_std) that only a full combination shows."""
    for combo in itertools.product(*study.axes.values()):
        overrides = dict(zip(study.axes, combo, strict=True))
        try:
            RunSpec(**{**baseline.model_dump(), **overrides})
        except ValidationError as error:
            return [(prefix, overrides, reason) for _, _, reason in _problems("", error)]
    return []


def _cross_check(
    baseline: RunSpec, studies: Sequence[Study], data: DataConfig
) -> list[tuple[str, Any, str]]:
    """Every dataset and input_norm a run asks for must be one the data stage produces."""
    problems = []
    produced = {"dataset": sorted(data.datasets), "input_norm": sorted(data.input_norms)}
    for axis, allowed in produced.items():
        if getattr(baseline, axis) not in allowed:
            reason = f"not produced by the data stage (data.{axis}s); expected one of {allowed}"
            problems.append((f"grid.baseline.{axis}", getattr(baseline, axis), reason))
        for study in studies:
            for i, value in enumerate(study.axes.get(axis, ())):
                if value not in allowed:
                    reason = f"not produced by the data stage; expected one of {allowed}"
                    problems.append((f"grid.studies.{study.name}.{axis}[{i}]", value, reason))
    return problems


SECTIONS = ("data", "grid", "train", "report", "claims")


class _Claims(_Strict):
    claims: dict[str, Claim]


def _check_claims_against_grid(
    claims: Mapping[str, Any], table: pd.DataFrame
) -> list[tuple[str, Any, str]]:
    """Each selection of a claim must pick runs of the grid (``table``, expanded): a typo must
    not measure nothing."""
    problems = []
    for claim_id, claim in claims.items():
        for name, selection in claim.selections().items():
            if select_claim_runs(table, selection).empty:
                problems.append(
                    (f"claims.{claim_id}.{name}", selection, "selects no run of the grid")
                )
    return problems


def validate_parameters(params: Mapping[str, Any]) -> Parameters:
    """Validate the whole ``parameters`` dict, collecting every problem before raising.

    Args:
        params: Kedro's ``parameters`` (``--params`` overrides already merged in).
    Returns:
        The typed, validated parameters.
    Raises:
        ConfigError: listing each bad key path, its value and what is allowed.
    """
    problems: list[tuple[str, Any, str]] = [
        (key, params[key], f"unknown parameters section; expected one of {list(SECTIONS)}")
        for key in params
        if key not in SECTIONS
    ]
    sections, section_problems = _validate_sections(params)
    problems += section_problems
    grid, grid_problems = _validate_grid(params.get("grid", _MISSING), sections.get("data"))
    problems += grid_problems
    # expanded once, for the checks against the grid's runs (not at all past _COUNT_LIMIT)
    table = None
    if grid is not None and _runs_bound(grid) <= _COUNT_LIMIT:
        table = grid.expanded()
    if grid is not None and "train" in sections:
        problems += _check_grid_against_train(grid, sections["train"], table, sections.get("data"))
    if table is not None and sections.get("claims") and not problems:
        problems += _check_claims_against_grid(sections["claims"], table)
    if problems or grid is None:  # _validate_grid gives no grid only with problems
        raise ConfigError(problems)
    parameters = Parameters(grid=grid, **sections)
    # the nodes' parse_* find these sections: the parameters are validated once per run
    for key in ("data", "train", "report", "claims"):
        _PARSED[key, repr(params.get(key, {} if key != "claims" else None))] = sections[key]
    _PARSED["grid", repr((params["grid"], sections["data"]))] = grid
    return parameters


def _validate_sections(
    params: Mapping[str, Any],
) -> tuple[dict[str, Any], list[tuple[str, Any, str]]]:
    """The data, train, report and claims sections, each validated (those that are valid)."""
    problems: list[tuple[str, Any, str]] = []
    sections: dict[str, Any] = {}
    for key, model in (("data", DataConfig), ("train", TrainConfig), ("report", ReportConfig)):
        try:
            sections[key] = model.model_validate(params.get(key, {}))
        except ValidationError as error:
            problems += _problems(key, error)
    try:
        sections["claims"] = parse_claims(params.get("claims"))
    except ConfigError as error:
        problems += error.problems
    if isinstance(params.get("claims"), Mapping):
        for claim_id in params["claims"]:
            problems += _name_problems(f"claims.{claim_id}", claim_id)
    if isinstance(params.get("data"), Mapping):
        problems += _validate_datasets(params["data"])
    return sections, problems


_T = TypeVar("_T")
# Each section parsed, by its name and the repr of what it was parsed from (a repr keeps the
# order of keys and tells 1 from 1.0 and True, as strict validation does): validate_parameters
# fills it, so a node's parse_* finds the hook's result instead of validating again.
_PARSED: dict[tuple[str, str], Any] = {}


def _once(section: str, value: Any, parse: Callable[[], _T]) -> _T:
    key = (section, repr(value))
    if key not in _PARSED:
        if len(_PARSED) > 64:  # a long-lived process that validated many parameter sets
            _PARSED.clear()
        _PARSED[key] = parse()
    return _PARSED[key]


def _parse(key: str, model: type[BaseModel], value: Any) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as error:
        raise ConfigError(_problems(key, error)) from None


def parse_data(data: Mapping[str, Any]) -> DataConfig:
    """Validate ``params:data`` alone (for nodes run outside a validated session)."""

    def parse() -> DataConfig:
        config = _parse("data", DataConfig, data)
        if problems := _validate_datasets(data):
            raise ConfigError(problems)
        return config

    return _once("data", data, parse)


def parse_train(train: Mapping[str, Any]) -> TrainConfig:
    """Validate ``params:train`` alone."""
    return _once("train", train, lambda: _parse("train", TrainConfig, train))


def parse_report(report: Mapping[str, Any]) -> ReportConfig:
    """Validate ``params:report`` alone."""
    return _once("report", report, lambda: _parse("report", ReportConfig, report))


def parse_claims(claims: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate ``params:claims`` alone (an empty or missing section is no claims)."""

    def parse() -> dict[str, Any]:
        try:
            return _Claims.model_validate({"claims": claims or {}}).claims
        except ValidationError as error:
            # the locations start with "claims", the section's own name
            problems = [(path.removeprefix("."), v, why) for path, v, why in _problems("", error)]
            raise ConfigError(problems) from None

    return _once("claims", claims, parse)


def parse_grid(grid: Mapping[str, Any], data: DataConfig) -> GridConfig:
    """Validate ``params:grid`` against the datasets and input norms ``data`` produces."""

    def parse() -> GridConfig:
        config, problems = _validate_grid(grid, data)
        if problems or config is None:  # no grid only with problems
            raise ConfigError(problems)
        return config

    return _once("grid", (grid, data), parse)
