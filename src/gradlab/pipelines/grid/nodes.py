"""Grid stage nodes."""

from typing import Any

import pandas as pd

from gradlab.core.config import parse_data, parse_grid


def expand_grid(grid: dict[str, Any], data: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Expand the studies around the baseline, times the seeds, into one row per distinct run.

    Args:
        grid: ``params:grid`` (baseline, studies, seeds).
        data: ``params:data``, to check every run asks for data the data stage makes.
    Returns:
        The run specs (one row per run, with the studies it belongs to) and the studies
        (name, question, the axes it varies).
    """
    config = parse_grid(grid, parse_data(data))
    studies = pd.DataFrame(
        {
            "study": [s.name for s in config.studies],
            "question": [s.question for s in config.studies],
            "axes": [",".join(s.axes) for s in config.studies],
        }
    )
    return config.expanded(), studies
