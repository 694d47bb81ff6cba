"""Upkeep of the MLflow store, apart from logging: runs left RUNNING by dead processes, children
whose logging was cut short, a tracking server that stopped answering, artifact locations that
must follow the project.

A run is tagged with the process that owns it (``owner_tags``): a later start marks it KILLED
when that process is gone (``reap_stale_runs``). Each child carries the id of the stored result
it logs (``TAG_RESULT_ID``): ``whole_children`` tells which stored results have a whole child in
the store in use, and deletes the partial ones. A server that does not answer is given up at its
first failure (``stop_waiting_for_server``).
"""

import contextlib
import logging
import os
import socket
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import mlflow
import requests
from mlflow.entities import Run, RunStatus
from mlflow.tracking import MlflowClient

log = logging.getLogger("gradlab.tracking")  # the package's one logger: its lines read as before

TAG_PID, TAG_HOST = "gradlab.pid", "gradlab.host"
TAG_RESULT_ID = "gradlab.result_id"  # the stored result a child run logs (see ResultStore.save)
ARTIFACTS_DIR = "mlruns"  # at the project root: the artifacts of both modes, by experiment and run
PROXIED_ARTIFACTS = "mlflow-artifacts:"  # the server's name for its --artifacts-destination


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_tags() -> dict[str, str]:
    """Tags that say which process owns a run, so a later start can tell it was killed."""
    return {TAG_PID: str(os.getpid()), TAG_HOST: socket.gethostname()}


def orphaned(run: Run) -> bool:
    """A RUNNING run whose owning process, on this host, is gone."""
    tags = run.data.tags
    return (
        run.info.status == "RUNNING"
        and tags.get(TAG_HOST) == socket.gethostname()
        and TAG_PID in tags
        and not _alive(int(tags[TAG_PID]))
    )


def reap_stale_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """Mark KILLED every RUNNING run of this host whose owning process is gone.

    A ``kill -9`` or a power cut leaves runs RUNNING forever; this is called when a run starts.

    Returns:
        The ids of the runs it marked.
    """
    reaped = []
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'"):
        if orphaned(run):
            client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
            reaped.append(run.info.run_id)
    if reaped:
        log.warning("marked %d interrupted MLflow run(s) KILLED", len(reaped))
    return reaped


def whole_children(
    client: MlflowClient, experiment_id: str, result_ids: Iterable[str]
) -> dict[str, str]:
    """The child run that logged each of the stored results ``result_ids`` to its end, in the
    store in use: one search of the experiment's children, whatever the runs table says (a
    deleted, replaced or other store has none of its ids).

    Children whose logging was cut short (KILLED, or left RUNNING by a dead process of this
    host) are deleted, so that logging the result again leaves one whole child per result.

    Returns:
        ``{result_id: child run id}`` for the results that have a whole child.
    """
    wanted = set(result_ids)
    found: dict[str, str] = {}
    partial: list[str] = []
    for run in _runs_with(client, experiment_id, TAG_RESULT_ID):
        result_id = run.data.tags[TAG_RESULT_ID]
        if result_id not in wanted:
            continue
        if run.info.status in ("FINISHED", "FAILED"):
            found.setdefault(result_id, run.info.run_id)
        elif run.info.status == "KILLED" or orphaned(run):
            partial.append(run.info.run_id)
    for run_id in partial:
        client.delete_run(run_id)
    return found


def _runs_with(
    client: MlflowClient, experiment_id: str, tag: str, page_size: int = 1000
) -> Iterator[Run]:
    """Every run of the experiment that has ``tag``, page by page."""
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], f"tags.`{tag}` LIKE '%'", max_results=page_size, page_token=token
        )
        yield from page
        if not (token := page.token):
            return


def tracking_uri() -> str:
    """The tracking URI MLflow uses in this process (kedro-mlflow sets it from mlflow.yml)."""
    return mlflow.get_tracking_uri()


