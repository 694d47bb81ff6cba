"""Train one run spec: the loop, its probes, divergence, and the result as plain tables.

``train_run(spec, data, options)`` is a picklable function of its arguments, so any executor
(in-process, a process pool, later a cluster) can run it and get identical numbers on CPU.
"""

import hashlib
import logging
import math
import random
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from gradlab.core import probes, theory
from gradlab.core.data import feature_columns, n_outputs
from gradlab.core.grid import RunSpec
from gradlab.core.inits import initialize
from gradlab.core.models import MLP
from gradlab.core.optim import OPTIMIZERS, SCHEDULES
from gradlab.core.registry import lookup
from gradlab.core.verdict import expected_verdict, first_last_ratio, verdict

log = logging.getLogger(__name__)

STATUSES = ("finished", "diverged", "failed")
# What each run's summary says of mean-field theory beside its measurement at init.
THEORY_COLUMNS = (
    "measured_log_slope",
    "theory_log_slope",
    "theory_first_last_ratio",
    "theory_chi1",
    "theory_depth_scale",
    "theory_sigma_w2",
    "theory_sigma_b2",
    "theory_verdict",
)
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
    """Seed python, numpy and torch (for anything that does not take an explicit generator)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _loss_fn(task: str) -> nn.Module:
    return nn.MSELoss() if task == "regression" else nn.CrossEntropyLoss()


def _prediction(out: Tensor, task: str) -> Tensor:
    return out.squeeze(-1) if task == "regression" else out  # (B, 1) -> (B,) for MSE


@torch.no_grad()
def _evaluate(model: MLP, data: TaskData, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Validation loss and metric (R² or accuracy), left on the device."""
    model.eval()
    out = _prediction(model(x), data.task)
    loss = _loss_fn(data.task)(out, y)
    if data.task == "regression":
        metric = 1.0 - (out - y).pow(2).sum() / (y - y.mean()).pow(2).sum()
    else:
        metric = (out.argmax(1) == y).float().mean()
    model.train()
    return loss, metric


