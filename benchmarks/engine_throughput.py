"""Engine throughput: model-steps/s of the one-model loop vs the stacked engine, side by side.

For each width × depth, K runs (seeds 0…K−1 of one spec) train once as K one-model runs (the
reference loop gradlab had before the engine: ``nn.Module`` + ``torch.optim``, kept in
``tests/core/solo_reference.py``) and once as one stack (``train_group``), probes off: this is
training throughput. The one-model loop's rate does not depend on K, so it is measured once per
shape, interleaved with the engine's repeats. Each rate is also shown as a share of the 1-core
sgemm roofline measured here (a 1024² ``torch.mm``); one model-step is 6 · batch · Σ in·out FLOPs
(forward 2, backward 4 per multiply-add). One torch thread, as every gradlab worker runs.

The default activation is ReLU: on this CPU build ``torch.tanh`` costs ~10× ``torch.sigmoid`` per
element (measured ~2 ns), the same in both loops, so a tanh net shows a smaller ratio
(``--activation tanh``). Targets: ≥ 3× at width ≤ 64 and K ≥ 16, ≥ 1.0× at K = 1.

    .venv/bin/python benchmarks/engine_throughput.py [--quick] [--activation relu]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the reference loop lives in tests/

from tests.core.solo_reference import solo_train  # noqa: E402

from gradlab.core import data as data_core  # noqa: E402
from gradlab.core.grid import RunSpec  # noqa: E402
from gradlab.core.train import RunOptions, TaskData, train_group  # noqa: E402

BATCH, SAMPLES = 64, 2000
BARE = RunOptions(probe=False)


def _task() -> TaskData:
    kind = data_core.DATASETS["poly"]
    frame = kind.generate(0, kind.params(n_samples=SAMPLES, offset=3.0))
    split = data_core.split(frame, 0, 0.2, 0.2)
    normalized, _ = data_core.normalize(split, data_core.INPUT_NORMS["zscore"])
    return TaskData.from_frame(normalized, kind.task)


def roofline_gflops() -> float:
    """Best GFLOP/s of a 1024 × 1024 sgemm on one thread."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(5):
            torch.mm(a, b)
        best = max(best, 5 * 2 * 1024**3 / (time.perf_counter() - start) / 1e9)
    return best


def step_flops(d_in: int, width: int, depth: int) -> float:
    fan = d_in * width + (depth - 1) * width * width + width  # Σ in·out, head of 1 output
    return 6.0 * BATCH * fan


def _specs(activation: str, width: int, depth: int, epochs: int, k: int) -> list[RunSpec]:
    """K seeds of one spec; He init and a small step, so that no run diverges."""
    return [
        RunSpec(
            activation=activation,
            init="kaiming_normal",
            depth=depth,
            width=width,
            batch_size=BATCH,
            epochs=epochs,
            lr=0.001,
            seed=seed,
        )
        for seed in range(k)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activation", default="relu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer shapes and steps (~1 min)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = _task()
    steps_per_epoch = -(-len(data.x_train) // BATCH)
    widths, depths, ks = (32, 64, 128, 256), (8, 16), (1, 4, 16, 64)
    if args.quick:
        widths, depths, ks = (32, 64, 128), (8,), (1, 16)
    peak = roofline_gflops()
    print(
        f"torch {torch.__version__}, 1 thread, {args.activation}, batch {BATCH}, SGD, probes off; "
        f"sgemm roofline {peak:.1f} GFLOP/s; median of {args.repeats}"
    )
    header = (
        f"{'width':>5} {'depth':>5} {'K':>3} {'steps':>5} {'one-model/s':>11} {'%roof':>6} "
        f"{'engine/s':>9} {'%roof':>6} {'speedup':>8}"
    )
    print(header)
    print("-" * len(header))
    speedups: dict[tuple[int, int, int], float] = {}
    for width in widths:
        for depth in depths:
            flops = step_flops(data.x_train.shape[1], width, depth)
            # enough epochs for ~0.3 s of one-model training per measurement (0.1 s with --quick)
            probe = _specs(args.activation, width, depth, 2, 1)[0]
            start = time.perf_counter()
            solo_train(probe, data, BARE)
            per_epoch = (time.perf_counter() - start) / 2
            epochs = max(2, min(60, round((0.1 if args.quick else 0.3) / per_epoch)))
            steps = epochs * steps_per_epoch

            one = _specs(args.activation, width, depth, epochs, 1)[0]
            solo_train(one, data, BARE)  # warm-up: allocator, kernels
            solo_times = []
            for k in ks:
                group = _specs(args.activation, width, depth, epochs, k)
                train_group(group, data, BARE)
                engine_times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    solo = solo_train(one, data, BARE)
                    solo_times.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    results = train_group(group, data, BARE)
                    engine_times.append(time.perf_counter() - start)
                    # a diverged run stops early: its rate would count steps never taken
                    assert all(r.summary["steps"] == steps for r in [solo, *results])
                solo_rate = steps / statistics.median(solo_times)
                engine_rate = k * steps / statistics.median(engine_times)
                speedup = speedups[width, depth, k] = engine_rate / solo_rate
                print(
                    f"{width:>5} {depth:>5} {k:>3} {steps:>5} {solo_rate:>11.0f} "
                    f"{100 * solo_rate * flops / 1e9 / peak:>5.1f}% {engine_rate:>9.0f} "
                    f"{100 * engine_rate * flops / 1e9 / peak:>5.1f}% {speedup:>7.2f}×"
                )
    at_one = [s for (w, d, k), s in speedups.items() if k == 1]
    print(f"K = 1: engine / one-model {min(at_one):.2f}× to {max(at_one):.2f}× (target ≥ 1.0×)")
    small = [s for (w, d, k), s in speedups.items() if w <= 64 and k >= 16]
    print(f"min speedup (width <= 64, K >= 16): {min(small):.2f}×")


if __name__ == "__main__":
    main()
