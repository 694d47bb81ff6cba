"""The parent run kedro-mlflow opens per ``kedro run``, and the experiment it belongs to.

kedro-mlflow starts and ends the parent run and logs the parameters; gradlab makes it readable:
its name (``<pipeline>·<env>·<time>``), the grid it trains as its description, a ``runner`` tag
that names the runner, the process that owns it (so a later start can tell it was killed), at the
end the runs per status and verdict, and a reproduction's claims. The experiment carries a note
that says how to read its runs.
"""

import os
import re
import socket
import time
from collections.abc import Iterable
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from gradlab.tracking.maintenance import TAG_HOST, TAG_PID, reap_stale_runs

NOTE = "mlflow.note.content"  # what the MLflow UI shows as a run's or experiment's description

EXPERIMENT_NOTE = """\
**gradlab** trains one small MLP per run spec of a grid (activation × init × optimizer ×
normalization × depth …) and measures how gradients flow through its layers: ∂L/∂h per hidden
layer (what vanishes or explodes), ‖∂L/∂W‖, activation statistics, saturation and dead units, at
init and during training, next to the mean-field prediction.

How to read the runs:
- Each `kedro run` is a parent run named `<pipeline>·<env>·<time>` (`default·local·<time>` for
  a plain `kedro run`); its description lists the grid, its metrics count the runs per status
  and verdict, and its artifacts hold the report (`report.html`), the tables and the figures.
- Each run spec is a child run (the + in its parent's row shows them), named by what differs
  from the grid's baseline and its seed (`relu·d16·s0`); the full label is the tag
  `gradlab.label`, the axes are params and tags. `status` is finished, diverged (a result,
  not a crash) or failed; `verdict` (read at the end of training) is healthy, vanishing,
  exploding, saturated or dead; `init_verdict` is what the gradients at init say (healthy,
  vanishing, exploding, or n/a).
- Per-epoch metrics (step = epoch): `train_loss`, `val_loss`, `val_r2`/`val_accuracy`, `lr`,
  `grad_norm`. Per-step metrics (step = optimizer step): `grad_ratio`, ∂L/∂h RMS of the first
  hidden layer over the last (below 1: the gradient vanishes on its way down; above 1: it
  explodes); `<quantity>/first` and `<quantity>/last`, the first and the last layer, so runs of
  any depth share a chart; `step_loss`, `grad_global_norm`.
  `layer_profile.png` shows ∂L/∂h and ‖∂L/∂W‖ per layer at init and at the end, one picture
  instead of a chart per layer; `layer_profile.json` holds each layer's value at init and the
  mean-field prediction; `weights.pt` the final state_dict (loads into `gradlab.core.models.MLP`).
"""


def active() -> bool:
    """Whether a parent run is active in this process."""
    return mlflow.active_run() is not None


def claim_active_run() -> None:
    """Tag the active (parent) run with this process and reap runs left by dead processes."""
    run = mlflow.active_run()
    if run is None or TAG_PID in run.data.tags:
        return
    client = MlflowClient()
    client.set_tag(run.info.run_id, TAG_PID, str(os.getpid()))
    client.set_tag(run.info.run_id, TAG_HOST, socket.gethostname())
    reap_stale_runs(client, run.info.experiment_id)


def parent_run_name(pipelines: list[str] | str | None, env: str | None, started: float) -> str:
    """``<pipeline>·<env>·<YYYY-MM-DD HH:MM>`` for the run of a ``kedro run``: ``default`` for
    Kedro's ``__default__`` pipeline (all stages), ``local`` for no ``--env``, pipelines joined
    by ``+`` (``default·local·2026-12-07 10:04``, ``train+report·smoke·…``)."""
    names = [pipelines] if isinstance(pipelines, str) else list(pipelines or ["__default__"])
    names = ["default" if name == "__default__" else name for name in names]
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(started))
    return f"{'+'.join(names)}·{env or 'local'}·{when}"