class _Recorder:
    """Collects probe tensors; builds the long tables once, at the end of the run."""

    def __init__(self, model: MLP, traits: probes.ActivationTraits, sample_size: int, seed: int):
        self.depth, self.traits, self.sample_size = len(model.acts), traits, sample_size
        self.params = list(model.parameters())  # walked once: module traversal is slow Python
        self.weights = [layer.weight for layer in model.all_linears()]
        self.stats: list[tuple[str, int, list[float]]] = []
        self.samples: list[tuple[str, int, str, int, Tensor]] = []
        self.generator = torch.Generator().manual_seed(seed)
        self.workspace = probes.Workspace()

    def probe(self, cap: probes.Capture, loss: Tensor) -> Tensor:
        """Statistics available after backward, before the optimizer step (and clipping)."""
        grads = [p.grad for p in self.params if p.grad is not None]
        hidden = probes.hidden_stats(cap, self.traits, self.workspace)
        weight = probes.weight_grad_stats([w.grad for w in self.weights], self.workspace)
        global_ = torch.stack([probes.global_grad_norm(grads), loss.detach()])
        return torch.cat([hidden.flatten(), weight.flatten(), global_])

    def keep_samples(self, phase: str, step: int, cap: probes.Capture) -> None:
        """Keep a fixed-size random subset of each layer's values for distribution plots."""
        weight_grads = [weight.grad for weight in self.weights]
        per_layer = (cap.grads, cap.preacts, cap.acts, weight_grads)
        for quantity, tensors in zip(probes.DISTRIBUTION_QUANTITIES, per_layer, strict=True):
            for layer, tensor in enumerate(tensors, start=1):
                flat = tensor.flatten()
                idx = probes.sample_indices(flat.numel(), self.sample_size, self.generator)
                self.samples.append((phase, step, quantity, layer, flat[idx.to(flat.device)]))

    def add(self, phase: str, step: int, stats: list[float], update: list[float]) -> None:
        """Keep one probe step: ``probe()``'s values, then the update ratios (empty at init)."""
        self.stats.append((phase, step, stats, update or [math.nan] * (self.depth + 1)))

    def hidden(self, phase: str, quantity: str) -> np.ndarray:
        """One hidden-layer quantity at the last probe step of ``phase`` (empty if none)."""
        rows = [stats for p, _, stats, _ in self.stats if p == phase]
        if not rows:
            return np.array([])
        n = len(probes.HIDDEN_QUANTITIES)
        start = probes.HIDDEN_QUANTITIES.index(quantity)
        return np.asarray(rows[-1][start : self.depth * n : n])

    def layer_stats(self) -> pd.DataFrame:
        if not self.stats:
            return empty_table("layer_stats")
        depth, n_hidden = self.depth, self.depth * len(probes.HIDDEN_QUANTITIES)
        n_weight = len(probes.WEIGHT_QUANTITIES) - 1  # update_ratio comes after the step
        layer = np.concatenate(
            [
                np.repeat(np.arange(1, depth + 1), len(probes.HIDDEN_QUANTITIES)),
                np.repeat(np.arange(1, depth + 2), len(probes.WEIGHT_QUANTITIES)),
                np.zeros(len(probes.GLOBAL_QUANTITIES), dtype=int),
            ]
        )
        quantity = np.array(
            list(probes.HIDDEN_QUANTITIES) * depth
            + list(probes.WEIGHT_QUANTITIES) * (depth + 1)
            + list(probes.GLOBAL_QUANTITIES)
        )
        stats = np.array([row[2] for row in self.stats])  # (probe steps, values)
        update = np.array([row[3] for row in self.stats])  # (probe steps, depth + 1)
        weight = stats[:, n_hidden:-2].reshape(len(stats), depth + 1, n_weight)
        weight = np.concatenate([weight, update[:, :, None]], axis=2).reshape(len(stats), -1)
        values = np.concatenate([stats[:, :n_hidden], weight, stats[:, -2:]], axis=1)
        per_step = values.shape[1]
        return pd.DataFrame(
            {
                "phase": np.repeat([row[0] for row in self.stats], per_step),
                "step": np.repeat([row[1] for row in self.stats], per_step),
                "layer": np.tile(layer, len(stats)),
                "quantity": np.tile(quantity, len(stats)),
                "value": values.ravel(),
            }
        )

    def distributions(self) -> pd.DataFrame:
        if not self.samples:
            return empty_table("layer_stats")
        values = torch.stack([sample[4] for sample in self.samples]).float().cpu().numpy()
        size = values.shape[1]
        return pd.DataFrame(
            {
                "phase": np.repeat([s[0] for s in self.samples], size),
                "step": np.repeat([s[1] for s in self.samples], size),
                "layer": np.repeat([s[3] for s in self.samples], size),
                "quantity": np.repeat([s[2] for s in self.samples], size),
                "value": values.ravel(),
            }
        )


def empty_table(name: str) -> pd.DataFrame:
    """A result table with no rows but its columns and dtypes: ``history``, else a long table."""
    if name == "history":
        return pd.DataFrame(
            {
                "epoch": pd.Series(dtype=np.int64),
                "metric": pd.Series(dtype=str),
                "value": pd.Series(dtype=np.float64),
            }
        )
    return pd.DataFrame(
        {
            "phase": pd.Series(dtype=str),
            "step": pd.Series(dtype=np.int64),
            "layer": pd.Series(dtype=np.int64),
            "quantity": pd.Series(dtype=str),
            "value": pd.Series(dtype=np.float64),
        }
    )


def _first_bad(losses: list[float], first_loss: float, factor: float) -> int | None:
    """Index of the first loss that is NaN/Inf or above ``factor`` times the first loss."""
    limit = factor * abs(first_loss)
    return next((i for i, v in enumerate(losses) if not math.isfinite(v) or v > limit), None)


def train_run(spec: RunSpec, data: TaskData, options: RunOptions = RunOptions()) -> RunResult:
    """Train one MLP as ``spec`` says, probing it at init and every ``spec.log_every`` steps.

    Never raises for a run that diverges (status ``diverged``) or fails (status ``failed``, the
    traceback in ``summary["error"]``): one run must not stop the grid.

    Args:
        spec: The run spec.
        data: Train and validation tensors for ``spec.dataset`` / ``spec.input_norm``.
        options: Device, divergence threshold, probe batch size.
    Returns:
        The run's summary, history, layer statistics, distribution samples and final weights.
    """
    start = time.perf_counter()
    try:
        return _train(spec, data, options, start)
    except Exception:  # a bug or a numerical error in one run is that run's result
        log.exception("run %s (%s) failed", spec.run_id, spec.label)
        summary = {"error": traceback.format_exc(), "wall_s": time.perf_counter() - start}
        tables = [empty_table(name) for name in ("history", "layer_stats", "distributions")]
        return RunResult(spec.run_id, "failed", summary, *tables, {})


