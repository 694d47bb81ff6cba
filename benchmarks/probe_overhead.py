"""Probe overhead: the bare training loop vs probes vs probes + MLflow logging, side by side.

The engine trains runs of one shape as a stack (``train_group``); this benchmark times stacks of
``--replicas`` (16) seeds of one spec, as the grid trains them. Same process, same data, same
specs; the three variants are interleaved in every repeat so that machine noise hits them alike,
and the median of the repeats is compared. Prints a table of ratios (time / bare time), then where
a probe step's time goes: milliseconds of a bare stacked step beside those of each part a probe
step adds. Target: probes ≤ 1.10× at ``log_every=10``.

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
from gradlab.core import probes
from gradlab.core.config import DEFAULT_MLFLOW_QUANTITIES, TrainConfig
from gradlab.core.grid import RunSpec
from gradlab.core.inits import initialize
from gradlab.core.models import MLP, StackedMLP
from gradlab.core.replica_optim import ReplicaOptimizer
from gradlab.core.train import RunOptions, TaskData, probe_values, train_group
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
    parser.add_argument("--replicas", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as every gradlab worker runs
    data = _task(args.samples)
    bare, probed = RunOptions(probe=False), RunOptions(probe=True)

    store = Path(tempfile.mkdtemp(prefix="gradlab-bench-"))
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    mlflow.set_experiment("probe_overhead")

    print(
        f"torch {torch.__version__}, 1 thread, stacks of {args.replicas} replicas, "
        f"{args.epochs} epochs, batch 64, log_every={args.log_every}, median of {args.repeats}"
    )
    header = f"{'depth':>5} {'width':>5} {'steps':>5} {'bare s':>7} {'probes':>7} {'+mlflow':>8}"
    print(header)
    print("-" * len(header))
    with mlflow.start_run(run_name="benchmark parent"):
        # as the default config logs; synchronously here: the CPU cost the grid pays for a run
        tracker = Tracker(
            layer_every=TrainConfig.model_fields["mlflow_layer_every"].default,
            quantities=DEFAULT_MLFLOW_QUANTITIES,
        )
        for depth in (5, 10, 20):
            for width in (64, 128):
                specs = [
                    RunSpec(
                        depth=depth,
                        width=width,
                        epochs=args.epochs,
                        log_every=args.log_every,
                        init="xavier_uniform",
                        lr=0.01,
                        seed=seed,
                    )
                    for seed in range(args.replicas)
                ]
                train_group(specs, data, bare)  # warm-up: allocator, kernels
                times: dict[str, list[float]] = {"bare": [], "probes": [], "mlflow": []}
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    train_group(specs, data, bare)
                    times["bare"].append(time.perf_counter() - start)

                    start = time.perf_counter()
                    train_group(specs, data, probed)
                    times["probes"].append(time.perf_counter() - start)

                    start = time.perf_counter()
                    results = train_group(specs, data, probed)
                    for spec, result in zip(specs, results, strict=True):
                        tracker.log_run(spec, result, "benchmark", None)
                    times["mlflow"].append(time.perf_counter() - start)
                base = statistics.median(times["bare"])
                ratio = {k: statistics.median(v) / base for k, v in times.items()}
                print(
                    f"{depth:>5} {width:>5} {results[0].summary['steps']:>5} {base:>7.3f} "
                    f"{ratio['probes']:>6.3f}× {ratio['mlflow']:>7.3f}×"
                )
    print_breakdown(args.replicas)


def _median_ms(fn, repeats: int = 100) -> float:
    for _ in range(10):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def breakdown(depth: int, width: int, replicas: int, batch: int = 64) -> dict[str, float]:
    """Milliseconds of one bare stacked step and of each part a probe step adds."""
    generator = torch.Generator().manual_seed(0)
    models = []
    for _ in range(replicas):
        model = MLP(2, 1, depth, width, "tanh", "none")
        initialize(model, "xavier_uniform", "tanh", 0.0, generator)
        models.append(model)
    stack = StackedMLP(models, "tanh", "none")
    x = torch.randn(replicas, batch, 2, generator=generator)
    y = torch.randn(replicas, batch, generator=generator)
    params = stack.params()
    optimizer = ReplicaOptimizer("sgd", params, torch.zeros(replicas, dtype=torch.float64))
    lr = torch.full((replicas,), 1e-4, dtype=torch.float64)
    momentum = torch.zeros(replicas, dtype=torch.float64)
    traits, workspace = probes.ACTIVATION_TRAITS["tanh"], probes.Workspace()

    def step(probing: bool) -> tuple[probes.Capture | None, list[torch.Tensor], torch.Tensor]:
        cap = probes.Capture() if probing else None
        out = stack.forward(x, True, cap.add if cap else None)
        loss = (out.squeeze(-1) - y).pow(2).mean(1)
        grads = list(torch.autograd.grad(loss.sum(), params))
        optimizer.step(grads, lr, momentum)
        return cap, grads, loss

    # bare and capturing steps interleaved, so that noise hits both alike
    bare, captured = [], []
    for _ in range(150):
        for probing, times in ((False, bare), (True, captured)):
            start = time.perf_counter()
            step(probing)
            times.append(time.perf_counter() - start)
    cap, grads, loss = step(True)
    weight_grads = [grads[i] for i in stack.weight_positions]
    before = probes.snapshot(stack.weights())
    bare_ms = statistics.median(bare[30:]) * 1e3
    return {
        "bare step": bare_ms,
        "capture": statistics.median(captured[30:]) * 1e3 - bare_ms,
        "hidden stats": _median_ms(lambda: probes.hidden_stats(cap, traits, workspace)),
        "weight stats": _median_ms(lambda: probes.weight_grad_stats(weight_grads, workspace)),
        "update ratio": _median_ms(
            lambda: probes.update_ratios(probes.snapshot(stack.weights()), before)
        ),
        "all stats": _median_ms(
            lambda: probe_values(cap, weight_grads, grads, loss, traits, workspace)
        ),
    }


def print_breakdown(replicas: int) -> None:
    print(f"\nper probe step of a {replicas}-replica stack, ms (median): a probe step adds the")
    print("parts right of 'bare step' ('all stats' = hidden + weight stats + global norm)")
    rows = {(d, w): breakdown(d, w, replicas) for d in (5, 10, 20) for w in (64, 128)}
    names = list(next(iter(rows.values())))
    print(f"{'depth':>5} {'width':>5} " + " ".join(f"{n:>12}" for n in names))
    for (depth, width), parts in rows.items():
        print(f"{depth:>5} {width:>5} " + " ".join(f"{parts[n]:>12.3f}" for n in names))


if __name__ == "__main__":
    main()
