"""Shared fixtures: a throwaway copy of the Kedro project, and a way to run ``kedro`` in it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

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


def run_kedro(project: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``kedro <args>`` in ``project`` and return the finished process (output captured)."""
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "COLUMNS": "200"}
    return subprocess.run(
        [str(KEDRO), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh copy of the project to run ``kedro`` in."""
    return make_project(tmp_path / "project")


def train_in_process(specs, store, data, options=None, tracker=None, **kwargs):
    """``train_missing`` in this process on ``data`` as (poly, zscore); the trained-runs table."""
    from gradlab.core.execute import SequentialExecutor
    from gradlab.core.train import RunOptions
    from gradlab.grid_runner import train_missing
    from gradlab.tracking import Tracker

    return train_missing(
        specs,
        {s.run_id: "s" for s in specs},
        {("poly", "zscore"): data},
        store,
        SequentialExecutor(),
        tracker or Tracker(),  # no active MLflow run: tracks nothing
        options or RunOptions(),
        **kwargs,
    )


def broken(data):
    """The same data with validation inputs of the wrong width: every run on it raises."""
    from gradlab.core.train import TaskData

    return TaskData(
        data.task, data.n_outputs, data.x_train, data.y_train, data.x_val[:, :1], data.y_val
    )
