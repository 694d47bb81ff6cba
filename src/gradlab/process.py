"""What a ``kedro`` command of this project does to its own process, before any command runs.

``prepare_process`` is a ``kedro.init`` plugin hook (pyproject.toml), like
``gradlab.console.configure_console``. The savings below were measured on ``kedro run
--pipeline report``, where start-up and exit are a third of the wall time.
"""

import atexit
import gc
import os

# MLflow's own HTTP defaults (7 retries, backoff factor 2, 120 s time-out) make each request to a
# tracking server that died wait minutes before it fails, one request after another. A request
# that fails here costs nothing: a result not logged is logged by the next start.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # retries after 0 s, then 2 s
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def prepare_process() -> None:
    """Skip two costs a gradlab command pays for nothing, and bound the third.

    - At exit, the objects of torch, MLflow, matplotlib and pandas are frozen out of the garbage
      collector: its last passes over them took 0.7 s of a 0.85 s interpreter teardown. They are
      freed with the process; every exit handler still runs.
    - MLflow looks for a Databricks serverless-GPU job to resume at the first ``start_run``,
      importing IPython to ask (0.2 s). A gradlab run is never one.
    - A tracking server that stops answering fails a request within seconds, not minutes
      (``HTTP_DEFAULTS``; a variable set in the environment wins).
    """
    atexit.register(gc.freeze)
    os.environ.setdefault("MLFLOW_ENABLE_SGC_RUN_RESUMPTION_FOR_DATABRICKS_JOBS", "false")
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
