"""Hostile input, dead servers and lost stores, for real: each case a probe found, reproduced with
`kedro run` in a throwaway project (issue 29)."""

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from kedro.io import DataCatalog
from kedro.pipeline import Node, Pipeline
from kedro_datasets.pandas import ParquetDataset
from mlflow.tracking import MlflowClient

from gradlab.cli import yaml_problems
from gradlab.config_loader import GradlabConfigLoader
from gradlab.hooks import UsageError, _damaged, check_outputs
from tests.helpers.projects import (
    assert_each_result_logged_once,
    make_project,
    run_kedro,
    start_kedro,
    stop_kedro,
    wait_for_text,
)
from tests.helpers.servers import start_mlflow_server, stop_group

SMOKE = ("run", "--env", "smoke")
SLOW = "grid.baseline.epochs=100"  # a grid that trains long enough to be interrupted
STORE = Path("data/smoke/06_models/runs")
# Kedro's own start-up lines, which every command prints before gradlab says anything
KEDRO_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (INFO|WARNING) ")


def _output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def _refusal(result: subprocess.CompletedProcess) -> str:
    """Exit status 1, nothing run, and besides Kedro's start-up lines one ``Error: …`` line (a
    parameter's problem goes on an indented line under it): what it says."""
    output = _output(result)
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output and "Running node" not in output, output[-3000:]
    said = [line for line in output.splitlines() if line and not KEDRO_LOG_LINE.match(line)]
    assert said[0].startswith("Error: "), output[-3000:]
    assert len(said) <= 2 and all(line.startswith("  ") for line in said[1:]), output[-3000:]
    return "\n".join(said)


def _edit_yaml(path: Path, edit) -> None:
    content = yaml.safe_load(path.read_text())
    edit(content)
    path.write_text(yaml.safe_dump(content, allow_unicode=True))


def _rename_study(name: str):
    def edit(params: dict) -> None:
        studies = params["grid"]["studies"]
        studies[name] = studies.pop("optimizer")

    return edit


def _case_args(project: Path, case: str, outside: Path) -> tuple[str, ...]:
    """Set ``project`` up for a refusal case; the ``kedro`` arguments that meet it."""
    conf = project / "conf" / "smoke"
    if case == "duplicate key":
        (conf / "parameters_extra.yml").write_text(
            "report:\n  loss_curve: val_loss\n  loss_curve: train_loss\n"
        )
    elif case == "YAML syntax":
        (conf / "parameters_extra.yml").write_text("report: [val_loss\n")
    elif case == "corrupt mlflow.db":
        (project / "mlflow.db").write_bytes(b"not a database" * 100)
    elif case == "study name: absolute path":
        _edit_yaml(conf / "parameters_grid.yml", _rename_study(f"{outside}/<b>evil</b>"))
    elif case == "study name: ../":
        _edit_yaml(conf / "parameters_grid.yml", _rename_study("../../../evil"))
    extra = {
        "unknown pipeline": ("--pipelines", "nosuch"),
        "unknown node": ("--nodes", "nosuch"),
        "epochs": ("--params", "grid.baseline.epochs=100000000"),
        "batch_size": ("--params", "grid.baseline.batch_size=5000"),
        "store outside data/": ("--params", f"train.store={outside}/store"),
    }
    return (*SMOKE, *extra.get(case, ()))


REFUSALS = {
    "unknown pipeline": "unknown pipeline ['nosuch']; expected one of ['__default__', 'data'",
    "unknown node": "--nodes ['nosuch']: not a node of __default__; expected some of",
    "duplicate key": "parameters_extra.yml, line 3: found duplicate key loss_curve",
    "YAML syntax": "parameters_extra.yml, line 2: did not find expected ',' or ']'",
    "corrupt mlflow.db": "mlflow.db cannot be read (file is not a database); move it aside",
    "study name: absolute path": "not a usable name: expected 1–64 letters, digits",
    "study name: ../": "grid.studies.../../../evil = '../../../evil': not a usable name",
    "epochs": "more than train.max_steps = 5,000,000",
    "batch_size": "larger than the 180 train rows of poly",
    "store outside data/": "outputs outside the project's data folder",
}


