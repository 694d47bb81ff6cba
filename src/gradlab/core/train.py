"""The training engine: groups of same-shape runs trained as one stacked model.

``train_group(specs, data, options)`` (and ``train_run`` for one spec) is a picklable function of
its arguments, so any executor (in-process, a process pool, a cluster) can run it and get
identical numbers on CPU. Runs that agree on ``GROUP_AXES`` train together: for the small MLPs
of a grid a training step costs kernel launches, not arithmetic, so K stacked replicas cost
little more than one (``benchmarks/engine_throughput.py``).

The loop is ``_train_stack``: forward, backward, record, clip, step, check. What it records is in
``gradlab.core.recording``, when a run has diverged in ``gradlab.core.divergence``, what a run
leaves behind in ``gradlab.core.results``.
"""

import logging
import math
import random
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from gradlab.core import probes, recording, spectrum, theory
from gradlab.core.activations import get_activation
from gradlab.core.architectures import get_architecture
from gradlab.core.divergence import DivergenceMonitor
from gradlab.core.grid import RunSpec
from gradlab.core.inits import initialize
from gradlab.core.models import MLP, StackedNet
from gradlab.core.recording import ProbeLog
from gradlab.core.replica_optim import ReplicaOptimizer, schedule_table
from gradlab.core.residual import ResMLP
from gradlab.core.results import Ending, RunResult, failed_result, run_result
from gradlab.core.task import RunOptions, TaskData, resolve_device

__all__ = [
    "GROUP_AXES",
    "RunOptions",
    "RunResult",
    "TaskData",
    "failed_result",
    "group_runs",
    "train_group",
    "train_run",
]

log = logging.getLogger(__name__)