# a server killed while it sends a response breaks the body's read, not the connection
_UNANSWERED = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


def server_unreachable(error: BaseException) -> BaseException | None:
    """The connection error or time-out behind ``error`` when a tracking server did not answer
    (refused, reset, timed out, or gone while it sent a response), else None. MLflow wraps it in
    an ``MlflowException``."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, _UNANSWERED):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


_server_gone = threading.Event()


def stop_waiting_for_server() -> None:
    """Make every further MLflow request of this process fail at once instead of retrying: the
    tracking server is known not to answer, and each request would wait out its retries."""
    _server_gone.set()
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "2"


def server_gone() -> bool:
    """Whether this process found its tracking server not answering."""
    return _server_gone.is_set()


def _relocated(uri: str, artifact_root: str) -> tuple[str, str]:
    """``uri`` under ``artifact_root`` if it lies in an ``mlruns/`` folder or in the server's
    proxied store, and the root it had; ``(uri, "")`` if it lies elsewhere."""
    if uri.startswith(f"{PROXIED_ARTIFACTS}/") and not uri.startswith(f"{PROXIED_ARTIFACTS}//"):
        # a netloc (mlflow-artifacts://host/...) names one server: not ours to move
        old_root, rest = PROXIED_ARTIFACTS, uri.removeprefix(f"{PROXIED_ARTIFACTS}/")
    elif uri.startswith(("/", "file:")) and f"/{ARTIFACTS_DIR}/" in uri:
        old_root, _, rest = uri.rpartition(f"/{ARTIFACTS_DIR}/")
        old_root += f"/{ARTIFACTS_DIR}"
    else:
        return uri, ""
    return (f"{artifact_root}/{rest}", old_root) if rest else (uri, "")


def relocate_artifacts(db_path: Path, artifact_root: str) -> int:
    """Point the experiments and runs of an MLflow sqlite database at ``artifact_root``.

    MLflow fixes an experiment's artifact location when it creates it, as an absolute path
    (sqlite) or ``mlflow-artifacts:/<id>`` (a server), and each run's as that plus
    ``/<run_id>/artifacts``: a moved or copied project would go on writing into the folder of its
    first run, and local and server mode could not share one store. Every location in an
    ``mlruns/`` folder or in the server's proxied store is rewritten to the same ``<rest>`` under
    ``artifact_root``; others (``s3://…``, a location chosen by hand) stay.

    Args:
        db_path: The sqlite file of the MLflow store.
        artifact_root: Where ``mlruns/`` is now: an absolute path (sqlite mode) or
            ``mlflow-artifacts:`` (the server's ``--artifacts-destination``).
    Returns:
        How many rows changed (0 when every location is already right).
    """
    artifact_root = artifact_root.rstrip("/")
    prefix = f"{artifact_root}/"
    changed, old_roots = 0, set()
    # The one write into MLflow's own tables: MLflow has no API to change an experiment's or a
    # run's artifact location (MlflowClient can only set it when it creates one), hence plain
    # SQL on two columns that its schema has kept stable across versions.
    with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as db, db:
        for table, key, column in (
            ("experiments", "experiment_id", "artifact_location"),
            ("runs", "run_uuid", "artifact_uri"),
        ):
            # locations already under the root are skipped in SQL: a cheap no-op on every start
            rows = db.execute(
                f"SELECT {key}, {column} FROM {table} WHERE substr({column}, 1, ?) != ?",
                (len(prefix), prefix),
            ).fetchall()
            updates = []
            for row_key, uri in rows:
                new_uri, old_root = _relocated(uri, artifact_root)
                if new_uri != uri:
                    updates.append((new_uri, row_key))
                    old_roots.add(old_root)
            db.executemany(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", updates)
            changed += len(updates)
    if changed:
        log.info(
            "MLflow artifact locations moved from %s to %s (%d experiments and runs)",
            ", ".join(sorted(old_roots)),
            artifact_root,
            changed,
        )
    return changed