@pytest.mark.slow
def test_each_refusal_is_one_readable_line_and_writes_nothing(tmp_path):
    """Every case runs in its own project, all at once (each is a Kedro start-up, mostly)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    projects = {case: make_project(tmp_path / f"p{i}") for i, case in enumerate(REFUSALS)}
    calls = {case: _case_args(project, case, outside) for case, project in projects.items()}
    with ThreadPoolExecutor(4) as pool:
        results = dict(
            zip(calls, pool.map(lambda c: run_kedro(projects[c], *calls[c]), calls), strict=True)
        )
    for case, expected in REFUSALS.items():
        said = _refusal(results[case])
        assert expected in said, (case, said)
        assert not (projects[case] / "data" / "smoke" / "01_raw").exists(), case
    assert not any(outside.rglob("*")), list(outside.rglob("*"))


@pytest.mark.slow
def test_a_read_only_data_folder_is_refused_before_the_first_node(project):
    data = project / "data"
    data.mkdir()
    # root writes into a chmod -w folder: an immutable folder is read-only even for root
    immutable = subprocess.run(["chattr", "+i", str(data)], check=False, capture_output=True)
    if immutable.returncode != 0:
        pytest.skip("chattr +i is not supported here")
    try:
        said = _refusal(run_kedro(project, *SMOKE))
    finally:
        subprocess.run(["chattr", "-i", str(data)], check=True)
    assert said == f"Error: cannot write the outputs: {data.resolve()}: Operation not permitted"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:register_new_resolver")  # Kedro's, as settings.py drops it
def test_a_partial_train_block_in_conf_local_merges_into_base(tmp_path):
    project = make_project(tmp_path / "project")
    (project / "conf/local/parameters.yml").write_text("train:\n  workers: 1\n  mlflow: false\n")
    local = GradlabConfigLoader(str(project / "conf"), base_env="base", default_run_env="local")
    train = local["parameters"]["train"]
    assert (train["workers"], train["mlflow"], train["max_runs"]) == (1, False, 2000)
    assert train["store"] == "data/06_models/runs"
    # an environment's grid and data replace the base's whole; its train options merge
    smoke = GradlabConfigLoader(str(project / "conf"), base_env="base", env="smoke")["parameters"]
    smoke_grid = yaml.safe_load((project / "conf/smoke/parameters_grid.yml").read_text())["grid"]
    assert smoke["grid"] == smoke_grid
    assert smoke["train"]["store"] == "data/smoke/06_models/runs"
    assert (smoke["train"]["workers"], smoke["train"]["max_replicas"]) == (1, 32)
    result = run_kedro(project, "run", "--pipelines", "data,grid")
    assert result.returncode == 0, _output(result)[-3000:]


def _children(client: MlflowClient, parent_id: str) -> list:
    experiment = client.get_experiment_by_name("gradlab").experiment_id
    return client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_id}'")


def _last_parent(client: MlflowClient):
    experiment = client.get_experiment_by_name("gradlab").experiment_id
    runs = client.search_runs([experiment], order_by=["attributes.start_time DESC"])
    return next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)


@pytest.mark.slow
def test_a_deleted_or_other_store_gets_every_stored_result_again(smoke_copy, tmp_path):
    project = smoke_copy  # after a smoke run
    (project / "mlflow.db").unlink()
    shutil.rmtree(project / "mlruns")
    again = run_kedro(project, *SMOKE, "--pipelines", "train")
    assert again.returncode == 0, _output(again)[-3000:]
    assert "0 to train, 7 reused" in _output(again)
    assert "logged 7 stored result(s) that had no MLflow child run" in _output(again)
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    assert len(_children(client, _last_parent(client).info.run_id)) == 7
    assert_each_result_logged_once(project, client)
    # a fresh server with a store of its own: the same results, logged there once
    elsewhere = tmp_path / "server"
    elsewhere.mkdir()
    server, url = start_mlflow_server(elsewhere, tmp_path / "server.log")
    try:
        served = run_kedro(
            project, *SMOKE, "--pipelines", "train", env={"MLFLOW_TRACKING_URI": url}
        )
        assert served.returncode == 0, _output(served)[-3000:]
        client = MlflowClient(url)
        assert len(_children(client, _last_parent(client).info.run_id)) == 7
        assert_each_result_logged_once(project, client)
    finally:
        stop_group(server)


@pytest.mark.slow
def test_a_dead_server_ends_the_run_at_once_and_the_next_start_logs_the_rest(tmp_path):
    project = make_project(tmp_path / "project")
    server_log, log = tmp_path / "server.log", tmp_path / "run.log"
    server, url = start_mlflow_server(project, server_log)
    try:
        process = start_kedro(
            project, *SMOKE, "--params", SLOW, log=log, env={"MLFLOW_TRACKING_URI": url}
        )
        try:
            wait_for_text(log, "[1/7]")
            os.killpg(server.pid, signal.SIGKILL)  # the server dies while the grid trains
            server.wait()
            wait_for_text(log, "trained 7 runs in")
            trained = time.monotonic()
            returncode = process.wait(timeout=60)
            exited = time.monotonic() - trained
        finally:
            stop_kedro(process)
        output = log.read_text()
        assert exited < 30, output[-3000:]
        assert returncode == 1 and "Traceback" not in output, output[-3000:]
        assert f"Error: the MLflow tracking server at {url} does not answer" in output
        server, url = start_mlflow_server(project, server_log)  # the same store, a new port
        again = run_kedro(
            project,
            *SMOKE,
            "--pipelines",
            "train",
            "--params",
            SLOW,
            env={"MLFLOW_TRACKING_URI": url},
        )
        assert again.returncode == 0, _output(again)[-3000:]
        assert "0 to train, 7 reused" in _output(again)
        assert_each_result_logged_once(project, MlflowClient(url))
    finally:
        if server.poll() is None:
            stop_group(server)


@pytest.mark.slow
def test_ctrl_c_while_workers_start_prints_no_traceback(tmp_path):
    project = make_project(tmp_path / "project")
    log = tmp_path / "run.log"
    process = start_kedro(project, *SMOKE, "--params", f"{SLOW},train.workers=2", log=log)
    try:
        wait_for_text(log, "stacked groups")
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=60) != 0
    finally:
        stop_kedro(process)
    output = log.read_text()
    assert "Traceback" not in output, output[-3000:]
    assert "the interrupted run is marked KILLED in MLflow" in output


@pytest.mark.filterwarnings("ignore:register_new_resolver")
def test_params_on_a_replaced_section_keep_the_rest_of_it(tmp_path):
    """Kedro merges --params into the base and the environment alike: a section only --params
    put in the environment must not replace the base's whole."""
    project = make_project(tmp_path / "project")
    (project / "conf/local/parameters.yml").write_text("train:\n  workers: 1\n")
    runtime = {"grid": {"seeds": [0, 1]}, "data": {"seed": 3}}
    local = GradlabConfigLoader(
        str(project / "conf"), base_env="base", default_run_env="local", runtime_params=runtime
    )["parameters"]
    base_grid = yaml.safe_load((project / "conf/base/parameters_grid.yml").read_text())["grid"]
    assert local["grid"] == {**base_grid, "seeds": [0, 1]}
    assert local["data"]["seed"] == 3 and "datasets" in local["data"]
    smoke = GradlabConfigLoader(
        str(project / "conf"), base_env="base", env="smoke", runtime_params=runtime
    )["parameters"]
    smoke_grid = yaml.safe_load((project / "conf/smoke/parameters_grid.yml").read_text())["grid"]
    assert smoke["grid"] == {**smoke_grid, "seeds": [0, 1]}


