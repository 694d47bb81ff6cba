"""Train stage nodes: train what has no current result, then gather every stored result.

Thin wiring: ``gradlab.grid_runner`` plans, trains, stores and logs (MLflow goes through it).
"""

from collections.abc import Mapping
from typing import Any

import pandas as pd

from gradlab.core.config import parse_train
from gradlab.core.data import DATASETS
from gradlab.core.train import TaskData
from gradlab.grid_runner import collect, train_grid
from gradlab.pipelines import load_partition
from gradlab.store import ResultStore


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

    def load(dataset: str, norm: str) -> TaskData:
        frame = load_partition(model_inputs[f"{dataset}/{norm}"])
        return TaskData.from_frame(frame, DATASETS[dataset].task)

    return train_grid(run_specs, load, parse_train(train))


def collect_results(
    run_specs: pd.DataFrame, trained_runs: pd.DataFrame, train: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Gather the stored results of the grid's runs into the five output tables.

    Args:
        run_specs: One row per run, as expanded by the grid stage.
        trained_runs: What the train node did (only orders this node after it).
        train: ``params:train`` (where the store is).
    Returns:
        The runs table, and the long history, layer-statistics, distribution and Jacobian
        spectrum tables.
    """
    return collect(run_specs, ResultStore(parse_train(train).store))
