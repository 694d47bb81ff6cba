"""A newcomer's first look at the MLflow UI, for real: `make ui` on a project after a smoke run
prints an address, and a headless Chromium that opens it sees the runs table of a model-training
experiment, not MLflow 3's GenAI workspace (traces, judges, "evaluation runs")."""

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from gradlab.mlflow_server import ui_message, ui_url
from tests.helpers.projects import REPO, wait_for_text
from tests.helpers.servers import (
    chromium,
    free_port,
    group_members,
    stop_group,
    wait_until_healthy,
)

PARENT = re.compile(r"default·smoke·\d{4}-\d\d-\d\d \d\d:\d\d")
# what only MLflow 3's GenAI workspace shows (its side bar); the model-training one lists
# Runs, Models, Traces and the model registry
GENAI_ONLY = ("Evaluation runs", "Judges", "Sessions")


def _text(dom: str) -> str:
    """The text a page shows: its DOM without scripts, styles and tags, whitespace collapsed."""
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def _make_ui(project: Path, port: int, log: Path) -> subprocess.Popen:
    """The repo's `make ui` in ``project``, in its own process group, output to ``log``."""
    command = [
        "make",
        "-s",
        "-f",
        str(REPO / "Makefile"),
        "-o",
        ".venv/.installed",  # never install from here: this environment is the one to test
        "ui",
        f"BIN={Path(sys.executable).parent}",
        f"PORT={port}",
    ]
    with log.open("w") as out:
        return subprocess.Popen(
            command,
            cwd=project,  # `make ui` serves the mlflow.db of the folder it runs in
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the server's workers go with it
        )


def test_ui_url_points_at_the_runs_in_the_model_training_view(tmp_path):
    assert ui_url(tmp_path, "127.0.0.1", 5000) is None  # no store yet
    message = ui_message(tmp_path, "127.0.0.1", 5000)
    assert "http://127.0.0.1:5000/#/?workflowType=machine_learning" in message, message
    assert "`make run` first" in message, message
    assert not (tmp_path / "mlflow.db").exists()  # looking does not create a store

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_experiment("other")
    assert ui_url(tmp_path, "127.0.0.1", 5000) is None  # a store, but no gradlab experiment
    ours = client.create_experiment("gradlab")
    assert ui_url(tmp_path, "0.0.0.0", 5001) == (
        f"http://127.0.0.1:5001/#/experiments/{ours}/runs?workflowType=machine_learning"
    )


@pytest.mark.slow
def test_make_ui_prints_where_a_newcomer_sees_the_runs_table(smoke_copy, tmp_path):
    browser = chromium()
    project = smoke_copy
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("gradlab")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    full_run = [run for run in parents if PARENT.fullmatch(run.info.run_name)]
    assert len(full_run) == 1, [run.info.run_name for run in parents]
    assert children

    port = free_port()
    log = tmp_path / "ui.log"
    server = _make_ui(project, port, log)
    try:
        expected = (
            f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}/runs"
            "?workflowType=machine_learning"
        )
        wait_for_text(log, expected, timeout=60)
        wait_until_healthy(f"http://127.0.0.1:{port}", server, log, timeout=120)
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"]
        window = ["--window-size=1400,900", "--virtual-time-budget=20000"]
        dom = subprocess.run(
            [*command, *window, expected],
            capture_output=True,
            text=True,
            timeout=180,
            check=True,
        ).stdout
    finally:
        stop_group(server)
    assert not group_members(server.pid), log.read_text()[-3000:]
    page = _text(dom)
    assert "Run Name" in page, page[:3000]  # the runs table's first column
    assert full_run[0].info.run_name in page, page[:3000]  # its parent row
    shown = re.search(r"(\d+) matching runs", page)
    assert shown and int(shown.group(1)) == len(runs), page[:3000]  # children under parents
    assert not [text for text in GENAI_ONLY if text in page], page[:3000]
