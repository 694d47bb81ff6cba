"""Engine throughput: model-steps/s of the one-model loop vs the stacked engine, side by side.

For each width × depth, K runs (seeds 0…K−1 of one spec) train once as one stack
(``train_group``, probes off: ``RunOptions(probe=False)``) and are compared with a one-model loop
written in this script, ``one_model_loop``: the loop gradlab had before the engine reduced to its
training (an ``nn.Sequential`` MLP, ``torch.nn.init``, ``torch.optim.SGD``, a shuffled batch
order per epoch, the validation loss each epoch; nothing imported from the engine). It has no
schedule, only a finiteness check at each epoch's end and no result tables, so it is a stricter
baseline than the former loop (``solo_train`` of the tests, which this script used before). This
is training throughput; the engine's own one-run path (``train_run``, a stack of K = 1) is the
K = 1 row. The one-model loop's rate does not depend on K, so it is measured once per shape, in
the same repeats as the engine's (one solo run, then the engine at each K, order alternating),
and the median of ``--repeats`` is compared.

A model-step is one optimizer step of one model. Its FLOPs are 6 · batch · Σ in·out over the
layers (2 per multiply-add forward, 4 backward: input and weight gradients), biases and the
activation not counted; each rate is shown as a share of the 1-core sgemm roofline this script
measures (best GFLOP/s of a 1024² ``torch.mm``). Setup (models, init, schedules, stacking, result
tables) is inside each timed run: epochs are chosen per row from warm-up runs of 1 and 3 epochs,
so that a run takes ≥ ``--target-s`` and setup is ≤ 5% of it, unless that would take more than
6 × ``--target-s``; the ``setup`` column is the engine's estimated share (~5 ms a replica at
these sizes; at width 256, K = 64, runs have the minimum of 2 epochs and no estimate is made).
A row where some run diverged is flagged: its rate would be wrong.

Data as the tests use it: the ``poly`` regression task, 2,000 samples (1,200 train), zscore,
batch 64; Xavier-uniform init, SGD lr 0.01; one torch thread, as every gradlab worker runs.

The default activation is ReLU. Elementwise cost differs a lot on this CPU build: the header
prints ns per element measured here (on a (16, 64, 64) stack: tanh ~2.0 ns, sigmoid ~0.21 ns,
ReLU ~0.05 ns, so tanh ~10× sigmoid; the stack's tanh through expm1, ``activations.stacked_tanh``,
~1.0 ns). The engine cannot batch an elementwise cost away, so ``--activation tanh`` shows a
smaller gain; on stacks of 16k elements or more its tanh's forward and backward take
about 0.6× the one-model loop's.

``--arch resmlp`` times residual nets instead (a stem, ``depth`` preact blocks
``x + α W φ(x)`` with α = 1/√depth, a head; the one-model loop's is a plain ``nn.Module`` of
that form).

Targets (issue): ≥ 3× at width ≤ 64 and K ≥ 16; ≥ 1.0× at K = 1. The last line is
``min speedup (width <= 64, K >= 16): N.NN×``.

    .venv/bin/python benchmarks/engine_throughput.py [--quick] [--activation relu]
        [--arch mlp|resmlp] [--repeats 3]
"""

import argparse
import itertools
import math
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from _common import poly_task
from gradlab.core.activations import stacked_tanh
from gradlab.core.grid import RunSpec
from gradlab.core.train import RunOptions, TaskData, train_group

BATCH, SAMPLES = 64, 2000
BARE = RunOptions(probe=False)
SETUP_SHARE = 0.05  # at most this share of a timed run is setup, where the time allows
MAX_RUNS = 6  # ... and where a timed run stays under MAX_RUNS × --target-s
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}


def roofline_gflops() -> float:
    """Best GFLOP/s of a 1024 × 1024 sgemm on one thread."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    torch.mm(a, b)
    best = 0.0
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        best = max(best, 4 * 2 * 1024**3 / (time.perf_counter() - start) / 1e9)
    return best


def elementwise_ns(shape: tuple[int, ...] = (16, 64, 64)) -> dict[str, float]:
    """Best ns per element of each activation's forward kernel on one stack."""
    x = torch.randn(shape)
    ns = {}
    kernels = {
        "relu": torch.relu,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "stacked tanh": stacked_tanh,
    }
    for name, fn in kernels.items():
        for _ in range(10):
            fn(x)
        best = math.inf
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(50):
                fn(x)
            best = min(best, (time.perf_counter() - start) / 50)
        ns[name] = best / x.numel() * 1e9
    return ns


def step_flops(d_in: int, d_out: int, width: int, depth: int, arch: str) -> float:
    """FLOPs of one model-step: 6 · batch · Σ in·out (forward + backward); a residual net has a
    stem and ``depth`` square layers."""
    square = depth if arch == "resmlp" else depth - 1
    fan = d_in * width + square * width * width + width * d_out
    return 6.0 * BATCH * fan


