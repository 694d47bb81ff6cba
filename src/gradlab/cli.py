"""``kedro run`` for gradlab: Kedro's own command, with the refusals Kedro would bury in a
traceback said in one line first.

Kedro finds this module's ``cli`` group and uses its ``run`` instead of the built-in one (same
options, same behaviour). Before the session starts it checks what Kedro only finds out deep in a
run: that every YAML file the environment reads parses (naming the file and the line, which
Kedro's duplicate-key error does not), and that ``--pipelines`` and ``--nodes`` name pipelines and
nodes that exist. Each refusal is a ``click.ClickException``: one ``Error: …`` line, exit status 1.
"""

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
import yaml
from kedro.framework.cli.project import run as kedro_run
from kedro.framework.project import pipelines, settings
from kedro.pipeline import pipeline
from omegaconf import OmegaConf

PACKAGE = __name__.rpartition(".")[0]
# the files Kedro's config patterns (and kedro-mlflow's) read, by the start of their names
CONFIG_FILES = ("catalog", "parameters", "credentials", "globals", "mlflow")


@click.group(name=PACKAGE)
def cli() -> None:
    """gradlab's project commands."""


def yaml_problems(folders: Iterable[Path]) -> list[str]:
    """One line per configuration file that does not parse: its path, the line, the problem
    (a syntax error or a duplicate key)."""
    problems = []
    for folder in folders:
        for path in sorted(folder.glob("**/*.y*ml")):
            relative = path.relative_to(folder).parts
            # as Kedro: hidden files and folders (an editor's lock file) and non-files are skipped
            if any(p.startswith(".") for p in relative) or not path.is_file():
                continue
            if not path.name.startswith(CONFIG_FILES):
                continue
            try:
                OmegaConf.load(path)
            except yaml.YAMLError as error:
                mark = getattr(error, "problem_mark", None)
                where = f", line {mark.line + 1}" if mark is not None else ""
                problem = getattr(error, "problem", None) or str(error).splitlines()[0]
                problems.append(f"{path}{where}: {problem}")
            except (OSError, UnicodeDecodeError) as error:
                problems.append(f"{path}: {error}")
    return problems


def _check_selection(names: list[str], node_names: Iterable[str]) -> None:
    known = sorted(pipelines)  # what register_pipelines registers
    if unknown := [name for name in names if name not in known]:
        raise click.ClickException(f"unknown pipeline {unknown}; expected one of {known}")
    if not node_names:
        return
    selected = sum((pipelines[name] for name in names or ["__default__"]), start=pipeline([]))
    in_pipeline = sorted(node.name for node in selected.nodes)
    if unknown := [name for name in node_names if name not in in_pipeline]:
        raise click.ClickException(
            f"--nodes {unknown}: not a node of {'+'.join(names or ['__default__'])}; "
            f"expected some of {in_pipeline}"
        )


def _run(**options: Any) -> Any:
    conf = Path(options["conf_source"] or settings.CONF_SOURCE)
    env = (
        options["env"]
        or os.environ.get("KEDRO_ENV")
        or settings.CONFIG_LOADER_ARGS.get("default_run_env", "local")
    )
    base = settings.CONFIG_LOADER_ARGS.get("base_env", "base")
    if problems := yaml_problems(conf / name for name in dict.fromkeys([base, env])):
        raise click.ClickException("configuration does not parse: " + "; ".join(problems))
    names = [options["pipeline"]] if options["pipeline"] else list(options["pipelines"] or [])
    _check_selection(names, options["node_names"] or [])
    # imported here: Kedro imports this module for every project command, even `kedro --help`
    import mlflow

    from gradlab.tracking import server_unreachable, stop_waiting_for_server

    try:
        return kedro_run.callback(**options)  # type: ignore[misc]  # a click command's callback is set
    except Exception as error:
        if (cause := server_unreachable(error)) is None:
            raise
        stop_waiting_for_server()  # MLflow's exit handler would retry ending the run
        raise click.ClickException(
            f"the MLflow tracking server at {mlflow.get_tracking_uri()} does not answer "
            f"({type(cause).__name__}); every run trained is stored, and the next `kedro run` "
            "logs to MLflow what is missing"
        ) from None


run = click.Command(
    name="run",
    callback=_run,
    params=kedro_run.params,
    help=kedro_run.help,
    short_help=kedro_run.short_help,
)
cli.add_command(run)
