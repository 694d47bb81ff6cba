"""The project's MLflow server: ``python -m gradlab.mlflow_server [--port N] [--host H]``.

Run from the project root (``make mlflow-server``), then ``MLFLOW_TRACKING_URI=http://H:N kedro
run`` logs through it. It serves the same ``mlflow.db`` and ``mlruns/`` as a run without it: with
``--artifacts-destination <project>/mlruns`` the server names an artifact location
``mlflow-artifacts:/<experiment>/<run>/artifacts`` and keeps its files in
``mlruns/<experiment>/<run>/artifacts``, where a run without the server writes them itself. Clients
upload and download through the server, so they need no access to the folder. Other options
(``--workers``, ``--allowed-hosts`` …) are passed on to ``mlflow server``.

``python -m gradlab.mlflow_server --print-url [--port N]`` (what ``make ui`` runs first) prints
the address of the project's runs in the UI, and nothing else: it imports no MLflow and opens
``mlflow.db`` read-only.
"""

import argparse
import contextlib
import logging
import os
import sqlite3
import sys
from pathlib import Path

DB_FILE = "mlflow.db"
EXPERIMENT = "gradlab"  # conf/base/mlflow.yml: tracking.experiment.name
# MLflow 3's UI opens an experiment as a GenAI app (traces, sessions, judges, evaluation runs)
# unless its address asks for the model-training view; the UI of 3.17 reads this from the URL
# (or from a choice stored in the browser), not from the experiment's `mlflow.experimentKind` tag
MODEL_TRAINING_VIEW = "workflowType=machine_learning"

log = logging.getLogger(__name__)


def server_command(host: str, port: int, project: Path, extra: list[str]) -> list[str]:
    """The ``mlflow server`` command line that serves ``project``'s store and artifacts.

    Args:
        host: The interface to listen on.
        port: The port to listen on.
        project: The project root (absolute): ``mlflow.db`` and ``mlruns/`` are there.
        extra: More options for ``mlflow server``.
    Returns:
        The argument list, the ``mlflow`` executable of this environment first.
    """
    from gradlab.tracking import ARTIFACTS_DIR

    mlflow = str(Path(sys.executable).with_name("mlflow"))
    return [
        mlflow,
        "server",
        "--backend-store-uri",
        f"sqlite:///{project / DB_FILE}",
        "--artifacts-destination",
        str(project / ARTIFACTS_DIR),
        "--serve-artifacts",
        "--host",
        host,
        "--port",
        str(port),
        *extra,
    ]


def prepare_store(project: Path) -> None:
    """Point ``mlflow.db`` at the server's proxied artifacts, or create it so, under the setup
    lock that ``kedro run`` takes (``gradlab.hooks.SetupLockHook``): a run starting at the same
    moment neither rewrites the locations back halfway nor creates the database alongside."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from gradlab.hooks import LOCK_DIR, SETUP_LOCK_WAIT_S, ProjectLock
    from gradlab.tracking import PROXIED_ARTIFACTS, relocate_artifacts

    lock = ProjectLock(project / LOCK_DIR / "setup.lock")
    if not lock.acquire(wait_s=SETUP_LOCK_WAIT_S):
        raise SystemExit(f"another gradlab process (pid {lock.holder()}) is setting up MLflow")
    try:
        db_path = project / DB_FILE
        if db_path.is_file():
            relocate_artifacts(db_path, PROXIED_ARTIFACTS)
        else:  # as the server would create it, but not racing a starting run
            SqlAlchemyStore(f"sqlite:///{db_path}", f"{PROXIED_ARTIFACTS}/").engine.dispose()
    finally:
        lock.release()


def experiment_id(project: Path, name: str = EXPERIMENT) -> str | None:
    """The id of the experiment ``name`` in ``project``'s ``mlflow.db``.

    Reads the file only: a missing store stays missing, and nothing is migrated.

    Returns:
        The id, or None when there is no store, no such experiment, or it was deleted.
    """
    db = project / DB_FILE
    if not db.is_file():
        return None
    query = "SELECT experiment_id FROM experiments WHERE name = ? AND lifecycle_stage = 'active'"
    try:
        uri = f"{db.resolve().as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as connection:
            row = connection.execute(query, (name,)).fetchone()
    except sqlite3.Error:  # not (yet) an MLflow store
        return None
    return None if row is None else str(row[0])


def ui_url(project: Path, host: str, port: int) -> str | None:
    """The UI's page of the project's runs in the model-training view,
    ``http://H:N/#/experiments/<id>/runs?workflowType=machine_learning``; None while the store
    has no such experiment (before the first ``kedro run``)."""
    experiment = experiment_id(project)
    if experiment is None:
        return None
    return f"{_root(host, port)}/#/experiments/{experiment}/runs?{MODEL_TRAINING_VIEW}"


def ui_message(project: Path, host: str, port: int) -> str:
    """What ``make ui`` prints before the server starts: where to point a browser."""
    url = ui_url(project, host, port)
    if url is not None:
        return f"gradlab's runs in the MLflow UI: {url}"
    return (
        f"MLflow UI: {_root(host, port)}/#/?{MODEL_TRAINING_VIEW}\n"
        f"(no experiment {EXPERIMENT!r} in {project / DB_FILE} yet: `make run` first, then "
        "`make ui` prints the address of its runs)"
    )


def _root(host: str, port: int) -> str:
    """``http://host:port`` as a browser on this machine reaches it."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gradlab.mlflow_server", description=__doc__)
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--print-url",
        action="store_true",
        help="print where the UI shows the project's runs, and exit (no server)",
    )
    args, extra = parser.parse_known_args(argv)
    project = Path.cwd().resolve()
    if args.print_url:
        sys.stdout.write(ui_message(project, args.host, args.port) + "\n")
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    prepare_store(project)
    log.info("%s", ui_message(project, args.host, args.port))
    command = server_command(args.host, args.port, project, extra)
    log.info("%s", " ".join(command))
    os.execv(command[0], command)  # the server takes this process: Ctrl-C and signals reach it


if __name__ == "__main__":
    main()
