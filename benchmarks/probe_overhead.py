"""Probe overhead: the bare training loop vs probes vs probes + MLflow logging, side by side.

The engine trains runs of one shape as a stack (``train_group``); this benchmark times stacks of
``--replicas`` (16) seeds of one spec, as the grid trains them: bare (``probe=False``), with
probes, and with probes + MLflow logging of each run as the default config logs it
(``train.mlflow_layer_every``, ``DEFAULT_MLFLOW_QUANTITIES``), synchronously here: the CPU time
the grid's background logging thread spends on a group (``tracking_cost.py`` measures what that
costs the grid's wall time). Same process, same data, same specs; the variants are interleaved in
every repeat so that machine noise hits them alike, and the median of the repeats is compared.

The table gives time / bare time, the metric points of one child run, and ``per run``: what
probing adds to a one-epoch run (probes − bare, 1 epoch, over the full bare time): the part of
the overhead paid once per run (probe at init, mean-field prediction, distribution samples,
result tables) rather than at each probe step; it includes the one-epoch run's 2 probe steps.
``probes`` includes the Jacobian's spectrum at init as the default config measures it
(``train.spectrum.points``); the breakdown times it alone (``spectrum/run``, and ``spec/run`` per
replica), as the difference of two whole runs is lost in their noise at width 64.
Then where a probe step's time goes: milliseconds of a bare stacked step beside those of each part
a probe step adds, and the ratio those parts predict. Target: probes ≤ 1.10× at ``log_every=10``.

    .venv/bin/python benchmarks/probe_overhead.py [--repeats 5] [--epochs 10] [--log-every 10]
"""

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import torch

from _common import poly_task
from gradlab.core import probes, recording, spectrum
from gradlab.core.activations import get_activation
from gradlab.core.config import DEFAULT_MLFLOW_QUANTITIES, SpectrumConfig, TrainConfig
from gradlab.core.grid import RunSpec
from gradlab.core.inits import initialize
from gradlab.core.models import MLP, StackedMLP
from gradlab.core.recording import ProbeLog
from gradlab.core.replica_optim import ReplicaOptimizer
from gradlab.core.spectrum import SpectrumLog
from gradlab.core.train import RunOptions, RunResult, TaskData, train_group
from gradlab.tracking import Child, Tracker

LAYER_EVERY = TrainConfig.model_fields["mlflow_layer_every"].default
POINTS = SpectrumConfig.model_fields["points"].default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--replicas", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as every gradlab worker runs
    data = poly_task(args.samples)
    options = {"bare": RunOptions(probe=False), "probes": RunOptions(spectrum_points=POINTS)}

    store = Path(tempfile.mkdtemp(prefix="gradlab-bench-"))
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    mlflow.set_experiment("probe_overhead")

    print(
        f"torch {torch.__version__}, 1 thread, stacks of {args.replicas} replicas (train_group), "
        f"{args.epochs} epochs, batch 64, log_every={args.log_every}, median of {args.repeats}"
    )
    header = (
        f"{'depth':>5} {'width':>5} {'steps':>5} {'bare s':>7} {'probes':>7} "
        f"{'+mlflow':>8} {'metrics':>8} {'per run':>8}"
    )
    print(header)
    print("-" * len(header))
    sizes = [(depth, width) for depth in (5, 10, 20) for width in (64, 128)]
    run_steps: dict[tuple[int, int], int] = {}
    with mlflow.start_run(run_name="benchmark parent"):
        # as the default config logs (layer_every, quantities); synchronously here, each of the
        # group's runs in turn: the CPU cost the grid's logging thread pays for a group
        tracker = Tracker(layer_every=LAYER_EVERY, quantities=DEFAULT_MLFLOW_QUANTITIES)
        for depth, width in sizes:
            specs, short = (
                [
                    RunSpec(
                        depth=depth,
                        width=width,
                        epochs=epochs,
                        log_every=args.log_every,
                        init="xavier_uniform",
                        lr=0.01,
                        seed=seed,
                    )
                    for seed in range(args.replicas)
                ]
                for epochs in (args.epochs, 1)
            )
            train_group(specs, data, options["bare"])  # warm-up: allocator, kernels
            times, results, n_metrics = _time_variants(
                specs, short, data, options, tracker, args.repeats
            )
            statuses = {result.status for result in results}
            base = statistics.median(times["bare"])
            ratio = {k: statistics.median(v) / base for k, v in times.items()}
            per_run = ratio["probes 1"] - ratio["bare 1"]
            run_steps[depth, width] = results[0].summary["steps"]
            flag = "" if statuses == {"finished"} else f"  ({', '.join(sorted(statuses))}!)"
            print(
                f"{depth:>5} {width:>5} {run_steps[depth, width]:>5} {base:>7.3f} "
                f"{ratio['probes']:>6.3f}× {ratio['mlflow']:>7.3f}× {n_metrics:>8} "
                f"{per_run:>7.3f}×{flag}",
                flush=True,
            )
    print_breakdown(sizes, args.replicas, args.log_every, run_steps)


# noqa reason: the two spec lists, their data, the variants, the tracker and the repeats
def _time_variants(  # noqa: PLR0913, PLR0917
    specs: list[RunSpec],
    short: list[RunSpec],
    data: TaskData,
    options: dict[str, RunOptions],
    tracker: Tracker,
    repeats: int,
) -> tuple[dict[str, list[float]], list[RunResult], int]:
    """Seconds of each variant per repeat, interleaved (one-epoch runs too), the last results
    and the metric points of one logged child run."""
    times: dict[str, list[float]] = {
        key: [] for key in ("bare", "probes", "mlflow", "bare 1", "probes 1")
    }
    n_metrics = 0
    for _ in range(repeats):
        # one-epoch runs: what probing costs a run besides its probe steps
        for key in ("bare", "probes"):
            start = time.perf_counter()
            train_group(short, data, options[key])
            times[f"{key} 1"].append(time.perf_counter() - start)
        for key in ("bare", "probes"):
            start = time.perf_counter()
            train_group(specs, data, options[key])
            times[key].append(time.perf_counter() - start)

        start = time.perf_counter()
        results = train_group(specs, data, options["probes"])
        run_ids = [
            tracker.log_run(spec, result, Child("benchmark"))
            for spec, result in zip(specs, results, strict=True)
        ]
        times["mlflow"].append(time.perf_counter() - start)
        n_metrics = n_metrics or _metric_points(tracker, run_ids[0])
    return times, results, n_metrics


