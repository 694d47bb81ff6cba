"""scripts/compare_outputs.py tells identical result tables from ones a change moved."""

import subprocess
import sys
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_outputs.py"


def _write(root: Path, value: float, wall_s: float) -> None:
    folder = root / "data" / "07_model_output"
    folder.mkdir(parents=True)
    long = {"run_id": ["a", "a"], "phase": ["init", "train"], "step": [0, 5], "layer": [1, 1]}
    pd.DataFrame({"run_id": ["a"], "status": ["finished"], "wall_s": [wall_s]}).to_parquet(
        folder / "runs.parquet"
    )
    for name in ("layer_stats", "distributions"):
        table = {**long, "quantity": ["loss", "loss"], "value": [1.0, value]}
        pd.DataFrame(table).to_parquet(folder / f"{name}.parquet")
    history = {"run_id": ["a"], "epoch": [1], "metric": ["val_loss"], "value": [0.5]}
    pd.DataFrame(history).to_parquet(folder / "history.parquet")


def _compare(before: Path, after: Path, *options: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), str(before), str(after), *options]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_identical_tables_pass_whatever_their_wall_clock(tmp_path):
    _write(tmp_path / "before", 0.25, wall_s=1.0)
    _write(tmp_path / "after", 0.25, wall_s=9.0)
    done = _compare(tmp_path / "before", tmp_path / "after")
    assert done.returncode == 0, done.stdout
    assert "layer_stats: 2 rows × 6 columns identical, in the same order" in done.stdout


def test_a_moved_value_fails_and_is_named(tmp_path):
    _write(tmp_path / "before", 0.25, wall_s=1.0)
    _write(tmp_path / "after", 0.25 + 1e-12, wall_s=1.0)
    done = _compare(tmp_path / "before", tmp_path / "after")
    assert done.returncode == 1
    assert 'layer_stats: DataFrame.iloc[:, 5] (column name="value") are different' in done.stdout


def test_added_columns_pass_only_when_asked_and_the_old_ones_hold(tmp_path):
    _write(tmp_path / "before", 0.25, wall_s=1.0)
    _write(tmp_path / "after", 0.25, wall_s=1.0)
    runs = tmp_path / "after" / "data" / "07_model_output" / "runs.parquet"
    pd.read_parquet(runs).assign(jacobian_mean_s2=[0.9]).to_parquet(runs)
    assert _compare(tmp_path / "before", tmp_path / "after").returncode == 1
    done = _compare(tmp_path / "before", tmp_path / "after", "--added-columns")
    assert done.returncode == 0, done.stdout
    assert "runs: columns added: ['jacobian_mean_s2']" in done.stdout
    pd.read_parquet(runs).assign(status=["diverged"]).to_parquet(runs)
    assert _compare(tmp_path / "before", tmp_path / "after", "--added-columns").returncode == 1