def parent_description(runs: int, studies: Iterable[tuple[str, str, int]], seeds: list) -> str:
    """The parent run's description: the grid it trains, study by study.

    Args:
        runs: Distinct runs in the grid.
        studies: ``(name, question, runs)`` per study.
        seeds: The grid's seeds.
    """
    lines = [f"A grid of {runs} runs (seeds {seeds}); one child run per run spec.", ""]
    lines += [f"- **{name}** ({count} runs): {question}" for name, question, count in studies]
    return "\n".join(lines)


def describe_parent_run(
    run_params: dict[str, Any], started: float, description: str | None
) -> None:
    """Name the active parent run, tag its runner and its description (the grid, when the
    parameters are valid), and give its experiment the note and the model-training kind."""
    run = mlflow.active_run()
    if run is None:
        return
    client = MlflowClient()
    name = parent_run_name(run_params.get("pipeline_names"), run_params.get("env"), started)
    client.update_run(run.info.run_id, name=name)
    # Kedro passes str(runner) for a runner instance: "<kedro.runner.….XRunner object at 0x…>"
    runner = re.sub(r"^<(?:\w+\.)*(\w+) object at 0x\w+>$", r"\1", str(run_params["runner"]))
    tags = {"runner": runner}
    if description is not None:
        tags[NOTE] = description
    for key, value in tags.items():
        client.set_tag(run.info.run_id, key, value)
    experiment = client.get_experiment(run.info.experiment_id)
    # MLflow's tag for what an experiment is: "custom_model_development" is model training
    # ("Machine learning" in the UI), not a GenAI app ("genai_development")
    experiment_tags = {
        NOTE: EXPERIMENT_NOTE,
        "mlflow.experimentKind": "custom_model_development",
    }
    for key, value in experiment_tags.items():
        if experiment.tags.get(key) != value:
            client.set_experiment_tag(experiment.experiment_id, key, value)


def grid_summary_metrics(runs: pd.DataFrame) -> dict[str, float]:
    """Counts of a grid's stored runs per status and per verdict (``runs/<status>``,
    ``verdict/<verdict>``) and their total, for the parent run."""
    metrics = {"runs/total": float(len(runs))}
    for column in ("status", "verdict"):
        prefix = "runs" if column == "status" else column
        for value, count in runs[column].dropna().value_counts().items():
            if value != "n/a":  # a failed run's verdict: runs/failed counts it already
                metrics[f"{prefix}/{value}"] = float(count)
    return metrics


def log_grid_summary(runs: pd.DataFrame, wall_s: float) -> None:
    """The runs per status and verdict of a judged runs table, and the run's wall time, as the
    active parent run's metrics."""
    metrics = grid_summary_metrics(runs)
    metrics["wall_s"] = wall_s
    mlflow.log_metrics(metrics)


def claims_summary(claims: pd.DataFrame) -> tuple[dict[str, str], dict[str, float]]:
    """A reproduction's claims table as parent-run tags (``claim.<id>``: pass or fail) and
    metrics (``claims/passed``, ``claims/total``)."""
    tags = {f"claim.{row.claim_id}": row.result for row in claims.itertuples(index=False)}
    passed = float((claims["result"] == "pass").sum())
    return tags, {"claims/passed": passed, "claims/total": float(len(claims))}


def log_claims(claims: pd.DataFrame) -> None:
    """A reproduction's claims as the active parent run's tags and metrics."""
    tags, metrics = claims_summary(claims)
    mlflow.set_tags(tags)
    mlflow.log_metrics(metrics)


def end_interrupted_run() -> None:
    """End the active parent run KILLED: a KeyboardInterrupt (Ctrl-C, or SIGTERM) stopped it."""
    # the parent can sit on mlflow's run stack more than once: end every entry, or
    # mlflow's own exit handler ends the rest FINISHED
    while mlflow.active_run() is not None:
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))


def runs_of(parent_run_id: str) -> pd.DataFrame:
    """The child runs of a parent run, as ``mlflow.search_runs`` returns them."""
    parent = MlflowClient().get_run(parent_run_id)
    return mlflow.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
    )
