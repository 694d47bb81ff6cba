"""Data stage nodes: thin adapters over ``gradlab.core.data``."""

from collections.abc import Mapping
from typing import Any

import pandas as pd

from gradlab.core import data as core
from gradlab.core.config import parse_data
from gradlab.pipelines import load_partition


def generate_datasets(data: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Generate every dataset named in ``data.datasets``.

    Args:
        data: ``params:data``.
    Returns:
        One table per dataset name (features ``x_*`` and target ``y``).
    """
    config = parse_data(data)
    return {
        name: core.DATASETS[name].generate(config.seed, core.DATASETS[name].params(**(kw or {})))
        for name, kw in config.datasets.items()
    }


def split_datasets(
    raw_datasets: Mapping[str, Any], data: dict[str, Any]
) -> dict[str, pd.DataFrame]:
    """Shuffle each dataset and label its rows train / val / test.

    Args:
        raw_datasets: The generated tables, by dataset name.
        data: ``params:data`` (seed and split fractions).
    Returns:
        The split tables, by dataset name.
    """
    config = parse_data(data)
    return {
        name: core.split(load_partition(frame), config.seed, config.split.val, config.split.test)
        for name, frame in raw_datasets.items()
    }


def normalize_datasets(
    split_datasets: Mapping[str, Any], data: dict[str, Any]
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, dict[str, Any]]:
    """Apply every input normalization, fitted on each dataset's train split only.

    Args:
        split_datasets: The split tables, by dataset name.
        data: ``params:data`` (``input_norms``).
    Returns:
        The model inputs keyed ``<dataset>/<input_norm>``, the fitted statistics
        (dataset, input_norm, feature, shift, scale), and the data parameters they were made
        from (so that training can tell when they no longer match ``params:data``).
    """
    config = parse_data(data)
    inputs, stats = {}, []
    for name, partition in split_datasets.items():
        frame = load_partition(partition)
        for norm in config.input_norms:
            inputs[f"{name}/{norm}"], fitted = core.normalize(frame, core.INPUT_NORMS[norm])
            stats.append(fitted.assign(dataset=name, input_norm=norm))
    columns = ["dataset", "input_norm", "feature", "shift", "scale"]
    return inputs, pd.concat(stats, ignore_index=True)[columns], config.model_dump(mode="json")
