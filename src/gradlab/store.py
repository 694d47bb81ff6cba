"""Finished runs on disk, one folder per run id, so a grid is incremental and resumable.

``<root>/<run_id>/`` holds ``summary.json`` (written last: its presence means "done"),
``history.parquet``, ``layer_stats.parquet``, ``distributions.parquet`` and ``weights.pt``
(a ``state_dict``, loadable with ``torch.load(..., weights_only=True)``).
"""

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from gradlab.core.train import RunResult

TABLES = ("history", "layer_stats", "distributions")


def _json_safe(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


class ResultStore:
    """A folder of finished runs."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, run_id: str) -> Path:
        return self.root / run_id

    def has(self, run_id: str) -> bool:
        """Whether ``run_id`` finished (diverged and failed runs count: they are results too)."""
        return (self.path(run_id) / "summary.json").exists()

    def save(self, result: RunResult, extra: dict[str, Any]) -> Path:
        """Write a result atomically: a crash leaves either the old folder or the new one.

        Args:
            result: The run's result.
            extra: More summary fields (spec, label, studies, ...).
        Returns:
            The run's folder.
        """
        final = self.path(result.run_id)
        staging = self.root / f".{result.run_id}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in TABLES:
            getattr(result, name).to_parquet(staging / f"{name}.parquet", index=False)
        torch.save(result.state_dict, staging / "weights.pt")
        summary = {**extra, **result.summary, "run_id": result.run_id, "status": result.status}
        self._write_summary(staging, summary)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        return final

    def update_summary(self, run_id: str, **fields: Any) -> None:
        """Add fields to a stored summary (e.g. the MLflow run id, known after logging)."""
        self._write_summary(self.path(run_id), {**self.summary(run_id), **fields})

    @staticmethod
    def _write_summary(folder: Path, summary: dict[str, Any]) -> None:
        tmp = folder / "summary.json.tmp"
        safe = {key: _json_safe(value) for key, value in summary.items()}
        tmp.write_text(json.dumps(safe, indent=1, sort_keys=True))
        os.replace(tmp, folder / "summary.json")

    def summary(self, run_id: str) -> dict[str, Any]:
        return json.loads((self.path(run_id) / "summary.json").read_text())

    def table(self, run_id: str, name: str) -> pd.DataFrame:
        return pd.read_parquet(self.path(run_id) / f"{name}.parquet")
