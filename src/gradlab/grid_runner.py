"""Train the runs of a grid that have no stored result yet, log each to MLflow, gather the tables.

The per-run work is ``gradlab.core.train.train_run(spec, data, options)``; this module only
decides what to run, hands it to an executor, and records what comes back.
"""

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence

import pandas as pd

from gradlab.core.execute import Executor
from gradlab.core.grid import RunSpec
from gradlab.core.train import THEORY_COLUMNS, RunOptions, RunResult, TaskData, train_run
from gradlab.store import ResultStore
from gradlab.tracking import Tracker

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = [
    "status",
    "verdict",
    "diverged_step",
    "metric_name",
    "final_train_loss",
    "final_val_loss",
    "final_val_metric",
    "epochs_done",
    "steps",
    "wall_s",
    "steps_per_s",
    "init_grad_ratio",
    "end_grad_ratio",
    "end_saturation",
    "end_dead_frac",
    *THEORY_COLUMNS,
    "mlflow_run_id",
    "error",
]


def _eta(done: int, total: int, elapsed: float) -> str:
    if done == 0:
        return "?"
    seconds = int(elapsed / done * (total - done))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def train_missing(
    specs: Sequence[RunSpec],
    studies: Mapping[str, str],
    data: Mapping[tuple[str, str], TaskData],
    store: ResultStore,
    executor: Executor,
    tracker: Tracker,
    options: RunOptions,
    force: bool = False,
) -> Counter:
    """Train every spec without a stored result (all of them with ``force``).

    Args:
        specs: The grid's run specs.
        studies: Comma-separated studies per run id (for tags).
        data: Train/val tensors by (dataset, input_norm).
        store: Where finished runs are kept.
        executor: Runs ``train_run`` over the specs.
        tracker: Logs each finished run as an MLflow child run.
        options: Device and probe options for every run.
        force: Retrain runs that already have a result.
    Returns:
        How many runs ended with each status.
    """
    todo = [spec for spec in specs if force or not store.has(spec.run_id)]
    log.info(
        "%d runs in the grid, %d to train, %d reused", len(specs), len(todo), len(specs) - len(todo)
    )
    counts: Counter = Counter()
    verdicts: Counter = Counter()
    start = time.perf_counter()
    tasks = [(spec, data[spec.dataset, spec.input_norm], options) for spec in todo]
    for done, (index, result) in enumerate(executor.map(train_run, tasks), start=1):
        spec = todo[index]
        _record(spec, result, studies[spec.run_id], store, tracker)
        counts[result.status] += 1
        verdicts[result.summary.get("verdict", "-")] += 1
        log.info(
            "[%d/%d] %s %s (%s) · %d diverged · ETA %s",
            done,
            len(todo),
            spec.label,
            result.status,
            result.summary.get("verdict", "-"),
            counts["diverged"],
            _eta(done, len(todo), time.perf_counter() - start),
        )
    if todo:
        elapsed = time.perf_counter() - start
        log.info(
            "trained %d runs in %.1f s (%.2f runs/s); status %s; verdicts %s",
            len(todo),
            elapsed,
            len(todo) / elapsed,
            dict(counts),
            dict(verdicts.most_common()),
        )
    return counts


def _record(
    spec: RunSpec, result: RunResult, studies: str, store: ResultStore, tracker: Tracker
) -> None:
    # stored first: the result survives an MLflow failure, and the artifact is logged from disk
    folder = store.save(result, {"label": spec.label, "studies": studies})
    mlflow_run_id = tracker.log_run(spec, result, studies, folder / "weights.pt")
    store.update_summary(spec.run_id, mlflow_run_id=mlflow_run_id)


def collect(
    specs_table: pd.DataFrame, store: ResultStore
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Gather stored results of the grid's runs into the four output tables.

    Args:
        specs_table: The grid's ``run_specs`` table.
        store: Where finished runs are kept.
    Returns:
        ``runs`` (one row per run: the spec columns and the summary), ``history``,
        ``layer_stats`` and ``distributions`` (long format, with ``run_id``).
    """
    summaries, tables = [], {"history": [], "layer_stats": [], "distributions": []}
    for run_id in specs_table["run_id"]:
        if not store.has(run_id):
            continue
        summary = store.summary(run_id)
        summaries.append({"run_id": run_id, **{c: summary.get(c) for c in SUMMARY_COLUMNS}})
        for name, frames in tables.items():
            frames.append(store.table(run_id, name).assign(run_id=run_id))
    results = pd.DataFrame(summaries, columns=["run_id", *SUMMARY_COLUMNS])
    runs = specs_table.merge(results, on="run_id", how="inner")
    out = []
    for frames in tables.values():
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        out.append(frame[["run_id", *[c for c in frame.columns if c != "run_id"]]])
    return runs, *out
