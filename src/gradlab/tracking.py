"""MLflow child runs, one per run spec, under the parent run kedro-mlflow opens per ``kedro run``.

Everything is sent with ``MlflowClient.log_batch`` in chunks (≤ 1,000 metrics a call): one
``log_metric`` per point costs ~4 ms against sqlite, a batch of 1,000 about as much as ten.
Metric names: per epoch (step = epoch) ``train_loss``, ``val_loss``, ``val_r2``/``val_accuracy``,
``lr``, ``grad_norm``; at every ``layer_every``-th probe step (step = optimizer step)
``<quantity>/first`` and ``<quantity>/last`` (the first and last layer that has the quantity, see
``gradlab.core.probes``; ``<quantity>/layer_NN`` for every layer with ``layers="all"``),
``grad_ratio`` (∂L/∂h RMS, first hidden layer over last), ``step_loss``, ``grad_global_norm``.
The statistics at init and the mean-field prediction, one value per layer, are one table
artifact (``layer_profile.json``); the profile at init and at the end is one picture
(``layer_profile.png``, ``gradlab.core.plots.profile``). A child is named by what differs from
the grid's baseline (``relu·d16·s0``; the full label is the ``gradlab.label`` tag), spans the
run's training time (metric timestamps: an epoch's end, a step's interpolated between epoch
ends), and has the data it trained on as its dataset input.

The grid hands finished runs to ``Tracker.submit``: a background thread logs them while the
workers train (measured here: ~38 ms and 0.07 MB of sqlite per default-sized run). Each child is
tagged with its stored result's id, so a result whose logging was cut short, or whose child is
not in the store in use (deleted, replaced, another server), is logged exactly once by the next
start (``gradlab.grid_runner.reconcile``). A tracking server that stops answering is given up
at its first failure: the rest of the queue is left to the next start.

Artifacts live in ``mlruns/`` at the project root, whether a run writes them itself (sqlite) or an
MLflow server stores them for it (``gradlab.mlflow_server``); ``relocate_artifacts`` keeps the
database pointing there when the project moves or switches mode.
"""

import contextlib
import json
import logging
import math
import os
import queue
import socket
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import mlflow
import numpy as np
import pandas as pd
import requests
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, Run, RunStatus
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

from gradlab.core.grid import RunSpec
from gradlab.core.plots.profile import profile_png
from gradlab.core.train import RunResult
from gradlab.core.verdict import verdicts_of

log = logging.getLogger(__name__)

