"""Executor cost: the default grid's groups trained by the local process pool and by Dask.

The default grid (``conf/base``: data, studies, seeds) is expanded and grouped as the train
stage does it, then its groups are trained by ``ProcessPoolExecutor(--workers)`` and by
``DaskExecutor`` on a ``LocalCluster`` of as many one-thread workers (started and closed inside
each timing, as ``kedro run`` does), alternated ``--repeats`` times in this one process. No
storing or MLflow: only the executors differ. Prints, per executor, the median seconds to the
first result and to the last; the last line is ``dask / local: N.NN×`` (median wall time).

    .venv/bin/python benchmarks/executor_cost.py [--workers 2] [--repeats 3]
"""

import argparse
import statistics
import time
from pathlib import Path

import yaml

from _common import task_data
from gradlab.core.config import validate_parameters
from gradlab.core.execute import DaskExecutor, Executor, ProcessPoolExecutor
from gradlab.core.grid import expand, specs_from_table
from gradlab.core.train import RunOptions, TaskData, group_runs, train_group

CONF = Path(__file__).resolve().parents[1] / "conf" / "base"


def default_grid_tasks() -> list[tuple]:
    """``(group, data, options)`` per group of the default grid, as the train stage makes them."""
    params = {}
    for name in ("data", "grid", "train"):
        params |= yaml.safe_load((CONF / f"parameters_{name}.yml").read_text())
    params["train"]["store"] = "unused"  # a ${globals:…} reference in conf/, not read here
    config = validate_parameters(params)
    grid = config.grid
    specs = specs_from_table(expand(grid.baseline, grid.studies, grid.seeds))
    data: dict[tuple[str, str], TaskData] = {}
    split = config.data.split
    for dataset, norm in sorted({(s.dataset, s.input_norm) for s in specs}):
        params = config.data.datasets[dataset] or {}
        data[dataset, norm] = task_data(
            dataset, norm, config.data.seed, params, split.val, split.test
        )
    groups = group_runs(specs, config.train.max_replicas)
    options = RunOptions(device="cpu")
    return [(group, data[group[0].dataset, group[0].input_norm], options) for group in groups]


def time_executor(executor: Executor, tasks: list[tuple]) -> tuple[float, float]:
    """Seconds to the first result and to the last."""
    start = time.perf_counter()
    first = None
    for _ in executor.map(train_group, tasks):
        first = first or time.perf_counter() - start
    return first or 0.0, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tasks = default_grid_tasks()
    runs = sum(len(group) for group, _, _ in tasks)
    print(f"default grid: {runs} runs in {len(tasks)} groups, {args.workers} workers")
    executors = {
        "local": ProcessPoolExecutor(args.workers),
        "dask": DaskExecutor("", args.workers),
    }
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in executors}
    for repeat in range(args.repeats):
        for name, executor in executors.items():
            first, total = time_executor(executor, tasks)
            timings[name].append((first, total))
            step = f"{repeat + 1}/{args.repeats}"
            print(f"  {step} {name:5s} first {first:5.2f} s, all {total:5.2f} s")
    medians = {name: statistics.median(t for _, t in values) for name, values in timings.items()}
    for name, values in timings.items():
        first = statistics.median(f for f, _ in values)
        print(f"{name:5s}: median first result {first:.2f} s, all {medians[name]:.2f} s")
    print(f"dask / local: {medians['dask'] / medians['local']:.2f}×")


if __name__ == "__main__":
    main()