def _metric_points(tracker: Tracker, run_id: str) -> int:
    """Metric points one child run holds."""
    client = tracker.client
    return sum(
        len(client.get_metric_history(run_id, key)) for key in client.get_run(run_id).data.metrics
    )


def _median_ms(fn: Callable[[], object], repeats: int = 100) -> float:
    for _ in range(10):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


# noqa reason: the stack's shape and the run's length, each varied by the table
def breakdown(  # noqa: PLR0913, PLR0917
    depth: int, width: int, replicas: int, run_steps: int, log_every: int, batch: int = 64
) -> dict[str, float]:
    """Milliseconds of one bare stacked step and of each part a probe step adds, as
    ``train._train_stack`` runs them, on a stack of ``replicas`` tanh nets."""
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
    activation, workspace = get_activation("tanh"), probes.Workspace()
    probe = recording.Probe(activation, workspace)
    losses = torch.zeros(replicas, run_steps)

    def step(probing: bool) -> tuple[probes.Capture | None, list[torch.Tensor], torch.Tensor]:
        cap = probes.Capture() if probing else None
        out = stack.forward(x, True, cap.add if cap else None)
        loss = (out.squeeze(-1) - y).pow(2).mean(1)
        grads = list(torch.autograd.grad(loss.sum(), params))
        losses[:, 0] = loss.detach()
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
    stats = probe.measure(cap, grads, weight_grads, loss)
    stats["update_ratio"] = probes.update_ratios(before, stack.weights())
    logs = [ProbeLog(depth, 64, k) for k in range(replicas)]
    layout = logs[0].layout

    def bookkeeping() -> None:
        # the log step's one host sync, then each replica's row (as _train_stack does)
        probed = layout.row(stats)
        values = torch.cat([probed, losses[:, :log_every]], 1).tolist()
        for probe_log, row in zip(logs, values, strict=True):
            probe_log.add("train", 0, row[: probed.shape[1]])

    points = torch.randn(replicas, POINTS, 2, generator=generator)
    spectra = [SpectrumLog() for _ in range(replicas)]
    full = ProbeLog(depth, 64, 0)  # one replica's log of a whole run, for its result tables
    row = layout.row(stats)[0].tolist()
    for probe_step in range(0, run_steps, log_every):
        full.add("train", probe_step, row)
    bare_ms = statistics.median(bare[30:]) * 1e3
    spectrum_ms = _median_ms(
        lambda: spectrum.measure(stack, points, False, spectra, ("init", 0)), repeats=10
    )
    return {
        "bare step": bare_ms,
        "capture": statistics.median(captured[30:]) * 1e3 - bare_ms,
        "hidden stats": _median_ms(lambda: probes.hidden_stats(cap, activation, workspace)),
        "weight stats": _median_ms(lambda: probes.weight_grad_stats(weight_grads)),
        "all stats": _median_ms(lambda: probe.measure(cap, grads, weight_grads, loss)),
        "update ratio": _median_ms(
            lambda: probes.update_ratios(probes.snapshot(stack.weights()), before)
        ),
        "sync + logs": _median_ms(bookkeeping),
        "tables/run": _median_ms(full.layer_stats, repeats=20) * replicas,
        # every replica's Jacobian spectrum at init, once per run, at the default points
        "spectrum/run": spectrum_ms,
        "spec/run": spectrum_ms / replicas,
    }


def print_breakdown(
    sizes: list[tuple[int, int]],
    replicas: int,
    log_every: int,
    run_steps: dict[tuple[int, int], int],
) -> None:
    print(f"\nper probe step of a {replicas}-replica stack, ms (median): a probe step adds the")
    print("parts right of 'bare step' but 'hidden stats' and 'weight stats', which 'all stats'")
    print("(Probe.measure) includes; 'update ratio' = snapshot + update_ratios; 'sync + logs' =")
    print("the host sync and each replica's ProbeLog row; 'tables/run' = building every replica's")
    print("layer_stats table once per run; 'spectrum/run' = every replica's Jacobian spectrum at")
    print("init, once per run ('spec/run': per replica). est. = bare + (probe-step parts) /")
    print("log_every + (tables + spectrum) per step")
    print(f"over bare (log_every={log_every}, the table's steps per run)")
    rows = {(d, w): breakdown(d, w, replicas, run_steps[d, w], log_every) for d, w in sizes}
    names = list(next(iter(rows.values())))
    print(f"{'depth':>5} {'width':>5} " + " ".join(f"{n:>12}" for n in names) + f" {'est.':>6}")
    for (depth, width), parts in rows.items():
        probe_step = sum(parts[n] for n in ("capture", "all stats", "update ratio", "sync + logs"))
        once = parts["tables/run"] + parts["spectrum/run"]
        per_step = probe_step / log_every + once / run_steps[depth, width]
        estimate = 1 + per_step / parts["bare step"]
        print(
            f"{depth:>5} {width:>5} "
            + " ".join(f"{parts[n]:>12.3f}" for n in names)
            + f" {estimate:>5.3f}×"
        )


if __name__ == "__main__":
    main()
