"""Compare the result tables of two copies of the project after a `kedro run`: a refactoring
that changes no number leaves them identical, wall-clock columns aside.

    .venv/bin/python scripts/compare_outputs.py /path/to/before /path/to/after [--env base]
        [--added-columns]

Reads ``runs``, ``layer_stats``, ``history`` and ``distributions`` under each copy's
``data/07_model_output`` (``data/<env>/07_model_output`` for another environment), sorts them by
their keys, and compares every column exactly but ``wall_s``, ``steps_per_s``, ``ended_at`` and
``mlflow_run_id``; then says whether the rows are in the same order too. Exits 1 at the first
difference. With ``--added-columns`` a change that adds columns (a new measurement) passes when
every column the before copy has is unchanged; the added ones are named.
"""

import argparse
import sys
from pathlib import Path

import pandas as pd

TABLES = ("runs", "layer_stats", "history", "distributions")
KEYS = ("run_id", "phase", "step", "layer", "quantity", "epoch", "metric")
WALL_CLOCK = {"wall_s", "steps_per_s", "ended_at", "mlflow_run_id"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--env", default="base")
    parser.add_argument("--added-columns", action="store_true")
    args = parser.parse_args()
    folder = Path("data") if args.env == "base" else Path("data") / args.env
    for name in TABLES:
        before, after = (
            pd.read_parquet(root / folder / "07_model_output" / f"{name}.parquet")
            for root in (args.before, args.after)
        )
        added = [column for column in after.columns if column not in before.columns]
        if args.added_columns and added and set(before.columns) <= set(after.columns):
            print(f"{name}: columns added: {added}")
            after = after[list(before.columns)]
        if list(before.columns) != list(after.columns):
            print(f"{name}: columns differ: {sorted(set(before.columns) ^ set(after.columns))}")
            return 1
        keys = [column for column in KEYS if column in before]
        columns = [column for column in before.columns if column not in WALL_CLOCK]
        ordered = [
            t.sort_values(keys, kind="stable").reset_index(drop=True) for t in (before, after)
        ]
        try:
            pd.testing.assert_frame_equal(*(t[columns] for t in ordered), check_exact=True)
        except AssertionError as difference:
            print(f"{name}: {difference}")
            return 1
        same_order = before[columns].equals(after[columns])
        print(
            f"{name}: {len(before)} rows × {len(columns)} columns identical"
            f"{', in the same order' if same_order else ' (rows in another order)'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
