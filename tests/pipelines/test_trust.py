"""Trustworthy results, for real: stale caches, bad environments, damaged entries, kills,
interrupts and two runs at once — each case a new user met, reproduced with `kedro run`. Each test
has its own project: a copy of the session's smoke run (``smoke_copy``) or a fresh one."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.helpers.projects import (
    SMOKE,
    assert_each_result_logged_once,
    make_project,
    run_kedro,
    start_kedro,
    stop_kedro,
    wait_for_text,
)

pytestmark = pytest.mark.slow  # every test runs kedro

SLOW = "grid.baseline.epochs=150"  # each group trains for seconds: long enough to be hit
STORE = Path("data/smoke/06_models/runs")


def _output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def _trained(project: Path) -> pd.DataFrame:
    return pd.read_parquet(project / "data/smoke/07_model_output/trained_runs.parquet")


def _runs(project: Path) -> pd.DataFrame:
    return pd.read_parquet(project / "data/smoke/07_model_output/runs.parquet")


def _client(project: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def _refused(result: subprocess.CompletedProcess) -> str:
    """A refusal is the message alone: non-zero exit, no traceback, no node run."""
    output = _output(result)
    assert result.returncode != 0, output[-3000:]
    assert "Traceback" not in output and "──────" not in output, output[-3000:]
    assert "Running node" not in output, output[-3000:]
    return output


@pytest.fixture
def smoke(smoke_copy: Path) -> Path:
    """This test's own project after one smoke run."""
    return smoke_copy


def test_other_data_retrains_the_runs_on_it_and_says_why(smoke):
    result = run_kedro(smoke, *SMOKE, "--params", "data.datasets.poly.n_samples=120")
    assert result.returncode == 0, _output(result)[-3000:]
    trained = _trained(smoke)
    poly = _runs(smoke).query("dataset == 'poly'")["run_id"]
    assert set(trained["run_id"]) == set(poly), trained[["label", "reason"]]
    assert all(r.startswith("stale: data ") for r in trained["reason"]), list(trained["reason"])
    assert "5 to train (5 stale), 2 reused" in _output(result)
    back = run_kedro(smoke, *SMOKE)  # the default data again: those runs are stale again
    assert back.returncode == 0, _output(back)[-3000:]
    assert set(_trained(smoke)["run_id"]) == set(poly)


def test_train_stage_refuses_a_run_specs_of_other_grid_parameters(smoke):
    result = run_kedro(smoke, *SMOKE, "--pipeline", "train", "--params", "grid.baseline.depth=5")
    output = _refused(result)
    assert "run_specs holds 7 runs expanded from other grid parameters" in output, output
    assert "kedro run --pipelines data,grid,train" in output


def test_train_stage_refuses_model_inputs_of_other_data_parameters(smoke):
    result = run_kedro(
        smoke, *SMOKE, "--pipeline", "train", "--params", "data.datasets.poly.n_samples=100"
    )
    output = _refused(result)
    assert "the model inputs were made from other data parameters" in output, output
    assert "data.datasets.poly.n_samples: 300 → 100" in output, output


def test_environment_dependent_values_are_refused_before_anything_runs(smoke):
    before = sorted(p.name for p in (smoke / STORE).iterdir())
    params = "train.device=cuda:abc,data.split.val=0.8,grid.baseline.lr=.inf,grid.studies={}"
    output = _refused(run_kedro(smoke, *SMOKE, "--params", params))
    assert "invalid parameters (4 problems)" in output, output
    for expected in (
        "train.device = 'cuda:abc': not a device of this machine; expected one of ['auto', 'cpu'",
        "data.split = {'val': 0.8, 'test': 0.2}: val + test = 1 leaves no train split",
        "grid.baseline.lr = inf: Input should be a finite number",
        "grid.studies = {}: an empty mapping given with --params",
    ):
        assert expected in output, (expected, output)
    assert sorted(p.name for p in (smoke / STORE).iterdir()) == before


def test_damaged_entries_are_named_and_retrained(smoke):
    runs = _runs(smoke).set_index("label")["run_id"]
    victims = list(runs.iloc[:3])
    store = smoke / STORE
    (store / victims[0] / "layer_stats.parquet").write_bytes(b"")
    (store / victims[1] / "summary.json").write_text("garbage")
    (store / victims[2] / "weights.pt").unlink()
    result = run_kedro(smoke, *SMOKE, "--pipeline", "train")
    output = "".join(_output(result).split())  # the log wraps long lines
    assert result.returncode == 0, output[-3000:]
    reasons = _trained(smoke).set_index("run_id")["reason"]
    assert set(reasons.index) == set(victims), reasons
    # paths as the project's config gives them (relative to the project)
    assert reasons[victims[0]].startswith(f"damaged: {STORE / victims[0] / 'layer_stats.parquet'}")
    assert reasons[victims[1]].startswith(f"damaged: {STORE / victims[1] / 'summary.json'}")
    assert reasons[victims[2]] == f"damaged: {STORE / victims[2] / 'weights.pt'} is missing"
    assert f"damaged:{STORE / victims[1] / 'summary.json'}" in output
    assert len(_runs(smoke)) == 7


