"""Train runs: groups of same-shape runs as one stacked model, their probes, divergence, and
each run's result as plain tables.

``train_group(specs, data, options)`` (and ``train_run`` for one spec) is a picklable function of
its arguments, so any executor (in-process, a process pool, later a cluster) can run it and get
identical numbers on CPU. Runs that agree on ``GROUP_AXES`` train together: for the small MLPs
of a grid a training step costs kernel launches, not arithmetic, so K stacked replicas cost
little more than one (``benchmarks/engine_throughput.py``).
"""

import functools
import hashlib
import logging
import math
import random
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from gradlab.core import probes, theory
from gradlab.core.data import feature_columns, n_outputs
from gradlab.core.grid import RunSpec
from gradlab.core.inits import initialize
from gradlab.core.models import MLP, StackedMLP
from gradlab.core.replica_optim import ReplicaOptimizer, schedule_table
from gradlab.core.schema import HISTORY_COLUMNS, empty_table, text_column
from gradlab.core.verdict import first_last_ratio, init_verdict, verdicts_of

log = logging.getLogger(__name__)

STATUSES = ("finished", "diverged", "failed")
# a layer_stats row's phase: a probe at init, one during training, the mean-field prediction
PHASES = ("init", "train", "theory")
# what phase theory predicts per hidden layer: grad_preact_rms (last hidden layer = 1),
# preact_std and the gradient map chi1
THEORY_QUANTITIES = ("grad_preact_rms", "preact_std", "chi1")
LAYER_QUANTITIES = (*probes.QUANTITIES, "chi1")  # every quantity of the layer_stats table
METRIC_NAMES = {"regression": "val_r2", "classification": "val_accuracy"}


