"""Kedro hooks: refuse bad parameters, an unreadable MLflow store and outputs that cannot be
written before anything runs, one run per project at a time, an interrupted run ends KILLED in
MLflow, the MLflow parent run is owned by this process, a local MLflow store keeps its artifacts
in this project's ``mlruns/``.

Errors a user can fix (bad parameters, an unknown environment, a busy project, stale grid
outputs, an unreadable store, outputs outside ``data/`` or not writable) are
``click.ClickException``s: the CLI prints the message alone and exits with 1.
"""

import atexit
import contextlib
import fcntl
import logging
import os
import signal
import sqlite3
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import pandas as pd
from kedro.config import MissingConfigException
from kedro.framework.hooks import hook_impl

from gradlab import tracking
from gradlab.core.config import ConfigError, Parameters, validate_parameters
from gradlab.core.verdict import judge

log = logging.getLogger(__name__)

LOCK_DIR = ".gradlab"  # at the project root, beside mlflow.db: what concurrent runs would share
SETUP_LOCK_WAIT_S = 120  # MLflow's setup of a fresh database takes a few seconds


class UsageError(click.ClickException):
    """A problem the user can fix; shown without a traceback."""


def _empty_overrides(params: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Keys given an empty mapping with ``--params``: merged into conf/, they change nothing."""
    keys = []
    for key, value in params.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            keys += _empty_overrides(value, f"{path}.") if value else [path]
    return keys


def check_environment(context: Any) -> None:
    """An ``--env`` must name a folder of conf/ (the default ``local`` may be absent)."""
    loader = context.config_loader
    env = context.env
    conf = Path(loader.conf_source)
    if env and env != loader.default_run_env and not (conf / env).is_dir():
        known = sorted(p.name for p in conf.iterdir() if p.is_dir())
        raise UsageError(
            f"unknown environment {env!r}: {conf / env} does not exist; expected one of {known}"
        )


def _changed_keys(prefix: str, old: Any, new: Any) -> str:
    """``data.datasets.poly.n_samples: 300 → 50, …`` for every leaf that differs."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        parts = [
            _changed_keys(f"{prefix}.{key}", old.get(key), new.get(key))
            for key in sorted(set(old) | set(new))
        ]
        return ", ".join(part for part in parts if part)
    return "" if old == new else f"{prefix}: {old!r} → {new!r}"


class ValidateParametersHook:
    """Reject bad parameters (with ``--params`` overrides) before anything is loaded or trained."""

    parameters: Parameters | None = None

    @hook_impl(tryfirst=True)
    def after_context_created(self, context: Any) -> None:
        check_environment(context)
        problems: list[tuple[str, Any, str]] = [
            (
                key,
                {},
                "an empty mapping given with --params is merged into conf/ and changes "
                "nothing; edit conf/ or use train.only to choose runs",
            )
            for key in _empty_overrides(context._runtime_params or {})
        ]
        try:
            self.parameters = validate_parameters(context.params)
        except ConfigError as error:
            problems = [*problems, *error.problems]
        if problems:
            raise UsageError(str(ConfigError(problems)))


class ProjectLock:
    """An exclusive ``flock`` on a file under the project; the OS drops it when the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None

    def acquire(self, wait_s: float = 0.0) -> bool:
        """Take the lock, trying for up to ``wait_s`` seconds; True if taken."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = self.path.open("a+")
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    file.close()
                    return False
                time.sleep(0.1)
        file.seek(0)
        file.truncate()
        file.write(str(os.getpid()))
        file.flush()
        self._file = file
        return True

    def holder(self) -> str:
        """The pid written by the process that holds the lock ('?' if unreadable)."""
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class SetupLockHook:
    """Serialize MLflow's setup (kedro-mlflow creates and migrates a fresh database in
    ``after_context_created``): two starts at once on a fresh project must not race there."""

    def __init__(self) -> None:
        self.lock: ProjectLock | None = None

    @hook_impl(tryfirst=True)
    def after_context_created(self, context: Any) -> None:
        self.lock = ProjectLock(Path(context.project_path) / LOCK_DIR / "setup.lock")
        if not self.lock.acquire(wait_s=SETUP_LOCK_WAIT_S):
            raise UsageError(
                f"another gradlab process (pid {self.lock.holder()}) has been setting up "
                f"MLflow in {context.project_path} for {SETUP_LOCK_WAIT_S} s"
            )


class SetupLockReleaseHook:
    """Releases ``SetupLockHook``'s lock once every other ``after_context_created`` has run."""

    def __init__(self, setup: SetupLockHook) -> None:
        self.setup = setup

    @hook_impl(trylast=True)
    def after_context_created(self) -> None:
        if self.setup.lock is not None:
            self.setup.lock.release()


def sqlite_file(uri: str, project: Path) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (a relative path from the project), or
    None for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    # sqlite:///relative.db (from the working directory) or sqlite:////absolute.db
    path = Path(urllib.parse.unquote(uri.removeprefix("sqlite:///").split("?")[0]))
    return (project / path).resolve()


