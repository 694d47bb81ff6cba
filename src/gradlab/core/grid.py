"""Run specs and the grid: a baseline spec plus named studies, each varying one or two axes.

A run spec is a frozen, validated record of every knob. Its id is a short hash of its canonical
JSON form, so the same spec has the same id in every process and on every machine: results are
cached, skipped and resumed by id.
"""

import fnmatch
import functools
import hashlib
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gradlab.core import theory
from gradlab.core.activations import ACTIVATIONS
from gradlab.core.architectures import ARCHITECTURES
from gradlab.core.data import DATASETS, INPUT_NORMS
from gradlab.core.inits import INITS, get_init, scalable_inits
from gradlab.core.models import NORM_LAYERS
from gradlab.core.optim import OPTIMIZERS, SCHEDULES
from gradlab.core.registry import lookup
from gradlab.core.residual import BRANCHES, RESIDUAL_NORMS, residual_alpha

# Which registry validates each named axis: the same tables the train stage builds from.
REGISTRIES: dict[str, tuple[Mapping[str, Any], str]] = {
    "dataset": (DATASETS, "dataset"),
    "input_norm": (INPUT_NORMS, "input_norm"),
    "activation": (ACTIVATIONS, "activation"),
    "init": (INITS, "init"),
    "norm_layer": (NORM_LAYERS, "norm_layer"),
    "arch": (ARCHITECTURES, "arch"),
    "optimizer": (OPTIMIZERS, "optimizer"),
    "schedule": (SCHEDULES, "schedule"),
}


