"""A grid goes on when one run diverges or fails; results are stored, reused and tracked."""

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from gradlab.core.execute import SequentialExecutor
from gradlab.core.grid import RunSpec
from gradlab.core.train import RunOptions, TaskData, train_run
from gradlab.grid_runner import collect, train_missing
from gradlab.store import ResultStore
from gradlab.tracking import Tracker, reap_stale_runs
from tests.core.test_train import SMALL, task

EXPLODING = RunSpec(
    **{**SMALL, "depth": 20}, activation="relu", init="normal", init_std=1.0, lr=1.0
)
HEALTHY = [RunSpec(**SMALL, activation=a) for a in ("tanh", "relu")]


@pytest.fixture(scope="module")
def poly() -> TaskData:
    return task()


def specs_table(specs: list[RunSpec]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"run_id": s.run_id, "label": s.label, "studies": "s", **s.model_dump()} for s in specs]
    )


def test_exploding_run_diverges_while_the_rest_of_the_grid_finishes(poly, tmp_path):
    specs = [HEALTHY[0], EXPLODING, HEALTHY[1]]
    store = ResultStore(tmp_path / "runs")
    counts = train_missing(
        specs,
        {s.run_id: "s" for s in specs},
        {("poly", "zscore"): poly},
        store,
        SequentialExecutor(),
        Tracker(),  # no active MLflow run: tracks nothing
        RunOptions(),
    )
    assert counts == {"finished": 2, "diverged": 1}
    runs, history, layer_stats, distributions = collect(specs_table(specs), store)
    status = dict(zip(runs["label"], runs["status"], strict=True))
    assert status[EXPLODING.label] == "diverged"
    assert runs.loc[runs["status"] == "diverged", "diverged_step"].notna().all()
    assert set(history["run_id"]) == {s.run_id for s in HEALTHY}  # no full epoch before blow-up
    assert set(layer_stats["run_id"]) == {s.run_id for s in specs}
    assert list(distributions.columns)[0] == "run_id"


def test_stored_results_are_reused_unless_forced(poly, tmp_path):
    store = ResultStore(tmp_path / "runs")
    args = (
        {s.run_id: "s" for s in HEALTHY},
        {("poly", "zscore"): poly},
        store,
        SequentialExecutor(),
        Tracker(),
        RunOptions(),
    )
    assert sum(train_missing(HEALTHY, *args).values()) == 2
    assert sum(train_missing(HEALTHY, *args).values()) == 0
    assert sum(train_missing(HEALTHY, *args, force=True).values()) == 2


def test_tracker_logs_failed_run_as_failed_and_reaps_dead_owners(poly, tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        mlflow.set_experiment("tracker-test")
        broken = TaskData(
            poly.task, poly.n_outputs, poly.x_train, poly.y_train, poly.x_val[:, :1], poly.y_val
        )
        spec = HEALTHY[0]
        result = train_run(spec, broken)
        with mlflow.start_run() as parent:
            child_id = Tracker().log_run(spec, result, "s", None)
        client = MlflowClient()
        child = client.get_run(child_id)
        assert child.info.status == "FAILED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["status"] == "failed"

        # a run whose owning process is gone is marked KILLED by the next start
        orphan = client.create_run(
            parent.info.experiment_id, tags={"gradlab.pid": "999999999", "gradlab.host": _host()}
        )
        reaped = reap_stale_runs(client, parent.info.experiment_id)
        assert reaped == [orphan.info.run_id]
        assert client.get_run(orphan.info.run_id).info.status == "KILLED"
    finally:
        mlflow.set_tracking_uri(None)


def _host() -> str:
    import socket

    return socket.gethostname()