# Runs that agree on these train together as one stacked model (see ``train_group``); the
# others (init, init_std, bias_std, residual_scale, lr, weight_decay, schedule, clip, epochs, seed)
# may differ per replica.
GROUP_AXES = (
    "dataset",
    "input_norm",
    "activation",
    "norm_layer",
    "arch",
    "residual_branch",
    "residual_learnable",  # a fixed α may differ per replica, a learned one is a parameter
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
    """Train one net as ``spec`` says: ``train_group`` with one replica."""
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
            stack = _Stack(replicas, models, len(data.x_train), options)
            _train_stack(stack, data, options, start, results)
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


def _train_stack(
    stack: "_Stack",
    data: TaskData,
    options: RunOptions,
    start: float,
    results: dict[str, RunResult],
) -> None:
    """The training loop of a group: one step of every replica at a time."""
    model, device, spec = stack.model, stack.device, stack.replicas[0].spec
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    val = data.x_val.to(device), data.y_val.to(device)
    steps_per_epoch = math.ceil(len(x_train) / spec.batch_size)
    if options.probe:
        _probe_at_init(stack, data, x_train, y_train)

    for step in range(max(r.total_steps for r in stack.replicas)):
        epoch, batch = divmod(step, steps_per_epoch)
        rows = stack.batch_rows(batch, spec.batch_size)
        x, y = x_train[rows], y_train[rows]  # (K, B, d_in), (K, B)
        probing = options.probe and step % spec.log_every == 0
        cap = probes.Capture() if probing else None

        out = model.forward(x, True, *cap.hooks() if cap else ())  # forward
        loss = _replica_losses(out, y, data.task)
        grads = list(torch.autograd.grad(loss.sum(), model.params()))  # backward
        stack.losses[:, step] = loss.detach()
        if cap is not None:  # record, before clipping changes the gradients
            stats, before = _record(stack, cap, grads, loss, step)
            _spectra_at_checkpoints(stack, x_train, step)
        if stack.clipping:  # clip
            _clip(grads, stack.clips)
        stack.optimizer.step(grads, stack.lrs[:, step], stack.momenta[:, step])  # step

        if cap is not None:  # check
            stats["update_ratio"] = probes.update_ratios(before, model.weights())
            diverged = _log_probe_step(stack, stats, step)
            results.update(_retire(stack, diverged, data, step + 1, start))
        if batch == steps_per_epoch - 1 and stack.replicas:
            ended = _end_epoch(stack, data.task, val, epoch, step)
            results.update(_retire(stack, ended, data, step + 1, start))
        if not stack.replicas:
            return


def _record(
    stack: "_Stack", cap: probes.Capture, grads: list[Tensor], loss: Tensor, step: int
) -> tuple[dict[str, Tensor], list[Tensor]]:
    """A probe step's statistics and the weights before the step (for ``update_ratio``); the
    distribution samples of the replicas with a checkpoint at ``step``."""
    model = stack.model
    weight_grads = [grads[i] for i in model.weight_positions]
    stats = stack.probe.measure(cap, grads, weight_grads, loss)
    at = [k for k, replica in enumerate(stack.replicas) if step in replica.checkpoints]
    if at:
        logs = [stack.replicas[k].probe_log for k in at]
        samples = recording.sample_tensors(cap, weight_grads)
        recording.keep_samples(logs, at, "train", step, samples)
    return stats, probes.snapshot(model.weights())


def _spectra_at_checkpoints(stack: "_Stack", x_train: Tensor, step: int) -> None:
    """The Jacobian spectra of the replicas with a checkpoint at ``step`` (after init's), when
    asked for, at their probe inputs."""
    if not stack.spectrum_checkpoints or step == 0:  # step 0's weights are init's
        return
    at = [k for k, replica in enumerate(stack.replicas) if step in replica.checkpoints]
    if at:
        _measure_spectra(stack, x_train, at, ("train", step))


def _measure_spectra(
    stack: "_Stack", x_train: Tensor, at: list[int], when: tuple[str, int]
) -> None:
    """The Jacobian spectra of replicas ``at`` at the first inputs of their probe batches."""
    rows = torch.stack([stack.replicas[k].probe_rows[: stack.spectrum_points] for k in at])
    logs = [stack.replicas[k].probe_log.spectrum for k in at]
    points = x_train[rows.to(x_train.device)]
    spectrum.measure(stack.model, points, stack.stream, logs, when, at)


def _log_probe_step(stack: "_Stack", stats: dict[str, Tensor], step: int) -> list[int]:
    """Keep each replica's probe values of ``step`` and check its losses since the last check.

    Returns:
        The positions of the replicas that diverged.
    """
    layout = stack.layout
    # the one host sync of this log step: statistics and the losses since last time
    probed = layout.row(stats)
    values = torch.cat([probed, stack.losses[:, stack.checked : step + 1]], 1).tolist()
    width, grad_norm_at = probed.shape[1], int(layout.positions("grad_global_norm")[0])
    diverged = []
    for k, (replica, row) in enumerate(zip(stack.replicas, values, strict=True)):
        replica.probe_log.add("train", step, row[:width])
        grad_norm = row[grad_norm_at]
        replica.grad_norms.append(grad_norm)
        if replica.divergence.check(row[width:], stack.checked, math.isfinite(grad_norm)):
            diverged.append(k)
    stack.checked = step + 1
    return diverged


def _end_epoch(
    stack: "_Stack", task: str, val: tuple[Tensor, Tensor], epoch: int, step: int
) -> list[int]:
    """Validate every replica after epoch ``epoch`` (0-based), whose last step is ``step``.

    Returns:
        The positions of the replicas that ended: diverged, or done with their epochs.
    """
    val_loss, val_metric = _evaluate(stack.model, task, *val)
    epoch_start = (step + 1) // (epoch + 1) * epoch  # every epoch has the same steps
    lr = stack.lrs[:, step + 1]  # after the schedule's step, as torch's optimizer holds it
    measured = {
        "train_loss": stack.losses[:, epoch_start : step + 1].mean(1).double(),
        "val_loss": val_loss.double(),
        "val_metric": val_metric.double(),
        "lr": lr,
    }
    # the one host sync of the epoch: its summary values and the losses not checked yet
    recent = stack.losses[:, stack.checked : step + 1].double()
    values = torch.cat([torch.stack(list(measured.values()), 1), recent], 1).tolist()
    now, n = time.time(), len(measured)
    ended = []
    for k, (replica, row) in enumerate(zip(stack.replicas, values, strict=True)):
        epoch_values = dict(zip(measured, row[:n], strict=True))
        finite = math.isfinite(epoch_values["train_loss"]) and math.isfinite(
            epoch_values["val_loss"]
        )
        if replica.divergence.check(row[n:], stack.checked, finite):
            ended.append(k)
            continue
        grad_norms = replica.grad_norms
        epoch_values["grad_norm"] = float(np.mean(grad_norms)) if grad_norms else math.nan
        grad_norms.clear()
        replica.history += [(epoch + 1, name, value) for name, value in epoch_values.items()]
        replica.epoch_ended_at.append(now)
        if epoch + 1 == replica.spec.epochs:
            ended.append(k)
    stack.checked = step + 1
    return ended


def _probe_at_init(stack: "_Stack", data: TaskData, x_train: Tensor, y_train: Tensor) -> None:
    """Phase ``init``: one forward/backward on each replica's probe batch, no optimizer step.

    Keeps each replica's statistics, distribution samples and mean-field prediction. BatchNorm's
    running statistics are put back, so probing leaves the model as it was.
    """
    model = stack.model
    buffers = {name: t.clone() for name, t in model.tensors.items() if not t.requires_grad}
    rows = torch.stack([r.probe_rows for r in stack.replicas]).to(x_train.device)
    x_probe, y_probe = x_train[rows], y_train[rows]
    cap = probes.Capture()
    loss = _replica_losses(model.forward(x_probe, True, *cap.hooks()), y_probe, data.task)
    grads = list(torch.autograd.grad(loss.sum(), model.params()))
    weight_grads = [grads[i] for i in model.weight_positions]
    stats = stack.probe.measure(cap, grads, weight_grads, loss)
    weight_layers = len(model.weight_names)
    stats["update_ratio"] = recording.nan_updates(len(stack.replicas), weight_layers, stack.device)
    q_in = x_probe.pow(2).mean((1, 2))  # mean squared input coordinate, for the theory
    values = torch.cat([stack.layout.row(stats), q_in[:, None]], 1).tolist()
    for replica, row in zip(stack.replicas, values, strict=True):
        replica.probe_log.add("init", 0, row[:-1])
    logs = [r.probe_log for r in stack.replicas]
    samples = recording.sample_tensors(cap, weight_grads)
    recording.keep_samples(logs, range(len(logs)), "init", 0, samples)
    _set_predictions(stack.replicas, data, [row[-1] for row in values])
    if stack.spectrum_points:
        _measure_spectra(stack, x_train, list(range(len(stack.replicas))), ("init", 0))
    with torch.no_grad():
        for name, saved in buffers.items():
            model.tensors[name].copy_(saved)


def _clip(grads: list[Tensor], max_norms: Tensor) -> None:
    """Scale each replica's gradients to its global norm ``max_norms`` (inf: no clipping), as
    ``nn.utils.clip_grad_norm_`` does to one model's."""
    scale = (max_norms / (probes.global_grad_norm(grads) + 1e-6)).clamp(max=1.0)
    for grad in grads:
        grad.mul_(scale.view(-1, *[1] * (grad.dim() - 1)))


def _retire(
    stack: "_Stack", ended: list[int], data: TaskData, steps: int, start: float
) -> dict[str, RunResult]:
    """The results of the replicas at ``ended``, by run id; they leave the stack."""
    results: dict[str, RunResult] = {}
    if not ended:
        return results
    for k in ended:
        replica = stack.replicas[k]
        spec = replica.spec
        ending = Ending(
            diverged_step=replica.divergence.step,
            steps=steps,
            steps_per_epoch=math.ceil(len(data.x_train) / spec.batch_size),
            replicas=stack.size,
            start=start,
            epoch_ended_at=replica.epoch_ended_at,
        )
        results[spec.run_id] = run_result(
            spec,
            data.task,
            replica.history,
            replica.probe_log,
            replica.prediction,
            ending,
            stack.model.state_dict(k),
        )
    stack.keep([k for k in range(len(stack.replicas)) if k not in ended])
    return results


def _set_predictions(replicas: list["_Replica"], data: TaskData, q_ins: list[float]) -> None:
    """Each replica's mean-field prediction at init, where its architecture has one."""
    specs = [replica.spec for replica in replicas]
    predict = get_architecture(specs[0].arch).predict
    batch = len(replicas[0].probe_rows)  # every replica's probe batch has this many rows
    predictions = predict(specs, q_ins, data.x_train.shape[1], data.n_outputs, batch)
    for replica, prediction in zip(replicas, predictions, strict=True):
        replica.prediction = prediction


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch's CPU generator (for anything that does not take an explicit
    generator; models are built on the CPU). ``torch.manual_seed`` would also queue a seed for
    each accelerator not yet initialized, recording a stack trace for each: 0.4 ms a run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)


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
    divergence: DivergenceMonitor
    prediction: theory.ProfilePrediction | None = None
    history: list[tuple[int, str, float]] = field(default_factory=list)
    epoch_ended_at: list[float] = field(default_factory=list)  # unix seconds, per epoch
    grad_norms: list[float] = field(default_factory=list)