BATCH = 1000  # MLflow's limit on metrics per log_batch call
TAG_PID, TAG_HOST, TAG_RUN_ID = "gradlab.pid", "gradlab.host", "gradlab.run_id"
TAG_RESULT_ID = "gradlab.result_id"  # the stored result a child run logs (see ResultStore.save)
TAG_LABEL = "gradlab.label"  # the full label; the run name is the short name within its grid
PROFILE_TABLE = "layer_profile.json"  # per layer and quantity: the value at init, the prediction
GRAD_RATIO = "grad_ratio"  # first/last ∂L/∂h RMS at each logged probe step
PROFILE_FIGURE = "layer_profile.png"  # ∂L/∂h and ‖∂L/∂W‖ per layer at init and at the end
STATUS = {"finished": "FINISHED", "diverged": "FINISHED", "failed": "FAILED"}
ARTIFACTS_DIR = "mlruns"  # at the project root: the artifacts of both modes, by experiment and run
PROXIED_ARTIFACTS = "mlflow-artifacts:"  # the server's name for its --artifacts-destination


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def server_unreachable(error: BaseException) -> BaseException | None:
    """The connection error or time-out behind ``error`` when a tracking server did not answer
    (refused, reset, timed out), else None. MLflow wraps it in an ``MlflowException``."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, (requests.ConnectionError, requests.Timeout)):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


_server_gone = threading.Event()


def stop_waiting_for_server() -> None:
    """Make every further MLflow request of this process fail at once instead of retrying: the
    tracking server is known not to answer, and each request would wait out its retries."""
    _server_gone.set()
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "2"


def server_gone() -> bool:
    """Whether this process found its tracking server not answering."""
    return _server_gone.is_set()


def _orphaned(run: Run) -> bool:
    """A RUNNING run whose owning process, on this host, is gone."""
    tags = run.data.tags
    return (
        run.info.status == "RUNNING"
        and tags.get(TAG_HOST) == socket.gethostname()
        and TAG_PID in tags
        and not _alive(int(tags[TAG_PID]))
    )


def owner_tags() -> dict[str, str]:
    """Tags that say which process owns a run, so a later start can tell it was killed."""
    return {TAG_PID: str(os.getpid()), TAG_HOST: socket.gethostname()}


def reap_stale_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """Mark KILLED every RUNNING run of this host whose owning process is gone.

    A ``kill -9`` or a power cut leaves runs RUNNING forever; this is called when a run starts.

    Returns:
        The ids of the runs it marked.
    """
    reaped = []
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'"):
        if _orphaned(run):
            client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
            reaped.append(run.info.run_id)
    if reaped:
        log.warning("marked %d interrupted MLflow run(s) KILLED", len(reaped))
    return reaped


def claim_active_run() -> None:
    """Tag the active (parent) run with this process and reap runs left by dead processes."""
    run = mlflow.active_run()
    if run is None or TAG_PID in run.data.tags:
        return
    client = MlflowClient()
    client.set_tag(run.info.run_id, TAG_PID, str(os.getpid()))
    client.set_tag(run.info.run_id, TAG_HOST, socket.gethostname())
    reap_stale_runs(client, run.info.experiment_id)


class Tracker:
    """Logs each finished run as a child of the active MLflow run (does nothing without one)."""

    def __init__(
        self,
        layer_every: int = 1,
        quantities: Iterable[str] | None = None,
        layers: Literal["ends", "all"] = "ends",
        enabled: bool = True,
        queue_size: int = 16,
    ) -> None:
        parent = mlflow.active_run() if enabled else None
        self.tracking_uri = mlflow.get_tracking_uri()
        self.client = MlflowClient(self.tracking_uri) if parent else None
        # read only while enabled (a client, hence a parent)
        self.parent_id: str = parent.info.run_id if parent else ""
        self.experiment_id: str = parent.info.experiment_id if parent else ""
        self.layer_every = layer_every
        self.quantities = None if quantities is None else set(quantities)  # None: all
        if layers not in ("ends", "all"):
            raise ValueError(f"layers = {layers!r}: expected 'ends' or 'all'")
        self.layers = layers
        # finished runs wait here for the logging thread; a full queue holds the grid back
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.client is not None

    def submit(
        self,
        spec: RunSpec,
        result: RunResult,
        studies: str,
        weights: Path | None,
        result_id: str | None,
        on_logged: Callable[[str], None],
        name: str | None = None,
        data_digest: str | None = None,
    ) -> None:
        """Log a finished run from the logging thread, off the training path.

        ``on_logged(child_run_id)`` is called from that thread once the child is complete. A run
        whose logging fails or never starts keeps no child id, and ``reconcile`` logs it at the
        next start.
        """
        if self.client is None:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="mlflow-logging", daemon=True)
            self._thread.start()
        self._queue.put((spec, result, studies, weights, result_id, on_logged, name, data_digest))

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            spec, result, studies, weights, result_id, on_logged, name, data_digest = item
            try:
                if not server_gone():  # else left, like the rest, to the next start
                    on_logged(
                        self.log_run(spec, result, studies, weights, result_id, name, data_digest)
                    )
            except Exception as error:  # the grid goes on; the next start logs this run again
                if (cause := server_unreachable(error)) is None:
                    log.exception(
                        "MLflow logging of %s failed; the next start retries it", spec.label
                    )
                else:
                    stop_waiting_for_server()
                    log.warning(
                        "MLflow at %s does not answer (%s); the runs not logged yet are logged "
                        "by the next start",
                        self.tracking_uri,
                        type(cause).__name__,
                    )
            finally:
                self._queue.task_done()

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop the logging thread once every queued run is logged (``drain``), or once the run
        it is logging is (Ctrl-C: what is left is logged at the next start)."""
        if self._thread is None:
            return
        if not drain:
            with contextlib.suppress(queue.Empty):
                while True:
                    self._queue.get_nowait()
                    self._queue.task_done()
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None
        if server_gone():  # again: a Dask executor restores the environment it started with
            stop_waiting_for_server()

    def log_run(
        self,
        spec: RunSpec,
        result: RunResult,
        studies: str,
        weights: Path | None,
        result_id: str | None = None,
        name: str | None = None,
        data_digest: str | None = None,
    ) -> str | None:
        """Create the child run, send everything in batches, close it as it ended.

        Args:
            spec: The run spec (params, tags).
            result: Its result (metrics; status and verdict tags).
            studies: Comma-separated studies the run belongs to.
            weights: The stored ``weights.pt`` to attach, if any.
            result_id: The stored result's id, tagged so that a later start can tell whether it
                was logged (``logged_results``).
            name: The child's short name (the label when None; the label is always a tag).
            data_digest: The fingerprint of the data it trained on, for its dataset input.
        Returns:
            The child run's id, or None when no parent run is active.
        """
        if self.client is None:
            return None
        tags = {
            "mlflow.parentRunId": self.parent_id,
            TAG_RUN_ID: spec.run_id,
            TAG_LABEL: spec.label,
            "studies": studies,
            "status": result.status,
            # from the stored numbers under the current rule, as the runs table has them
            **verdicts_of(result.summary),
            "theory_verdict": str(result.summary.get("theory_verdict")),
            "init_name": spec.init_name,
            **{axis: str(value) for axis, value in spec.model_dump().items()},
            **owner_tags(),
        }
        if result.summary.get("diverged_step") is not None:
            tags["diverged_step"] = str(result.summary["diverged_step"])
        if result_id is not None:
            tags[TAG_RESULT_ID] = result_id
        profile = layer_profile(result.layer_stats)
        if not profile.empty:  # the UI shows the artifact as a table (what log_table would tag)
            tags[MLFLOW_LOGGED_ARTIFACTS] = json.dumps([{"path": PROFILE_TABLE, "type": "table"}])
        # the child spans the run's training, not its logging: start and end as it trained
        started, ended = _training_span_ms(result.summary)
        run = self.client.create_run(
            self.experiment_id, start_time=started, run_name=name or spec.label, tags=tags
        )
        run_id = run.info.run_id
        try:
            params = [Param(k, str(v)) for k, v in spec.model_dump().items()]
            metrics = self._metrics(result)
            # the params ride in the first batch: MLflow takes 1,000 entities per call
            first = BATCH - len(params)
            self.client.log_batch(run_id, metrics=metrics[:first], params=params)
            for chunk in _chunks(metrics[first:], BATCH):
                self.client.log_batch(run_id, metrics=chunk)
            if data_digest is not None:
                self.client.log_inputs(run_id, datasets=[_dataset_input(spec, data_digest)])
            self._log_files(run.info.artifact_uri, spec, result, weights, profile)
        except BaseException:
            self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
            raise
        self.client.set_terminated(run_id, STATUS[result.status], end_time=ended)
        return run_id

    def _log_files(
        self,
        artifact_uri: str,
        spec: RunSpec,
        result: RunResult,
        weights: Path | None,
        profile: pd.DataFrame,
    ) -> None:
        """The profile table and figure and the weights, in one upload (one round trip to a
        server), straight to the run's artifact store: ``MlflowClient.log_artifacts`` would first
        read the whole run back to learn its artifact URI (~2 ms a run in sqlite)."""
        with tempfile.TemporaryDirectory() as folder:
            files = Path(folder)
            if not profile.empty:  # as log_table writes it, without its 3 extra round trips
                (files / PROFILE_TABLE).write_text(profile.to_json(orient="split", index=False))
            if not result.layer_stats.empty:
                (files / PROFILE_FIGURE).write_bytes(profile_png(result.layer_stats, spec.label))
            if weights is not None and weights.exists():
                (files / weights.name).symlink_to(weights.resolve())  # copied, not moved
            if any(files.iterdir()):
                repository = get_artifact_repository(artifact_uri, tracking_uri=self.tracking_uri)
                repository.log_artifacts(folder)

    def logged_results(self, result_ids: Iterable[str]) -> dict[str, str]:
        """The child run that logged each of the stored results ``result_ids`` to its end, in
        the store in use: one search of the experiment's children, whatever the runs table says
        (a deleted, replaced or other store has none of its ids).

        Children whose logging was cut short (KILLED, or left RUNNING by a dead process of this
        host) are deleted, so that logging the result again leaves one whole child per result.

        Returns:
            ``{result_id: child run id}`` for the results that have a whole child.
        """
        if self.client is None:
            return {}
        wanted = set(result_ids)
        found: dict[str, str] = {}
        partial: list[str] = []
        for run in self._children_with(TAG_RESULT_ID):
            result_id = run.data.tags[TAG_RESULT_ID]
            if result_id not in wanted:
                continue
            if run.info.status in ("FINISHED", "FAILED"):
                found.setdefault(result_id, run.info.run_id)
            elif run.info.status == "KILLED" or _orphaned(run):
                partial.append(run.info.run_id)
        for run_id in partial:
            self.client.delete_run(run_id)
        return found

    def _children_with(self, tag: str, page_size: int = 1000) -> Iterator[Run]:
        """Every run of the experiment that has ``tag``, page by page."""
        assert self.client is not None
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                f"tags.`{tag}` LIKE '%'",
                max_results=page_size,
                page_token=token,
            )
            yield from page
            if not (token := page.token):
                return

    def _metrics(self, result: RunResult) -> list[Metric]:
        """Every point the child gets: the history per epoch, then the kept probe steps."""
        at = _clock(result.summary)
        metric_name = result.summary.get("metric_name", "val_metric")
        epochs = result.history
        keys = epochs["metric"].where(epochs["metric"] != "val_metric", metric_name)
        metrics = _points(keys, epochs["value"], at(epochs["epoch"], epoch=True), epochs["epoch"])
        # at init and in theory a layer profile is one value per layer: the table artifact
        # (``layer_profile``), not a one-point chart per layer and quantity
        stats = _LongColumns.of(result.layer_stats, "train")
        if stats.empty:
            return metrics
        stats = stats.where(np.isin(stats.step, np.unique(stats.step)[:: self.layer_every]))
        steps, ratio = _grad_ratio(stats)
        if self.quantities is not None:
            stats = stats.where(np.isin(stats.quantity, list(self.quantities)))
        keys, points = _layer_points(stats, self.layers)
        metrics += _points(keys, points.value, at(points.step), points.step)
        metrics += _points(GRAD_RATIO, ratio, at(steps), steps)
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
    init and, where theory predicts it, the mean-field prediction (``PROFILE_TABLE`` of each
    child run)."""
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
    started, _ = _training_span_ms(summary)
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


def _training_span_ms(summary: dict[str, Any]) -> tuple[int | None, int | None]:
    """When the run started and ended training, in epoch milliseconds (None if not recorded:
    MLflow then uses the time of logging)."""
    ended, wall = summary.get("ended_at"), summary.get("wall_s")
    if ended is None or wall is None or not math.isfinite(wall):
        return None, None
    return int((ended - wall) * 1000), int(ended * 1000)


def _dataset_input(spec: RunSpec, data_digest: str) -> DatasetInput:
    """The data a child trained on, as MLflow's dataset input: named by dataset and input
    normalization, with the data's fingerprint as digest."""
    dataset = Dataset(
        name=f"{spec.dataset}/{spec.input_norm}",
        digest=data_digest[:36],  # MLflow's limit
        source_type="gradlab",
        source=json.dumps({"dataset": spec.dataset, "input_norm": spec.input_norm}),
    )
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])