def _damaged(error: sqlite3.DatabaseError) -> bool:
    """The file is no sqlite database, or a damaged one (``sqlite_errorname`` from Python 3.11)."""
    name = getattr(error, "sqlite_errorname", "")
    return name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or (
        not name and ("not a database" in str(error) or "malformed" in str(error))
    )


class StoreCheckHook:
    """A project's MLflow database that sqlite cannot read is refused before anything runs,
    naming the file, instead of failing in MLflow's setup with a SQLAlchemy traceback."""

    @hook_impl(tryfirst=True)
    def after_context_created(self, context: Any) -> None:
        # kedro-mlflow's own pattern for mlflow.yml, which it registers in its hook, after this
        patterns = context.config_loader.config_patterns
        patterns.setdefault("mlflow", ["mlflow*", "mlflow*/**", "**/mlflow*"])
        try:
            uri = context.config_loader["mlflow"]["server"]["mlflow_tracking_uri"] or ""
        except MissingConfigException:
            return  # kedro-mlflow's defaults: a store it creates
        path = sqlite_file(uri, Path(context.project_path))
        if path is None or not path.is_file():
            return
        try:
            with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as error:
            # a hot journal left by a killed writer, or a lock, is no damage: MLflow copes
            if not _damaged(error):
                return
            raise UsageError(
                f"the MLflow store {path} cannot be read ({error}); move it aside to start a "
                "new one: the stored results are logged to the new store by the next run"
            ) from None


class ArtifactLocationHook:
    """Point the project's sqlite MLflow store at this project's ``mlruns/``, once kedro-mlflow
    has created the database and the experiment and before it starts the parent run.

    MLflow stores absolute artifact paths: without this a moved or copied project would write
    into, and read from, the folder it was first run in (and after a server, ``mlflow-artifacts:``
    locations a run without the server cannot reach). Must run while ``SetupLockHook``'s lock is
    held, so that two starts do not rewrite at once (see settings.py for the order).
    """

    @hook_impl(trylast=True)
    def after_context_created(self, context: Any) -> None:
        project = Path(context.project_path).resolve()
        db_path = sqlite_file(tracking.tracking_uri(), project)
        if db_path is None:
            return  # a server (or another store, or sqlite in memory) has its own locations
        # a database elsewhere may be shared with other projects: its locations are not ours
        if db_path.parent == project and db_path.is_file():
            tracking.relocate_artifacts(db_path, str(project / tracking.ARTIFACTS_DIR))


DATA_DIR = "data"  # every output of a run lies under the project's data folder


def _output_paths(pipeline: Any, catalog: Any, parameters: Parameters | None) -> set[Path]:
    """Where the pipeline's outputs are written (a file, or a folder of partitions) and, for
    the train stage, the result store."""
    paths = set()
    for name in pipeline.all_outputs():
        dataset = catalog.get(name)
        path = getattr(dataset, "_filepath", None) or getattr(dataset, "_path", None)
        if path is not None:
            paths.add(Path(str(path)))
    if parameters is not None and "train.train_runs_node" in {n.name for n in pipeline.nodes}:
        paths.add(Path(parameters.train.store))
    return paths


def _nearest_folder(path: Path) -> Path:
    """The folder a write to ``path`` lands in first: ``path`` or the nearest folder above it
    that exists (where the missing ones would be created)."""
    while not path.is_dir():
        path = path.parent
    return path


