"""Claims a reproduction checks: a paper's statement, the number gradlab measures for it, and a
rule, written down before the run, that says whether it reproduces.

A claim is one entry under ``claims:`` in an environment's parameters (see
``conf/glorot2010/parameters_claims.yml``)::

    tanh_normalized_beats_standard:
      claim: The normalized init trains tanh networks better than the standard one
      source: Glorot & Bengio 2010, Table 1 (Shapeset-3×2)
      paper: "test error 15.60 % (tanh N) vs 27.15 % (tanh)"
      measure: val_error_pct          # a per-run number of MEASURES
      where: {study: table1, activation: tanh}   # the runs it reads
      check: greater                   # a rule of CHECKS, with its own fields
      a: {init: default}
      b: {init: xavier_uniform}

A check compares groups of runs by the **median over seeds** of the measure (robust to one
unlucky seed; ``inf`` — e.g. a target never reached — sorts last). ``where``, ``a``, ``b`` and
``expect`` select runs by run-spec axes (a value or a list of values) and ``study`` (a study
name). The table ``check_claims`` returns has one row per claim: ``claim``, ``source``,
``paper``, ``measured``, ``rule`` and ``result`` (``pass`` or ``fail``; a claim whose runs left
no finite number fails, and says so).
"""

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

import numpy as np
import pandas as pd
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from gradlab.core import quantities
from gradlab.core.architectures import get_architecture
from gradlab.core.grid import AXES
from gradlab.core.registry import lookup

# What a selection may name: any run-spec axis, the seed, and the study a run belongs to.
SELECT_AXES: tuple[str, ...] = ("study", *AXES, "seed")
CLAIM_COLUMNS = ["claim_id", "claim", "source", "paper", "measured", "rule", "result"]


@dataclass(frozen=True)
class ClaimInputs:
    """The stored result tables a claim reads (``layer_stats``' quantities:
    ``gradlab.core.quantities``)."""

    runs: pd.DataFrame
    history: pd.DataFrame
    layer_stats: pd.DataFrame


# -- measures: one number per run, a Series indexed by run_id ------------------------------------


def final_val_metric(inputs: ClaimInputs) -> pd.Series:
    """The final validation metric: R² (regression) or accuracy (classification)."""
    return inputs.runs.set_index("run_id")["final_val_metric"]


def val_error_pct(inputs: ClaimInputs) -> pd.Series:
    """100 × (1 − final validation accuracy): the papers' "test error" on held-out data (gradlab
    selects nothing on its validation split, so it is as unseen as a test split)."""
    runs = inputs.runs.set_index("run_id")
    error = 100.0 * (1.0 - runs["final_val_metric"])
    return error.where(runs["metric_name"] == "val_accuracy")


def init_grad_ratio(inputs: ClaimInputs) -> pd.Series:
    """First over last hidden layer's RMS ∂L/∂h at init: below 1 the gradient shrinks towards
    the input."""
    return inputs.runs.set_index("run_id")["init_grad_ratio"]


def theory_gap(inputs: ClaimInputs) -> pd.Series:
    """How far the measured first/last gradient ratio at init lies from the mean-field
    prediction, in decades: |log₁₀(measured / predicted)| (0: on the theory line; NaN where
    theory predicts nothing)."""
    runs = inputs.runs.set_index("run_id")
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.abs(np.log10(runs["init_grad_ratio"] / runs["theory_first_last_ratio"]))
    return gap.astype(float)