def _layer_points(stats: _LongColumns, layers: str) -> tuple[np.ndarray, _LongColumns]:
    """The key of each probe point to log, and the points: ``step_loss`` and
    ``grad_global_norm`` for the whole network; per layer ``<quantity>/first`` and
    ``<quantity>/last`` (``layers="ends"``: one key at every depth, so runs of different depths
    share a chart) or ``<quantity>/layer_NN`` (``"all"``)."""
    whole = stats.where(stats.layer == 0)
    hidden = stats.where(stats.layer > 0)
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
    """The probe steps and, at each, ∂L/∂h RMS of the first hidden layer over the last's (empty
    when the probes did not measure it, or the net has one hidden layer): below 1 the gradient
    vanishes on its way down, above 1 it explodes."""
    rms = stats.where(stats.quantity == "grad_preact_rms")
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


def runs_of(parent_run_id: str) -> pd.DataFrame:
    """The child runs of a parent run, as ``mlflow.search_runs`` returns them."""
    parent = MlflowClient().get_run(parent_run_id)
    return mlflow.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
    )


def _relocated(uri: str, artifact_root: str) -> tuple[str, str]:
    """``uri`` under ``artifact_root`` if it lies in an ``mlruns/`` folder or in the server's
    proxied store, and the root it had; ``(uri, "")`` if it lies elsewhere."""
    if uri.startswith(f"{PROXIED_ARTIFACTS}/") and not uri.startswith(f"{PROXIED_ARTIFACTS}//"):
        # a netloc (mlflow-artifacts://host/...) names one server: not ours to move
        old_root, rest = PROXIED_ARTIFACTS, uri.removeprefix(f"{PROXIED_ARTIFACTS}/")
    elif uri.startswith(("/", "file:")) and f"/{ARTIFACTS_DIR}/" in uri:
        old_root, _, rest = uri.rpartition(f"/{ARTIFACTS_DIR}/")
        old_root += f"/{ARTIFACTS_DIR}"
    else:
        return uri, ""
    return (f"{artifact_root}/{rest}", old_root) if rest else (uri, "")


