"""Probe overhead: the bare training loop vs probes vs probes + MLflow logging, side by side.

Same process, same data, same specs; the three variants are interleaved in every repeat so that
machine noise hits them alike, and the median of the repeats is compared. Prints a table of
ratios (time / bare time), then where a probe step's time goes: milliseconds of a bare training
step beside those of each part a probe step adds. Target: probes ≤ 1.10× at ``log_every=10``.

    .venv/bin/python benchmarks/probe_overhead.py [--repeats 5] [--epochs 10] [--log-every 10]
"""

import argparse
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import mlflow
import torch

from gradlab.core import data as data_core
from gradlab.core import probes
from gradlab.core.config import DEFAULT_MLFLOW_QUANTITIES, TrainConfig
from gradlab.core.grid import RunSpec
from gradlab.core.inits import initialize
from gradlab.core.models import MLP
from gradlab.core.train import RunOptions, TaskData, _Recorder, train_run
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
        # as the default config logs; synchronously here: the CPU cost the grid pays for a run
        tracker = Tracker(
            layer_every=TrainConfig.model_fields["mlflow_layer_every"].default,
            quantities=DEFAULT_MLFLOW_QUANTITIES,
        )
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
    print_breakdown()


def _median_ms(fn, repeats: int = 200) -> float:
    for _ in range(20):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def breakdown(depth: int, width: int, batch: int = 64) -> dict[str, float]:
    """Milliseconds of one bare step and of each part a probe step adds, on one model."""
    generator = torch.Generator().manual_seed(0)
    model = MLP(2, 1, depth, width, "tanh", "none")
    initialize(model, "xavier_uniform", "tanh", 0.0, generator)
    x, y = torch.randn(batch, 2, generator=generator), torch.randn(batch, generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    recorder = _Recorder(model, probes.ACTIVATION_TRAITS["tanh"], 64, 0)
    loss_fn = torch.nn.MSELoss()

    def step(probing: bool) -> probes.Capture | None:
        with probes.capture(model.acts) if probing else nullcontext() as cap:
            loss = loss_fn(model(x).squeeze(-1), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        optimizer.step()
        return cap

    # bare and hooked steps interleaved, so that noise hits both alike
    bare, hooked = [], []
    for _ in range(300):
        for probing, times in ((False, bare), (True, hooked)):
            start = time.perf_counter()
            cap = step(probing)
            times.append(time.perf_counter() - start)
    cap = step(True)
    grads = [w.grad for w in recorder.weights]
    before = probes.snapshot(recorder.weights)
    bare_ms = statistics.median(bare[50:]) * 1e3
    return {
        "bare step": bare_ms,
        "hooks": statistics.median(hooked[50:]) * 1e3 - bare_ms,
        "hidden stats": _median_ms(
            lambda: probes.hidden_stats(cap, recorder.traits, recorder.workspace)
        ),
        "weight stats": _median_ms(lambda: probes.weight_grad_stats(grads, recorder.workspace)),
        "update ratio": _median_ms(
            lambda: probes.update_ratios(probes.snapshot(recorder.weights), before)
        ),
        "global norm": _median_ms(lambda: probes.global_grad_norm(grads)),
    }


def print_breakdown() -> None:
    print("\nper probe step, ms (median): a probe step adds the parts right of 'bare step'")
    rows = {(d, w): breakdown(d, w) for d in (5, 10, 20) for w in (64, 128)}
    names = list(next(iter(rows.values())))
    print(f"{'depth':>5} {'width':>5} " + " ".join(f"{n:>12}" for n in names))
    for (depth, width), parts in rows.items():
        print(f"{depth:>5} {width:>5} " + " ".join(f"{parts[n]:>12.3f}" for n in names))


if __name__ == "__main__":
    main()