class RunSpec(BaseModel):
    """Every knob of one training run."""

    # allow_inf_nan=False: an infinite lr or init_std is a typo, not an experiment
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    dataset: str = "poly"
    input_norm: str = "zscore"
    activation: str = "tanh"
    init: str = "default"
    init_std: float | None = Field(default=None, gt=0)  # used by init "normal" only
    # biases ~ N(0, bias_std²), so σ_b² = bias_std², instead of the init's own rule
    bias_std: float | None = Field(default=None, gt=0)
    # σ_w² = fan_in · Var[W] of a scalable init (kaiming, orthogonal) in place of the
    # activation's gain²: a number (as text, "1.5") or "critical", where χ₁(q*) = 1 for the
    # activation and σ_b² (Pennington et al. 2017); None keeps the gain
    sigma_w2: str | None = None
    norm_layer: str = "none"
    arch: str = "mlp"
    # the branch multiplier α of a residual net: a number (as text, "0.5") or a rule of
    # gradlab.core.residual.RESIDUAL_SCALES; residual_branch: preact or postact (resmlp only)
    residual_scale: str | None = None
    residual_branch: str | None = None
    depth: int = Field(default=8, gt=0, le=256)
    width: int = Field(default=64, gt=0, le=8192)
    optimizer: str = "sgd"
    lr: float = Field(default=0.05, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    schedule: str = "constant"
    clip: float | None = Field(default=None, gt=0)  # max global gradient norm; None = no clipping
    batch_size: int = Field(default=64, gt=0)
    epochs: int = Field(default=10, gt=0)
    seed: int = Field(default=0, ge=0)
    log_every: int = Field(default=10, gt=0)

    @field_validator(*REGISTRIES)
    @classmethod
    def _registered(cls, name: str, info: Any) -> str:
        table, kind = REGISTRIES[info.field_name]
        lookup(table, name, kind)
        return name

    @field_validator("residual_scale")
    @classmethod
    def _scale(cls, scale: str | None) -> str | None:
        if scale is not None:
            residual_alpha(scale, 1)  # raises with the valid choices
        return scale

    @field_validator("sigma_w2")
    @classmethod
    def _sigma_w2(cls, sigma_w2: str | None) -> str | None:
        if sigma_w2 is not None and sigma_w2 != CRITICAL:
            try:
                number = float(sigma_w2)
            except ValueError:
                number = math.nan
            if not (math.isfinite(number) and number > 0.0):
                raise ValueError(
                    f"sigma_w2 {sigma_w2!r}: expected a number > 0 or {CRITICAL!r} (σ_w² where "
                    "χ₁ = 1)"
                )
        return sigma_w2

    @field_validator("residual_branch")
    @classmethod
    def _branch(cls, branch: str | None) -> str | None:
        if branch is not None:
            lookup(BRANCHES, branch, "residual_branch")
        return branch

    @model_validator(mode="before")
    @classmethod
    def _drop_unused(cls, data: Any) -> Any:
        # a field that means nothing to this run is dropped (init_std to inits but normal, the
        # residual fields to an MLP), and a residual one left out gets its default: one id per
        # distinct run
        if not isinstance(data, dict):
            return data
        unused = set() if data.get("init", "default") == "normal" else {"init_std"}
        if data.get("arch", "mlp") == "mlp":
            unused |= set(RESIDUAL_FIELDS)
        data = {k: v for k, v in data.items() if k not in unused}
        if data.get("sigma_w2") is not None:
            data["sigma_w2"] = _sigma_w2_text(data["sigma_w2"])
        if data.get("arch", "mlp") != "mlp":
            for name, default in RESIDUAL_FIELDS.items():
                data[name] = default if data.get(name) is None else data[name]
            data["residual_scale"] = _scale_text(data["residual_scale"])
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "RunSpec":
        if self.init == "normal" and self.init_std is None:
            raise ValueError("init 'normal' needs init_std > 0 (the weights' standard deviation)")
        if self.arch == "mlp" and self.init == "fixup":
            raise ValueError(
                "init 'fixup' zero-initializes residual branches: it needs arch resmlp"
            )
        if self.arch != "mlp" and self.norm_layer not in RESIDUAL_NORMS:
            raise ValueError(
                f"norm_layer {self.norm_layer!r} has no place in a residual branch, which "
                f"normalizes φ's input; expected one of {list(RESIDUAL_NORMS)}"
            )
        if self.sigma_w2 is not None and not get_init(self.init).scalable:
            raise ValueError(
                f"sigma_w2 applies to inits {scalable_inits()}, whose σ_w² is their gain²; "
                f"got init {self.init!r}"
            )
        if self.sigma_w2 == CRITICAL and math.isnan(
            sigma_w2_value(CRITICAL, self.activation, self.bias_std)
        ):
            raise ValueError(
                f"sigma_w2 'critical': χ₁(q*) does not cross 1 in σ_w² ∈ [1e-4, 1e4] for "
                f"activation {self.activation!r} with σ_b² = {(self.bias_std or 0.0) ** 2:g} "
                "(bias_std²); give sigma_w2 a number"
            )
        return self

    @property
    def weight_gain(self) -> float | None:
        """The gain every layer draws with in place of the activation's: ``√σ_w²`` of
        ``sigma_w2`` (``critical`` solved by ``sigma_w2_value``); None when unset."""
        if self.sigma_w2 is None:
            return None
        return math.sqrt(sigma_w2_value(self.sigma_w2, self.activation, self.bias_std))

    @property
    def residual_learnable(self) -> bool:
        """α is a trained parameter (a rule such as ``rezero``); False for an MLP."""
        return self.residual_scale is not None and residual_alpha(self.residual_scale, 1)[1]

    @property
    def run_id(self) -> str:
        """Ten hex digits of the SHA-256 of the canonical form."""
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:10]

    def canonical(self) -> str:
        """Sorted-key compact JSON of every field: the spec's identity. An MLP's leaves out the
        residual fields, and a spec without bias_std or sigma_w2 that field, so a run's id is
        the one it had before they existed."""
        exclude = {"arch", *RESIDUAL_FIELDS} if self.arch == "mlp" else set()
        exclude |= {name for name in ("bias_std", "sigma_w2") if getattr(self, name) is None}
        fields = self.model_dump(exclude=exclude)
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))

    @property
    def init_name(self) -> str:
        """The init with its parameter, e.g. ``normal(1)``."""
        return f"normal({_number(self.init_std)})" if self.init == "normal" else self.init

    @property
    def label(self) -> str:
        """A readable name, unique per spec: the axes a reader scans first, then every other axis
        whose value is not the default (so runs that differ only in width still differ by name)."""
        parts = [self.activation, self.init_name, self.optimizer, f"d{self.depth}", self.input_norm]
        for axis, prefix in _LABELLED_WHEN_SET.items():
            value = getattr(self, axis)
            if value not in (RunSpec.model_fields[axis].default, _UNLABELLED.get(axis)):
                parts.append(f"{prefix}{_number(value)}")
        parts += [f"lr{_number(self.lr)}", self.dataset, f"s{self.seed}"]
        return "·".join(parts)

    def name_against(self, baseline: "RunSpec", max_length: int = 40) -> str:
        """A short name within one grid: the label's parts for the axes that differ from
        ``baseline``, then the seed (``relu·d16·s0``; ``baseline·s1`` for the baseline itself).
        Unique among the runs of one baseline; one longer than ``max_length`` is cut and ends
        with the run id instead, so it stays unique."""
        parts = [
            token
            for axis, token in self._tokens().items()
            if axis != "seed" and token != baseline._tokens()[axis]
        ]
        name = "·".join([*(parts or ["baseline"]), f"s{self.seed}"])
        if len(name) <= max_length:
            return name
        return f"{name[: max_length - len(self.run_id) - 1]}…{self.run_id}"

    def _tokens(self) -> dict[str, str]:
        """Each axis as the label writes it (``init`` carries ``init_std``)."""
        prefixes = {"depth": "d", "lr": "lr", "seed": "s", **_LABELLED_WHEN_SET}
        tokens = {axis: f"{prefixes.get(axis, '')}{_number(value)}" for axis, value in self}
        tokens["init"] = self.init_name
        del tokens["init_std"]
        return tokens


