"""One MLflow child run per trained run, under the parent run kedro-mlflow opens per ``kedro run``.

Everything is sent with ``MlflowClient.log_batch`` in chunks (≤ 1,000 metrics a call): one
``log_metric`` per point costs ~4 ms against sqlite, a batch of 1,000 about as much as ten. The
metrics are ``gradlab.tracking.metrics``'; the statistics at init and the mean-field prediction,
one value per layer, are one table artifact (``layer_profile.json``); the profile at init and at
the end is one picture (``layer_profile.png``, ``gradlab.core.plots.profile``), and the profile at
every probe step another (``layer_step_map.png``, ``gradlab.core.plots.layer_steps``). A child is
named by what differs from the grid's baseline (``relu·d16·s0``; the full label is the
``gradlab.label`` tag), spans the run's training time, is tagged with the verdicts the engine
gave the run, and has the data it trained on as its dataset input.

The grid hands finished runs to ``Tracker.submit``: a background thread logs them while the
workers train (measured here: ~38 ms and 0.07 MB of sqlite per default-sized run; drawing
``layer_step_map.png`` is ~6 ms of it). Each child is
tagged with its stored result's id, so a result whose logging was cut short, or whose child is
not in the store in use (deleted, replaced, another server), is logged exactly once by the next
start (``gradlab.grid_runner.reconcile``).
"""

import json
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import mlflow
import pandas as pd
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunStatus
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

from gradlab.core.architectures import get_architecture
from gradlab.core.grid import RunSpec
from gradlab.core.plots.layer_steps import layer_step_png
from gradlab.core.plots.profile import profile_png
from gradlab.core.train import RunResult
from gradlab.tracking.background import LoggingThread
from gradlab.tracking.maintenance import TAG_RESULT_ID, owner_tags, whole_children
from gradlab.tracking.metrics import MetricChoice, child_metrics, layer_profile, training_span_ms

