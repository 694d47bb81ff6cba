"""MLflow server mode and artifact locations that follow the project, for real: a server started
with `python -m gradlab.mlflow_server`, `kedro run` against it and against sqlite, a moved project,
and `relocate_artifacts` on a real MLflow sqlite store."""

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from gradlab.tracking import relocate_artifacts
from gradlab.tracking.maintenance import server_unreachable
from tests.helpers.projects import copy_project, make_project, run_kedro
from tests.helpers.servers import group_members, start_mlflow_server, stop_group

SMOKE = ("run", "--env", "smoke")
PARENT_TAG = "mlflow.parentRunId"


def _output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def _smoke_runs(project: Path) -> pd.DataFrame:
    return pd.read_parquet(project / "data/smoke/07_model_output/runs.parquet")


def _parent_and_children(client: MlflowClient) -> tuple[list, list]:
    experiment_id = client.get_experiment_by_name("gradlab").experiment_id
    runs = client.search_runs([experiment_id])
    parents = [run for run in runs if PARENT_TAG not in run.data.tags]
    children = [run for run in runs if PARENT_TAG in run.data.tags]
    return parents, children


@pytest.mark.slow
def test_a_run_logs_through_the_server_into_the_projects_mlruns(tmp_path):
    project = make_project(tmp_path / "project")
    log = tmp_path / "server.log"
    server, url = start_mlflow_server(project, log)
    try:
        result = run_kedro(project, *SMOKE, env={"MLFLOW_TRACKING_URI": url})
        assert result.returncode == 0, _output(result)[-4000:]
        client = MlflowClient(url)
        parents, children = _parent_and_children(client)
        assert len(parents) == 1, [p.info.run_name for p in parents]
        assert {c.data.tags[PARENT_TAG] for c in children} == {parents[0].info.run_id}
        assert len(children) == len(_smoke_runs(project))
        for child in children:
            run_id, experiment_id = child.info.run_id, child.info.experiment_id
            assert child.info.artifact_uri.startswith("mlflow-artifacts:"), child.info.artifact_uri
            assert "weights.pt" in [a.path for a in client.list_artifacts(run_id)]
            stored = project / "mlruns" / experiment_id / run_id / "artifacts" / "weights.pt"
            assert stored.is_file(), stored
    finally:
        stop_group(server)
    assert not group_members(server.pid), log.read_text()[-3000:]


@pytest.mark.slow
def test_a_moved_project_writes_and_reads_its_artifacts_in_its_own_mlruns(smoke_project, tmp_path):
    old, new = tmp_path / "a", tmp_path / "b"
    copy_project(smoke_project, old)  # a project after a smoke run
    logged_before = _parent_and_children(MlflowClient(f"sqlite:///{old / 'mlflow.db'}"))[1]
    shutil.move(old, new)
    result = run_kedro(new, *SMOKE, "--params", "train.force=true")
    assert result.returncode == 0, _output(result)[-4000:]
    assert "MLflow artifact locations moved from" in _output(result)
    client = MlflowClient(f"sqlite:///{new / 'mlflow.db'}")
    mlruns = new.resolve() / "mlruns"
    parents, children = _parent_and_children(client)
    assert len(parents) == 2 and len(children) == 2 * len(logged_before)
    for run in parents + children:
        assert run.info.artifact_uri.startswith(f"{mlruns}/"), run.info.artifact_uri
    before = {run.info.run_id for run in logged_before}
    for child in children:
        if child.info.run_id not in before:
            weights = Path(child.info.artifact_uri) / "weights.pt"
            assert weights.is_file(), weights
    assert not old.exists()
    downloaded = client.download_artifacts(logged_before[0].info.run_id, "weights.pt", tmp_path)
    assert Path(downloaded).is_file()


def _locations(db: Path) -> dict[str, str]:
    """Every experiment's (by name) and run's (by id) artifact location in the store."""
    client = MlflowClient(f"sqlite:///{db}")
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments])
    return {
        **{e.name: e.artifact_location for e in experiments},
        **{r.info.run_id: r.info.artifact_uri for r in runs},
    }


def test_relocate_artifacts_moves_mlruns_locations_and_leaves_others(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
    db = tmp_path / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    ours = client.create_experiment("gradlab")
    run_id = client.create_run(ours).info.run_id
    s3_run = client.create_run(client.create_experiment("s3", "s3://bucket/x")).info.run_id
    client.create_experiment("custom", str(tmp_path / "elsewhere"))
    local = _locations(db)
    assert local["gradlab"] == f"{tmp_path}/mlruns/{ours}"
    others = {key: local[key] for key in ("s3", s3_run, "custom")}

    assert relocate_artifacts(db, "mlflow-artifacts:") == 3  # Default, gradlab and its run
    proxied = _locations(db)
    assert proxied["Default"] == "mlflow-artifacts:/0"
    assert proxied["gradlab"] == f"mlflow-artifacts:/{ours}"
    assert proxied[run_id] == f"mlflow-artifacts:/{ours}/{run_id}/artifacts"
    assert relocate_artifacts(db, "mlflow-artifacts:") == 0

    moved = tmp_path / "moved" / "mlruns"
    assert relocate_artifacts(db, str(moved)) == 3
    back = _locations(db)
    assert back["gradlab"] == f"{moved}/{ours}"
    assert back[run_id] == f"{moved}/{ours}/{run_id}/artifacts"
    assert relocate_artifacts(db, str(moved)) == 0
    assert {key: back[key] for key in others} == others


def test_a_server_gone_mid_response_counts_as_unreachable():
    # killed while it sends a response, a server breaks the body's read (ChunkedEncodingError),
    # not the connection: that too is "does not answer", not an error to print a traceback for
    broken = requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead")
    try:
        try:
            raise broken
        except requests.RequestException as error:
            raise MlflowException("API request to /api/2.0/mlflow/runs/create failed") from error
    except MlflowException as wrapped:
        assert server_unreachable(wrapped) is broken
    assert server_unreachable(requests.HTTPError("500 Server Error")) is None