# A residual net's fields when left out (an MLP has none)
RESIDUAL_FIELDS = {"residual_scale": "1", "residual_branch": "preact"}

# The value of sigma_w2 that names the critical point, χ₁(q*) = 1
CRITICAL = "critical"


def sigma_w2_value(sigma_w2: str, activation: str, bias_std: float | None = None) -> float:
    """The σ_w² a run's ``sigma_w2`` names: its number, or for ``critical`` the σ_w² with
    χ₁(q*) = 1 for ``activation`` and σ_b² = ``bias_std²`` (0 without it), which
    ``theory.critical_sigma_w2`` solves (NaN where χ₁ does not cross 1): tanh 1 without biases
    and ≈ 1.761 with σ_b² = 0.05, relu 2.

    Args:
        sigma_w2: A validated ``RunSpec.sigma_w2``.
        activation: A registered activation.
        bias_std: The run's ``bias_std``; None for zero biases.
    Returns:
        σ_w².
    """
    if sigma_w2 != CRITICAL:
        return float(sigma_w2)
    return _critical_sigma_w2(activation, 0.0 if bias_std is None else bias_std**2)


@functools.cache
def _critical_sigma_w2(activation: str, sigma_b2: float) -> float:
    # a solve costs milliseconds, and every run of a stack asks
    return float(theory.critical_sigma_w2(activation, sigma_b2))


def _sigma_w2_text(sigma_w2: Any) -> Any:
    """A number as ``sigma_w2`` keeps it (``_scale_text``); a non-finite one as text too, so the
    validator names it rather than its type."""
    text = _scale_text(sigma_w2)
    if isinstance(text, float):  # inf or nan
        return repr(text)
    return text


# values the label leaves out besides the defaults: a residual net's usual branch
_UNLABELLED = {"residual_branch": "preact"}


def _scale_text(scale: Any) -> Any:
    """A number as ``residual_scale`` keeps it: its shortest text (``1`` and ``1.0`` → ``"1"``,
    ``"0.50"`` → ``"0.5"``), so one α has one run id; a rule's name, or anything else for the
    validator to refuse, as it is."""
    if isinstance(scale, bool):
        return scale
    try:
        number = float(scale)
    except (TypeError, ValueError):
        return scale
    return _number(number) if math.isfinite(number) else scale


