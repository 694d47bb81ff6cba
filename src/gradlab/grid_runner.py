"""Train the runs of a grid that have no stored result yet, log each to MLflow, gather the tables.

The work is ``gradlab.core.train.train_group(specs, data, options)``: runs of one model shape
train together as one stacked model. This module decides what to run, groups it, hands the
groups to an executor, and records each run as its group comes back. The stage flows one way:

1. **plan**: which runs have no whole, current stored result (``plan``), and why;
2. **reconcile**: stored results with no whole MLflow child are logged now (``reconcile``);
3. **train**: the groups of the planned runs, on the executor;
4. **store**: each result as it comes back (``ResultStore.save``);
5. **log**: each stored result to MLflow from a background thread (``Tracker.submit``); the
   child ids come back when the thread is closed and go into the stored summaries.
"""

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from gradlab.core.config import TrainConfig
from gradlab.core.execute import Executor, SequentialExecutor, TaskError, make_executor
from gradlab.core.grid import RunSpec, select, specs_from_table
from gradlab.core.schema import SUMMARY_COLUMNS, TEXT_COLUMNS, empty_table
from gradlab.core.train import (
    RunOptions,
    RunResult,
    TaskData,
    failed_result,
    group_runs,
    train_group,
)
from gradlab.core.verdict import judge
from gradlab.store import TABLES, ResultStore
from gradlab.tracking import Child, Tracker

log = logging.getLogger(__name__)

TRAINED_COLUMNS = ["run_id", "label", "reason", "status", "verdict", "wall_s", "error"]


def _eta(done: int, total: int, elapsed: float) -> str:
    if done == 0:
        return "?"
    seconds = int(elapsed / done * (total - done))
    return f"{seconds // 60}m{seconds % 60:02d}s"


@dataclass(frozen=True)
class GridRuns:
    """The grid's runs, and what MLflow tags and names each with."""

    specs: Sequence[RunSpec]
    studies: Mapping[str, str]  # comma-separated studies per run id (for tags)
    # short MLflow run names per run id (``RunSpec.name_against`` the grid's baseline); None:
    # the labels
    names: Mapping[str, str] | None = None

    @classmethod
    def from_table(cls, run_specs: pd.DataFrame) -> "GridRuns":
        """The runs of a ``run_specs`` table, as the grid stage expanded it."""
        return cls(
            specs_from_table(run_specs),
            dict(zip(run_specs["run_id"], run_specs["studies"], strict=True)),
            dict(zip(run_specs["run_id"], run_specs["name"], strict=True)),
        )

    def name(self, spec: RunSpec) -> str:
        return spec.label if self.names is None else self.names[spec.run_id]


@dataclass(frozen=True)
class TrainOptions:
    """How the train stage trains, besides the grid and the data."""

    run: RunOptions = field(default_factory=RunOptions)  # device and probe options of each run
    executor: Executor = field(default_factory=SequentialExecutor)  # runs the groups
    force: bool = False  # retrain runs whose results are current
    selected: frozenset[str] | None = None  # run ids to train (``train.only``); None: all
    max_replicas: int = 32  # most runs trained together as one stacked model


@dataclass(frozen=True)
class Job:
    """One run to train, and why it is trained now."""

    spec: RunSpec
    reason: str  # new, forced, failed last time, damaged: …, stale: …
    identity: dict[str, Any]  # what its result is made from (see ``ResultStore``)