def _write_error(folder: Path) -> str | None:
    """Why nothing can be written in ``folder``, or None. A real write, not ``os.access``: root
    passes that check on read-only folders and file systems."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as error:
        return error.strerror or str(error)


def check_outputs(
    project: Path, pipeline: Any, catalog: Any, parameters: Parameters | None
) -> None:
    """Every output lies under the project's data folder and can be written there: a run that
    cannot store what it makes is refused before its first node, not in it."""
    data = project / DATA_DIR
    resolved = {
        path: (project / path).resolve() for path in _output_paths(pipeline, catalog, parameters)
    }
    # under data/ as written (a folder of it may link to a bigger disk) or once links are followed
    if outside := sorted(
        str(path)
        for path, full in resolved.items()
        if not Path(os.path.normpath(project / path)).is_relative_to(data)
        and not full.is_relative_to(data.resolve())
    ):
        raise UsageError(
            f"outputs outside the project's data folder {data.resolve()}: {outside}; "
            "data_root (globals.yml) and train.store must lie under it"
        )
    folders = sorted({_nearest_folder(full) for full in resolved.values()})
    if problems := [f"{folder}: {why}" for folder in folders if (why := _write_error(folder))]:
        raise UsageError(f"cannot write the outputs: {'; '.join(problems)}")


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


class RunGuardHook:
    """One ``kedro run`` per project at a time; train only a ``run_specs`` of the current grid;
    a run stopped by Ctrl-C or SIGTERM ends KILLED in MLflow, not FINISHED."""

    def __init__(self, validation: ValidateParametersHook) -> None:
        self.validation = validation
        self.lock: ProjectLock | None = None
        self.running = False
        self.previous_sigterm: Any = None
        # registered after mlflow's own (at its import), so it runs first at exit
        atexit.register(self._end_interrupted_run)

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        project = Path(run_params["project_path"])
        self.lock = ProjectLock(project / LOCK_DIR / "run.lock")
        if not self.lock.acquire():
            raise UsageError(
                f"another gradlab run (pid {self.lock.holder()}) is using {project}; "
                "wait for it to end, or stop it"
            )
        try:
            self._check_stage_inputs(pipeline, catalog)
            check_outputs(project, pipeline, catalog, self.validation.parameters)
        except BaseException:
            self.lock.release()
            raise
        if threading.current_thread() is threading.main_thread():
            # SIGTERM's default is to die without cleanup: run the Ctrl-C path instead
            self.previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
        self.running = True

    def _check_stage_inputs(self, pipeline: Any, catalog: Any) -> None:
        """Training on model inputs or a ``run_specs`` that earlier, other parameters made
        would silently train other runs than the parameters say."""
        nodes = {node.name for node in pipeline.nodes}
        params = self.validation.parameters
        if "train.train_runs_node" not in nodes or params is None:
            return
        stale = []
        if "data.normalize_datasets_node" not in nodes and catalog.exists("model_input_params"):
            made_from = catalog.load("model_input_params")
            wanted = params.data.model_dump(mode="json")
            if changed := _changed_keys("data", made_from, wanted):
                stale.append(f"the model inputs were made from other data parameters ({changed})")
        if "grid.expand_grid_node" not in nodes and catalog.exists("run_specs"):
            stored = set(catalog.load("run_specs")["run_id"])
            current = set(params.grid.expanded()["run_id"])
            if stored != current:
                stale.append(
                    f"run_specs holds {len(stored)} runs expanded from other grid parameters "
                    f"({len(current - stored)} of the current grid's {len(current)} runs are "
                    f"missing from it, {len(stored - current)} are not in the grid)"
                )
        if stale:
            raise UsageError(
                "; ".join(stale) + "; run those stages first: kedro run --pipelines "
                "data,grid,train (with the same --env and --params)"
            )

    def _done(self) -> None:
        self.running = False
        if self.lock is not None:
            self.lock.release()
        if self.previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self.previous_sigterm)
            self.previous_sigterm = None

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._done()

    @hook_impl(tryfirst=True)  # before kedro-mlflow's, which raises if the server is gone
    def on_pipeline_error(self) -> None:
        self._done()

    def _end_interrupted_run(self) -> None:
        # neither finished nor failed: a KeyboardInterrupt (Ctrl-C, or SIGTERM above) ended it;
        # a run whose tracking server stopped answering has said so already
        if not self.running or not tracking.active() or tracking.server_gone():
            return
        tracking.end_interrupted_run()
        log.warning("the interrupted run is marked KILLED in MLflow")


class ParentRunHook:
    """Make kedro-mlflow's parent run readable: its name (``<pipeline>·<env>·<time>``), a
    description of the grid, the experiment's description, a ``runner`` tag that names the
    runner instead of a Python object, and, at the end, run counts per status and verdict."""

    def __init__(self, validation: ValidateParametersHook) -> None:
        self.validation = validation
        self.started = 0.0
        self.judged: pd.DataFrame | None = None  # the runs table as this run judged it

    @hook_impl(trylast=True)  # after kedro-mlflow's, which starts the run
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        self.judged = None
        if not tracking.active():
            return
        self.started = time.time()
        params = self.validation.parameters
        description = None
        if params is not None:
            grid = params.grid.expanded()
            per_study = grid["studies"].str.split(",").explode().value_counts()
            studies = [
                (s.name, s.question, int(per_study.get(s.name, 0))) for s in params.grid.studies
            ]
            description = tracking.parent_description(len(grid), studies, list(params.grid.seeds))
        tracking.describe_parent_run(run_params, self.started, description)

    @hook_impl
    def after_node_run(self, outputs: dict[str, Any]) -> None:
        # judged: the train stage's runs table (collect), or the report's (judge_runs)
        for name in ("runs", "judged_runs"):
            if name in outputs:
                self.judged = outputs[name]
        claims = outputs.get("claims_table")
        if claims is None or claims.empty or not tracking.active():
            return
        tracking.log_claims(claims)

    @hook_impl(tryfirst=True)  # before kedro-mlflow's, which ends the run
    def after_pipeline_run(self, catalog: Any) -> None:
        if not tracking.active() or not catalog.exists("runs"):
            return
        runs = self.judged
        if runs is None:  # a runs table of an earlier run: its verdicts may be an older rule's
            runs = judge(catalog.load("runs"))
        tracking.log_grid_summary(runs, time.time() - self.started)


class MlflowOwnerHook:
    """Tag kedro-mlflow's parent run with this process, and mark runs of dead processes KILLED."""

    @hook_impl
    def before_node_run(self) -> None:
        tracking.claim_active_run()