BATCH = 1000  # MLflow's limit on metrics per log_batch call
TAG_RUN_ID = "gradlab.run_id"
TAG_LABEL = "gradlab.label"  # the full label; the run name is the short name within its grid
PROFILE_TABLE = "layer_profile.json"  # per layer and quantity: the value at init, the prediction
PROFILE_FIGURE = "layer_profile.png"  # ∂L/∂h and ‖∂L/∂W‖ per layer at init and at the end
LAYER_STEP_FIGURE = "layer_step_map.png"  # ∂L/∂h per layer and probe step, ÷ the last layer's
STATUS = {"finished": "FINISHED", "diverged": "FINISHED", "failed": "FAILED"}


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class Child:
    """What a child run is named, tagged and given besides its spec and result.

    Attributes:
        studies: Comma-separated studies the run belongs to.
        weights: The stored ``weights.pt`` to attach, if any.
        result_id: The stored result's id, tagged so that a later start can tell whether it was
            logged (``logged_results``).
        name: The child's short name (the label when None; the label is always a tag).
        data_digest: The fingerprint of the data it trained on, for its dataset input.
    """

    studies: str
    weights: Path | None = None
    result_id: str | None = None
    name: str | None = None
    data_digest: str | None = None


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
        self.choice = MetricChoice(
            layer_every, None if quantities is None else frozenset(quantities), layers
        )
        parent = mlflow.active_run() if enabled else None
        self.tracking_uri = mlflow.get_tracking_uri()
        self.client = MlflowClient(self.tracking_uri) if parent else None
        # read only while enabled (a client, hence a parent)
        self.parent_id: str = parent.info.run_id if parent else ""
        self.experiment_id: str = parent.info.experiment_id if parent else ""
        self._thread = LoggingThread(self.tracking_uri, queue_size)

    @property
    def enabled(self) -> bool:
        return self.client is not None

    def submit(self, spec: RunSpec, result: RunResult, child: Child) -> None:
        """Log a finished run from the logging thread, off the training path (arguments as
        ``log_run``'s). A run whose logging fails or never starts keeps no child id, and
        ``reconcile`` logs it at the next start."""
        if self.client is None:
            return
        self._thread.submit(
            spec.run_id if child.result_id is not None else None,
            spec.label,
            lambda: self.log_run(spec, result, child),
        )

    def close(self, drain: bool = True, timeout: float | None = None) -> dict[str, str]:
        """Stop the logging thread once every queued run is logged (``drain``), or once the run
        it is logging is (Ctrl-C: what is left is logged at the next start).

        Returns:
            ``{run id: child run id}`` of each run submitted with a ``result_id`` whose child
            was logged whole.
        """
        return self._thread.close(drain, timeout)

    def log_run(self, spec: RunSpec, result: RunResult, child: Child) -> str | None:
        """Create the child run, send everything in batches, close it as it ended.

        Args:
            spec: The run spec (params, tags).
            result: Its result (metrics; status and the verdicts of its summary as tags).
            child: Its studies, name, stored weights and ids.
        Returns:
            The child run's id, or None when no parent run is active.
        """
        if self.client is None:
            return None
        profile = layer_profile(result.layer_stats)
        tags = self._tags(spec, result, child, has_profile=not profile.empty)
        # the child spans the run's training, not its logging: start and end as it trained
        started, ended = training_span_ms(result.summary)
        run = self.client.create_run(
            self.experiment_id, start_time=started, run_name=child.name or spec.label, tags=tags
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
            if child.data_digest is not None:
                dataset = _dataset_input(spec, child.data_digest)
                self.client.log_inputs(run_id, datasets=[dataset])
            self._log_files(run.info.artifact_uri, spec, result, child.weights, profile)
        except BaseException:
            self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
            raise
        self.client.set_terminated(run_id, STATUS[result.status], end_time=ended)
        return run_id

    def _tags(
        self, spec: RunSpec, result: RunResult, child: Child, has_profile: bool
    ) -> dict[str, str]:
        summary = result.summary
        tags = {
            "mlflow.parentRunId": self.parent_id,
            TAG_RUN_ID: spec.run_id,
            TAG_LABEL: spec.label,
            "studies": child.studies,
            "status": result.status,
            # as the engine judged the run (a stored result's: under the current rule, as
            # ResultStore.load reads it); a run that raised has nothing to judge
            "init_verdict": str(summary.get("init_verdict", "n/a")),
            "verdict": str(summary.get("verdict", "n/a")),
            "theory_verdict": str(summary.get("theory_verdict")),
            "init_name": spec.init_name,
            **{axis: str(value) for axis, value in spec.model_dump().items()},
            **owner_tags(),
        }
        if summary.get("diverged_step") is not None:
            tags["diverged_step"] = str(summary["diverged_step"])
        if child.result_id is not None:
            tags[TAG_RESULT_ID] = child.result_id
        if has_profile:  # the UI shows the artifact as a table (what log_table would tag)
            tags[MLFLOW_LOGGED_ARTIFACTS] = json.dumps([{"path": PROFILE_TABLE, "type": "table"}])
        return tags

    def _log_files(
        self,
        artifact_uri: str,
        spec: RunSpec,
        result: RunResult,
        weights: Path | None,
        profile: pd.DataFrame,
    ) -> None:
        """The profile table, the two figures and the weights, in one upload (one round trip to a
        server), straight to the run's artifact store: ``MlflowClient.log_artifacts`` would first
        read the whole run back to learn its artifact URI (~2 ms a run in sqlite)."""
        with tempfile.TemporaryDirectory() as folder:
            files = Path(folder)
            if not profile.empty:  # as log_table writes it, without its 3 extra round trips
                (files / PROFILE_TABLE).write_text(profile.to_json(orient="split", index=False))
            if not result.layer_stats.empty:
                quantity = get_architecture(spec.arch).profile
                figure = profile_png(result.layer_stats, spec.label, quantity)
                (files / PROFILE_FIGURE).write_bytes(figure)
                steps = layer_step_png(result.layer_stats, spec.label, quantity)
                (files / LAYER_STEP_FIGURE).write_bytes(steps)
            if weights is not None and weights.exists():
                (files / weights.name).symlink_to(weights.resolve())  # copied, not moved
            if any(files.iterdir()):
                repository = get_artifact_repository(artifact_uri, tracking_uri=self.tracking_uri)
                repository.log_artifacts(folder)

    def _metrics(self, result: RunResult) -> list[Metric]:
        """Every point the child gets (``gradlab.tracking.metrics.child_metrics``)."""
        return child_metrics(result, self.choice)

    def logged_results(self, result_ids: Iterable[str]) -> dict[str, str]:
        """``{result_id: child run id}`` of the stored results ``result_ids`` that have a whole
        child in the store in use; partial children are deleted (``whole_children``)."""
        if self.client is None:
            return {}
        return whole_children(self.client, self.experiment_id, result_ids)


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
