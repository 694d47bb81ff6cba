"""The one-model training loop gradlab had before the stacked engine, kept as the reference
the engine is checked against (``test_engine.py``): an ``nn.Module`` MLP, ``torch.optim`` and
``torch.optim.lr_scheduler``, hooks for the probes. It is not used by gradlab itself."""

import math
import time
from contextlib import nullcontext

import pandas as pd
import torch
from torch import Tensor, nn

from gradlab.core import probes, theory
from gradlab.core.grid import RunSpec
from gradlab.core.inits import initialize
from gradlab.core.models import MLP
from gradlab.core.optim import OPTIMIZERS, SCHEDULES
from gradlab.core.train import (
    ProbeLog,
    RunOptions,
    RunResult,
    TaskData,
    _summary,
    _theory_summary,
    first_bad,
    keep_samples,
    probe_values,
    seed_everything,
)


def _loss_fn(task: str) -> nn.Module:
    return nn.MSELoss() if task == "regression" else nn.CrossEntropyLoss()


def _predict_alone(
    spec: RunSpec, d_in: int, d_out: int, q_in: float
) -> theory.ProfilePrediction | None:
    """The mean-field prediction of one run by itself (the engine solves a group's at once)."""
    if spec.norm_layer != "none" or spec.init == "lsuv":
        return None
    widths = [d_in, *[spec.width] * spec.depth, d_out]
    return theory.predict_profile(spec.activation, spec.init, widths, q_in, std=spec.init_std)


def _prediction(out: Tensor, task: str) -> Tensor:
    return out.squeeze(-1) if task == "regression" else out


