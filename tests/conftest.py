"""Shared fixtures: a throwaway copy of the Kedro project, and a way to run ``kedro`` in it."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
KEDRO = Path(sys.executable).with_name("kedro")


def make_project(root: Path) -> Path:
    """Copy what a Kedro run reads (conf/, pyproject.toml) into ``root``; outputs land there."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(REPO / name, root / name)
    (root / "notebooks").mkdir()
    (root / "src").mkdir()  # Kedro wants a source dir; gradlab itself is installed in .venv
    return root


def kedro_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment for a ``kedro`` child: no telemetry, wide logs, the project's own
    sqlite store (a developer's exported ``MLFLOW_TRACKING_URI`` is dropped), then ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {
        **env,
        "KEDRO_DISABLE_TELEMETRY": "1",
        "DO_NOT_TRACK": "1",
        "COLUMNS": "200",
        **(extra or {}),
    }


def run_kedro(
    project: Path, *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``kedro <args>`` in ``project`` and return the finished process (output captured);
    ``env`` is added to the environment."""
    return subprocess.run(
        [str(KEDRO), *args],
        cwd=project,
        env=kedro_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_kedro(
    project: Path, *args: str, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """Start ``kedro <args>`` in ``project`` in its own process group, output to ``log``;
    ``env`` is added to the environment."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        # a shell starts a background job (`make test &`) with SIGINT ignored, which exec keeps:
        # kedro would ignore Ctrl-C; a handler set here is reset to the default in the child
        signal.signal(signal.SIGINT, signal.default_int_handler)
    with log.open("w") as out:
        return subprocess.Popen(
            [str(KEDRO), *args],
            cwd=project,
            env=kedro_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal would make it
        )


def wait_for_text(log: Path, text: str, timeout: float = 120) -> None:
    """Wait until ``text`` appears in ``log``."""
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


def stop_kedro(process: subprocess.Popen) -> None:
    """Kill what is left of a ``start_kedro`` process group, and reap it."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_mlflow_server(project: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """``python -m gradlab.mlflow_server`` serving ``project``'s store on a free port, in its own
    process group (its workers go with it), once it answers; the process and its URL."""
    url = f"http://127.0.0.1:{free_port()}"
    # one worker (passed on to `mlflow server`) starts in half the time of the default four
    command = [sys.executable, "-m", "gradlab.mlflow_server", "--port", url.rpartition(":")[2]]
    with log.open("w") as out:
        server = subprocess.Popen(
            [*command, "--workers", "1"],
            cwd=project,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_until_healthy(url, server, log)
    return server, url


def wait_until_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """Wait until an MLflow server answers at ``url``; fail with its log if it died or took
    longer than ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert server.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)


def group_members(pgid: int) -> list[int]:
    """Live processes (not zombies) of process group ``pgid``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to a process group, SIGKILL to what is left after 30 s."""
    os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while group_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if group_members(process.pid):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def assert_each_result_logged_once(project: Path, client: Any, env: str = "smoke") -> None:
    """Every result stored by a run of ``env`` has exactly one child run in ``client``'s store,
    and its summary and the runs table name that child."""
    import pandas as pd

    data = project / "data" / env
    runs = pd.read_parquet(data / "07_model_output/runs.parquet").set_index("run_id")
    experiment = client.get_experiment_by_name("gradlab").experiment_id
    for stored in (data / "06_models/runs").iterdir():
        summary = pd.read_json(stored / "summary.json", typ="series")
        children = client.search_runs(
            [experiment], f"tags.`gradlab.result_id` = '{summary['result_id']}'"
        )
        assert [c.info.run_id for c in children] == [summary["mlflow_run_id"]], stored.name
        assert runs.loc[stored.name, "mlflow_run_id"] == summary["mlflow_run_id"], stored.name


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh copy of the project to run ``kedro`` in."""
    return make_project(tmp_path / "project")


def train_in_process(specs, store, data, options=None, tracker=None, **kwargs):
    """``train_missing`` in this process on ``data`` as (poly, zscore); the trained-runs table."""
    from gradlab.core.execute import SequentialExecutor
    from gradlab.core.train import RunOptions
    from gradlab.grid_runner import GridRuns, TrainOptions, train_missing
    from gradlab.tracking import Tracker

    return train_missing(
        GridRuns(specs, {s.run_id: "s" for s in specs}),
        {("poly", "zscore"): data},
        store,
        SequentialExecutor(),
        tracker or Tracker(),  # no active MLflow run: tracks nothing
        TrainOptions(options or RunOptions(), **kwargs),
    )


def broken(data):
    """The same data with validation inputs of the wrong width: every run on it raises."""
    from gradlab.core.train import TaskData

    return TaskData(
        data.task, data.n_outputs, data.x_train, data.y_train, data.x_val[:, :1], data.y_val
    )