def grad_growth(
    inputs: ClaimInputs, *, phase: str = "init", step: int = 0, skip: int = 3
) -> pd.Series:
    """Per-layer growth of the mean squared back-propagated gradient towards the input,
    exp(−2 × slope of ln RMS over layers), fitted over the hidden layers but the first and last
    ``skip`` (where the input's and the head's transients live): 1 is level, above 1 it grows
    towards the input (BatchNorm's explosion, Yang et al. 2019). ``phase``: ``init`` (the probe
    batch at init), ``train`` at probe step ``step`` (step 0: a training batch of the run's
    batch_size before any update; BatchNorm's growth depends on the batch) or ``theory`` (the
    mean-field prediction). The RMS read is each run's architecture's profile (∂L/∂h, or a
    residual net's ∂L/∂x)."""
    stats = inputs.layer_stats
    runs = inputs.runs.set_index("run_id")
    profile = runs["arch"].map(lambda arch: get_architecture(arch).profile)
    at = (stats["phase"] == phase) & ((stats["step"] == step) | (phase != "train"))
    rows = stats[at & stats["quantity"].isin(set(profile))]
    rows = rows[rows["quantity"].to_numpy() == profile.reindex(rows["run_id"]).to_numpy()]
    growth = {}
    for run_id, run in rows.groupby("run_id"):
        depth = int(runs.at[run_id, "depth"])
        kept = run[(run["layer"] > skip) & (run["layer"] <= depth - skip)]
        values = kept["value"].to_numpy(dtype=float)
        if len(kept) < 2 or not (np.isfinite(values).all() and (values > 0).all()):
            growth[run_id] = math.nan
            continue
        slope = np.polyfit(kept["layer"].to_numpy(dtype=float), np.log(values), 1)[0]
        growth[run_id] = math.exp(-2.0 * slope)
    return pd.Series(growth, dtype=float).reindex(runs.index)  # NaN: nothing to fit


def _at_init(inputs: ClaimInputs, quantity: str) -> pd.DataFrame:
    stats = inputs.layer_stats
    rows = stats[(stats["phase"] == "init") & (stats["quantity"] == quantity)]
    return rows.pivot_table(index="run_id", columns="layer", values="value", aggfunc="first")


def first_layer_grad_weight(inputs: ClaimInputs) -> pd.Series:
    """‖∂L/∂W₁‖ at init: the gradient the first layer's weights receive."""
    per_layer = _at_init(inputs, "grad_weight_norm")
    return per_layer[1] if 1 in per_layer else pd.Series(dtype=float)


def init_spread(inputs: ClaimInputs, *, quantity: str = "act_std") -> pd.Series:
    """Largest over smallest value across the hidden layers at init of a per-layer quantity
    (``act_std``: the forward signal; ``grad_preact_rms``: the backward one); 1 is level."""
    per_layer = _at_init(inputs, quantity)
    depth = inputs.runs.set_index("run_id")["depth"].reindex(per_layer.index)
    hidden = per_layer.where(per_layer.columns.to_numpy()[None, :] <= depth.to_numpy()[:, None])
    return hidden.max(axis=1) / hidden.min(axis=1)


def epochs_to(inputs: ClaimInputs, *, target: float = 0.5) -> pd.Series:
    """The first epoch whose validation metric reaches ``target`` (``inf``: never)."""
    history = inputs.history[inputs.history["metric"] == "val_metric"]
    reached = history[history["value"] >= target].groupby("run_id")["epoch"].min()
    # a run with no history (it failed) never had the chance: no value, not "never"
    return reached.reindex(history["run_id"].unique()).fillna(math.inf)


def early_act_mean(inputs: ClaimInputs, *, layer: int = -1, fraction: float = 0.2) -> pd.Series:
    """The lowest mean activation of one hidden layer over the first ``fraction`` of training
    (``layer`` −1 is the top hidden layer; Glorot & Bengio 2010, Fig. 2)."""
    stats = inputs.layer_stats
    rows = stats[(stats["phase"] == "train") & (stats["quantity"] == "act_mean")]
    runs = inputs.runs.set_index("run_id")
    rows = rows.join(runs[["depth", "steps"]], on="run_id")
    wanted = rows["depth"] + 1 + layer if layer < 0 else layer
    early = rows[(rows["layer"] == wanted) & (rows["step"] <= fraction * rows["steps"])]
    return early.groupby("run_id")["value"].min()


def _runs_column(inputs: ClaimInputs, column: str) -> pd.Series:
    runs = inputs.runs.set_index("run_id")
    return runs[column].astype(float) if column in runs else pd.Series(math.nan, runs.index)


