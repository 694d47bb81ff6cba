"""``train.executor: dask`` for real: a LocalCluster of 2 worker processes, and a scheduler with
workers started by the README's commands, train the smoke grid to the same bits as the local
executor (the session's smoke run); a worker killed mid-grid loses nothing (against a local run of
the same longer grid); Ctrl-C leaves no process behind."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from distributed import Client
from mlflow.tracking import MlflowClient

from tests.helpers.projects import make_project, run_kedro, start_kedro, stop_kedro, wait_for_text
from tests.helpers.servers import free_port

SLOW = "grid.baseline.epochs=150"  # each group trains for seconds: long enough to be hit
OUTPUT = Path("data/smoke/07_model_output")
EXACT = ["final_train_loss", "final_val_loss", "final_val_metric", "init_grad_ratio", "steps"]


pytestmark = pytest.mark.slow  # every test trains the smoke grid on a Dask cluster


def _params(executor: str, slow: bool = True) -> tuple[str, ...]:
    """A smoke run on ``executor`` with 2 workers; ``slow``: groups long enough to be hit."""
    params = f"train.workers=2,train.executor={executor}"
    return ("run", "--env", "smoke", "--params", f"{SLOW},{params}" if slow else params)


def _children(project: Path) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("gradlab").experiment_id
    return [r for r in client.search_runs([experiment]) if "mlflow.parentRunId" in r.data.tags]


def _assert_same_numbers(project: Path, reference: Path) -> None:
    for name in ("history", "layer_stats"):
        ours = pd.read_parquet(project / OUTPUT / f"{name}.parquet")
        theirs = pd.read_parquet(reference / OUTPUT / f"{name}.parquet")
        pd.testing.assert_frame_equal(ours, theirs, check_exact=True)
    ours = pd.read_parquet(project / OUTPUT / "runs.parquet").set_index("run_id").sort_index()
    theirs = pd.read_parquet(reference / OUTPUT / "runs.parquet").set_index("run_id").sort_index()
    pd.testing.assert_frame_equal(ours[EXACT], theirs[EXACT], check_exact=True)
    assert set(ours["status"]) <= {"finished", "diverged"}, ours["status"]


def _assert_one_child_per_result(project: Path) -> None:
    runs = pd.read_parquet(project / OUTPUT / "runs.parquet")
    children = _children(project)
    logged = sorted(c.data.tags["gradlab.run_id"] for c in children)
    assert logged == sorted(runs["run_id"]), logged
    assert {c.info.run_id for c in children} == set(runs["mlflow_run_id"])


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> Path:
    """The slow smoke grid trained by the local executor (2 processes): the reference numbers of
    a run that is hit mid-grid."""
    project = make_project(tmp_path_factory.mktemp("local") / "project")
    result = run_kedro(project, *_params("local"))
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return project


def test_dask_local_cluster_trains_the_same_bits_and_mlflow_structure(smoke_project, tmp_path):
    local = smoke_project  # the same grid trained by the local executor
    project = make_project(tmp_path / "project")
    result = run_kedro(project, *_params("dask", slow=False))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "with 2 worker(s)" in output, output[-4000:]
    _assert_same_numbers(project, local)
    _assert_one_child_per_result(project)

    def structure(children: list) -> list:
        return sorted(
            (c.info.run_name, c.info.status, c.data.tags["verdict"], sorted(c.data.metrics))
            for c in children
        )

    assert structure(_children(project)) == structure(_children(local))


def _dask_workers(pid: int) -> list[psutil.Process]:
    """The LocalCluster's worker processes: spawned children of the ``kedro run`` process."""
    return [
        child
        for child in psutil.Process(pid).children(recursive=True)
        if any("spawn_main" in part for part in child.cmdline())
    ]


def test_a_worker_killed_mid_grid_loses_nothing(local, tmp_path):
    project = make_project(tmp_path / "project")
    log = tmp_path / "run.log"
    process = start_kedro(project, *_params("dask"), log=log)
    try:
        wait_for_text(log, "[1/7]")  # one group back, the others in the workers' hands
        victim = max(_dask_workers(process.pid), key=lambda p: p.cpu_times().user)
        victim.send_signal(signal.SIGKILL)
        assert process.wait(timeout=300) == 0, log.read_text()[-4000:]
    finally:
        stop_kedro(process)
    output = log.read_text()
    assert "[7/7]" in output and "failed" not in output.split("[1/7]")[1], output[-4000:]
    assert "Restarting worker" in output, output[-4000:]  # its nanny saw it die mid-grid
    _assert_same_numbers(project, local)
    _assert_one_child_per_result(project)


def test_ctrl_c_cancels_the_grid_and_leaves_no_process_behind(tmp_path):
    project = make_project(tmp_path / "project")
    log = tmp_path / "run.log"
    process = start_kedro(project, *_params("dask"), log=log)
    try:
        wait_for_text(log, "Dask: 7 task(s)")
        time.sleep(1.0)
        spawned = psutil.Process(process.pid).children(recursive=True)
        assert len(_dask_workers(process.pid)) == 2, [p.cmdline() for p in spawned]
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=60) != 0
    finally:
        stop_kedro(process)
    _, alive = psutil.wait_procs(spawned, timeout=10)
    assert not alive, [p.cmdline() for p in alive]
    assert "[7/7]" not in log.read_text()
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("gradlab").experiment_id
    statuses = [r.info.status for r in client.search_runs([experiment])]
    assert "KILLED" in statuses and "RUNNING" not in statuses, statuses


def test_a_running_scheduler_started_as_the_readme_says(smoke_project, tmp_path):
    dask = str(Path(sys.executable).with_name("dask"))
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    cluster = subprocess.Popen(
        f"{dask} scheduler --host 127.0.0.1 --port {port} --no-dashboard & "
        f"{dask} worker {address} --nworkers 2 --nthreads 1 --no-dashboard",
        shell=True,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        project = make_project(tmp_path / "project")
        params = _params("dask", slow=False)[-1] + f",train.dask.address={address}"
        result = run_kedro(project, "run", "--env", "smoke", "--params", params)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-4000:]
        assert f"on {address} with 2 worker(s)" in output, output[-4000:]
    finally:
        os.killpg(cluster.pid, signal.SIGTERM)
        cluster.wait(timeout=30)
    _assert_same_numbers(project, smoke_project)
    _assert_one_child_per_result(project)
