"""What a `kedro` command of the project does to its own process (gradlab.process)."""

import os
import subprocess
import sys
from importlib.metadata import entry_points

from gradlab.process import prepare_process

SGC = "MLFLOW_ENABLE_SGC_RUN_RESUMPTION_FOR_DATABRICKS_JOBS"


def test_kedro_calls_it_at_start_up():
    hooks = {entry.value for entry in entry_points(group="kedro.init")}
    assert f"{prepare_process.__module__}:{prepare_process.__name__}" in hooks


def test_exit_status_output_and_exit_handlers_are_kept():
    script = (
        "import atexit, gc, sys\n"
        "from gradlab.process import prepare_process\n"
        # registered first, so it runs after prepare_process's handler: the objects are frozen
        "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n"
        "prepare_process()\n"
        "atexit.register(print, 'handler ran')\n"
        "cycle = []; cycle.append(cycle)\n"
        f"import os; print(os.environ['{SGC}'])\n"
        "sys.stdout.write('buffered')\n"
        "sys.exit(3)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout.splitlines() == ["false", "bufferedhandler ran", "frozen True"]


def test_a_users_mlflow_setting_wins(monkeypatch):
    monkeypatch.setenv(SGC, "true")
    prepare_process()
    assert os.environ[SGC] == "true"