def _setup(spec: RunSpec, data: TaskData, options: RunOptions) -> tuple[_Replica, MLP | ResMLP]:
    """One replica's model, initialized exactly as a lone run of ``spec`` would be."""
    seed_everything(spec.seed)
    generator = torch.Generator().manual_seed(spec.seed)
    n_train, d_in = data.x_train.shape
    probe_rows = torch.randperm(n_train, generator=generator)[: options.probe_batch_size]
    arch = get_architecture(spec.arch)
    model = arch.build(d_in, data.n_outputs, spec)
    initialize(
        model,
        spec.init,
        spec.activation,
        spec.init_std or 0.0,
        generator,
        data_batch=data.x_train[probe_rows],
        bias_std=spec.bias_std,
        gain=spec.weight_gain,
    )
    steps_per_epoch = math.ceil(n_train / spec.batch_size)
    total = spec.epochs * steps_per_epoch
    lrs, momenta = schedule_table(spec.optimizer, spec.schedule, spec.lr, total, steps_per_epoch)
    every = spec.log_every
    replica = _Replica(
        spec=spec,
        generator=generator,
        probe_rows=probe_rows,
        probe_log=ProbeLog(spec.depth, options.distribution_size, spec.seed, arch.stream),
        total_steps=total,
        lrs=lrs,
        momenta=momenta,
        checkpoints={0, total // 2 // every * every, (total - 1) // every * every},
        divergence=DivergenceMonitor(options.divergence_factor),
    )
    return replica, model


def _replica_losses(out: Tensor, y: Tensor, task: str) -> Tensor:
    """Each replica's mean loss over its batch: (K, B, d_out), (K, B) → (K,)."""
    if task == "regression":
        return (out.squeeze(-1) - y).pow(2).mean(1)
    losses = nn.functional.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none")
    return losses.view(y.shape).mean(1)


@torch.no_grad()
def _evaluate(model: StackedNet, task: str, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
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
    """The replicas still training, in order, with their stacked model, optimizer and tables."""

    def __init__(
        self,
        replicas: list[_Replica],
        models: list[MLP | ResMLP],
        n_train: int,
        options: RunOptions,
    ):
        first = replicas[0].spec
        self.n_train = n_train
        self.device = device = resolve_device(options.device)
        self.replicas = replicas
        arch = get_architecture(first.arch)
        self.model = arch.stacked(models, first.activation, first.norm_layer).to(device)
        self.stream = arch.stream
        # the Jacobian's spectrum, where a sample's Jacobian is its own (no BatchNorm)
        measured = options.probe and spectrum.measurable(first.norm_layer)
        self.spectrum_points = options.spectrum_points if measured else 0
        self.spectrum_checkpoints = options.spectrum_checkpoints and self.spectrum_points > 0
        self.probe = recording.Probe(get_activation(first.activation), probes.Workspace())
        self.layout = replicas[0].probe_log.layout
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
        params = self.model.params()
        self.optimizer = ReplicaOptimizer(first.optimizer, params, wd, uses_momentum)
        clips = [math.inf if s.clip is None else s.clip for s in specs]
        self.clips = torch.tensor(clips, dtype=torch.float32, device=device)
        self.clipping = any(s.clip is not None for s in specs)
        self.losses = torch.zeros(len(replicas), width, device=device)  # read at log steps only
        self.checked = 0  # every replica's losses[:checked] have been checked for divergence
        self.order = torch.empty(0, dtype=torch.long)  # each replica's batch order this epoch

    def batch_rows(self, batch: int, batch_size: int) -> Tensor:
        """Each replica's training rows of batch ``batch`` of this epoch: (K, B); a new epoch
        (batch 0) draws each replica's order from its own generator."""
        if batch == 0:
            self.order = torch.stack(
                [torch.randperm(self.n_train, generator=r.generator) for r in self.replicas]
            ).to(self.device)
        return self.order[:, batch * batch_size : (batch + 1) * batch_size]

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
