"""Run specs and the grid: a baseline spec plus named studies, each varying one or two axes.

A run spec is a frozen, validated record of every knob. Its id is a short hash of its canonical
JSON form, so the same spec has the same id in every process and on every machine: results are
cached, skipped and resumed by id.
"""

import fnmatch
import hashlib
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gradlab.core.activations import ACTIVATIONS
from gradlab.core.architectures import ARCHITECTURES
from gradlab.core.data import DATASETS, INPUT_NORMS
from gradlab.core.inits import INITS
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
        return self

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
        residual fields, and a spec without bias_std that field, so a run's id is the one it had
        before they existed."""
        exclude = {"arch", *RESIDUAL_FIELDS} if self.arch == "mlp" else set()
        if self.bias_std is None:
            exclude.add("bias_std")
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
    fields = table[list(RunSpec.model_fields)].astype(object)
    records = fields.where(fields.notna(), None).to_dict("records")
    # lax: parquet may hand back 8.0 for 8 or numpy scalars; the values were validated on the way in
    return [RunSpec.model_validate(record, strict=False) for record in records]