# noqa reason: the grid's axes of a benchmark row, each a choice of its own
def _specs(  # noqa: PLR0913, PLR0917
    activation: str, width: int, depth: int, epochs: int, k: int, arch: str = "mlp"
) -> list[RunSpec]:
    """K seeds of one spec. Xavier init: with lr 0.01, He init diverges in up to all 64 seeds of
    these shapes (a diverged replica leaves the stack, which would falsify K)."""
    residual = {"arch": arch, "residual_scale": "1/sqrt(depth)"} if arch == "resmlp" else {}
    return [
        RunSpec(
            **residual,
            activation=activation,
            init="xavier_uniform",
            depth=depth,
            width=width,
            batch_size=BATCH,
            epochs=epochs,
            lr=0.01,
            seed=seed,
        )
        for seed in range(k)
    ]


class Residual(nn.Module):
    """A stem, ``depth`` preact blocks ``x + α W φ(x)`` (α = 1/√depth) and a head."""

    def __init__(self, d_in: int, d_out: int, spec: RunSpec) -> None:
        super().__init__()
        self.alpha = 1.0 / math.sqrt(spec.depth)
        self.stem = nn.Linear(d_in, spec.width)
        self.blocks = nn.ModuleList(
            nn.Sequential(ACTIVATIONS[spec.activation](), nn.Linear(spec.width, spec.width))
            for _ in range(spec.depth)
        )
        self.head = nn.Linear(spec.width, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = x + self.alpha * block(x)
        return self.head(x)


def one_model_loop(spec: RunSpec, data: TaskData) -> str:
    """Train one regression run alone in plain PyTorch, as the one-model loop did (probes off);
    its status, ``finished`` or ``diverged`` (a loss that is not finite at an epoch's end)."""
    torch.manual_seed(spec.seed)
    generator = torch.Generator().manual_seed(spec.seed)
    model: nn.Module
    if spec.arch == "resmlp":
        model = Residual(data.x_train.shape[1], data.n_outputs, spec)
    else:
        sizes = [data.x_train.shape[1], *[spec.width] * spec.depth]
        layers: list[nn.Module] = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            layers += [nn.Linear(fan_in, fan_out), ACTIVATIONS[spec.activation]()]
        model = nn.Sequential(*layers, nn.Linear(spec.width, data.n_outputs))
    for linear in model.modules():
        if isinstance(linear, nn.Linear):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.lr)
    loss_fn = nn.MSELoss()
    n_train = len(data.x_train)
    steps_per_epoch = math.ceil(n_train / spec.batch_size)
    losses = torch.zeros(spec.epochs * steps_per_epoch)
    step = 0
    for _ in range(spec.epochs):
        order = torch.randperm(n_train, generator=generator)
        for batch in range(steps_per_epoch):
            rows = order[batch * spec.batch_size : (batch + 1) * spec.batch_size]
            loss = loss_fn(model(data.x_train[rows]).squeeze(-1), data.y_train[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses[step] = loss.detach()
            step += 1
        with torch.no_grad():
            val_loss = loss_fn(model(data.x_val).squeeze(-1), data.y_val)
        if not (losses[:step].isfinite().all() and val_loss.isfinite()):
            return "diverged"
    return "finished"


def _timed(fn: Callable[[], list[str]]) -> tuple[float, list[str]]:
    start = time.perf_counter()
    results = fn()
    return time.perf_counter() - start, results


def calibrate(train: Callable[[int], list[str]], target_s: float) -> tuple[int, float, float]:
    """Warm up (1 epoch), time runs of 1 and 3 epochs.

    Returns:
        The epochs a timed run should have, and the estimated seconds of its setup (everything
        but the epochs: models, init, schedules, result tables) and of one epoch. Robust to a
        noisy machine: an epoch is taken to cost at least a sixth of the 3-epoch run, and a timed
        run is kept under about ``MAX_RUNS`` × ``target_s``.
    """
    warm_up, _ = _timed(lambda: train(1))
    if warm_up >= 3 * target_s:  # too big to time more than the minimum
        return 2, math.nan, warm_up
    one, _ = _timed(lambda: train(1))
    three, _ = _timed(lambda: train(3))
    per_epoch = max((three - one) / 2, three / 6)
    setup = max(one - per_epoch, 0.0)
    epochs = max(target_s / per_epoch, setup * (1 - SETUP_SHARE) / SETUP_SHARE / per_epoch)
    epochs = min(math.ceil(epochs), math.ceil(MAX_RUNS * target_s / (three / 3)))
    return max(2, epochs), setup, per_epoch


# noqa reason: a benchmark's main measures and prints its table top to bottom
def main() -> None:  # noqa: PLR0915
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activation", default="relu")
    parser.add_argument("--arch", default="mlp", choices=["mlp", "resmlp"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--target-s", type=float, default=0.5, help="seconds of a timed run")
    parser.add_argument("--quick", action="store_true", help="fewer shapes, shorter runs (~1 min)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as every gradlab worker runs
    data = poly_task(SAMPLES)
    d_in, d_out = data.x_train.shape[1], data.n_outputs
    steps_per_epoch = math.ceil(len(data.x_train) / BATCH)
    widths, depths, ks = (32, 64, 128, 256), (8, 16), (1, 4, 16, 64)
    target_s = args.target_s
    if args.quick:
        widths, ks, target_s = (32, 64, 128), (1, 16), min(target_s, 0.25)
    peak = roofline_gflops()
    ns = elementwise_ns()
    arch = args.arch
    one_model_loop(_specs(args.activation, 32, 2, 1, 1, arch)[0], data)  # first-call costs
    train_group(_specs(args.activation, 32, 2, 1, 2, arch), data, BARE)
    print(
        f"torch {torch.__version__}, 1 thread, {arch}, {args.activation}, batch {BATCH}, SGD, "
        "probes off, "
        f"median of {args.repeats}; sgemm roofline {peak:.1f} GFLOP/s"
    )
    print(
        "ns/element on a (16, 64, 64) stack: "
        + ", ".join(f"{name} {value:.3f}" for name, value in ns.items())
        + f" (tanh / sigmoid {ns['tanh'] / ns['sigmoid']:.1f}×)"
    )
    header = (
        f"{'width':>5} {'depth':>5} {'K':>3} {'solo steps':>10} {'one-model/s':>11} {'%roof':>6} "
        f"{'eng steps':>9} {'setup':>5} {'engine/s':>9} {'%roof':>6} {'speedup':>8}"
    )
    print(header)
    print("-" * len(header))
    speedups: dict[tuple[int, int, int], float] = {}
    for width in widths:
        for depth in depths:
            flops = step_flops(d_in, d_out, width, depth, arch)

            def solo(epochs: int, width: int = width, depth: int = depth) -> list[str]:
                spec = _specs(args.activation, width, depth, epochs, 1, arch)[0]
                return [one_model_loop(spec, data)]

            def engine(epochs: int, k: int, width: int = width, depth: int = depth) -> list[str]:
                specs = _specs(args.activation, width, depth, epochs, k, arch)
                return [result.status for result in train_group(specs, data, BARE)]

            calibrated = {0: calibrate(solo, target_s)}  # key 0: the one-model loop
            for k in ks:
                calibrated[k] = calibrate(lambda e, k=k: engine(e, k), target_s)
            epochs = {key: value[0] for key, value in calibrated.items()}
            runs = {0: lambda: solo(epochs[0])}
            runs.update({k: (lambda k=k: engine(epochs[k], k)) for k in ks})
            times: dict[int, list[float]] = {key: [] for key in runs}
            flagged: dict[int, set[str]] = {key: set() for key in runs}
            for repeat in range(args.repeats):
                order = list(runs) if repeat % 2 == 0 else list(reversed(runs))
                for key in order:
                    seconds, statuses = _timed(runs[key])
                    times[key].append(seconds)
                    flagged[key] |= set(statuses) - {"finished"}
            solo_steps = epochs[0] * steps_per_epoch
            solo_rate = solo_steps / statistics.median(times[0])
            for k in ks:
                steps = epochs[k] * steps_per_epoch
                engine_rate = k * steps / statistics.median(times[k])
                speedup = speedups[width, depth, k] = engine_rate / solo_rate
                note = " ".join(sorted(flagged[0] | flagged[k]))
                _, setup, per_epoch = calibrated[k]
                share = setup / (setup + epochs[k] * per_epoch)
                setup_text = f"{100 * share:>4.0f}%" if math.isfinite(share) else f"{'-':>5}"
                print(
                    f"{width:>5} {depth:>5} {k:>3} {solo_steps:>10} {solo_rate:>11.0f} "
                    f"{100 * solo_rate * flops / 1e9 / peak:>5.1f}% "
                    f"{steps:>9} {setup_text} {engine_rate:>9.0f} "
                    f"{100 * engine_rate * flops / 1e9 / peak:>5.1f}% {speedup:>7.2f}×"
                    + (f"  ({note}!)" if note else ""),
                    flush=True,
                )
    at_one = {key: s for key, s in speedups.items() if key[2] == 1}
    print(
        "K = 1, engine / one-model (target ≥ 1.0×): "
        + ", ".join(f"w{w} d{d} {s:.2f}×" for (w, d, _), s in at_one.items())
    )
    small = [s for (w, d, k), s in speedups.items() if w <= 64 and k >= 16]
    print(f"min speedup (width <= 64, K >= 16): {min(small):.2f}×")


if __name__ == "__main__":
    main()