def jacobian_frac_well_conditioned(inputs: ClaimInputs) -> pd.Series:
    """The share of the singular values s of the Jacobian J = ∂x_L/∂x_1 at init that lie within
    a factor 10 of 1, s ∈ (0.1, 10) (``gradlab.core.spectrum``; mean over the measured input
    points): 1 for a net in dynamical isometry (Pennington et al. 2017), falling as the spectrum
    spreads over decades. NaN where no spectrum was measured (BatchNorm nets)."""
    return _runs_column(inputs, "jacobian_frac_well_conditioned")


def jacobian_spread(inputs: ClaimInputs) -> pd.Series:
    """How widely J's squared singular values spread at init: the normalized variance
    v = Var[s²] / E[s²]², from the runs' ``jacobian_var_s2`` and ``jacobian_mean_s2`` (each a mean
    over the measured input points, so v is their ratio, not a mean of per-point ratios). 0 when
    every s is the same (an orthogonal linear net); free probability gives v a sum over layers,
    so at a fixed point it grows linearly with depth (``gradlab.core.spectrum_theory``)."""
    mean = _runs_column(inputs, "jacobian_mean_s2")
    return _runs_column(inputs, "jacobian_var_s2") / mean**2


def jacobian_spread_ratio(inputs: ClaimInputs) -> pd.Series:
    """Measured over predicted spread of J's squared singular values at init: ``jacobian_spread``
    divided by free probability's v = ``theory_jacobian_var_s2`` / ``theory_jacobian_mean_s2``²
    (1: on the theory line; NaN where theory predicts nothing, as for residual or normalized
    nets). At width n expect departures of O(depth / n), and a spectrum with v ≫ 1 is carried by
    its few largest s², whose sample variance over n values falls short of v
    (``gradlab.core.spectrum_theory``)."""
    mean = _runs_column(inputs, "theory_jacobian_mean_s2")
    theory = _runs_column(inputs, "theory_jacobian_var_s2") / mean**2
    with np.errstate(divide="ignore", invalid="ignore"):
        return jacobian_spread(inputs) / theory


def steps_to_loss(inputs: ClaimInputs, *, target: float = 0.5) -> pd.Series:
    """The first training probe step (every ``log_every`` steps, from step 0) whose training loss
    on its batch (``layer_stats``' global quantity ``loss``) is at or below ``target``; ``inf``:
    never, a diverged run's NaN loss included. One batch's loss is noisy, so a target well below
    the plateau a run leaves tells more than one just under it."""
    stats = inputs.layer_stats
    rows = stats[(stats["phase"] == "train") & (stats["quantity"] == "loss")]
    reached = rows[rows["value"] <= target].groupby("run_id")["step"].min().astype(float)
    # a run without loss rows (it failed) never had the chance: no value, not "never"
    return reached.reindex(rows["run_id"].unique()).fillna(math.inf)


MEASURES: dict[str, Callable[..., pd.Series]] = {
    "final_val_metric": final_val_metric,
    "val_error_pct": val_error_pct,
    "init_grad_ratio": init_grad_ratio,
    "theory_gap": theory_gap,
    "grad_growth": grad_growth,
    "first_layer_grad_weight": first_layer_grad_weight,
    "init_spread": init_spread,
    "epochs_to": epochs_to,
    "early_act_mean": early_act_mean,
    "jacobian_frac_well_conditioned": jacobian_frac_well_conditioned,
    "jacobian_spread": jacobian_spread,
    "jacobian_spread_ratio": jacobian_spread_ratio,
    "steps_to_loss": steps_to_loss,
}


# -- configuration ------------------------------------------------------------------------------


def _per_layer_quantities() -> tuple[str, ...]:
    return quantities.names("hidden", "weight")


# What a measure's keyword may hold, beyond its type: (test, what is expected).
_ARGUMENTS: dict[str, tuple[Callable[[Any], bool], Callable[[], str]]] = {
    "quantity": (
        lambda q: q in _per_layer_quantities(),
        lambda: f"a per-layer quantity of {list(_per_layer_quantities())}",
    ),
    "layer": (lambda layer: layer != 0, lambda: "a hidden layer: 1 is the first, −1 the top"),
    "fraction": (lambda f: 0 < f <= 1, lambda: "a share of training in (0, 1]"),
    "phase": (
        lambda p: p in ("init", "train", "theory"),
        lambda: "init, train (at a probe step) or theory",
    ),
    "step": (lambda n: n >= 0, lambda: "a probe step >= 0"),
    "skip": (lambda n: n >= 0, lambda: "a number of layers >= 0"),
}