def train_grid(
    run_specs: pd.DataFrame,
    load: Callable[[str, str], TaskData],
    config: TrainConfig,
) -> pd.DataFrame:
    """The train stage: every run of ``run_specs`` (or of ``train.only``) without a whole,
    current stored result is trained, stored and logged to MLflow.

    Args:
        run_specs: One row per run, as expanded by the grid stage.
        load: The train/val tensors of a (dataset, input_norm); called once for each that a
            considered run trains on.
        config: ``params:train``, validated.
    Returns:
        One row per run trained now (``train_missing``).
    """
    selected = frozenset(select(run_specs, config.only)["run_id"]) if config.only else None
    grid = GridRuns.from_table(run_specs)
    needed = {
        (spec.dataset, spec.input_norm)
        for spec in grid.specs
        if selected is None or spec.run_id in selected
    }
    options = TrainOptions(
        RunOptions(
            device=config.device,
            divergence_factor=config.divergence_factor,
            probe_batch_size=config.probe_batch_size,
            spectrum_points=config.spectrum.points,
            spectrum_checkpoints=config.spectrum.checkpoints,
        ),
        make_executor(config.n_workers, config.executor, config.dask.address),
        force=config.force,
        selected=selected,
        max_replicas=config.max_replicas,
    )
    return train_missing(
        grid,
        {key: load(*key) for key in sorted(needed)},
        ResultStore(config.store),
        Tracker(
            layer_every=config.mlflow_layer_every,
            quantities=config.mlflow_quantities,
            layers=config.mlflow_layers,
            enabled=config.mlflow,
        ),
        options,
    )


def plan(
    specs: Sequence[RunSpec],
    identities: Mapping[str, dict[str, Any]],
    store: ResultStore,
    force: bool = False,
) -> list[Job]:
    """The runs to train: those without a whole, current result (all of them with ``force``).

    Args:
        specs: The run specs to consider.
        identities: What each run id's result must have been made from (see ``ResultStore``).
        store: Where finished runs are kept.
        force: Retrain runs even when their results are current.
    Returns:
        One job per run to train, in the order of ``specs``.
    """
    jobs = []
    for spec in specs:
        reason = store.why_train(spec.run_id, identities[spec.run_id])
        if reason is None and force:
            reason = "forced"
        if reason is not None:
            jobs.append(Job(spec, reason, identities[spec.run_id]))
    return jobs


def train_missing(
    grid: GridRuns,
    data: Mapping[tuple[str, str], TaskData],
    store: ResultStore,
    tracker: Tracker,
    options: TrainOptions = TrainOptions(),
) -> pd.DataFrame:
    """Train every spec without a whole, current stored result; log unlogged results to MLflow.

    Args:
        grid: The grid's run specs, with their studies and MLflow names.
        data: Train/val tensors by (dataset, input_norm).
        store: Where finished runs are kept.
        tracker: Logs each finished run as an MLflow child run.
        options: Run options, the executor that runs ``train_group`` over the groups of runs,
            ``force``, the runs selected, the largest stacked group.
    Returns:
        One row per run trained now: ``run_id``, ``label``, ``reason``, ``status``, ``verdict``,
        ``wall_s``, ``error``.
    """
    selected = options.selected
    considered = [s for s in grid.specs if selected is None or s.run_id in selected]
    fingerprints = {key: task.fingerprint() for key, task in data.items()}
    identities = {
        spec.run_id: {"data": fingerprints[spec.dataset, spec.input_norm], **options.run.identity()}
        for spec in considered
    }
    jobs = plan(considered, identities, store, force=options.force)
    _log_plan(jobs, len(grid.specs), len(considered), selected is not None)
    training = {job.spec.run_id for job in jobs}
    reconcile([s for s in considered if s.run_id not in training], grid, store, tracker)
    start = time.perf_counter()
    rows = _train(jobs, data, _Keeper(grid, store, tracker), options)
    _log_outcome(rows, time.perf_counter() - start)
    return pd.DataFrame(rows, columns=TRAINED_COLUMNS)


def _log_plan(jobs: Sequence[Job], total: int, considered: int, selected: bool) -> None:
    reasons = Counter(job.reason.split(":")[0] for job in jobs)
    log.info(
        "%d runs in the grid, %d to train%s, %d reused%s",
        total,
        len(jobs),
        f" ({', '.join(f'{n} {why}' for why, n in reasons.most_common())})" if jobs else "",
        considered - len(jobs),
        f", {total - considered} not selected by train.only" if selected else "",
    )
    for job in jobs:
        if job.reason.startswith(("damaged", "stale")):
            log.warning("retraining %s (%s): %s", job.spec.run_id, job.spec.label, job.reason)


