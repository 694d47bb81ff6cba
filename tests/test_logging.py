"""Logs that fit where they go: one plain, unwrapped line per record outside a terminal (CI, a
file, a pipe), Rich on a terminal, and nothing a user cannot act on."""

import io
import logging
import os
import pty
import re
import select
import sys
import warnings
from importlib.metadata import entry_points

import pytest
import yaml
from kedro.logging import RichHandler

from gradlab.console import UNACTIONABLE, configure_console, use_rich
from tests.helpers.projects import REPO, make_project, run_kedro

LOG_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) +[\w.]+: "
)
RICH_BOX = re.compile("[─│╭╮╰╯]")
# Lines of a `kedro run` that conf/logging.yml and gradlab.console leave out
UNACTIONABLE_LINES = (
    "Add type hints to the `predict` method",  # MLflow, on importing kedro-mlflow
    "Registering new custom resolver",  # kedro-mlflow
    "No typed parameter requirements found",  # kedro.validation
    "Creating initial MLflow database tables",  # mlflow.store.db.utils
    "Updating database tables",
)


@pytest.fixture(scope="module")
def data_run(tmp_path_factory) -> str:
    """What a data-stage smoke run writes when its output is captured, on an 80-column console."""
    project = make_project(tmp_path_factory.mktemp("logging") / "project")
    result = run_kedro(
        project, "run", "--env", "smoke", "--pipelines", "data", env={"COLUMNS": "80"}
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


@pytest.fixture
def isolated_logger(monkeypatch) -> logging.Logger:
    """A logger outside the logging tree, so no other handler sees its records; the process-wide
    hooks a RichHandler installs are put back afterwards."""
    for hook in ("excepthook", "displayhook"):
        monkeypatch.setattr(sys, hook, getattr(sys, hook))
    logger = logging.Logger("gradlab.grid_runner")
    yield logger
    logging.captureWarnings(False)
    for handler in logger.handlers:
        handler.close()


def _plain_handler(stream) -> logging.StreamHandler:
    """The console handler of conf/logging.yml, writing to ``stream``."""
    formatter = yaml.safe_load((REPO / "conf/logging.yml").read_text())["formatters"]["plain"]
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(formatter["format"], formatter["datefmt"]))
    return handler


def _log_a_failure(logger: logging.Logger) -> None:
    try:
        1 / 0
    except ZeroDivisionError:
        logger.exception("the grid failed: " + "x" * 100)


def _read_all(fd: int) -> str:
    """What is waiting to be read from ``fd``."""
    chunks = []
    while select.select([fd], [], [], 0.5)[0]:
        chunks.append(os.read(fd, 65536))
    return b"".join(chunks).decode()


def test_kedro_calls_configure_console_at_start_up():
    init_hooks = [hook.value for hook in entry_points(group="kedro.init")]
    assert "gradlab.console:configure_console" in init_hooks, (
        "pyproject.toml: [project.entry-points.'kedro.init'] gradlab = "
        "'gradlab.console:configure_console', then make install"
    )


@pytest.mark.slow
def test_kedro_run_logs_one_plain_unwrapped_line_per_record(data_run):
    lines = data_run.splitlines()
    assert all(LOG_LINE.match(line) for line in lines), [
        line for line in lines if not LOG_LINE.match(line)
    ]
    assert any(len(line) > 80 for line in lines), "lines are wrapped at 80 columns"
    assert not RICH_BOX.search(data_run)
    assert "INFO     kedro.pipeline.node: Running node: generate_datasets_node" in data_run
    assert "Completed 3 out of 3 tasks" in data_run


@pytest.mark.slow
def test_kedro_run_leaves_out_what_a_user_cannot_act_on(data_run):
    assert not [text for text in UNACTIONABLE_LINES if text in data_run], data_run[-3000:]
    assert "Mlflow run 'data' -" in data_run  # kedro-mlflow's other INFO line: its run id


def test_plain_handler_writes_each_record_and_its_traceback_as_is(isolated_logger):
    written = io.StringIO()
    isolated_logger.addHandler(_plain_handler(written))
    use_rich(isolated_logger)  # not a terminal: nothing changes

    _log_a_failure(isolated_logger)

    first, *traceback = written.getvalue().splitlines()
    assert LOG_LINE.match(first), first
    assert first.endswith("gradlab.grid_runner: the grid failed: " + "x" * 100), first
    assert traceback[0] == "Traceback (most recent call last):"
    assert traceback[-1] == "ZeroDivisionError: division by zero"


def test_rich_handler_on_a_terminal(isolated_logger):
    terminal, console = pty.openpty()
    with os.fdopen(console, "w") as console_file:
        isolated_logger.addHandler(_plain_handler(console_file))
        use_rich(isolated_logger)
        [handler] = isolated_logger.handlers
        assert isinstance(handler, RichHandler)

        _log_a_failure(isolated_logger)
        written = _read_all(terminal)
    os.close(terminal)
    assert "\x1b[" in written  # colours
    assert "Traceback" in written and "ZeroDivisionError" in written
    assert RICH_BOX.search(written), written  # Rich's traceback panel


def test_configure_console_drops_only_unactionable_records(caplog, monkeypatch):
    from mlflow.utils.warnings_utils import color_warning

    for name in UNACTIONABLE:  # the filters configure_console adds go with this test
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "filters", list(logger.filters))
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        configure_console()
        try:
            # as MLflow warns on a PythonModel subclass without type hints: in colour
            color_warning(
                "Add type hints to the `predict` method ...", stacklevel=1, color="yellow"
            )
            warnings.warn("a warning worth reading", UserWarning, stacklevel=1)
        finally:
            logging.captureWarnings(False)
    kedro_mlflow = logging.getLogger("kedro_mlflow.framework.hooks.mlflow_hook")
    kedro_mlflow.info("Registering new custom resolver: 'km.random_name'")
    kedro_mlflow.info("Mlflow run 'data' - '0123' has started")

    logged = [record.getMessage() for record in caplog.records if record.name in UNACTIONABLE]
    assert len(logged) == 2, logged
    assert "a warning worth reading" in logged[0]
    assert logged[1] == "Mlflow run 'data' - '0123' has started"