def relocate_artifacts(db_path: Path, artifact_root: str) -> int:
    """Point the experiments and runs of an MLflow sqlite database at ``artifact_root``.

    MLflow fixes an experiment's artifact location when it creates it, as an absolute path
    (sqlite) or ``mlflow-artifacts:/<id>`` (a server), and each run's as that plus
    ``/<run_id>/artifacts``: a moved or copied project would go on writing into the folder of its
    first run, and local and server mode could not share one store. Every location in an
    ``mlruns/`` folder or in the server's proxied store is rewritten to the same ``<rest>`` under
    ``artifact_root``; others (``s3://…``, a location chosen by hand) stay. MLflow has no API to
    change an experiment's (or a run's) artifact location, hence plain SQL on two columns that
    its schema has kept stable across versions.

    Args:
        db_path: The sqlite file of the MLflow store.
        artifact_root: Where ``mlruns/`` is now: an absolute path (sqlite mode) or
            ``mlflow-artifacts:`` (the server's ``--artifacts-destination``).
    Returns:
        How many rows changed (0 when every location is already right).
    """
    artifact_root = artifact_root.rstrip("/")
    prefix = f"{artifact_root}/"
    changed, old_roots = 0, set()
    with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as db, db:
        for table, key, column in (
            ("experiments", "experiment_id", "artifact_location"),
            ("runs", "run_uuid", "artifact_uri"),
        ):
            # locations already under the root are skipped in SQL: a cheap no-op on every start
            rows = db.execute(
                f"SELECT {key}, {column} FROM {table} WHERE substr({column}, 1, ?) != ?",
                (len(prefix), prefix),
            ).fetchall()
            updates = []
            for row_key, uri in rows:
                new_uri, old_root = _relocated(uri, artifact_root)
                if new_uri != uri:
                    updates.append((new_uri, row_key))
                    old_roots.add(old_root)
            db.executemany(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", updates)
            changed += len(updates)
    if changed:
        log.info(
            "MLflow artifact locations moved from %s to %s (%d experiments and runs)",
            ", ".join(sorted(old_roots)),
            artifact_root,
            changed,
        )
    return changed


EXPERIMENT_NOTE = """\
**gradlab** trains one small MLP per run spec of a grid (activation × init × optimizer ×
normalization × depth …) and measures how gradients flow through its layers: ∂L/∂h per hidden
layer (what vanishes or explodes), ‖∂L/∂W‖, activation statistics, saturation and dead units, at
init and during training, next to the mean-field prediction.

How to read the runs:
- Each `kedro run` is a parent run named `<pipeline>·<env>·<time>` (`default·local·<time>` for
  a plain `kedro run`); its description lists the grid, its metrics count the runs per status
  and verdict, and its artifacts hold the report (`report.html`), the tables and the figures.
- Each run spec is a child run (the + in its parent's row shows them), named by what differs
  from the grid's baseline and its seed (`relu·d16·s0`); the full label is the tag
  `gradlab.label`, the axes are params and tags. `status` is finished, diverged (a result,
  not a crash) or failed; `verdict` (read at the end of training) is healthy, vanishing,
  exploding, saturated or dead; `init_verdict` is what the gradients at init say (healthy,
  vanishing, exploding, or n/a).
- Per-epoch metrics (step = epoch): `train_loss`, `val_loss`, `val_r2`/`val_accuracy`, `lr`,
  `grad_norm`. Per-step metrics (step = optimizer step): `grad_ratio`, ∂L/∂h RMS of the first
  hidden layer over the last (below 1: the gradient vanishes on its way down; above 1: it
  explodes); `<quantity>/first` and `<quantity>/last`, the first and the last layer, so runs of
  any depth share a chart; `step_loss`, `grad_global_norm`.
  `layer_profile.png` shows ∂L/∂h and ‖∂L/∂W‖ per layer at init and at the end, one picture
  instead of a chart per layer; `layer_profile.json` holds each layer's value at init and the
  mean-field prediction; `weights.pt` the final state_dict (loads into `gradlab.core.models.MLP`).
"""


def parent_run_name(pipelines: list[str] | str | None, env: str | None, started: float) -> str:
    """``<pipeline>·<env>·<YYYY-MM-DD HH:MM>`` for the run of a ``kedro run``: ``default`` for
    Kedro's ``__default__`` pipeline (all stages), ``local`` for no ``--env``, pipelines joined
    by ``+`` (``default·local·2026-12-07 10:04``, ``train+report·smoke·…``)."""
    names = [pipelines] if isinstance(pipelines, str) else list(pipelines or ["__default__"])
    names = ["default" if name == "__default__" else name for name in names]
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(started))
    return f"{'+'.join(names)}·{env or 'local'}·{when}"