@dataclass(frozen=True)
class _Keeper:
    """Steps 4 and 5 for each result as it comes back: store it, then hand it to the tracker;
    once the tracker is closed, the stored summaries get their child run ids."""

    grid: GridRuns
    store: ResultStore
    tracker: Tracker

    def keep(self, job: Job, result: RunResult) -> None:
        spec, studies = job.spec, self.grid.studies[job.spec.run_id]
        extra = {
            "identity": job.identity,
            "label": spec.label,
            "studies": studies,
            "name": self.grid.name(spec),
        }
        stored = _store(job, result, extra, self.store)
        weights = None if stored is None else self.store.path(spec.run_id) / "weights.pt"
        child = Child(studies, weights, stored, self.grid.name(spec), job.identity["data"])
        self.tracker.submit(spec, result, child)

    def close(self, interrupted: bool = False) -> None:
        """Wait for the tracker (Ctrl-C: for the child it is logging only; the rest is logged
        at the next start) and record the child run ids."""
        if interrupted:
            children = self.tracker.close(drain=False, timeout=30)
        else:
            children = self.tracker.close()
        for run_id, mlflow_run_id in children.items():
            self.store.update_summary(run_id, mlflow_run_id=mlflow_run_id)


def _train(
    jobs: Sequence[Job],
    data: Mapping[tuple[str, str], TaskData],
    keeper: _Keeper,
    options: TrainOptions,
) -> list[dict[str, Any]]:
    """Train the jobs' groups; keep each result as it comes back."""
    by_run = {job.spec.run_id: job for job in jobs}
    groups = group_runs([job.spec for job in jobs], options.max_replicas)
    if jobs:
        log.info("%d runs train as %d stacked groups", len(jobs), len(groups))
    tasks = [(group, data[group[0].dataset, group[0].input_norm], options.run) for group in groups]
    rows: list[dict[str, Any]] = []
    diverged = 0
    start = time.perf_counter()
    try:
        for index, outcome in options.executor.map(train_group, tasks):
            for result in _group_results(groups[index], outcome):
                job = by_run[result.run_id]
                keeper.keep(job, result)
                rows.append(_trained_row(job, result))
                diverged += result.status == "diverged"
                log.info(
                    "[%d/%d] %s %s (%s) · %d diverged · ETA %s",
                    len(rows),
                    len(jobs),
                    job.spec.label,
                    result.status,
                    result.summary.get("verdict", "-"),
                    diverged,
                    _eta(len(rows), len(jobs), time.perf_counter() - start),
                )
    except BaseException:
        keeper.close(interrupted=True)
        raise
    # every finished run is in MLflow before the tables are collected
    keeper.close()
    return rows


def _trained_row(job: Job, result: RunResult) -> dict[str, Any]:
    return {
        "run_id": job.spec.run_id,
        "label": job.spec.label,
        "reason": job.reason,
        "status": result.status,
        "verdict": result.summary.get("verdict"),
        "wall_s": result.summary.get("wall_s"),
        "error": result.summary.get("error"),
    }


def _log_outcome(rows: Sequence[dict[str, Any]], elapsed: float) -> None:
    counts = Counter(row["status"] for row in rows)
    if rows:
        verdicts = Counter(row["verdict"] or "-" for row in rows)
        log.info(
            "trained %d runs in %.1f s (%.2f runs/s); status %s; verdicts %s",
            len(rows),
            elapsed,
            len(rows) / elapsed,
            dict(counts),
            dict(verdicts.most_common()),
        )
    if counts["failed"]:
        log.error(
            "%d run(s) failed (raised, not diverged); they are trained again by the next "
            "`kedro run`. First error:\n%s",
            counts["failed"],
            next(row["error"] for row in rows if row["status"] == "failed"),
        )


def _group_results(
    group: Sequence[RunSpec], outcome: list[RunResult] | TaskError
) -> list[RunResult]:
    """A group's results; every run of it ``failed`` when the task itself raised (its worker
    kept dying, or it could not be sent or run)."""
    if not isinstance(outcome, TaskError):
        return outcome
    log.error("a group of %d runs failed:\n%s", len(group), outcome.error)
    return [failed_result(spec, outcome.error) for spec in group]


