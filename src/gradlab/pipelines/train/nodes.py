"""Train stage nodes."""

from collections.abc import Mapping
from typing import Any

import pandas as pd

from gradlab.core.config import parse_train
from gradlab.core.data import DATASETS
from gradlab.core.execute import make_executor
from gradlab.core.grid import specs_from_table
from gradlab.core.train import RunOptions, TaskData
from gradlab.grid_runner import collect, train_missing
from gradlab.pipelines import load_partition
from gradlab.store import ResultStore
from gradlab.tracking import Tracker


def train_grid(
    run_specs: pd.DataFrame, model_inputs: Mapping[str, Any], train: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train one MLP per row of ``run_specs`` that has no stored result, then gather all results.

    Args:
        run_specs: One row per run, as expanded by the grid stage.
        model_inputs: Normalized tables keyed ``<dataset>/<input_norm>``.
        train: ``params:train`` (workers, device, force, store, ...).
    Returns:
        The runs table, and the long history, layer-statistics and distribution tables.
    """
    config = parse_train(train)
    specs = specs_from_table(run_specs)
    needed = {(spec.dataset, spec.input_norm) for spec in specs}
    data = {
        (dataset, norm): TaskData.from_frame(
            load_partition(model_inputs[f"{dataset}/{norm}"]), DATASETS[dataset].task
        )
        for dataset, norm in sorted(needed)
    }
    store = ResultStore(config.store)
    train_missing(
        specs,
        dict(zip(run_specs["run_id"], run_specs["studies"], strict=True)),
        data,
        store,
        make_executor(config.n_workers),
        Tracker(layer_every=config.mlflow_layer_every, quantities=config.mlflow_quantities),
        RunOptions(
            device=config.device,
            divergence_factor=config.divergence_factor,
            probe_batch_size=config.probe_batch_size,
        ),
        force=config.force,
    )
    return collect(run_specs, store)
