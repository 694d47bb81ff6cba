"""Train the runs of a grid that have no stored result yet, log each to MLflow, gather the tables.

The work is ``gradlab.core.train.train_group(specs, data, options)``: runs of one model shape
train together as one stacked model. This module only decides what to run, groups it, hands the
groups to an executor, and records each run as its group comes back.
"""

import logging
import time
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from gradlab.core.execute import Executor, TaskError
from gradlab.core.grid import RunSpec
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
from gradlab.store import ResultStore
from gradlab.tracking import Tracker

log = logging.getLogger(__name__)


def _eta(done: int, total: int, elapsed: float) -> str:
    if done == 0:
        return "?"
    seconds = int(elapsed / done * (total - done))
    return f"{seconds // 60}m{seconds % 60:02d}s"


TRAINED_COLUMNS = ["run_id", "label", "reason", "status", "verdict", "wall_s", "error"]


@dataclass(frozen=True)
class Job:
    """One run to train, and why it is trained now."""

    spec: RunSpec
    reason: str  # new, forced, failed last time, damaged: …, stale: …


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
            jobs.append(Job(spec, reason))
    return jobs


def train_missing(
    specs: Sequence[RunSpec],
    studies: Mapping[str, str],
    data: Mapping[tuple[str, str], TaskData],
    store: ResultStore,
    executor: Executor,
    tracker: Tracker,
    options: RunOptions,
    force: bool = False,
    selected: Collection[str] | None = None,
    max_replicas: int = 32,
    names: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Train every spec without a whole, current stored result; log unlogged results to MLflow.

    Args:
        specs: The grid's run specs.
        studies: Comma-separated studies per run id (for tags).
        data: Train/val tensors by (dataset, input_norm).
        store: Where finished runs are kept.
        executor: Runs ``train_group`` over the groups of runs.
        tracker: Logs each finished run as an MLflow child run.
        options: Device and probe options for every run.
        force: Retrain runs whose results are current.
        selected: Run ids to train (``train.only``); None: the whole grid.
        max_replicas: Most runs trained together as one stacked model.
        names: Short MLflow run names by run id (``RunSpec.name_against`` the grid's baseline);
            None: the labels.
    Returns:
        One row per run trained now: ``run_id``, ``label``, ``reason``, ``status``, ``verdict``,
        ``wall_s``, ``error``.
    """
    considered = [s for s in specs if selected is None or s.run_id in selected]
    fingerprints = {key: task.fingerprint() for key, task in data.items()}
    identities = {
        spec.run_id: {"data": fingerprints[spec.dataset, spec.input_norm], **options.identity()}
        for spec in considered
    }
    jobs = plan(considered, identities, store, force=force)
    reasons = Counter(job.reason.split(":")[0] for job in jobs)
    log.info(
        "%d runs in the grid, %d to train%s, %d reused%s",
        len(specs),
        len(jobs),
        f" ({', '.join(f'{n} {why}' for why, n in reasons.most_common())})" if jobs else "",
        len(considered) - len(jobs),
        "" if selected is None else f", {len(specs) - len(considered)} not selected by train.only",
    )
    for job in jobs:
        if job.reason.startswith(("damaged", "stale")):
            log.warning("retraining %s (%s): %s", job.spec.run_id, job.spec.label, job.reason)
    training = {job.spec.run_id for job in jobs}
    names = names or {spec.run_id: spec.label for spec in specs}
    reconcile([s for s in considered if s.run_id not in training], studies, store, tracker, names)

    counts: Counter = Counter()
    verdicts: Counter = Counter()
    rows = []
    start = time.perf_counter()
    by_run = {job.spec.run_id: job for job in jobs}
    groups = group_runs([job.spec for job in jobs], max_replicas)
    if jobs:
        log.info("%d runs train as %d stacked groups", len(jobs), len(groups))
    tasks = [(group, data[group[0].dataset, group[0].input_norm], options) for group in groups]
    done = 0
    try:
        for index, outcome in executor.map(train_group, tasks):
            for result in _group_results(groups[index], outcome):
                done += 1
                job = by_run[result.run_id]
                extra = {
                    "identity": identities[job.spec.run_id],
                    "label": job.spec.label,
                    "studies": studies[job.spec.run_id],
                    "name": names[job.spec.run_id],
                }
                _record(job, result, extra, store, tracker)
                counts[result.status] += 1
                verdicts[result.summary.get("verdict", "-")] += 1
                rows.append(
                    {
                        "run_id": job.spec.run_id,
                        "label": job.spec.label,
                        "reason": job.reason,
                        "status": result.status,
                        "verdict": result.summary.get("verdict"),
                        "wall_s": result.summary.get("wall_s"),
                        "error": result.summary.get("error"),
                    }
                )
                log.info(
                    "[%d/%d] %s %s (%s) · %d diverged · ETA %s",
                    done,
                    len(jobs),
                    job.spec.label,
                    result.status,
                    result.summary.get("verdict", "-"),
                    counts["diverged"],
                    _eta(done, len(jobs), time.perf_counter() - start),
                )
    except BaseException:
        tracker.close(drain=False, timeout=30)  # Ctrl-C: the rest is logged at the next start
        raise
    tracker.close()  # every finished run is in MLflow before the tables are collected

    if jobs:
        elapsed = time.perf_counter() - start
        log.info(
            "trained %d runs in %.1f s (%.2f runs/s); status %s; verdicts %s",
            len(jobs),
            elapsed,
            len(jobs) / elapsed,
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
    return pd.DataFrame(rows, columns=TRAINED_COLUMNS)


def _group_results(
    group: Sequence[RunSpec], outcome: list[RunResult] | TaskError
) -> list[RunResult]:
    """A group's results; every run of it ``failed`` when the task itself raised (its worker
    kept dying, or it could not be sent or run)."""
    if not isinstance(outcome, TaskError):
        return outcome
    log.error("a group of %d runs failed:\n%s", len(group), outcome.error)
    return [failed_result(spec, outcome.error) for spec in group]


def _record(
    job: Job, result: RunResult, extra: dict[str, Any], store: ResultStore, tracker: Tracker
) -> None:
    run_id = job.spec.run_id
    if result.status == "failed" and (job.reason == "forced" or job.reason.startswith("stale")):
        # a failure is not a result: the whole result stored before stays until one replaces it
        log.error("retraining %s failed; its stored result is kept", job.spec.label)
        tracker.submit(job.spec, result, extra["studies"], None, None, lambda _: None,
                       name=extra["name"], data_digest=extra["identity"]["data"])  # fmt: skip
        return
    # stored first: the result survives an MLflow failure, and the artifact is logged from disk
    folder = store.save(result, extra)
    tracker.submit(
        job.spec,
        result,
        extra["studies"],
        folder / "weights.pt",
        store.summary(run_id)["result_id"],
        lambda mlflow_run_id: store.update_summary(run_id, mlflow_run_id=mlflow_run_id),
        name=extra["name"],
        data_digest=extra["identity"]["data"],
    )


def reconcile(
    specs: Sequence[RunSpec],
    studies: Mapping[str, str],
    store: ResultStore,
    tracker: Tracker,
    names: Mapping[str, str] | None = None,
) -> int:
    """Log to MLflow every stored result that has no whole child run in the store in use: its
    logging was interrupted, or the store was deleted, replaced or is another one (a server).
    The summary's ``mlflow_run_id`` then names the child that holds it now.

    Args:
        specs: Runs whose stored results ``plan`` found whole and current.
        studies: Comma-separated studies per run id (for tags).
        store: Where finished runs are kept.
        tracker: Logs to the active MLflow run.
        names: Short MLflow run names by run id; None: the labels.
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
            mlflow_run_id = tracker.log_run(
                spec,
                store.load(spec.run_id),
                studies[spec.run_id],
                store.path(spec.run_id) / "weights.pt",
                summary["result_id"],
                name=(names or {}).get(spec.run_id),
                data_digest=summary.get("identity", {}).get("data"),
            )
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
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Gather stored results of the grid's runs into the four output tables.

    Args:
        specs_table: The grid's ``run_specs`` table.
        store: Where finished runs are kept.
    Returns:
        ``runs`` (one row per run: the spec columns and the summary), ``history``,
        ``layer_stats`` and ``distributions`` (long format, with ``run_id``).
    """
    summaries: list[dict[str, Any]] = []
    tables: dict[str, list[pd.DataFrame]] = {"history": [], "layer_stats": [], "distributions": []}
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
