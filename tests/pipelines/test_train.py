"""The train stage for real: `kedro run --env smoke`, MLflow read back, resume, and a kill -9."""

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from gradlab.core import quantities
from tests.helpers.projects import KEDRO, make_project, run_kedro

pytestmark = pytest.mark.slow  # every test reads or makes a real kedro run

SMOKE_RUNS = 7
STORE = Path("data/smoke/06_models/runs")


@pytest.fixture
def smoke(smoke_project) -> Path:
    """A project after one smoke run, to read; a test that runs ``kedro`` in it takes
    ``smoke_copy``."""
    return smoke_project


def client(project: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def runs_table(project: Path) -> pd.DataFrame:
    return pd.read_parquet(project / "data/smoke/07_model_output/runs.parquet")


def test_smoke_runs_table_has_one_row_per_spec(smoke):
    runs = runs_table(smoke)
    assert len(runs) == SMOKE_RUNS
    assert set(runs["status"]) <= {"finished", "diverged"}
    for column in (
        "run_id",
        "label",
        "studies",
        "activation",
        "verdict",
        "final_val_metric",
        "wall_s",
        "steps_per_s",
        "mlflow_run_id",
        "theory_log_slope",
    ):
        assert column in runs.columns, column
    assert runs["mlflow_run_id"].notna().all()


def test_mlflow_has_one_parent_and_one_child_per_spec(smoke):
    mlflow = client(smoke)
    experiment = mlflow.get_experiment_by_name("gradlab")
    everything = mlflow.search_runs([experiment.experiment_id])
    parents = [r for r in everything if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in everything if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    assert len(children) == SMOKE_RUNS
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    runs = runs_table(smoke).set_index("mlflow_run_id")
    for child in children:
        row = runs.loc[child.info.run_id]
        assert child.info.run_name == row["name"]
        assert child.data.tags["gradlab.label"] == row["label"]
        assert child.info.status == "FINISHED"
        tags = child.data.tags
        assert tags["activation"] == row["activation"] and tags["depth"] == str(row["depth"])
        assert tags["status"] == row["status"] and tags["verdict"] == row["verdict"]
        assert tags["studies"] == row["studies"]
        assert child.data.params["lr"] == str(row["lr"])
        assert set(child.data.params) >= {"dataset", "init", "optimizer", "seed", "epochs"}


def test_mlflow_child_metrics_per_epoch_and_at_the_first_and_last_layer(smoke):
    mlflow = client(smoke)
    runs = runs_table(smoke)
    row = runs[runs["status"] == "finished"].iloc[0]
    run = mlflow.get_run(row["mlflow_run_id"])
    history = mlflow.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == list(range(1, int(row["epochs"]) + 1))
    assert row["metric_name"] in run.data.metrics
    # at init a profile is one value per layer: a table artifact, not one-point charts
    assert not [key for key in run.data.metrics if key.startswith(("init/", "theory/"))]
    # per layer only the first and the last (train.mlflow_layers: ends): one key at every depth
    assert not [key for key in run.data.metrics if "/layer_" in key]
    names = {key.split("/")[0] for key in run.data.metrics}
    expected = {
        "grad_preact_rms",
        "grad_weight_norm",
        "preact_std",
        "act_std",
        "update_ratio",
        "grad_global_norm",
        "step_loss",
        "grad_ratio",
    }
    assert expected <= names, sorted(names)
    # only train.mlflow_quantities go to MLflow; the parquet table keeps every quantity
    assert "grad_weight_q50" not in names
    stats = pd.read_parquet(smoke / "data/smoke/07_model_output/layer_stats.parquet")
    assert set(quantities.names("hidden")) <= set(stats["quantity"])

    # the logged points are the stored ones: ∂L/∂h of layer 1 and of layer depth, ‖∂L/∂W‖ of
    # the head, and their ratio, at every probe step (the smoke env logs every one)
    train = stats[(stats["run_id"] == row["run_id"]) & (stats["phase"] == "train")]
    depth = int(row["depth"])

    def stored(quantity: str, layer: int) -> pd.Series:
        picked = train[(train["quantity"] == quantity) & (train["layer"] == layer)]
        return picked.set_index("step")["value"]

    def logged(key: str) -> pd.Series:
        points = mlflow.get_metric_history(run.info.run_id, key)
        return pd.Series({m.step: m.value for m in points}).sort_index()

    first, last = stored("grad_preact_rms", 1), stored("grad_preact_rms", depth)
    assert len(first) > 1
    pd.testing.assert_series_equal(logged("grad_preact_rms/first"), first, check_names=False)
    pd.testing.assert_series_equal(logged("grad_preact_rms/last"), last, check_names=False)
    head = stored("grad_weight_norm", depth + 1)
    pd.testing.assert_series_equal(logged("grad_weight_norm/last"), head, check_names=False)
    pd.testing.assert_series_equal(logged("grad_ratio"), first / last, check_names=False)


def test_mlflow_reads_well_for_a_newcomer(smoke, tmp_path):
    mlflow = client(smoke)
    experiment = mlflow.get_experiment_by_name("gradlab")
    assert "How to read the runs" in experiment.tags["mlflow.note.content"]
    everything = mlflow.search_runs([experiment.experiment_id])
    (parent,) = [r for r in everything if "mlflow.parentRunId" not in r.data.tags]
    assert re.fullmatch(r"default·smoke·\d{4}-\d\d-\d\d \d\d:\d\d", parent.info.run_name)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert parent.data.tags["runner"] == "SequentialRunner"
    assert "**activation_depth** (4 runs)" in parent.data.tags["mlflow.note.content"]
    runs = runs_table(smoke)
    assert parent.data.metrics["runs/total"] == SMOKE_RUNS
    for status, count in runs["status"].value_counts().items():
        assert parent.data.metrics[f"runs/{status}"] == count
    assert parent.data.metrics["wall_s"] > 0

    children = [r for r in everything if "mlflow.parentRunId" in r.data.tags]
    names = [child.info.run_name for child in children]
    assert len(set(names)) == len(names) == SMOKE_RUNS and max(map(len, names)) <= 40, names
    stored = runs.set_index("mlflow_run_id")
    for child in children:
        row = stored.loc[child.info.run_id]
        # the child spans its training, not the moment it was logged
        span_s = (child.info.end_time - child.info.start_time) / 1000
        assert span_s >= 0.9 * row["wall_s"] - 0.002, (span_s, row["wall_s"])
        # metrics carry the time they were measured: epochs in order, inside the span
        epochs = mlflow.get_metric_history(child.info.run_id, "train_loss")
        times = [m.timestamp for m in sorted(epochs, key=lambda m: m.step)]
        assert times == sorted(times) and len(set(times)) == len(times), times
        assert child.info.start_time <= times[0] and times[-1] <= child.info.end_time
        steps = mlflow.get_metric_history(child.info.run_id, "grad_preact_rms/first")
        at = [m.timestamp for m in sorted(steps, key=lambda m: m.step)]
        assert at == sorted(at) and child.info.start_time <= at[0] <= at[-1] <= times[-1]
        (data,) = child.inputs.dataset_inputs
        assert data.dataset.name == f"{row['dataset']}/{row['input_norm']}"
        summary = json.loads((smoke / STORE / row["run_id"] / "summary.json").read_text())
        assert data.dataset.digest == summary["identity"]["data"][:36]
    row = runs[runs["status"] == "finished"].iloc[0]
    path = mlflow.download_artifacts(row["mlflow_run_id"], "layer_profile.json", str(tmp_path))
    profile = pd.DataFrame(**json.loads(Path(path).read_text()))  # {"columns": …, "data": …}
    rms = profile[profile["quantity"] == "grad_preact_rms"].set_index("layer")
    assert list(rms.index) == list(range(1, int(row["depth"]) + 1))
    assert (rms["init"] > 0).all() and (rms["theory"] > 0).all()
    for child in children:  # two figures per child, real PNGs of the size drawn
        logged = {item.path for item in mlflow.list_artifacts(child.info.run_id)}
        assert {"layer_profile.png", "layer_step_map.png", "weights.pt"} <= logged, logged
    for name, size in (("layer_profile.png", (720, 270)), ("layer_step_map.png", (560, 300))):
        png = Path(mlflow.download_artifacts(row["mlflow_run_id"], name, str(tmp_path)))
        header = png.read_bytes()[:24]
        assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[16:24] == struct.pack(">II", *size)


def test_mlflow_child_has_the_jacobian_spectrum_and_its_theory(smoke):
    mlflow = client(smoke)
    runs = runs_table(smoke)
    row = runs[(runs["status"] == "finished") & (runs["arch"] == "mlp")].iloc[0]
    spectra = pd.read_parquet(smoke / "data/smoke/07_model_output/spectrum.parquet")
    assert set(spectra["run_id"]) == set(runs["run_id"])  # every smoke run: no BatchNorm there
    mine = spectra[(spectra["run_id"] == row["run_id"]) & (spectra["statistic"] == "mean_s2")]
    stored = mine.groupby("step")["value"].mean()
    assert set(mine["phase"]) == {"init", "train"}  # the smoke env asks for checkpoints
    assert stored.index[0] == 0 and len(stored) >= 2
    logged = mlflow.get_metric_history(row["mlflow_run_id"], "jacobian/mean_s2")
    logged_values = pd.Series({m.step: m.value for m in logged}).sort_index()
    pd.testing.assert_series_equal(logged_values, stored, check_names=False, check_index_type=False)
    assert row["jacobian_mean_s2"] == pytest.approx(stored.loc[0])
    (theory,) = mlflow.get_metric_history(row["mlflow_run_id"], "jacobian/theory_mean_s2")
    assert (theory.step, theory.value) == (0, pytest.approx(row["theory_jacobian_mean_s2"]))
    assert 0 < theory.value < 10  # a 3-layer xavier tanh net: near 1


def test_a_residual_child_carries_its_arch_and_alpha_and_profiles_the_stream(smoke, tmp_path):
    mlflow = client(smoke)
    runs = runs_table(smoke)
    (row,) = runs[runs["arch"] == "resmlp"].to_dict("records")
    assert row["residual_scale"] == "1/sqrt(depth)" and row["residual_branch"] == "preact"
    child = mlflow.get_run(row["mlflow_run_id"])
    for given in (child.data.tags, child.data.params):
        assert given["arch"] == "resmlp" and given["residual_scale"] == "1/sqrt(depth)"
    # an MLP's child says it has no residual scale
    (mlp,) = (
        runs[(runs["arch"] == "mlp") & (runs["studies"] == "optimizer")].head(1).to_dict("records")
    )
    assert mlflow.get_run(mlp["mlflow_run_id"]).data.params["arch"] == "mlp"

    # layer_profile.json: the stream entering each block, measured and predicted
    path = mlflow.download_artifacts(row["mlflow_run_id"], "layer_profile.json", str(tmp_path))
    profile = pd.DataFrame(**json.loads(Path(path).read_text()))
    stream = profile[profile["quantity"] == "grad_stream_rms"].set_index("layer")
    assert list(stream.index) == list(range(1, int(row["depth"]) + 1))
    assert (stream["init"] > 0).all() and (stream["theory"] > 0).all()
    assert row["init_grad_ratio"] == pytest.approx(stream["init"].iloc[0] / stream["init"].iloc[-1])

    # grad_ratio in MLflow reads the stream, first block over last, at every probe step
    stats = pd.read_parquet(smoke / "data/smoke/07_model_output/layer_stats.parquet")
    train = stats[(stats["run_id"] == row["run_id"]) & (stats["phase"] == "train")]
    rms = train[train["quantity"] == "grad_stream_rms"].pivot(
        index="step", columns="layer", values="value"
    )
    points = mlflow.get_metric_history(row["mlflow_run_id"], "grad_ratio")
    logged = pd.Series({m.step: m.value for m in points}).sort_index()
    ratio = rms[1] / rms[int(row["depth"])]
    pd.testing.assert_series_equal(logged, ratio, check_names=False, rtol=1e-6)
    points = mlflow.get_metric_history(row["mlflow_run_id"], "grad_stream_rms/first")
    assert [m.value for m in sorted(points, key=lambda m: m.step)] == pytest.approx(list(rms[1]))


def test_mlflow_child_weights_load_with_weights_only(smoke, tmp_path):
    mlflow = client(smoke)
    run_id = runs_table(smoke)["mlflow_run_id"].iloc[0]
    path = mlflow.download_artifacts(run_id, "weights.pt", str(tmp_path))
    state = torch.load(path, weights_only=True)
    assert "head.weight" in state and "linears.0.weight" in state


def test_rerun_trains_nothing_then_exactly_the_deleted_run(smoke_copy):
    smoke = smoke_copy
    again = run_kedro(smoke, "run", "--env", "smoke", "--pipeline", "train")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{SMOKE_RUNS} runs in the grid, 0 to train" in again.stdout + again.stderr
    victim = runs_table(smoke)["run_id"].iloc[2]
    shutil.rmtree(smoke / "data/smoke/06_models/runs" / victim)
    third = run_kedro(smoke, "run", "--env", "smoke", "--pipeline", "train")
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"{SMOKE_RUNS} runs in the grid, 1 to train" in third.stdout + third.stderr
    assert len(runs_table(smoke)) == SMOKE_RUNS


def test_force_retrains_everything(smoke_copy):
    forced = run_kedro(
        smoke_copy, "run", "--env", "smoke", "--pipeline", "train", "--params", "train.force=true"
    )
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert f"{SMOKE_RUNS} runs in the grid, {SMOKE_RUNS} to train" in forced.stdout + forced.stderr


def test_killed_run_leaves_no_running_mlflow_run_after_next_start(tmp_path):
    project = make_project(tmp_path / "project")
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "COLUMNS": "200"}
    slow = ["run", "--env", "smoke", "--params", "grid.baseline.epochs=400"]
    process = subprocess.Popen(
        [str(KEDRO), *slow],
        cwd=project,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    for line in process.stdout:
        if "to train" in line or time.monotonic() > deadline:
            break
    time.sleep(1.0)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    mlflow = client(project)
    experiment = mlflow.get_experiment_by_name("gradlab")
    running = mlflow.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
    assert running, "the killed run should have left its parent RUNNING"

    nxt = run_kedro(project, "run", "--env", "smoke", "--pipeline", "data")
    assert nxt.returncode == 0, nxt.stderr[-3000:]
    still = mlflow.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
    assert not still, [(r.info.run_name, r.info.status) for r in still]
    killed = mlflow.search_runs([experiment.experiment_id], "attributes.status = 'KILLED'")
    assert {r.info.run_id for r in running} <= {r.info.run_id for r in killed}


def test_tracking_off_logs_nothing_and_turning_it_on_logs_every_stored_result(tmp_path):
    project = make_project(tmp_path / "project")
    off = run_kedro(project, "run", "--env", "smoke", "--params", "train.mlflow=false")
    assert off.returncode == 0, off.stderr[-3000:]
    assert runs_table(project)["mlflow_run_id"].isna().all()
    mlflow = client(project)
    experiment = mlflow.get_experiment_by_name("gradlab").experiment_id
    assert not mlflow.search_runs([experiment], "tags.mlflow.parentRunId != ''")

    on = run_kedro(project, "run", "--env", "smoke", "--pipeline", "train")
    assert on.returncode == 0, on.stderr[-3000:]
    assert f"logged {SMOKE_RUNS} stored result(s)" in on.stdout + on.stderr
    runs = runs_table(project)
    children = mlflow.search_runs([experiment], "tags.mlflow.parentRunId != ''")
    assert sorted(c.info.run_id for c in children) == sorted(runs["mlflow_run_id"])