def _number(value: Any) -> str:
    """Shortest exact form (``repr``): 0.05 → "0.05", 1.0 → "1"; distinct values stay distinct."""
    return repr(value).removesuffix(".0") if isinstance(value, float) else str(value)


# Axes a label shows only when they differ from RunSpec's default, with their prefix; the names
# of norm layers and schedules need none. With the always-shown axes this covers every field.
_LABELLED_WHEN_SET = {
    "sigma_w2": "σw²",
    "bias_std": "bstd",
    "arch": "",
    "residual_scale": "α",
    "residual_branch": "",
    "norm_layer": "",
    "schedule": "",
    "clip": "clip",
    "width": "w",
    "batch_size": "bs",
    "weight_decay": "wd",
    "epochs": "e",
    "log_every": "le",
}


AXES: tuple[str, ...] = tuple(name for name in RunSpec.model_fields if name != "seed")


class Study(BaseModel):
    """A question and the axes it varies around the baseline (their product is its run set)."""

    model_config = ConfigDict(frozen=True)

    name: str
    question: str
    axes: dict[str, tuple[Any, ...]]


def expand(baseline: RunSpec, studies: Sequence[Study], seeds: Sequence[int]) -> pd.DataFrame:
    """Expand studies × seeds into one row per distinct run.

    Args:
        baseline: The spec every study starts from.
        studies: The studies; each value combination of a study's axes replaces the baseline's.
        seeds: Every combination is run once per seed.
    Returns:
        One row per run, de-duplicated by id, in first-seen order: ``run_id``, ``label``,
        ``name`` (short, against the baseline), ``studies`` (comma-separated names),
        ``init_name`` and every spec field.
    """
    rows: dict[str, dict[str, Any]] = {}
    for study in studies:
        for combo in itertools.product(*study.axes.values()):
            for seed in seeds:
                overrides = dict(zip(study.axes, combo, strict=True), seed=seed)
                # validated from the merged fields: a YAML number becomes residual_scale's text
                spec = RunSpec(**{**baseline.model_dump(), **overrides})
                row = rows.setdefault(
                    spec.run_id,
                    {
                        "run_id": spec.run_id,
                        "label": spec.label,
                        "name": spec.name_against(baseline),
                        "studies": [],
                        "init_name": spec.init_name,
                        **spec.model_dump(),
                    },
                )
                if study.name not in row["studies"]:
                    row["studies"].append(study.name)
    table = pd.DataFrame(list(rows.values()))
    table["studies"] = table["studies"].map(",".join)
    return table


def select(table: pd.DataFrame, patterns: Sequence[str]) -> pd.DataFrame:
    """The rows of a ``run_specs`` table that belong to a named study or whose label matches a glob.

    Args:
        table: One row per run with ``label`` and ``studies`` (comma-separated).
        patterns: Study names (``optimizer``) or label globs (``relu·*·d16·*``).
    Returns:
        The selected rows, in table order.
    """
    studies = table["studies"].str.split(",")
    chosen = pd.Series(False, index=table.index)
    for pattern in patterns:
        chosen |= studies.map(lambda names, p=pattern: p in names)
        chosen |= table["label"].map(lambda label, p=pattern: fnmatch.fnmatchcase(label, p))
    return table[chosen]


def specs_from_table(table: pd.DataFrame) -> list[RunSpec]:
    """Rebuild the run specs of a ``run_specs`` or ``runs`` table (the inverse of ``expand``)."""
    # a table from before a field existed lacks its column: that field is None (unset)
    fields = table.reindex(columns=list(RunSpec.model_fields)).astype(object)
    records = fields.where(fields.notna(), None).to_dict("records")
    # lax: parquet may hand back 8.0 for 8 or numpy scalars; the values were validated on the way in
    return [RunSpec.model_validate(record, strict=False) for record in records]