@torch.no_grad()
def _evaluate(model: MLP, task: str, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    model.eval()
    out = _prediction(model(x), task)
    loss = _loss_fn(task)(out, y)
    if task == "regression":
        metric = 1.0 - (out - y).pow(2).sum() / (y - y.mean()).pow(2).sum()
    else:
        metric = (out.argmax(1) == y).float().mean()
    model.train()
    return loss, metric


class _Probe:
    """The probes of one module model, through the stacked functions with K = 1."""

    def __init__(self, model: MLP, spec: RunSpec, options: RunOptions):
        self.params = list(model.parameters())
        self.weights = [layer.weight for layer in model.all_linears()]
        self.traits = probes.ACTIVATION_TRAITS[spec.activation]
        self.workspace = probes.Workspace()
        self.log = ProbeLog(spec.depth, options.distribution_size, spec.seed)

    def values(self, cap: probes.Capture, loss: Tensor) -> Tensor:
        grads = [p.grad.unsqueeze(0) for p in self.params]
        # in the stack's layout, (1, in, out): the quantile subset picks the same entries
        weight_grads = [w.grad.t().unsqueeze(0) for w in self.weights]
        return probe_values(cap, weight_grads, grads, loss.reshape(1), self.traits, self.workspace)[
            0
        ]

    def keep_samples(self, phase: str, step: int, cap: probes.Capture) -> None:
        tensors = (cap.grads, cap.preacts, cap.acts, [w.grad.t()[None] for w in self.weights])
        keep_samples([self.log], [0], phase, step, tensors)


def solo_train(spec: RunSpec, data: TaskData, options: RunOptions = RunOptions()) -> RunResult:
    """Train one run alone, as gradlab did before ``train_group`` (no failure handling)."""
    start = time.perf_counter()
    seed_everything(spec.seed)
    generator = torch.Generator().manual_seed(spec.seed)
    d_in = data.x_train.shape[1]
    n_train = len(data.x_train)
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
    model.train()
    loss_fn = _loss_fn(data.task)
    optimizer = OPTIMIZERS[spec.optimizer](model.parameters(), spec.lr, spec.weight_decay)
    steps_per_epoch = math.ceil(n_train / spec.batch_size)
    total_steps = spec.epochs * steps_per_epoch
    scheduler = SCHEDULES[spec.schedule](optimizer, total_steps, steps_per_epoch)
    probe = _Probe(model, spec, options)

    prediction = None
    if options.probe:
        buffers = {name: b.clone() for name, b in model.named_buffers()}
        x_probe, y_probe = data.x_train[probe_rows], data.y_train[probe_rows]
        with probes.capture(model.acts) as cap:
            loss = loss_fn(_prediction(model(x_probe), data.task), y_probe)
            loss.backward()
        probe.log.add("init", 0, probe.values(cap, loss).tolist(), [])
        probe.keep_samples("init", 0, cap)
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        prediction = _predict_alone(spec, d_in, data.n_outputs, x_probe.pow(2).mean().item())

    checkpoints = {0, total_steps // 2 // spec.log_every * spec.log_every}
    checkpoints.add((total_steps - 1) // spec.log_every * spec.log_every)
    losses = torch.zeros(total_steps)
    history: list[tuple[int, str, float]] = []
    grad_norms: list[float] = []
    first_loss = None
    checked = 0
    diverged_step = None
    step = 0
    for epoch in range(1, spec.epochs + 1):
        order = torch.randperm(n_train, generator=generator)
        epoch_start = step
        for batch in range(steps_per_epoch):
            rows = order[batch * spec.batch_size : (batch + 1) * spec.batch_size]
            x, y = data.x_train[rows], data.y_train[rows]
            probing = options.probe and step % spec.log_every == 0
            with probes.capture(model.acts) if probing else nullcontext() as cap:
                loss = loss_fn(_prediction(model(x), data.task), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            losses[step] = loss.detach()
            if probing:
                stats = probe.values(cap, loss)
                before = probes.snapshot([w[None] for w in probe.weights])
                if step in checkpoints:
                    probe.keep_samples("train", step, cap)
            if spec.clip is not None:
                nn.utils.clip_grad_norm_(probe.params, spec.clip)
            optimizer.step()
            scheduler.step()
            if probing:
                update = probes.update_ratios(before, [w[None] for w in probe.weights])[0]
                values = torch.cat([stats, update, losses[checked : step + 1]]).tolist()
                n_stats, n_update = len(stats), len(update)
                probe.log.add("train", step, values[:n_stats], values[n_stats : n_stats + n_update])
                grad_norms.append(values[n_stats - 2])
                recent = values[n_stats + n_update :]
                first_loss = recent[0] if first_loss is None else first_loss
                bad = first_bad(recent, first_loss, options.divergence_factor)
                if bad is None and not math.isfinite(grad_norms[-1]):
                    bad = len(recent) - 1
                if bad is not None:
                    diverged_step = checked + bad
                checked = step + 1
            step += 1
            if diverged_step is not None:
                break
        if diverged_step is not None:
            break
        val_loss, val_metric = _evaluate(model, data.task, data.x_val, data.y_val)
        epoch_values = torch.cat(
            [
                torch.stack([losses[epoch_start:step].mean(), val_loss, val_metric]),
                losses[checked:step],
            ]
        ).tolist()
        recent = epoch_values[3:]
        if first_loss is None and recent:
            first_loss = recent[0]
        bad = first_bad(recent, first_loss, options.divergence_factor)
        if bad is None and not all(math.isfinite(v) for v in epoch_values[:2]):
            bad = step - 1 - checked
        if bad is not None:
            diverged_step = checked + bad
            break
        checked = step
        lr = optimizer.param_groups[0]["lr"]
        grad_norm = sum(grad_norms) / len(grad_norms) if grad_norms else math.nan
        grad_norms.clear()
        names = ("train_loss", "val_loss", "val_metric", "lr", "grad_norm")
        history += [
            (epoch, name, value)
            for name, value in zip(names, (*epoch_values[:3], lr, grad_norm), strict=True)
        ]

    status = "diverged" if diverged_step is not None else "finished"
    summary = _summary(data, history, probe.log, status, diverged_step, step, start)
    summary.update(_theory_summary(spec, prediction, probe.log.hidden("init", "grad_preact_rms")))
    layer_stats = probe.log.layer_stats(prediction)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return RunResult(
        spec.run_id,
        status,
        summary,
        pd.DataFrame(history, columns=["epoch", "metric", "value"]),
        layer_stats,
        probe.log.distributions(),
        state,
    )
