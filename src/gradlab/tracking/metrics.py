"""What a child run gets as metrics and as its layer-profile table, picked from a result's tables.

Per epoch (step = epoch) ``train_loss``, ``val_loss``, ``val_r2``/``val_accuracy``, ``lr``,
``grad_norm``; at every ``layer_every``-th probe step (step = optimizer step)
``<quantity>/first`` and ``<quantity>/last`` (the first and last layer that has the quantity, see
``gradlab.core.probes``; ``<quantity>/layer_NN`` for every layer with ``layers="all"``),
``grad_ratio`` (∂L/∂h RMS, first hidden layer over last; a residual net's stream ∂L/∂x, first
block over last), ``step_loss``, ``grad_global_norm``; ``jacobian/<statistic>`` at each step the
Jacobian's spectrum was measured (step 0: init), and its free-probability prediction
``jacobian/theory_mean_s2`` and ``jacobian/theory_var_s2`` (at step 0). A residual net's stem is
weight layer 0, its ``<quantity>/first`` for a weight quantity.
Each point carries the time the run got there: an epoch's end, a step's interpolated between
epoch ends. The statistics at init and the mean-field prediction, one value per layer, are one
table (``layer_profile``), not a one-point chart per layer and quantity.
"""

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from mlflow.entities import Metric

from gradlab.core import quantities
from gradlab.core.spectrum import SAMPLE
from gradlab.core.train import RunResult

GRAD_RATIO = "grad_ratio"  # first/last ∂L/∂h RMS at each logged probe step
JACOBIAN_PREFIX = "jacobian/"  # the input–output Jacobian's spectrum (gradlab.core.spectrum)


@dataclass(frozen=True)
class MetricChoice:
    """Which probe points go to MLflow (``train.mlflow_layer_every``, ``mlflow_quantities``,
    ``mlflow_layers``); the parquet tables hold them all."""

    layer_every: int = 1
    quantities: frozenset[str] | None = None  # None: all
    layers: str = "ends"  # or "all"

    def __post_init__(self) -> None:
        if self.layers not in ("ends", "all"):
            raise ValueError(f"layers = {self.layers!r}: expected 'ends' or 'all'")


def child_metrics(result: RunResult, choice: MetricChoice) -> list[Metric]:
    """Every point the child gets: the history per epoch, then the kept probe steps."""
    at = _clock(result.summary)
    metric_name = result.summary.get("metric_name", "val_metric")
    epochs = result.history
    keys = epochs["metric"].where(epochs["metric"] != "val_metric", metric_name)
    metrics = _points(keys, epochs["value"], at(epochs["epoch"], epoch=True), epochs["epoch"])
    metrics += _spectrum_points(result, at)
    # at init and in theory a layer profile is one value per layer: the table artifact
    # (``layer_profile``), not a one-point chart per layer and quantity
    stats = _LongColumns.of(result.layer_stats, "train")
    if stats.empty:
        return metrics
    stats = stats.where(np.isin(stats.step, np.unique(stats.step)[:: choice.layer_every]))
    steps, ratio = _grad_ratio(stats)
    if choice.quantities is not None:
        stats = stats.where(np.isin(stats.quantity, list(choice.quantities)))
    keys, points = _layer_points(stats, choice.layers)
    metrics += _points(keys, points.value, at(points.step), points.step)
    metrics += _points(GRAD_RATIO, ratio, at(steps), steps)
    return metrics


def _spectrum_points(result: RunResult, at: Callable[..., np.ndarray]) -> list[Metric]:
    """``jacobian/<statistic>`` (``gradlab.core.spectrum.STATISTICS``), the mean over the
    measured points, at each step the spectrum was measured (0: init), and the free-probability
    prediction ``jacobian/theory_mean_s2`` and ``/theory_var_s2`` at step 0 where there is one."""
    table = result.spectrum
    stats = table[table["statistic"] != SAMPLE]
    means = stats.groupby(["phase", "step", "statistic"], sort=False)["value"].mean().reset_index()
    steps = means["step"].to_numpy()
    keys = JACOBIAN_PREFIX + means["statistic"].astype(object)
    metrics = _points(keys, means["value"], at(steps), steps)
    for name in ("mean_s2", "var_s2"):
        predicted = result.summary.get(f"theory_jacobian_{name}")
        if predicted is not None and math.isfinite(predicted) and len(means):
            metrics += _points(f"{JACOBIAN_PREFIX}theory_{name}", [predicted], at([0]), [0])
    return metrics


@dataclass(frozen=True)
class _LongColumns:
    """One phase's rows of a long table (``phase, step, layer, quantity, value``) as numpy
    arrays: a run's few hundred points are picked in microseconds, where pandas' indexing
    costs milliseconds a run."""

    step: np.ndarray
    layer: np.ndarray
    quantity: np.ndarray  # str objects
    value: np.ndarray

    @classmethod
    def of(cls, table: pd.DataFrame, phase: str) -> "_LongColumns":
        rows = (table["phase"] == phase).to_numpy(dtype=bool)
        return cls(
            table["step"].to_numpy()[rows],
            table["layer"].to_numpy()[rows],
            table["quantity"].to_numpy(dtype=object)[rows],
            table["value"].to_numpy(dtype=float)[rows],
        )

    @property
    def empty(self) -> bool:
        return len(self.step) == 0

    @property
    def columns(self) -> tuple[np.ndarray, ...]:
        return self.step, self.layer, self.quantity, self.value

    def where(self, rows: np.ndarray) -> "_LongColumns":
        return _LongColumns(*(column[rows] for column in self.columns))

    @staticmethod
    def concat(parts: list["_LongColumns"]) -> "_LongColumns":
        return _LongColumns(*map(np.concatenate, zip(*(part.columns for part in parts))))