def _train(spec: RunSpec, data: TaskData, options: RunOptions, start: float) -> RunResult:
    seed_everything(spec.seed)
    device = resolve_device(options.device)
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
    model.to(device).train()
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_val, y_val = data.x_val.to(device), data.y_val.to(device)
    loss_fn = _loss_fn(data.task)

    optimizer = lookup(OPTIMIZERS, spec.optimizer, "optimizer")(
        model.parameters(), spec.lr, spec.weight_decay
    )
    steps_per_epoch = math.ceil(n_train / spec.batch_size)
    total_steps = spec.epochs * steps_per_epoch
    scheduler = lookup(SCHEDULES, spec.schedule, "schedule")(
        optimizer, total_steps, steps_per_epoch
    )
    recorder = _Recorder(
        model, probes.ACTIVATION_TRAITS[spec.activation], options.distribution_size, spec.seed
    )

    prediction = None
    if options.probe:
        rows = probe_rows.to(device)
        q_in = _probe_at_init(model, recorder, data, loss_fn, x_train[rows], y_train[rows])
        prediction = _predict(spec, d_in, data.n_outputs, q_in)

    checkpoints = {0, total_steps // 2 // spec.log_every * spec.log_every}
    checkpoints.add((total_steps - 1) // spec.log_every * spec.log_every)
    losses = torch.zeros(total_steps, device=device)  # per-step loss, read at log steps only
    history: list[tuple[int, str, float]] = []
    grad_norms: list[float] = []
    first_loss: float | None = None
    checked = 0  # losses[:checked] have been checked for divergence
    diverged_step: int | None = None
    step = 0

    for epoch in range(1, spec.epochs + 1):
        order = torch.randperm(n_train, generator=generator).to(device)
        epoch_start = step
        for batch in range(steps_per_epoch):
            rows = order[batch * spec.batch_size : (batch + 1) * spec.batch_size]
            x, y = x_train[rows], y_train[rows]  # (B, d_in), (B,)
            probing = options.probe and step % spec.log_every == 0
            with probes.capture(model.acts) if probing else nullcontext() as cap:
                loss = loss_fn(_prediction(model(x), data.task), y)  # hooks exist before forward
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            losses[step] = loss.detach()
            if probing:
                stats = recorder.probe(cap, loss)
                before = probes.snapshot(recorder.weights)
                if step in checkpoints:
                    recorder.keep_samples("train", step, cap)
            if spec.clip is not None:
                nn.utils.clip_grad_norm_(recorder.params, spec.clip)
            optimizer.step()
            scheduler.step()
            if probing:
                update = probes.update_ratios(before, recorder.weights)
                # the one host sync of this log step: statistics and the losses since last time
                values = torch.cat([stats, update, losses[checked : step + 1]]).tolist()
                n_stats, n_update = len(stats), len(update)
                recorder.add("train", step, values[:n_stats], values[n_stats : n_stats + n_update])
                grad_norms.append(values[n_stats - 2])
                recent = values[n_stats + n_update :]
                first_loss = recent[0] if first_loss is None else first_loss  # step 0 is probed
                bad = _first_bad(recent, first_loss, options.divergence_factor)
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
        val_loss, val_metric = _evaluate(model, data, x_val, y_val)
        epoch_values = torch.cat(
            [
                torch.stack([losses[epoch_start:step].mean(), val_loss, val_metric]),
                losses[checked:step],
            ]
        ).tolist()
        recent = epoch_values[3:]
        if first_loss is None and recent:  # not probing: nothing has read a loss before
            first_loss = recent[0]
        bad = _first_bad(recent, first_loss, options.divergence_factor)
        if bad is None and not all(math.isfinite(v) for v in epoch_values[:2]):
            bad = step - 1 - checked
        if bad is not None:
            diverged_step = checked + bad
            break
        checked = step
        lr = optimizer.param_groups[0]["lr"]
        grad_norm = float(np.mean(grad_norms)) if grad_norms else math.nan
        grad_norms.clear()
        names = ("train_loss", "val_loss", "val_metric", "lr", "grad_norm")
        history += [
            (epoch, name, value)
            for name, value in zip(names, (*epoch_values[:3], lr, grad_norm), strict=True)
        ]

    layer_stats = pd.concat([recorder.layer_stats(), _theory_rows(prediction)], ignore_index=True)
    status = "diverged" if diverged_step is not None else "finished"
    summary = _summary(data, history, recorder, status, diverged_step, step, start)
    summary.update(_theory_summary(spec, prediction, recorder.hidden("init", "grad_preact_rms")))
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return RunResult(
        spec.run_id,
        status,
        summary,
        pd.DataFrame(history, columns=["epoch", "metric", "value"]),
        layer_stats,
        recorder.distributions(),
        state,
    )


def _probe_at_init(
    model: MLP,
    recorder: "_Recorder",
    data: TaskData,
    loss_fn: nn.Module,
    x_probe: Tensor,
    y_probe: Tensor,
) -> float:
    """Phase ``init``: one forward/backward on the fixed probe batch, no optimizer step.

    BatchNorm's running statistics are put back, so probing leaves the model as it was.

    Returns:
        q_in, the mean squared input coordinate of the probe batch (for the theory).
    """
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    with probes.capture(model.acts) as cap:
        loss = loss_fn(_prediction(model(x_probe), data.task), y_probe)
        loss.backward()
    recorder.add("init", 0, recorder.probe(cap, loss).tolist(), [])
    recorder.keep_samples("init", 0, cap)
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    return x_probe.pow(2).mean().item()


def _predict(spec: RunSpec, d_in: int, d_out: int, q_in: float) -> theory.ProfilePrediction | None:
    """Mean-field prediction at init, where it applies: no normalization layer, a-priori init."""
    if spec.norm_layer != "none" or spec.init == "lsuv":
        return None
    widths = [d_in, *[spec.width] * spec.depth, d_out]
    return theory.predict_profile(spec.activation, spec.init, widths, q_in, std=spec.init_std)


def _theory_rows(prediction: theory.ProfilePrediction | None) -> pd.DataFrame:
    """Phase ``theory``: predicted grad_preact_rms (last hidden layer = 1), preact_std, chi1."""
    if prediction is None:
        return empty_table("layer_stats")
    depth = len(prediction.q)
    quantities = ("grad_preact_rms", "preact_std", "chi1")
    values = (prediction.grad_rms, np.sqrt(prediction.q), prediction.chi1)
    return pd.DataFrame(
        {
            "phase": "theory",
            "step": 0,
            "layer": np.tile(np.arange(1, depth + 1), len(quantities)),
            "quantity": np.repeat(quantities, depth),
            "value": np.concatenate(values),
        }
    )


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
        "theory_verdict": expected_verdict(predicted["first_last_ratio"]),
    }


def _summary(
    data: TaskData,
    history: list[tuple[int, str, float]],
    recorder: _Recorder,
    status: str,
    diverged_step: int | None,
    steps: int,
    start: float,
) -> dict[str, Any]:
    last = {name: value for _, name, value in history}  # the last epoch wins
    wall = time.perf_counter() - start
    at = recorder.hidden

    init_ratio = first_last_ratio(at("init", "grad_preact_rms"))
    end_ratio = first_last_ratio(at("train", "grad_preact_rms"))
    saturation = at("train", "act_saturation")
    dead = at("train", "act_dead_frac")
    end_saturation = float(np.mean(saturation)) if len(saturation) else math.nan
    end_dead = float(np.mean(dead)) if len(dead) else math.nan
    return {
        "status": status,
        "diverged_step": diverged_step,
        "verdict": verdict(init_ratio, end_ratio, end_saturation, end_dead, status == "diverged"),
        "metric_name": METRIC_NAMES[data.task],
        "final_train_loss": last.get("train_loss", math.nan),
        "final_val_loss": last.get("val_loss", math.nan),
        "final_val_metric": last.get("val_metric", math.nan),
        "epochs_done": max((epoch for epoch, _, _ in history), default=0),
        "steps": steps,
        "wall_s": wall,
        "steps_per_s": steps / wall if wall > 0 else math.nan,
        "init_grad_ratio": init_ratio,
        "end_grad_ratio": end_ratio,
        "end_saturation": end_saturation,
        "end_dead_frac": end_dead,
        "error": None,
    }
