"""Tracking cost: the same grid trained with MLflow logging on and off, side by side.

First, where one run's logging time goes (median milliseconds of each MLflow call, as
``Tracker.log_run`` makes them, at the default ``train.mlflow_layer_every``), its metric points
and the database bytes it adds: with per-layer metrics of the first and last layer (the default
``train.mlflow_layers``), then of every layer. Then a grid of ``--runs`` default-sized runs is
trained through ``gradlab.grid_runner.train_missing`` on a process pool of ``--workers``, as
``kedro run`` does:
tracking on (child runs logged by the background logging thread under a parent run) and off
(``train.mlflow: false``), alternated ``--repeats`` times in this one process. The last line is
``tracking overhead: N.NN×``, the median grid wall time on / off. Target ≤ 1.05×.

    .venv/bin/python benchmarks/tracking_cost.py [--runs 32] [--workers 2] [--repeats 3]
"""

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import mlflow
import torch
from mlflow.entities import Param

from _common import poly_task
from gradlab.core.config import DEFAULT_MLFLOW_QUANTITIES, TrainConfig
from gradlab.core.execute import ProcessPoolExecutor, SequentialExecutor
from gradlab.core.grid import RunSpec
from gradlab.core.plots.profile import profile_png
from gradlab.core.train import RunOptions, RunResult, TaskData, train_run
from gradlab.grid_runner import GridRuns, TrainOptions, train_missing
from gradlab.store import ResultStore
from gradlab.tracking import Tracker, layer_profile
from gradlab.tracking.children import BATCH, PROFILE_FIGURE, _chunks, _dataset_input

LAYER_EVERY = TrainConfig.model_fields["mlflow_layer_every"].default
LAYERS = TrainConfig.model_fields["mlflow_layers"].default
# the default grid's baseline (conf/base/parameters_grid.yml), varied in activation and init
BASELINE = RunSpec(init="xavier_uniform", depth=8, width=64, lr=0.02, epochs=20)
ACTIVATIONS = ("tanh", "relu", "sigmoid", "gelu")
INITS = ("xavier_uniform", "kaiming_normal", "default", "orthogonal")


def grid(n_runs: int) -> list[RunSpec]:
    """``n_runs`` distinct specs: activation × init × seed around the baseline."""
    specs = [
        BASELINE.model_copy(update={"activation": a, "init": i, "seed": seed})
        for seed in range(n_runs)
        for a in ACTIVATIONS
        for i in INITS
    ]
    return [RunSpec(**spec.model_dump()) for spec in specs[:n_runs]]


def breakdown(
    result: RunResult, data: TaskData, folder: Path, layers: str, repeats: int = 5
) -> None:
    """Milliseconds of each call of logging ``result``, its points, and database bytes."""
    weights = folder / "weights.pt"
    torch.save(result.state_dict, weights)
    db = folder / "mlflow.db"
    parts: dict[str, list[float]] = {
        k: []
        for k in (
            "build",
            "create_run",
            "log_batch",
            "dataset_input",
            "artifacts",
            "set_terminated",
        )
    }
    with mlflow.start_run(run_name="breakdown parent"):
        tracker = Tracker(LAYER_EVERY, DEFAULT_MLFLOW_QUANTITIES, layers)
        client = tracker.client
        size_before = db.stat().st_size
        for _ in range(repeats):
            times = [time.perf_counter()]
            metrics = list(tracker._metrics(result))
            params = [Param(k, str(v)) for k, v in BASELINE.model_dump().items()]
            profile = layer_profile(result.layer_stats)
            times.append(time.perf_counter())
            run = client.create_run(tracker.experiment_id, run_name="x")
            run_id = run.info.run_id
            times.append(time.perf_counter())
            first = BATCH - len(params)
            client.log_batch(run_id, metrics=metrics[:first], params=params)
            for chunk in _chunks(metrics[first:], BATCH):
                client.log_batch(run_id, metrics=chunk)
            times.append(time.perf_counter())
            client.log_inputs(run_id, datasets=[_dataset_input(BASELINE, data.fingerprint())])
            times.append(time.perf_counter())
            # the table, the figure and the weights
            tracker._log_files(run.info.artifact_uri, BASELINE, result, weights, profile)
            times.append(time.perf_counter())
            client.set_terminated(run_id, "FINISHED")
            times.append(time.perf_counter())
            for key, (start, end) in zip(parts, itertools.pairwise(times), strict=True):
                parts[key].append((end - start) * 1000)
        per_run_bytes = (db.stat().st_size - size_before) / repeats
    ms = {key: statistics.median(values) for key, values in parts.items()}
    train_ms = result.summary["wall_s"] * 1000
    print(
        f"one run (depth 8, width 64, 20 epochs, {result.summary['steps']} steps): training "
        f"{train_ms:.0f} ms; logging {sum(ms.values()):.1f} ms "
        f"({sum(ms.values()) / train_ms:.3f}× its training), {len(metrics)} metric points "
        f"(mlflow_layer_every={LAYER_EVERY}, mlflow_layers={layers}), "
        f"~{per_run_bytes / 1e6:.2f} MB of mlflow.db"
    )
    print("  " + " · ".join(f"{key} {value:.1f} ms" for key, value in ms.items()))
    drawing = []
    for _ in range(repeats):
        start = time.perf_counter()
        profile_png(result.layer_stats, BASELINE.label)
        drawing.append((time.perf_counter() - start) * 1000)
    print(f"  of the artifacts, drawing {PROFILE_FIGURE}: {statistics.median(drawing):.1f} ms")


def train_grid(specs: list[RunSpec], data: TaskData, root: Path, workers: int, on: bool) -> float:
    """Wall seconds to train ``specs`` (forced) with tracking on or off."""
    executor = ProcessPoolExecutor(workers) if workers > 1 else SequentialExecutor()
    store = ResultStore(root / ("on" if on else "off"))
    with mlflow.start_run(run_name=f"tracking {'on' if on else 'off'}"):
        tracker = Tracker(LAYER_EVERY, DEFAULT_MLFLOW_QUANTITIES, LAYERS, enabled=on)
        start = time.perf_counter()
        train_missing(
            GridRuns(specs, {s.run_id: "benchmark" for s in specs}),
            {("poly", "zscore"): data},
            store,
            tracker,
            TrainOptions(RunOptions(), executor, force=True),
        )
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = poly_task(2000)
    folder = Path(tempfile.mkdtemp(prefix="gradlab-tracking-"))
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    mlflow.set_experiment("tracking_cost")
    train_run(BASELINE, data)  # warm-up: the first run in a process pays for allocations
    result = train_run(BASELINE, data)
    for layers in (LAYERS, *({"ends", "all"} - {LAYERS})):
        breakdown(result, data, folder, layers)

    specs = grid(args.runs)
    train_grid(specs[: args.workers], data, folder, args.workers, on=False)  # warm-up
    times: dict[bool, list[float]] = {True: [], False: []}
    print(f"grid: {len(specs)} runs, {args.workers} worker processes, forced retrain each time")
    for repeat in range(args.repeats):
        for on in (False, True) if repeat % 2 == 0 else (True, False):
            times[on].append(train_grid(specs, data, folder, args.workers, on))
            print(f"  repeat {repeat + 1}: tracking {'on ' if on else 'off'} {times[on][-1]:.2f} s")
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(f"median wall: on {on:.2f} s, off {off:.2f} s")
    print(f"tracking overhead: {on / off:.2f}×")


if __name__ == "__main__":
    main()
