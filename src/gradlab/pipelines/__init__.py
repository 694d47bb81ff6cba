"""Kedro stages; each subpackage's ``create_pipeline`` is found by ``find_pipelines``."""

from collections.abc import Callable

import pandas as pd


def load_partition(partition: pd.DataFrame | Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """A PartitionedDataset hands nodes loaders; an in-memory catalog hands them frames."""
    return partition() if callable(partition) else partition
