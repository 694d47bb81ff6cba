"""The project's MLflow server: ``python -m gradlab.mlflow_server [--port N] [--host H]``.

Run from the project root (``make mlflow-server``), then ``MLFLOW_TRACKING_URI=http://H:N kedro
run`` logs through it. It serves the same ``mlflow.db`` and ``mlruns/`` as a run without it: with
``--artifacts-destination <project>/mlruns`` the server names an artifact location
``mlflow-artifacts:/<experiment>/<run>/artifacts`` and keeps its files in
``mlruns/<experiment>/<run>/artifacts``, where a run without the server writes them itself. Clients
upload and download through the server, so they need no access to the folder. Other options
(``--workers``, ``--allowed-hosts`` …) are passed on to ``mlflow server``.
"""

import argparse
import logging
import os
import sys
from pathlib import Path

from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from gradlab.hooks import LOCK_DIR, SETUP_LOCK_WAIT_S, ProjectLock
from gradlab.tracking import ARTIFACTS_DIR, PROXIED_ARTIFACTS, relocate_artifacts

DB_FILE = "mlflow.db"

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gradlab.mlflow_server", description=__doc__)
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--host", default="127.0.0.1")
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    project = Path.cwd().resolve()
    prepare_store(project)
    command = server_command(args.host, args.port, project, extra)
    log.info("%s", " ".join(command))
    os.execv(command[0], command)  # the server takes this process: Ctrl-C and signals reach it


if __name__ == "__main__":
    main()
