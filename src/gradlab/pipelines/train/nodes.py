"""Train stage nodes: train what has no current result, then gather every stored result."""

from collections.abc import Mapping
from typing import Any

import pandas as pd

from gradlab.core.config import parse_train
from gradlab.core.data import DATASETS
from gradlab.core.execute import make_executor
from gradlab.core.grid import select, specs_from_table
from gradlab.core.train import RunOptions, TaskData
from gradlab.grid_runner import collect, train_missing
from gradlab.pipelines import load_partition
from gradlab.store import ResultStore
from gradlab.tracking import Tracker


def train_runs(
    run_specs: pd.DataFrame, model_inputs: Mapping[str, Any], train: dict[str, Any]
) -> pd.DataFrame:
    """Train one MLP per row of ``run_specs`` without a whole, current stored result.

    Args:
        run_specs: One row per run, as expanded by the grid stage.
        model_inputs: Normalized tables keyed ``<dataset>/<input_norm>``.
        train: ``params:train`` (workers, device, force, only, store, ...).
    Returns:
        One row per run trained now, with the reason it was trained and how it ended.
    """
    config = parse_train(train)
    specs = specs_from_table(run_specs)
    selected = set(select(run_specs, config.only)["run_id"]) if config.only else None
    needed = {
        (spec.dataset, spec.input_norm)
        for spec in specs
        if selected is None or spec.run_id in selected
    }
    data = {
        (dataset, norm): TaskData.from_frame(
            load_partition(model_inputs[f"{dataset}/{norm}"]), DATASETS[dataset].task
        )
        for dataset, norm in sorted(needed)
    }
    return train_missing(
        specs,
        dict(zip(run_specs["run_id"], run_specs["studies"], strict=True)),
        data,
        ResultStore(config.store),
        make_executor(config.n_workers, config.executor, config.dask.address),
        Tracker(
            layer_every=config.mlflow_layer_every,
            quantities=config.mlflow_quantities,
            layers=config.mlflow_layers,
            enabled=config.mlflow,
        ),
        RunOptions(
            device=config.device,
            divergence_factor=config.divergence_factor,
            probe_batch_size=config.probe_batch_size,
        ),
        force=config.force,
        selected=selected,
        max_replicas=config.max_replicas,
        names=dict(zip(run_specs["run_id"], run_specs["name"], strict=True)),
    )


def collect_results(
    run_specs: pd.DataFrame, trained_runs: pd.DataFrame, train: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Gather the stored results of the grid's runs into the four output tables.

    Args:
        run_specs: One row per run, as expanded by the grid stage.
        trained_runs: What the train node did (only orders this node after it).
        train: ``params:train`` (where the store is).
    Returns:
        The runs table, and the long history, layer-statistics and distribution tables.
    """
    return collect(run_specs, ResultStore(parse_train(train).store))