def test_the_yaml_check_reads_what_kedro_reads(tmp_path):
    conf = tmp_path / "local"
    (conf / ".ipynb_checkpoints").mkdir(parents=True)
    (conf / ".ipynb_checkpoints/parameters-checkpoint.yml").write_text("a: [1\n")
    (conf / ".#parameters.yml").symlink_to(tmp_path / "an editor's lock, not a file")
    (conf / "notes.yml").write_text("a: [1\n")  # no Kedro pattern reads it
    (conf / "parameters_train.yml").write_text("train:\n  workers: 1\n")
    assert yaml_problems([conf]) == []
    (conf / "parameters_bad.yml").write_text("train:\n  workers: 1\n  workers: 2\n")
    assert yaml_problems([conf]) == [
        f"{conf / 'parameters_bad.yml'}, line 3: found duplicate key workers"
    ]


def test_a_data_folder_linked_to_another_disk_is_under_data(tmp_path):
    project, disk = tmp_path / "project", tmp_path / "disk"
    (project / "data").mkdir(parents=True)
    disk.mkdir()
    (project / "data" / "big").symlink_to(disk)
    pipeline = Pipeline([Node(lambda: None, None, "table", name="make_table")])
    catalog = DataCatalog(
        {"table": ParquetDataset(filepath=str(project / "data/big/table.parquet"))}
    )
    check_outputs(project, pipeline, catalog, None)
    catalog = DataCatalog({"table": ParquetDataset(filepath=str(disk / "table.parquet"))})
    with pytest.raises(UsageError, match="outputs outside the project's data folder"):
        check_outputs(project, pipeline, catalog, None)


def test_only_a_file_that_is_no_database_counts_as_damaged(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    with pytest.raises(sqlite3.DatabaseError) as caught:
        sqlite3.connect(garbage).execute("SELECT count(*) FROM sqlite_master")
    assert _damaged(caught.value)
    store = tmp_path / "mlflow.db"
    writer = sqlite3.connect(store, isolation_level=None)
    writer.execute("CREATE TABLE t (x)")
    writer.execute("BEGIN EXCLUSIVE")  # another process in the middle of a write
    try:
        with pytest.raises(sqlite3.OperationalError) as caught:
            sqlite3.connect(store, timeout=0).execute("SELECT count(*) FROM sqlite_master")
    finally:
        writer.execute("ROLLBACK")
    assert not _damaged(caught.value)