def layer_profile(layer_stats: pd.DataFrame) -> pd.DataFrame:
    """One row per hidden layer and quantity, in the order of quantity then layer: its value at
    init and, where theory predicts it, the mean-field prediction (``layer_profile.json`` of
    each child run)."""
    init, theory = (_LongColumns.of(layer_stats, phase) for phase in ("init", "theory"))
    init, theory = init.where(init.layer > 0), theory.where(theory.layer > 0)
    predicted = dict(zip(zip(theory.quantity, theory.layer), theory.value, strict=True))
    rows = sorted({*zip(init.quantity, init.layer), *predicted})
    measured = dict(zip(zip(init.quantity, init.layer), init.value, strict=True))
    return pd.DataFrame(
        {
            "quantity": [quantity for quantity, _ in rows],
            "layer": np.array([layer for _, layer in rows], dtype=layer_stats["layer"].dtype),
            "init": [measured.get(row, math.nan) for row in rows],
            "theory": [predicted.get(row, math.nan) for row in rows],
        }
    )


def _clock(summary: dict[str, Any]) -> Callable[..., np.ndarray]:
    """``at(steps)`` or ``at(epochs, epoch=True)``: when the run got there, in epoch ms.

    An epoch's metrics carry the time it ended; a step's is interpolated between the start of
    training and the ends of the epochs. Results stored before these times were recorded get the
    time of logging.
    """
    ends = summary.get("epoch_ended_at") or []
    started, _ = training_span_ms(summary)
    per_epoch = summary.get("steps_per_epoch")
    if not ends or started is None or not per_epoch:
        now = int(time.time() * 1000)
        return lambda positions, epoch=False: np.full(len(positions), now, dtype=np.int64)
    times = np.array([started / 1000, *ends]) * 1000
    steps = np.arange(len(times)) * per_epoch

    def at(positions: Iterable[int], epoch: bool = False) -> np.ndarray:
        positions = np.asarray(positions)
        if epoch:
            return times[np.minimum(positions, len(times) - 1)].astype(np.int64)
        return np.interp(positions, steps, times).astype(np.int64)

    return at


def training_span_ms(summary: dict[str, Any]) -> tuple[int | None, int | None]:
    """When the run started and ended training, in epoch milliseconds (None if not recorded:
    MLflow then uses the time of logging)."""
    ended, wall = summary.get("ended_at"), summary.get("wall_s")
    if ended is None or wall is None or not math.isfinite(wall):
        return None, None
    return int((ended - wall) * 1000), int(ended * 1000)


def _layer_points(stats: _LongColumns, layers: str) -> tuple[np.ndarray, _LongColumns]:
    """The key of each probe point to log, and the points: ``step_loss`` and
    ``grad_global_norm`` for the whole network; per layer ``<quantity>/first`` and
    ``<quantity>/last`` (``layers="ends"``: one key at every depth, so runs of different depths
    share a chart) or ``<quantity>/layer_NN`` (``"all"``)."""
    is_whole = np.isin(stats.quantity, quantities.names("global"))
    whole, hidden = stats.where(is_whole), stats.where(~is_whole)
    parts = [(np.where(whole.quantity == "loss", "step_loss", whole.quantity), whole)]
    if layers == "all":
        number = np.array([f"/layer_{layer:02d}" for layer in hidden.layer], dtype=object)
        parts.append((hidden.quantity + number, hidden))
    else:
        for end, pick in (("first", min), ("last", max)):
            ends = {q: pick(hidden.layer[hidden.quantity == q]) for q in set(hidden.quantity)}
            rows = hidden.where(hidden.layer == np.array([ends[q] for q in hidden.quantity]))
            parts.append((rows.quantity + f"/{end}", rows))
    keys = np.concatenate([np.asarray(keys, dtype=object) for keys, _ in parts])
    return keys, _LongColumns.concat([points for _, points in parts])


def _grad_ratio(stats: _LongColumns) -> tuple[np.ndarray, np.ndarray]:
    """The probe steps and, at each, ∂L/∂h RMS of the first hidden layer over the last's (a
    residual net's: ∂L/∂x on the stream, first block over last; empty when the probes did not
    measure it, or the net has one hidden layer): below 1 the gradient vanishes on its way down,
    above 1 it explodes."""
    stream = bool(np.any(stats.quantity == "grad_stream_rms"))
    rms = stats.where(stats.quantity == ("grad_stream_rms" if stream else "grad_preact_rms"))
    if rms.empty or rms.layer.min() == rms.layer.max():
        return np.array([], dtype=np.int64), np.array([])
    # a probe step's rows hold every layer: both ends have the same steps, in the same order
    first, last = (rms.where(rms.layer == end) for end in (rms.layer.min(), rms.layer.max()))
    with np.errstate(divide="ignore", invalid="ignore"):
        return first.step, first.value / last.value


def _points(keys: Any, values: Any, timestamps: Any, steps: Any) -> list[Metric]:
    # NaN marks a quantity that does not apply (e.g. dead units of tanh) and ±inf an overflow,
    # which MLflow would store as ±1.8e308, flattening the chart: neither is logged (the parquet
    # tables keep them)
    return [
        Metric(key, value, timestamp, step)
        for key, value, timestamp, step in zip(
            [keys] * len(values) if isinstance(keys, str) else keys,
            np.asarray(values, dtype=float).tolist(),
            np.asarray(timestamps).tolist(),
            np.asarray(steps).tolist(),
            strict=True,
        )
        if math.isfinite(value)
    ]