def _check_selection(selection: dict[str, Any]) -> dict[str, Any]:
    for axis in selection:
        lookup(dict.fromkeys(SELECT_AXES), axis, "axis to select runs by")
    return selection


def _check_axis(axis: str) -> str:
    lookup(dict.fromkeys(SELECT_AXES), axis, "axis")
    return axis


# Runs picked by axis values (a value or a list of values) and "study"; an axis to group by.
Selection = Annotated[dict[str, Any], AfterValidator(_check_selection)]
Axis = Annotated[str, AfterValidator(_check_axis)]


class _Claim(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    claim: str = Field(min_length=1)  # the statement, in a sentence
    source: str = Field(min_length=1)  # paper and table or figure
    paper: str = Field(min_length=1)  # the paper's number or statement
    measure: str | dict[str, Any]  # a name of MEASURES, or {name: …, <its keyword>: …}
    where: Selection = Field(default_factory=dict)

    @field_validator("measure")
    @classmethod
    def _known_measure(cls, measure: str | dict[str, Any]) -> str | dict[str, Any]:
        name, kwargs = measure_call(measure)
        function = lookup(MEASURES, name, "measure")
        parameters = inspect.signature(function).parameters
        allowed = [p for p in parameters if p != "inputs"]
        for key, value in kwargs.items():
            if key not in allowed:
                raise ValueError(f"measure {name!r} takes no {key!r}; it takes {allowed or 'none'}")
            kind = parameters[key].annotation  # int, float or str
            numeric = kind is float and isinstance(value, int)
            if isinstance(value, bool) or not (isinstance(value, kind) or numeric):
                raise ValueError(f"measure {name!r}: {key} must be {kind.__name__}, not {value!r}")
            if (rule := _ARGUMENTS.get(key)) and not rule[0](value):
                raise ValueError(f"measure {name!r}: {key} = {value!r}; expected {rule[1]()}")
        return measure

    def selections(self) -> dict[str, dict[str, Any]]:
        """Every selection this claim makes, by field name (checked against the grid)."""
        return {"where": self.where}


class Decreasing(_Claim):
    """The measure falls at every step along an axis (e.g. as depth grows)."""

    check: Literal["decreasing"]
    along: Axis


class _TwoGroups(_Claim):
    """A claim comparing group ``a`` with group ``b`` (each within ``where``)."""

    a: Selection
    b: Selection

    def selections(self) -> dict[str, dict[str, Any]]:
        return {"where": self.where, "a": {**self.where, **self.a}, "b": {**self.where, **self.b}}


class Greater(_TwoGroups):
    """Group ``a`` above ``factor`` × group ``b`` (at every value of ``per``, if given)."""

    check: Literal["greater"]
    factor: float = Field(default=1.0, gt=0)
    per: Axis | None = None


class Extreme(_Claim):
    """Among the groups ``by`` the axes listed, the ``expect`` group is the highest or lowest."""

    check: Literal["extreme"]
    by: list[Axis] = Field(min_length=1)
    expect: Selection
    side: Literal["highest", "lowest"]

    def selections(self) -> dict[str, dict[str, Any]]:
        return {"where": self.where, "expect": {**self.where, **self.expect}}


class Close(_TwoGroups):
    """Groups ``a`` and ``b`` within ``tolerance`` of each other (in the measure's units)."""

    check: Literal["close"]
    tolerance: float = Field(gt=0)


class Between(_Claim):
    """The selection's median within [``low``, ``high``] (either bound may be left out); with
    ``per``, the median at every value of that axis."""

    check: Literal["between"]
    low: float | None = None
    high: float | None = None
    per: Axis | None = None

    @model_validator(mode="after")
    def _a_bound(self) -> "Between":
        if self.low is None and self.high is None:
            raise ValueError("a 'between' check needs low, high or both")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        return self


_KINDS = (Decreasing, Greater, Extreme, Close, Between)
Claim = Annotated[Decreasing | Greater | Extreme | Close | Between, Field(discriminator="check")]
# each kind's tag, as a claim's `check:` names it
CHECKS = tuple(get_args(kind.model_fields["check"].annotation)[0] for kind in _KINDS)


def measure_call(measure: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """A claim's ``measure`` as (name, keyword arguments)."""
    if isinstance(measure, str):
        return measure, {}
    kwargs = dict(measure)
    name = kwargs.pop("name", None)
    if not isinstance(name, str):
        raise ValueError("a measure given as a mapping needs 'name': one of " + str(list(MEASURES)))
    return name, kwargs


# -- evaluation ---------------------------------------------------------------------------------


def select(runs: pd.DataFrame, selection: Selection) -> pd.DataFrame:
    """The runs matching every axis of ``selection`` (a value, or a list of values)."""
    chosen = pd.Series(True, index=runs.index)
    for axis, wanted in selection.items():
        values = wanted if isinstance(wanted, list) else [wanted]
        if axis == "study":
            studies = runs["studies"].str.split(",")
            chosen &= studies.map(lambda names, v=values: any(s in names for s in v)).astype(bool)
        else:
            chosen &= runs[axis].isin(values)
    return runs[chosen]


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "never" if value > 0 else "-inf"
    if math.isnan(value):
        return "n/a"
    return f"{value:.3g}"


def _selection_text(selection: Selection) -> str:
    return ", ".join(
        f"{axis}={'/'.join(map(str, v)) if isinstance(v, list) else v}"
        for axis, v in selection.items()
    )


@dataclass(frozen=True)
class Outcome:
    measured: str
    rule: str
    passed: bool


class _Median:
    """Median over seeds of a per-run measure, for the runs of a selection."""

    def __init__(self, values: pd.Series, runs: pd.DataFrame) -> None:
        self.values, self.runs = values, runs

    def __call__(self, selection: Selection) -> float:
        ids = select(self.runs, selection)["run_id"]
        found = self.values.reindex(ids).dropna()
        return float(np.median(found)) if len(found) else math.nan

    def by(self, selection: Selection, axes: Sequence[str]) -> pd.Series:
        """Medians per group of ``axes`` (a tuple index for several axes); NaN for a group whose
        runs left no value."""
        chosen = select(self.runs, selection).set_index("run_id")
        frame = chosen[list(axes)].assign(value=self.values.reindex(chosen.index))
        return frame.groupby(list(axes))["value"].median()


def _decreasing(claim: Decreasing, median: _Median) -> Outcome:
    medians = median.by(claim.where, [claim.along]).sort_index()
    steps = np.diff(medians.to_numpy())
    passed = len(medians) >= 2 and not medians.isna().any() and bool(np.all(steps < 0))
    measured = ", ".join(f"{claim.along} {k}: {_fmt(v)}" for k, v in medians.items()) or "n/a"
    return Outcome(measured, f"median falls at every step of {claim.along}", passed)


def _greater(claim: Greater, median: _Median) -> Outcome:
    levels = (
        [None]
        if claim.per is None
        else sorted(select(median.runs, claim.where)[claim.per].unique())
    )
    parts, passed = [], bool(levels)
    for level in levels:
        at: dict[str, Any] = {} if claim.per is None else {claim.per: level}
        a = median({**claim.where, **claim.a, **at})
        b = median({**claim.where, **claim.b, **at})
        passed &= math.isfinite(b) and not math.isnan(a) and a > claim.factor * b
        where = "" if level is None else f" ({claim.per} {level})"
        parts.append(f"{_fmt(a)} vs {_fmt(b)}{where}")
    factor = "" if claim.factor == 1 else f"{claim.factor:g} × "
    per = "" if claim.per is None else f", at every {claim.per}"
    rule = f"median[{_selection_text(claim.a)}] > {factor}median[{_selection_text(claim.b)}]{per}"
    return Outcome("; ".join(parts), rule, passed)


def _extreme(claim: Extreme, median: _Median) -> Outcome:
    medians = median.by(claim.where, claim.by)
    ordered = medians.sort_values(ascending=claim.side == "lowest", na_position="first")
    expected = select(median.runs, {**claim.where, **claim.expect}).set_index(claim.by).index
    # every group measured, and the expected one alone at the extreme (a tie is no ordering)
    passed = (
        len(ordered) >= 2
        and not ordered.isna().any()
        and ordered.iloc[0] != ordered.iloc[1]
        and ordered.index[0] in set(expected)
    )

    def name(key: Any) -> str:
        return "·".join(map(str, key)) if isinstance(key, tuple) else str(key)

    measured = ", ".join(f"{name(k)} {_fmt(v)}" for k, v in ordered.items()) or "n/a"
    rule = f"{_selection_text(claim.expect)} has the {claim.side} median of the groups by " + (
        ", ".join(claim.by)
    )
    return Outcome(measured, rule, passed)


def _close(claim: Close, median: _Median) -> Outcome:
    a = median({**claim.where, **claim.a})
    b = median({**claim.where, **claim.b})
    passed = math.isfinite(a) and math.isfinite(b) and abs(a - b) <= claim.tolerance
    measured = f"{_fmt(a)} vs {_fmt(b)} (gap {_fmt(abs(a - b))})"
    rule = (
        f"|median[{_selection_text(claim.a)}] − median[{_selection_text(claim.b)}]| "
        f"≤ {claim.tolerance:g}"
    )
    return Outcome(measured, rule, passed)


def _between(claim: Between, median: _Median) -> Outcome:
    low = -math.inf if claim.low is None else claim.low
    high = math.inf if claim.high is None else claim.high
    if claim.per is None:
        values = {None: median(claim.where)}
    else:
        levels = sorted(select(median.runs, claim.where)[claim.per].unique())
        values = {level: median({**claim.where, claim.per: level}) for level in levels}
    passed = bool(values) and all(not math.isnan(v) and low <= v <= high for v in values.values())
    if claim.low is None:
        rule = f"median ≤ {claim.high:g}"
    elif claim.high is None:
        rule = f"median ≥ {claim.low:g}"
    else:
        rule = f"{claim.low:g} ≤ median ≤ {claim.high:g}"
    if claim.per is None:
        return Outcome(_fmt(values[None]), rule, passed)
    measured = ", ".join(f"{claim.per} {level}: {_fmt(v)}" for level, v in values.items())
    return Outcome(measured or "n/a", f"{rule}, at every {claim.per}", passed)


_EVALUATE: dict[str, Callable[[Any, _Median], Outcome]] = {
    "decreasing": _decreasing,
    "greater": _greater,
    "extreme": _extreme,
    "close": _close,
    "between": _between,
}


def _measure_text(measure: str | Mapping[str, Any]) -> str:
    name, kwargs = measure_call(measure)
    args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{name}({args})" if args else name


def check_claims(claims: Mapping[str, Claim], inputs: ClaimInputs) -> pd.DataFrame:
    """Measure every claim on the stored results and apply its rule.

    Args:
        claims: Validated claims by id (``gradlab.core.config``'s ``claims`` section).
        inputs: The runs, history and layer-stats tables.
    Returns:
        One row per claim, ``CLAIM_COLUMNS``; ``result`` is ``pass`` or ``fail``.
    """
    rows = []
    for claim_id, claim in claims.items():
        name, kwargs = measure_call(claim.measure)
        values = MEASURES[name](inputs, **kwargs)
        outcome = _EVALUATE[claim.check](claim, _Median(values, inputs.runs))
        rule = f"{_measure_text(claim.measure)}"
        if claim.where:
            rule += f" over {_selection_text(claim.where)}"
        rows.append(
            {
                "claim_id": claim_id,
                "claim": claim.claim,
                "source": claim.source,
                "paper": claim.paper,
                "measured": outcome.measured,
                "rule": f"{rule}: {outcome.rule}",
                "result": "pass" if outcome.passed else "fail",
            }
        )
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)