@dataclass(frozen=True)
class TaskData:
    """Normalized train and validation tensors of one (dataset, input_norm), on the CPU."""

    task: str  # "regression" or "classification"
    n_outputs: int
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, task: str) -> "TaskData":
        """Split a model-input table (features ``x_*``, target ``y``, ``split``) into tensors."""
        columns = feature_columns(frame)
        parts = {}
        for name in ("train", "val"):
            rows = frame[frame["split"] == name]
            x = torch.tensor(rows[columns].to_numpy(np.float32))
            if task == "regression":
                y = torch.tensor(rows["y"].to_numpy(np.float32))
            else:
                y = torch.tensor(rows["y"].to_numpy(np.int64))
            parts[name] = (x, y)
        return cls(task, n_outputs(frame, task), *parts["train"], *parts["val"])

    def fingerprint(self) -> str:
        """SHA-256 (16 hex digits) of the exact tensors a run trains and validates on.

        Part of a stored result's identity: the same spec on other data is another result.
        """
        digest = hashlib.sha256(f"{self.task}:{self.n_outputs}".encode())
        for tensor in (self.x_train, self.y_train, self.x_val, self.y_val):
            digest.update(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
            digest.update(tensor.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


@dataclass(frozen=True)
class RunOptions:
    """How to run (not what: that is the spec)."""

    device: str = "cpu"
    divergence_factor: float = 1e4  # loss above this multiple of the first loss: diverged
    probe_batch_size: int = 256
    distribution_size: int = 64  # values kept per layer and quantity at each checkpoint
    probe: bool = True  # False: the bare loop, for overhead benchmarks; no statistics at all

    def identity(self) -> dict[str, Any]:
        """The options that change a run's numbers (the device by kind: cpu, cuda, mps)."""
        return {
            "device": resolve_device(self.device).type,
            "divergence_factor": self.divergence_factor,
            "probe_batch_size": self.probe_batch_size,
            "distribution_size": self.distribution_size,
            "probe": self.probe,
        }


@dataclass
class RunResult:
    """Everything one run produced; tables are long format, one row per observation."""

    run_id: str
    status: str  # one of STATUSES
    summary: dict[str, Any]
    history: pd.DataFrame  # epoch, metric, value
    layer_stats: pd.DataFrame  # phase, step, layer, quantity, value
    distributions: pd.DataFrame  # phase, step, layer, quantity, value
    state_dict: dict[str, Tensor] = field(repr=False)


def available_devices() -> list[str]:
    """The ``device`` values this machine can run: auto, cpu, each CUDA device, MPS if present."""
    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def resolve_device(device: str) -> torch.device:
    """``auto`` picks cuda, else mps, else cpu; anything else is taken as given."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch's CPU generator (for anything that does not take an explicit
    generator; models are built on the CPU). ``torch.manual_seed`` would also queue a seed for
    each accelerator not yet initialized, recording a stack trace for each: 0.4 ms a run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)


class ProbeLog:
    """One run's probe values as plain floats; builds its long tables once, at the end."""

    def __init__(self, depth: int, sample_size: int, seed: int):
        self.depth, self.sample_size = depth, sample_size
        self.stats: list[tuple[str, int, list[float], list[float]]] = []
        # per call of keep_samples: phase, step, quantity (codes) and layer of each row, rows
        self.samples: list[tuple[str, int, list[int], list[int], Tensor]] = []
        self.generator = torch.Generator().manual_seed(seed)  # distribution samples only

    def add(self, phase: str, step: int, stats: list[float], update: list[float]) -> None:
        """Keep one probe step: ``probe_values``' row, then the update ratios (empty at init)."""
        self.stats.append((phase, step, stats, update or [math.nan] * (self.depth + 1)))

    def hidden(self, phase: str, quantity: str) -> np.ndarray:
        """One hidden-layer quantity at the last probe step of ``phase`` (empty if none)."""
        rows = [stats for p, _, stats, _ in self.stats if p == phase]
        if not rows:
            return np.array([])
        n = len(probes.HIDDEN_QUANTITIES)
        start = probes.HIDDEN_QUANTITIES.index(quantity)
        return np.asarray(rows[-1][start : self.depth * n : n])

    def layer_stats(self, prediction: theory.ProfilePrediction | None = None) -> pd.DataFrame:
        """Every probe step's values, then phase ``theory``: the mean-field prediction's
        grad_preact_rms (last hidden layer = 1), preact_std and chi1 per hidden layer."""
        parts = [self._probe_rows(), _theory_rows(prediction)]
        if not any(len(part[-1]) for part in parts):
            return empty_table("layer_stats")
        phase, step, layer, quantity, value = (np.concatenate(c) for c in zip(*parts, strict=True))
        return pd.DataFrame(
            {
                "phase": text_column(PHASES, phase),
                "step": step,
                "layer": layer,
                "quantity": text_column(LAYER_QUANTITIES, quantity),
                "value": value,
            }
        )

    def _probe_rows(self) -> tuple[np.ndarray, ...]:
        """Phase, step, layer, quantity (codes into ``PHASES``, ``LAYER_QUANTITIES``) and value
        of every probe step's rows."""
        if not self.stats:
            return _no_rows()
        layer, quantity = _probe_row_layout(self.depth)
        n_hidden = self.depth * len(probes.HIDDEN_QUANTITIES)
        n_weight_stats = len(probes.WEIGHT_QUANTITIES) - 1  # update_ratio comes after the step
        stats = np.array([row[2] for row in self.stats])  # (probe steps, values)
        update = np.array([row[3] for row in self.stats])  # (probe steps, depth + 1)
        per_layer = stats[:, n_hidden:-2].reshape(len(stats), self.depth + 1, n_weight_stats)
        weight = np.concatenate([per_layer, update[:, :, None]], axis=2).reshape(len(stats), -1)
        values = np.concatenate([stats[:, :n_hidden], weight, stats[:, -2:]], axis=1)
        per_step = values.shape[1]
        return (
            np.repeat([PHASES.index(row[0]) for row in self.stats], per_step),
            np.repeat([row[1] for row in self.stats], per_step),
            np.tile(layer, len(stats)),
            np.tile(quantity, len(stats)),
            values.ravel(),
        )

    def distributions(self) -> pd.DataFrame:
        if not self.samples:
            return empty_table("distributions")
        values = torch.cat([sample[4] for sample in self.samples]).float().cpu().numpy()
        size = values.shape[1]
        rows_per_call = [len(sample[2]) for sample in self.samples]
        return pd.DataFrame(
            {
                "phase": text_column(
                    PHASES,
                    np.repeat([PHASES.index(s[0]) for s in self.samples], rows_per_call).repeat(
                        size
                    ),
                ),
                "step": np.repeat([s[1] for s in self.samples], rows_per_call).repeat(size),
                "layer": np.concatenate([s[3] for s in self.samples]).repeat(size),
                "quantity": text_column(
                    probes.DISTRIBUTION_QUANTITIES,
                    np.concatenate([s[2] for s in self.samples]).repeat(size),
                ),
                "value": values.ravel(),
            }
        )


def keep_samples(
    logs: Sequence[ProbeLog],
    rows: Sequence[int],
    phase: str,
    step: int,
    per_quantity: Sequence[Sequence[Tensor]],
) -> None:
    """Keep a fixed-size random subset of each layer's values in each run's log, for
    distribution plots (drawn with replacement: cheap, and fine for a distribution sketch).

    Args:
        logs: The runs' logs; ``logs[i]`` samples replica ``rows[i]`` of every stack.
        per_quantity: For each of ``probes.DISTRIBUTION_QUANTITIES``, a (K, …) stack per layer.
    """
    quantities = [q for q, stacks in enumerate(per_quantity) for _ in stacks]
    layers = [layer for stacks in per_quantity for layer in range(1, len(stacks) + 1)]
    tensors = [t for stacks in per_quantity for t in stacks]
    if len(per_quantity) != len(probes.DISTRIBUTION_QUANTITIES) or not all(
        t.numel() for t in tensors
    ):
        raise ValueError("keep_samples needs a non-empty tensor per layer of each quantity")
    numels = torch.tensor([t[0].numel() for t in tensors])
    # each run draws from its own generator, so its samples do not depend on its group
    size = (len(tensors), logs[0].sample_size)
    draws = torch.stack(
        [torch.rand(size, dtype=torch.float64, generator=log.generator) for log in logs]
    )
    positions = (draws * numels[:, None]).long()  # within one replica's entries
    offsets = torch.tensor(rows)[:, None, None] * numels[:, None]
    at = (positions + offsets).to(tensors[0].device)  # within each whole stack, as if flat
    # one gather per tensor for all the runs, no copy of the tensors themselves
    values = torch.stack([torch.take(t, at[:, i]) for i, t in enumerate(tensors)], 1)
    for log, run_values in zip(logs, values, strict=True):
        log.samples.append((phase, step, quantities, layers, run_values))


@functools.cache
def _probe_row_layout(depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Layer and position in ``probes.QUANTITIES`` of each value of a probe step, in the order
    of ``ProbeLog.layer_stats``: hidden layers, weight layers with the head, the whole net."""
    n_hidden, n_weight, n_global = (
        len(q)
        for q in (probes.HIDDEN_QUANTITIES, probes.WEIGHT_QUANTITIES, probes.GLOBAL_QUANTITIES)
    )
    layer = np.concatenate(
        [
            np.repeat(np.arange(1, depth + 1), n_hidden),
            np.repeat(np.arange(1, depth + 2), n_weight),
            np.zeros(n_global, dtype=int),
        ]
    )
    quantity = np.concatenate(
        [
            np.tile(np.arange(n_hidden), depth),
            n_hidden + np.tile(np.arange(n_weight), depth + 1),
            n_hidden + n_weight + np.arange(n_global),
        ]
    )
    for shared in (layer, quantity):  # one pair serves every run of that depth
        shared.setflags(write=False)
    return layer, quantity


def probe_values(
    cap: probes.Capture,
    weight_grads: list[Tensor],
    grads: list[Tensor],
    loss: Tensor,
    traits: probes.ActivationTraits,
    workspace: probes.Workspace,
) -> Tensor:
    """(K, n) statistics available after backward, before the optimizer step and clipping:
    hidden-layer stats, weight-gradient stats, global gradient norm, loss (``ProbeLog.add``)."""
    hidden = probes.hidden_stats(cap, traits, workspace)
    weight = probes.weight_grad_stats(weight_grads)
    global_ = torch.stack([probes.global_grad_norm(grads), loss.detach()], 1)
    return torch.cat([hidden.flatten(1), weight.flatten(1), global_], 1)


def first_bad(losses: list[float], first_loss: float, factor: float) -> int | None:
    """Index of the first loss that is NaN/Inf or above ``factor`` times the first loss."""
    limit = factor * abs(first_loss)
    return next((i for i, v in enumerate(losses) if not math.isfinite(v) or v > limit), None)


# Runs that agree on these train together as one stacked model (see ``train_group``); the
# others (init, init_std, lr, weight_decay, schedule, clip, epochs, seed) may differ per replica.
GROUP_AXES = (
    "dataset",
    "input_norm",
    "activation",
    "norm_layer",
    "depth",
    "width",
    "batch_size",
    "optimizer",
    "log_every",
)


def group_runs(specs: Sequence[RunSpec], max_replicas: int) -> list[list[RunSpec]]:
    """Specs in groups that can train together, none above ``max_replicas``, biggest work first.

    A group too big is cut into near-equal parts (17 runs, at most 16: 9 + 8, not 16 + 1).
    """
    by_key: dict[tuple, list[RunSpec]] = {}
    for spec in specs:
        by_key.setdefault(tuple(getattr(spec, axis) for axis in GROUP_AXES), []).append(spec)
    groups = []
    for members in by_key.values():
        parts = math.ceil(len(members) / max_replicas)
        groups += [members[i::parts] for i in range(parts)]
    return sorted(groups, key=_group_work, reverse=True)


def _group_work(group: list[RunSpec]) -> float:
    # multiply-adds of a step times steps: sorting the biggest first balances the workers
    spec = group[0]
    per_step = spec.depth * spec.width * spec.width * spec.batch_size
    return per_step * len(group) * max(s.epochs for s in group)


def train_run(spec: RunSpec, data: TaskData, options: RunOptions = RunOptions()) -> RunResult:
    """Train one MLP as ``spec`` says: ``train_group`` with one replica."""
    return train_group([spec], data, options)[0]


def train_group(
    specs: Sequence[RunSpec], data: TaskData, options: RunOptions = RunOptions()
) -> list[RunResult]:
    """Train runs that agree on ``GROUP_AXES`` together, as one stacked model.

    Each replica keeps its own seed (init, batch order, probe batch), init, learning rate and
    schedule, weight decay, clipping, epochs and optimizer state, and gets the numbers it would
    get alone (to float rounding: ``tests/core/test_engine.py``). A replica that diverges is
    recorded at its step and dropped from the stack; the others go on unchanged.

    Never raises for a run that diverges (status ``diverged``) or fails (status ``failed``, the
    traceback in ``summary["error"]``): one run must not stop the grid.

    Args:
        specs: Run specs that agree on ``GROUP_AXES``.
        data: Train and validation tensors for their dataset and input_norm.
        options: Device, divergence threshold, probe batch size.
    Returns:
        One result per spec, in the order of ``specs``.
    """
    start = time.perf_counter()
    keys = {tuple(getattr(spec, axis) for axis in GROUP_AXES) for spec in specs}
    if len(keys) != 1:
        raise ValueError(f"a group's runs must agree on {GROUP_AXES}; got {sorted(keys)}")
    results: dict[str, RunResult] = {}
    replicas, models = [], []
    for spec in specs:
        try:
            replica, model = _setup(spec, data, options)
        except Exception:
            results[spec.run_id] = _failed(spec, start)
            continue
        replicas.append(replica)
        models.append(model)
    if replicas:
        try:
            _train_stack(replicas, models, data, options, start, results)
        except Exception:
            left = [r.spec for r in replicas if r.spec.run_id not in results]
            if len(specs) == 1:
                results[specs[0].run_id] = _failed(specs[0], start)
            else:  # one replica broke the stack: alone, only that one fails
                log.warning("group of %d raised; training its %d runs alone", len(specs), len(left))
                for spec in left:
                    results[spec.run_id] = train_run(spec, data, options)
    return [results[spec.run_id] for spec in specs]


def _failed(spec: RunSpec, start: float) -> RunResult:
    log.exception("run %s (%s) failed", spec.run_id, spec.label)
    return failed_result(spec, traceback.format_exc(), time.perf_counter() - start)


def failed_result(spec: RunSpec, error: str, wall_s: float | None = None) -> RunResult:
    """The result of a run that raised: status ``failed``, the traceback, no tables."""
    history, layer_stats, distributions = map(
        empty_table, ("history", "layer_stats", "distributions")
    )
    summary = {"error": error, "wall_s": wall_s, "ended_at": time.time()}
    return RunResult(spec.run_id, "failed", summary, history, layer_stats, distributions, {})


@dataclass
class _Replica:
    """What one run of a stacked group keeps for itself besides its slice of the tensors."""

    spec: RunSpec
    generator: torch.Generator  # probe batch, then each epoch's batch order
    probe_rows: Tensor
    probe_log: ProbeLog
    total_steps: int
    lrs: np.ndarray  # the learning rate of each step, and after the last one
    momenta: np.ndarray  # momentum (SGD, RMSprop) or β₁ (Adam) of each step
    checkpoints: set[int]  # steps whose distributions are sampled
    prediction: theory.ProfilePrediction | None = None
    history: list[tuple[int, str, float]] = field(default_factory=list)
    epoch_ended_at: list[float] = field(default_factory=list)  # unix seconds, per epoch
    grad_norms: list[float] = field(default_factory=list)
    first_loss: float | None = None
    diverged_step: int | None = None


def _setup(spec: RunSpec, data: TaskData, options: RunOptions) -> tuple[_Replica, MLP]:
    """One replica's model, initialized exactly as a lone run of ``spec`` would be."""
    seed_everything(spec.seed)
    generator = torch.Generator().manual_seed(spec.seed)
    n_train, d_in = data.x_train.shape
    probe_rows = torch.randperm(n_train, generator=generator)[: options.probe_batch_size]
    model = MLP(d_in, data.n_outputs, spec.depth, spec.width, spec.activation, spec.norm_layer)
    initialize(
        model,
        spec.init,
        spec.activation,
        spec.init_std or 0.0,
        generator,
        data_batch=data.x_train[probe_rows],
    )
    steps_per_epoch = math.ceil(n_train / spec.batch_size)
    total = spec.epochs * steps_per_epoch
    lrs, momenta = schedule_table(spec.optimizer, spec.schedule, spec.lr, total, steps_per_epoch)
    every = spec.log_every
    replica = _Replica(
        spec=spec,
        generator=generator,
        probe_rows=probe_rows,
        probe_log=ProbeLog(spec.depth, options.distribution_size, spec.seed),
        total_steps=total,
        lrs=lrs,
        momenta=momenta,
        checkpoints={0, total // 2 // every * every, (total - 1) // every * every},
    )
    return replica, model


def _replica_losses(out: Tensor, y: Tensor, task: str) -> Tensor:
    """Each replica's mean loss over its batch: (K, B, d_out), (K, B) → (K,)."""
    if task == "regression":
        return (out.squeeze(-1) - y).pow(2).mean(1)
    losses = nn.functional.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none")
    return losses.view(y.shape).mean(1)


@torch.no_grad()
def _evaluate(model: StackedMLP, task: str, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Each replica's validation loss and metric (R² or accuracy), (K,) each, on the device."""
    out = model.forward(x, training=False)
    y = y.expand(out.shape[0], *y.shape)
    loss = _replica_losses(out, y, task)
    if task == "regression":
        residual = (out.squeeze(-1) - y).pow(2).sum(1)
        metric = 1.0 - residual / (y - y.mean(1, keepdim=True)).pow(2).sum(1)
    else:
        metric = (out.argmax(-1) == y).float().mean(1)
    return loss, metric


class _Stack:
    """The tensors of the replicas still training, and the replicas in the same order."""

    def __init__(self, replicas: list[_Replica], model: StackedMLP, device: torch.device):
        self.replicas, self.model = replicas, model
        self.size = len(replicas)  # at the start: the runs that shared each step's time
        specs = [r.spec for r in replicas]
        width = max(r.total_steps for r in replicas) + 1

        def table(rows: list[np.ndarray]) -> Tensor:  # padded with each row's last value
            padded = [np.pad(row, (0, width - len(row)), mode="edge") for row in rows]
            return torch.tensor(np.stack(padded), dtype=torch.float64, device=device)

        self.lrs = table([r.lrs for r in replicas])
        self.momenta = table([r.momenta for r in replicas])
        wd = torch.tensor([s.weight_decay for s in specs], dtype=torch.float64, device=device)
        uses_momentum = any(bool(np.any(r.momenta)) for r in replicas)  # no device sync a step
        self.optimizer = ReplicaOptimizer(specs[0].optimizer, model.params(), wd, uses_momentum)
        clips = [math.inf if s.clip is None else s.clip for s in specs]
        self.clips = torch.tensor(clips, dtype=torch.float32, device=device)
        self.clipping = any(s.clip is not None for s in specs)
        self.losses = torch.zeros(len(replicas), width, device=device)  # read at log steps only
        self.order = torch.empty(0, dtype=torch.long)  # each replica's batch order this epoch

    def keep(self, index: list[int]) -> None:
        """Keep only the replicas at ``index`` (the others finished or diverged)."""
        self.replicas = [self.replicas[i] for i in index]
        if not index:
            return
        rows = torch.tensor(index, dtype=torch.long, device=self.losses.device)
        self.model.keep(rows)
        self.optimizer.keep(rows, self.model.params())
        self.lrs, self.momenta = self.lrs[rows], self.momenta[rows]
        self.clips, self.losses = self.clips[rows], self.losses[rows]
        self.order = self.order[rows]
        self.clipping = any(r.spec.clip is not None for r in self.replicas)


def _train_stack(
    replicas: list[_Replica],
    models: list[MLP],
    data: TaskData,
    options: RunOptions,
    start: float,
    results: dict[str, RunResult],
) -> None:
    """The training loop of a group: one step of every replica at a time, one loop over steps."""
    device = resolve_device(options.device)
    first = replicas[0].spec
    model = StackedMLP(models, first.activation, first.norm_layer).to(device)
    stack = _Stack(replicas, model, device)
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_val, y_val = data.x_val.to(device), data.y_val.to(device)
    traits = probes.ACTIVATION_TRAITS[first.activation]
    workspace = probes.Workspace()
    n_train, batch_size = len(x_train), first.batch_size
    steps_per_epoch = math.ceil(n_train / batch_size)

    if options.probe:
        _probe_at_init(stack, data, x_train, y_train, traits, workspace)

    checked = 0  # every replica's losses[:checked] have been checked for divergence
    for step in range(max(r.total_steps for r in replicas)):
        epoch, batch = divmod(step, steps_per_epoch)
        if batch == 0:
            stack.order = torch.stack(
                [torch.randperm(n_train, generator=r.generator) for r in stack.replicas]
            ).to(device)
        rows = stack.order[:, batch * batch_size : (batch + 1) * batch_size]
        x, y = x_train[rows], y_train[rows]  # (K, B, d_in), (K, B)
        probing = options.probe and step % first.log_every == 0
        cap = probes.Capture() if probing else None
        params = model.params()
        loss = _replica_losses(model.forward(x, True, cap.add if cap else None), y, data.task)
        grads = list(torch.autograd.grad(loss.sum(), params))
        stack.losses[:, step] = loss.detach()
        if cap is not None:
            weight_grads = [grads[i] for i in model.weight_positions]
            stats = probe_values(cap, weight_grads, grads, loss, traits, workspace)
            before = probes.snapshot(model.weights())
            at = [k for k, replica in enumerate(stack.replicas) if step in replica.checkpoints]
            if at:
                _keep_samples([stack.replicas[k] for k in at], at, "train", step, cap, weight_grads)
        if stack.clipping:
            _clip(grads, stack.clips)
        stack.optimizer.step(grads, stack.lrs[:, step], stack.momenta[:, step])

        if cap is not None:
            update = probes.update_ratios(before, model.weights())
            diverged = _log_probe_step(stack, stats, update, step, checked, options)
            checked = step + 1
            _retire(stack, diverged, data, step + 1, start, results)
        if batch == steps_per_epoch - 1 and stack.replicas:
            ended = _end_epoch(stack, data.task, (x_val, y_val), epoch, step, checked, options)
            checked = step + 1
            _retire(stack, ended, data, step + 1, start, results)
        if not stack.replicas:
            return


def _log_probe_step(
    stack: _Stack, stats: Tensor, update: Tensor, step: int, checked: int, options: RunOptions
) -> list[int]:
    """Keep each replica's probe values of ``step`` and check its losses since ``checked``.

    Returns:
        The positions of the replicas that diverged.
    """
    # the one host sync of this log step: statistics and the losses since last time
    values = torch.cat([stats, update, stack.losses[:, checked : step + 1]], 1).tolist()
    n_stats, n_update = stats.shape[1], update.shape[1]
    diverged = []
    for k, (replica, row) in enumerate(zip(stack.replicas, values, strict=True)):
        probed, updates, recent = (
            row[:n_stats],
            row[n_stats : n_stats + n_update],
            row[n_stats + n_update :],
        )
        replica.probe_log.add("train", step, probed, updates)
        grad_norm = probed[-2]  # probe_values ends with the global gradient norm and the loss
        replica.grad_norms.append(grad_norm)
        if replica.first_loss is None:  # step 0 is probed
            replica.first_loss = recent[0]
        bad = first_bad(recent, replica.first_loss, options.divergence_factor)
        if bad is None and not math.isfinite(grad_norm):
            bad = len(recent) - 1
        if bad is not None:
            replica.diverged_step = checked + bad
            diverged.append(k)
    return diverged


def _end_epoch(
    stack: _Stack,
    task: str,
    val: tuple[Tensor, Tensor],
    epoch: int,
    step: int,
    checked: int,
    options: RunOptions,
) -> list[int]:
    """Validate every replica after epoch ``epoch`` (0-based), whose last step is ``step``.

    Returns:
        The positions of the replicas that ended: diverged, or done with their epochs.
    """
    val_loss, val_metric = _evaluate(stack.model, task, *val)
    epoch_start = (step + 1) // (epoch + 1) * epoch  # every epoch has the same steps
    per_replica = torch.stack(
        [stack.losses[:, epoch_start : step + 1].mean(1), val_loss, val_metric], 1
    ).double()
    lr = stack.lrs[:, step + 1, None]  # after the schedule's step, as torch's optimizer holds it
    # the one host sync of the epoch: its summary values and the losses not checked yet
    values = torch.cat([per_replica, lr, stack.losses[:, checked : step + 1].double()], 1).tolist()
    now = time.time()
    ended = []
    for k, (replica, row) in enumerate(zip(stack.replicas, values, strict=True)):
        recent = row[4:]
        if replica.first_loss is None:  # not probing: nothing has read a loss before
            replica.first_loss = recent[0]
        bad = first_bad(recent, replica.first_loss, options.divergence_factor)
        if bad is None and not all(math.isfinite(v) for v in row[:2]):
            bad = step - checked
        if bad is not None:
            replica.diverged_step = checked + bad
            ended.append(k)
            continue
        grad_norm = float(np.mean(replica.grad_norms)) if replica.grad_norms else math.nan
        replica.grad_norms.clear()
        names = ("train_loss", "val_loss", "val_metric", "lr", "grad_norm")
        values_now = (*row[:4], grad_norm)
        replica.history += [
            (epoch + 1, name, value) for name, value in zip(names, values_now, strict=True)
        ]
        replica.epoch_ended_at.append(now)
        if epoch + 1 == replica.spec.epochs:
            ended.append(k)
    return ended


def _probe_at_init(
    stack: _Stack,
    data: TaskData,
    x_train: Tensor,
    y_train: Tensor,
    traits: probes.ActivationTraits,
    workspace: probes.Workspace,
) -> None:
    """Phase ``init``: one forward/backward on each replica's probe batch, no optimizer step.

    Keeps each replica's statistics, distribution samples and mean-field prediction. BatchNorm's
    running statistics are put back, so probing leaves the model as it was.
    """
    model = stack.model
    buffers = {name: t.clone() for name, t in model.tensors.items() if not t.requires_grad}
    rows = torch.stack([r.probe_rows for r in stack.replicas]).to(x_train.device)
    x_probe, y_probe = x_train[rows], y_train[rows]
    cap = probes.Capture()
    loss = _replica_losses(model.forward(x_probe, True, cap.add), y_probe, data.task)
    grads = list(torch.autograd.grad(loss.sum(), model.params()))
    weight_grads = [grads[i] for i in model.weight_positions]
    stats = probe_values(cap, weight_grads, grads, loss, traits, workspace)
    q_in = x_probe.pow(2).mean((1, 2))  # mean squared input coordinate, for the theory
    values = torch.cat([stats, q_in[:, None]], 1).tolist()
    for replica, row in zip(stack.replicas, values, strict=True):
        replica.probe_log.add("init", 0, row[:-1], [])
    _keep_samples(stack.replicas, range(len(stack.replicas)), "init", 0, cap, weight_grads)
    _set_predictions(stack.replicas, data, [row[-1] for row in values])
    with torch.no_grad():
        for name, saved in buffers.items():
            model.tensors[name].copy_(saved)


def _keep_samples(
    replicas: Sequence[_Replica],
    rows: Sequence[int],
    phase: str,
    step: int,
    cap: probes.Capture,
    weight_grads: list[Tensor],
) -> None:
    grads = cast(list[Tensor], cap.grads)  # every one set by the backward pass
    tensors = (grads, cap.preacts, cap.acts, weight_grads)  # DISTRIBUTION_QUANTITIES
    keep_samples([r.probe_log for r in replicas], rows, phase, step, tensors)


def _clip(grads: list[Tensor], max_norms: Tensor) -> None:
    """Scale each replica's gradients to its global norm ``max_norms`` (inf: no clipping), as
    ``nn.utils.clip_grad_norm_`` does to one model's."""
    scale = (max_norms / (probes.global_grad_norm(grads) + 1e-6)).clamp(max=1.0)
    for grad in grads:
        grad.mul_(scale.view(-1, *[1] * (grad.dim() - 1)))


def _retire(
    stack: _Stack,
    ended: list[int],
    data: TaskData,
    steps: int,
    start: float,
    results: dict[str, RunResult],
) -> None:
    """Make the results of the replicas at ``ended`` and drop them from the stack."""
    if not ended:
        return
    for k in ended:
        replica = stack.replicas[k]
        spec, probe_log, prediction = replica.spec, replica.probe_log, replica.prediction
        status = "diverged" if replica.diverged_step is not None else "finished"
        summary = _summary(
            data, replica.history, probe_log, status, replica.diverged_step, steps, start
        )
        summary["replicas"] = stack.size
        # when each epoch ended, for MLflow's metric timestamps
        summary["epoch_ended_at"] = replica.epoch_ended_at
        summary["steps_per_epoch"] = math.ceil(len(data.x_train) / spec.batch_size)
        init_rms = probe_log.hidden("init", "grad_preact_rms")
        summary.update(_theory_summary(spec, prediction, init_rms))
        results[spec.run_id] = RunResult(
            spec.run_id,
            status,
            summary,
            pd.DataFrame(replica.history, columns=list(HISTORY_COLUMNS)),
            probe_log.layer_stats(prediction),
            probe_log.distributions(),
            stack.model.state_dict(k),
        )
    stack.keep([k for k in range(len(stack.replicas)) if k not in ended])


def _set_predictions(replicas: list[_Replica], data: TaskData, q_ins: list[float]) -> None:
    """Each replica's mean-field prediction at init, where it applies: no normalization layer,
    an a-priori init. One vectorised solve for the group: its runs share activation, depth and
    width (``GROUP_AXES``), the shape the prediction needs besides init and input."""
    applies = [
        (replica, q_in)
        for replica, q_in in zip(replicas, q_ins, strict=True)
        if replica.spec.norm_layer == "none" and replica.spec.init != "lsuv"
    ]
    if not applies:
        return
    spec = applies[0][0].spec
    widths = [data.x_train.shape[1], *[spec.width] * spec.depth, data.n_outputs]
    nets = [(r.spec.init, r.spec.init_std, q_in) for r, q_in in applies]
    predictions = theory.predict_profiles(spec.activation, widths, nets)
    for (replica, _), prediction in zip(applies, predictions, strict=True):
        replica.prediction = prediction


def _theory_rows(prediction: theory.ProfilePrediction | None) -> tuple[np.ndarray, ...]:
    """``ProbeLog._probe_rows``' columns for phase ``theory``: ``THEORY_QUANTITIES`` per hidden
    layer."""
    if prediction is None:
        return _no_rows()
    depth, n = len(prediction.q), len(THEORY_QUANTITIES)
    codes = [LAYER_QUANTITIES.index(q) for q in THEORY_QUANTITIES]
    return (
        np.full(depth * n, PHASES.index("theory")),
        np.zeros(depth * n, dtype=np.int64),
        np.tile(np.arange(1, depth + 1), n),
        np.repeat(codes, depth),
        np.concatenate([prediction.grad_rms, np.sqrt(prediction.q), prediction.chi1]),
    )


def _no_rows() -> tuple[np.ndarray, ...]:
    integers = np.zeros(0, dtype=np.int64)
    return integers, integers, integers, integers, np.zeros(0)


def _theory_summary(
    spec: RunSpec, prediction: theory.ProfilePrediction | None, rms: np.ndarray
) -> dict[str, Any]:
    """Measured (from ``rms``, ∂L/∂h RMS per hidden layer at init) beside predicted profile."""
    with np.errstate(divide="ignore", invalid="ignore"):
        measured = theory.log_slope(rms) if len(rms) >= 2 and (rms > 0).all() else math.nan
    if prediction is None:
        predicted = dict.fromkeys(
            ("log_slope", "first_last_ratio", "chi1", "depth_scale", "sigma_w2", "sigma_b2"),
            math.nan,
        )
    else:
        sigma_w2, sigma_b2 = theory.init_variances(
            spec.init, spec.activation, spec.width, spec.width, std=spec.init_std
        )
        predicted = {
            "log_slope": prediction.log_slope,
            "first_last_ratio": prediction.first_last_ratio,
            "chi1": prediction.chi1_fixed_point,
            "depth_scale": prediction.depth_scale,
            "sigma_w2": sigma_w2,
            "sigma_b2": sigma_b2,
        }
    return {
        "measured_log_slope": measured,
        **{f"theory_{key}": float(value) for key, value in predicted.items()},
        "theory_verdict": init_verdict(predicted["first_last_ratio"]),
    }


def _summary(
    data: TaskData,
    history: list[tuple[int, str, float]],
    probe_log: ProbeLog,
    status: str,
    diverged_step: int | None,
    steps: int,
    start: float,
) -> dict[str, Any]:
    last = {name: value for _, name, value in history}  # the last epoch wins
    wall = time.perf_counter() - start
    at = probe_log.hidden

    init_ratio = first_last_ratio(at("init", "grad_preact_rms"))
    end_ratio = first_last_ratio(at("train", "grad_preact_rms"))
    saturation = at("train", "act_saturation")
    dead = at("train", "act_dead_frac")
    end_saturation = float(np.mean(saturation)) if len(saturation) else math.nan
    end_dead = float(np.mean(dead)) if len(dead) else math.nan
    summary = {
        "status": status,
        "diverged_step": diverged_step,
        "metric_name": METRIC_NAMES[data.task],
        "final_train_loss": last.get("train_loss", math.nan),
        "final_val_loss": last.get("val_loss", math.nan),
        "final_val_metric": last.get("val_metric", math.nan),
        "epochs_done": max((epoch for epoch, _, _ in history), default=0),
        "steps": steps,
        "wall_s": wall,
        "ended_at": time.time(),  # unix seconds: with wall_s, when the run trained
        "steps_per_s": steps / wall if wall > 0 else math.nan,
        "init_grad_ratio": init_ratio,
        "end_grad_ratio": end_ratio,
        "end_saturation": end_saturation,
        "end_dead_frac": end_dead,
        "error": None,
    }
    return {**summary, **verdicts_of(summary)}