def test_only_trains_the_chosen_study(smoke):
    result = run_kedro(
        smoke, *SMOKE, "--pipeline", "train", "--params", "train.only=[optimizer],train.force=true"
    )
    assert result.returncode == 0, _output(result)[-3000:]
    trained = _trained(smoke)
    optimizer = _runs(smoke)[lambda r: r["studies"].str.contains("optimizer")]["run_id"]
    assert set(trained["run_id"]) == set(optimizer) and len(trained) == 2, trained
    assert set(trained["reason"]) == {"forced"}
    assert "5 not selected by train.only" in _output(result)


def test_unknown_environment_is_named(smoke):
    output = _refused(run_kedro(smoke, "run", "--env", "smok"))
    assert "unknown environment 'smok'" in output, output
    assert (
        "expected one of ['base', 'glorot2010', 'he2015', 'local', 'pennington2017', "
        "'resnet_depth', 'schoenholz2017', 'seed_course', 'smoke', 'yang2019']" in output
    )


def test_reconciliation_logs_a_stored_result_that_never_reached_mlflow(smoke):
    client = _client(smoke)
    run_id = _runs(smoke)["run_id"].iloc[0]
    summary_path = smoke / STORE / run_id / "summary.json"
    summary = pd.read_json(summary_path, typ="series").to_dict()
    # the process died between storing the result and logging it
    client.delete_run(summary.pop("mlflow_run_id"))
    summary_path.write_text(pd.Series(summary).to_json())
    result = run_kedro(smoke, *SMOKE, "--pipeline", "train")
    assert result.returncode == 0, _output(result)[-3000:]
    output = _output(result)
    assert "logged 1 stored result(s) that had no MLflow child run" in output, output[-3000:]
    assert "(0 whose child is not in this store, 1 whose logging was cut short)" in output
    assert_each_result_logged_once(smoke, client)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only its parent's bookkeeping remains


def _pool_workers(pid: int) -> list[int]:
    """Child processes of ``pid`` that are multiprocessing workers (not its resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"spawn_main" in command:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.parametrize("how", ["SIGINT to the group (Ctrl-C)", "SIGTERM"])
def test_an_interrupted_run_ends_killed_in_mlflow(how, tmp_path):
    project = make_project(tmp_path / "project")
    log = tmp_path / "run.log"
    process = start_kedro(project, *SMOKE, "--params", SLOW, log=log)
    try:
        wait_for_text(log, "to train")
        time.sleep(1.0)
        if how == "SIGTERM":
            process.send_signal(signal.SIGTERM)
        else:
            os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=60) != 0
    finally:
        stop_kedro(process)
    client = _client(project)
    experiment = client.get_experiment_by_name("gradlab").experiment_id
    parents = [
        r for r in client.search_runs([experiment]) if "mlflow.parentRunId" not in r.data.tags
    ]
    assert [p.info.status for p in parents] == ["KILLED"], log.read_text()[-3000:]
    assert not client.search_runs([experiment], "attributes.status = 'RUNNING'")
    # the next start trains the rest and logs what the interrupt left unlogged: one child each
    again = run_kedro(project, *SMOKE, "--pipeline", "train", "--params", SLOW)
    assert again.returncode == 0, _output(again)[-3000:]
    assert_each_result_logged_once(project, client)


def test_pool_workers_exit_when_their_parent_is_killed(tmp_path):
    project = make_project(tmp_path / "project")
    log = tmp_path / "run.log"
    # runs long enough that a worker never goes back to its task queue to find the parent gone
    longer = "grid.baseline.epochs=20000,train.workers=2"
    process = start_kedro(project, *SMOKE, "--params", longer, log=log)
    try:
        wait_for_text(log, "to train")
        deadline = time.monotonic() + 60
        while len(workers := _pool_workers(process.pid)) < 2:
            assert time.monotonic() < deadline, (workers, log.read_text()[-2000:])
            time.sleep(0.2)
        time.sleep(5)  # past their start-up (which fails by itself without a parent), mid-run
        process.kill()  # SIGKILL to kedro alone: it cannot clean up, its workers must notice
        process.wait()
        deadline = time.monotonic() + 10
        while alive := [pid for pid in workers if _alive(pid)]:
            assert time.monotonic() < deadline, f"workers {alive} outlived their parent"
            time.sleep(0.2)
    finally:
        stop_kedro(process)


def test_a_second_run_on_the_same_project_is_refused(tmp_path):
    project = make_project(tmp_path / "project")
    log = tmp_path / "run.log"
    first = start_kedro(project, *SMOKE, "--params", SLOW, log=log)
    try:
        wait_for_text(log, "to train")
        second = run_kedro(project, *SMOKE, "--pipeline", "data")
        output = _refused(second)
        assert f"another gradlab run (pid {first.pid}) is using {project}" in output, output
    finally:
        os.killpg(first.pid, signal.SIGINT)
        first.wait(timeout=60)
        stop_kedro(first)


def test_two_runs_started_together_on_a_fresh_project_do_not_crash(tmp_path):
    project = make_project(tmp_path / "project")
    logs = [tmp_path / f"run{i}.log" for i in range(2)]
    processes = [start_kedro(project, *SMOKE, "--pipeline", "data", log=log) for log in logs]
    codes = [process.wait(timeout=120) for process in processes]
    outputs = [log.read_text() for log in logs]
    assert 0 in codes, outputs
    for code, output in zip(codes, outputs, strict=True):
        assert "Traceback" not in output and "──────" not in output, output[-3000:]
        if code != 0:
            assert "another gradlab run (pid" in output, output[-3000:]