def _store(job: Job, result: RunResult, extra: dict[str, Any], store: ResultStore) -> str | None:
    """Store a result (first: it survives an MLflow failure, and its artifacts are logged from
    disk); its stored id, or None when a failed retrain keeps the result stored before."""
    if result.status == "failed" and (job.reason == "forced" or job.reason.startswith("stale")):
        # a failure is not a result: the whole result stored before stays until one replaces it
        log.error("retraining %s failed; its stored result is kept", job.spec.label)
        return None
    store.save(result, extra)
    return store.summary(job.spec.run_id)["result_id"]


def reconcile(
    specs: Sequence[RunSpec], grid: GridRuns, store: ResultStore, tracker: Tracker
) -> int:
    """Log to MLflow every stored result that has no whole child run in the store in use: its
    logging was interrupted, or the store was deleted, replaced or is another one (a server).
    The summary's ``mlflow_run_id`` then names the child that holds it now.

    Args:
        specs: Runs whose stored results ``plan`` found whole and current.
        grid: The grid's studies and MLflow names per run.
        store: Where finished runs are kept.
        tracker: Logs to the active MLflow run.
    Returns:
        How many results were logged now.
    """
    if not tracker.enabled:
        return 0
    summaries = {spec.run_id: store.summary(spec.run_id) for spec in specs}
    summaries = {run_id: s for run_id, s in summaries.items() if "result_id" in s}
    if not summaries:
        return 0
    children = tracker.logged_results(s["result_id"] for s in summaries.values())
    logged = lost = 0
    for spec in specs:
        if (summary := summaries.get(spec.run_id)) is None:
            continue
        mlflow_run_id = children.get(summary["result_id"])
        if mlflow_run_id is None:
            lost += bool(summary.get("mlflow_run_id"))
            child = Child(
                grid.studies[spec.run_id],
                store.path(spec.run_id) / "weights.pt",
                summary["result_id"],
                grid.name(spec),
                summary.get("identity", {}).get("data"),
            )
            mlflow_run_id = tracker.log_run(spec, store.load(spec.run_id), child)
            logged += 1
        if summary.get("mlflow_run_id") != mlflow_run_id:
            store.update_summary(spec.run_id, mlflow_run_id=mlflow_run_id)
    if logged:
        log.info(
            "logged %d stored result(s) that had no MLflow child run in %s (%d whose child "
            "is not in this store, %d whose logging was cut short)",
            logged,
            tracker.tracking_uri,
            lost,
            logged - lost,
        )
    return logged


def collect(
    specs_table: pd.DataFrame, store: ResultStore
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Gather stored results of the grid's runs into the five output tables.

    Args:
        specs_table: The grid's ``run_specs`` table.
        store: Where finished runs are kept.
    Returns:
        ``runs`` (one row per run: the spec columns and the summary), ``history``,
        ``layer_stats``, ``distributions`` and ``spectrum`` (long format, with ``run_id``).
    """
    summaries: list[dict[str, Any]] = []
    tables: dict[str, list[pd.DataFrame]] = {name: [] for name in TABLES}
    for run_id in specs_table["run_id"]:
        if not store.has(run_id):
            continue
        if damage := store.damage(run_id):
            log.warning("left out of the tables, %s; the next `kedro run` retrains it", damage)
            continue
        summary = store.summary(run_id)
        summaries.append({"run_id": run_id, **{c: summary.get(c) for c in SUMMARY_COLUMNS}})
        for name, frames in tables.items():
            frames.append(store.table(run_id, name).assign(run_id=run_id))
    results = pd.DataFrame(summaries, columns=["run_id", *SUMMARY_COLUMNS])
    # numbers stay numbers when every run left them unset (a grid where all runs diverged)
    for column in set(SUMMARY_COLUMNS) - TEXT_COLUMNS:
        results[column] = pd.to_numeric(results[column]).astype(float)
    # verdicts from the stored numbers: a recalibrated rule applies without retraining
    runs = judge(specs_table.merge(results, on="run_id", how="inner"))
    out = []
    for name, frames in tables.items():
        # the empty table first: columns and dtypes hold when no run (or only failed ones) left rows
        empty = empty_table(name).assign(run_id=pd.Series(dtype=str))
        frame = pd.concat([empty, *frames], ignore_index=True)
        out.append(frame[["run_id", *[c for c in frame.columns if c != "run_id"]]])
    return runs, *out
