"""Finished runs on disk, one folder per run id, so a grid is incremental and resumable.

``<root>/<run_id>/`` holds ``summary.json`` (written last: its presence means "done"),
``history.parquet``, ``layer_stats.parquet``, ``distributions.parquet``, ``spectrum.parquet``
and ``weights.pt``
(a ``state_dict``, loadable with ``torch.load(..., weights_only=True)``).

A stored result is reused only when it is whole and was made from the same *identity*: the run
spec (the folder's name), a fingerprint of the exact data and the train options that change
numbers (``summary["identity"]``). A failed run (one that raised, not one that diverged) is kept
for the runs table but trained again next time: a failure is not a result.
"""

import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from gradlab.core.train import RunResult
from gradlab.core.verdict import verdicts_of

TABLES = ("history", "layer_stats", "distributions", "spectrum")
STAGING, BACKUP = ".tmp", ".old"  # suffixes of a result being written / being replaced


def _json_safe(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _changes(stored: dict[str, Any], current: dict[str, Any]) -> str:
    keys = sorted(set(stored) | set(current))
    return ", ".join(
        f"{key} {stored.get(key)!r} → {current.get(key)!r}"
        for key in keys
        if stored.get(key) != current.get(key)
    )


class ResultStore:
    """A folder of finished runs."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._recover()

    def _recover(self) -> None:
        """Finish what a crash interrupted: a replaced result comes back if its successor is
        missing; half-written results are dropped."""
        if not self.root.is_dir():
            return
        for leftover in self.root.glob(f".*{BACKUP}"):
            run_id = leftover.name[1 : -len(BACKUP)]
            if not self.path(run_id).exists():
                os.replace(leftover, self.path(run_id))
        for leftover in [*self.root.glob(f".*{BACKUP}"), *self.root.glob(f".*{STAGING}")]:
            shutil.rmtree(leftover, ignore_errors=True)

    def path(self, run_id: str) -> Path:
        return self.root / run_id

    def has(self, run_id: str) -> bool:
        """Whether ``run_id`` has a stored summary (whole or not, current or not)."""
        return (self.path(run_id) / "summary.json").exists()

    def damage(self, run_id: str, tables: bool = True) -> str | None:
        """What is wrong with a stored result (naming the file), or None when it is whole;
        with ``tables`` False, with its summary."""
        folder = self.path(run_id)
        summary_path = folder / "summary.json"
        try:
            summary = json.loads(summary_path.read_text())
            if not isinstance(summary, dict) or "status" not in summary:
                raise ValueError("expected a JSON object with a status")
        except (OSError, ValueError) as error:
            return f"damaged: {summary_path} is unreadable ({error})"
        if not tables:
            return None
        for name in TABLES:
            table = folder / f"{name}.parquet"
            try:
                pq.read_metadata(table)
            except (OSError, pa.ArrowException) as error:
                return f"damaged: {table} is unreadable ({type(error).__name__})"
        if not (folder / "weights.pt").is_file():
            return f"damaged: {folder / 'weights.pt'} is missing"
        return None

    def why_train(self, run_id: str, identity: dict[str, Any]) -> str | None:
        """Why ``run_id`` must be trained, or None when a whole result of ``identity`` is stored.

        Args:
            run_id: The run spec's id.
            identity: The data fingerprint and result-changing options the run would train with.
        Returns:
            ``None`` to reuse the stored result, else a reason a user can read: ``new``,
            ``damaged: <path> …``, ``failed last time`` or ``stale: <what changed>``.
        """
        if not self.has(run_id):
            return "new"
        if damage := self.damage(run_id, tables=False):
            return damage
        summary = self.summary(run_id)
        if summary["status"] == "failed":
            return "failed last time"
        stored = summary.get("identity")
        if stored is None:
            return "stale: stored without its data fingerprint and options"
        if stored != identity:  # before the tables: an older result may lack a newer table
            return f"stale: {_changes(stored, identity)}"
        return self.damage(run_id)

    def save(self, result: RunResult, extra: dict[str, Any]) -> Path:
        """Write a result atomically: a crash leaves either the old folder or the new one.

        The old result is moved aside, not deleted, until the new one is in place.

        Args:
            result: The run's result.
            extra: More summary fields (identity, label, studies, ...).
        Returns:
            The run's folder.
        """
        final = self.path(result.run_id)
        staging = self.root / f".{result.run_id}{STAGING}"
        backup = self.root / f".{result.run_id}{BACKUP}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in TABLES:
            getattr(result, name).to_parquet(staging / f"{name}.parquet", index=False)
        torch.save(result.state_dict, staging / "weights.pt")
        summary = {
            **extra,
            **result.summary,
            "run_id": result.run_id,
            "status": result.status,
            # names this stored result in MLflow, so an interrupted logging is never repeated
            "result_id": uuid.uuid4().hex,
        }
        self._write_summary(staging, summary)
        shutil.rmtree(backup, ignore_errors=True)
        if final.exists():
            os.replace(final, backup)
        os.replace(staging, final)
        shutil.rmtree(backup, ignore_errors=True)
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

    def load(self, run_id: str) -> RunResult:
        """A stored result, without its weights (they stay in ``weights.pt``), its verdicts
        read from its stored numbers under the current rule (it may have been stored under an
        older one), as ``grid_runner.collect``'s runs table has them."""
        summary = self.summary(run_id)
        summary.update(verdicts_of(summary))
        tables = {name: self.table(run_id, name) for name in TABLES}
        return RunResult(run_id, summary["status"], summary, **tables, state_dict={})
