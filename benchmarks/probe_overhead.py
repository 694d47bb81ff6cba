"""Probe overhead: the bare training loop vs probes vs probes + MLflow logging, side by side.

Same process, same data, same specs; the three variants are interleaved in every repeat so that
machine noise hits them alike, and the median of the repeats is compared. Prints one table of
ratios (time / bare time). Target: probes ≤ 1.10× at ``log_every=10``.

    .venv/bin/python benchmarks/probe_overhead.py [--repeats 5] [--epochs 10] [--log-every 10]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import mlflow
import torch

from gradlab.core import data as data_core
from gradlab.core.config import DEFAULT_MLFLOW_QUANTITIES
from gradlab.core.grid import RunSpec
from gradlab.core.train import RunOptions, TaskData, train_run
from gradlab.tracking import Tracker


def _task(n_samples: int) -> TaskData:
    kind = data_core.DATASETS["poly"]
    frame = kind.generate(0, kind.params(n_samples=n_samples, offset=3.0))
    split = data_core.split(frame, 0, 0.2, 0.2)
    normalized, _ = data_core.normalize(split, data_core.INPUT_NORMS["zscore"])
    return TaskData.from_frame(normalized, kind.task)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as every gradlab worker runs
    data = _task(args.samples)
    bare, probed = RunOptions(probe=False), RunOptions(probe=True)

    store = Path(tempfile.mkdtemp(prefix="gradlab-bench-"))
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    mlflow.set_experiment("probe_overhead")

    print(
        f"torch {torch.__version__}, 1 thread, {args.epochs} epochs, batch 64, "
        f"log_every={args.log_every}, median of {args.repeats}"
    )
    header = (
        f"{'depth':>5} {'width':>5} {'steps':>5} {'bare s':>7} {'probes':>7} "
        f"{'+mlflow':>8} {'metrics':>8}"
    )
    print(header)
    print("-" * len(header))
    with mlflow.start_run(run_name="benchmark parent"):
        tracker = Tracker(quantities=DEFAULT_MLFLOW_QUANTITIES)  # as the default config
        for depth in (5, 10, 20):
            for width in (64, 128):
                spec = RunSpec(
                    depth=depth,
                    width=width,
                    epochs=args.epochs,
                    log_every=args.log_every,
                    init="xavier_uniform",
                    lr=0.01,
                )
                train_run(spec, data, bare)  # warm-up: allocator, kernels
                times: dict[str, list[float]] = {"bare": [], "probes": [], "mlflow": []}
                n_metrics = 0
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    train_run(spec, data, bare)
                    times["bare"].append(time.perf_counter() - start)

                    start = time.perf_counter()
                    train_run(spec, data, probed)
                    times["probes"].append(time.perf_counter() - start)

                    start = time.perf_counter()
                    result = train_run(spec, data, probed)
                    run_id = tracker.log_run(spec, result, "benchmark", None)
                    times["mlflow"].append(time.perf_counter() - start)
                    n_metrics = (
                        sum(
                            len(tracker.client.get_metric_history(run_id, key))
                            for key in tracker.client.get_run(run_id).data.metrics
                        )
                        if n_metrics == 0
                        else n_metrics
                    )
                base = statistics.median(times["bare"])
                ratio = {k: statistics.median(v) / base for k, v in times.items()}
                print(
                    f"{depth:>5} {width:>5} {result.summary['steps']:>5} {base:>7.3f} "
                    f"{ratio['probes']:>6.3f}× {ratio['mlflow']:>7.3f}× {n_metrics:>8}"
                )


if __name__ == "__main__":
    main()
