"""Throwaway copies of the Kedro project, and ``kedro`` run in them."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
KEDRO = Path(sys.executable).with_name("kedro")
SMOKE = ("run", "--env", "smoke")


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


def output(result: subprocess.CompletedProcess) -> str:
    """What a finished ``run_kedro`` printed: its output, then its errors."""
    return result.stdout + result.stderr


def copy_project(source: Path, root: Path) -> Path:
    """A copy of the project ``source`` (after runs) at ``root``, its MLflow store pointed at its
    own ``mlruns/`` as gradlab points a moved project's at its next start: without that a copy
    that is only read (``make ui``, a notebook) would read, and a run would write, ``source``'s
    artifacts."""
    from gradlab.tracking import ARTIFACTS_DIR, relocate_artifacts

    shutil.copytree(source, root, symlinks=True)
    if (root / "mlflow.db").exists():
        relocate_artifacts(root / "mlflow.db", str(root / ARTIFACTS_DIR))
    return root