def parent_description(runs: int, studies: Iterable[tuple[str, str, int]], seeds: list) -> str:
    """The parent run's description: the grid it trains, study by study.

    Args:
        runs: Distinct runs in the grid.
        studies: ``(name, question, runs)`` per study.
        seeds: The grid's seeds.
    """
    lines = [f"A grid of {runs} runs (seeds {seeds}); one child run per run spec.", ""]
    lines += [f"- **{name}** ({count} runs): {question}" for name, question, count in studies]
    return "\n".join(lines)


def grid_summary_metrics(runs: pd.DataFrame) -> dict[str, float]:
    """Counts of a grid's stored runs per status and per verdict (``runs/<status>``,
    ``verdict/<verdict>``) and their total, for the parent run."""
    metrics = {"runs/total": float(len(runs))}
    for column in ("status", "verdict"):
        prefix = "runs" if column == "status" else column
        for value, count in runs[column].dropna().value_counts().items():
            if value != "n/a":  # a failed run's verdict: runs/failed counts it already
                metrics[f"{prefix}/{value}"] = float(count)
    return metrics


def claims_summary(claims: pd.DataFrame) -> tuple[dict[str, str], dict[str, float]]:
    """A reproduction's claims table as parent-run tags (``claim.<id>``: pass or fail) and
    metrics (``claims/passed``, ``claims/total``)."""
    tags = {f"claim.{row.claim_id}": row.result for row in claims.itertuples(index=False)}
    passed = float((claims["result"] == "pass").sum())
    return tags, {"claims/passed": passed, "claims/total": float(len(claims))}
