"""An independent oracle for the training engine: one run at a time, in plain PyTorch.

``train_alone(spec, data)`` trains the net that ``spec`` describes the way a reader of the docs
would write it: an ``nn.Module`` of ``nn.Sequential`` blocks (for ``arch: resmlp`` the residual
net of ``tests/helpers/residual_reference.py``) initialized with ``torch.nn.init``,
``torch.optim`` with a ``torch.optim.lr_scheduler``, ``nn.utils.clip_grad_norm_``, module hooks
for the probes, and each statistic computed in float64 as its definition in
``gradlab/core/probes.py``'s docstring reads. It imports nothing of the engine (train, probes,
models, inits, replica_optim, verdict, optim, theory): only the spec's dataclass. ``data`` is
any object with the fields of ``TaskData`` (task, n_outputs, x_train, y_train, x_val, y_val).

What it shares with the engine is only what defines a run's numbers:

* the order of random draws from a generator seeded with the run's seed: the probe batch
  (``randperm`` of the train rows, the first ``probe_batch_size``), then each weight layer in
  forward order (a residual net's stem, the hidden layers or blocks, then the head): its bias
  (only under ``default``), then its weight (under ``fixup`` the stem's weight alone); then each
  epoch's batch order (``randperm``);
* the quantiles' fixed subset of each weight gradient (an implementation choice the docs leave
  open): ``QUANTILE_SAMPLE`` positions of the gradient laid out as (in, out), i.e. of
  ``W.grad.t().flatten()``, drawn by ``randperm`` on a generator seeded with the layer's size,
  or every position repeated evenly when the layer has fewer entries; quantiles by nearest rank;
* when divergence is checked: at each probe step (every ``log_every`` steps) and at the end of
  each epoch, so a run that diverges stops at the same step.
"""

import itertools
import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import integrate, optimize
from torch import Tensor, nn

from gradlab.core.grid import RunSpec
from tests.helpers.residual_reference import (
    ResidualNet,
    StreamRecorder,
    fixup,
    stream_layer_stats,
)

QUANTILE_SAMPLE = 512
QUANTILES = {"grad_weight_q05": 0.05, "grad_weight_q50": 0.5, "grad_weight_q95": 0.95}
LSUV_TOL, LSUV_MAX_TRIES = 0.1, 10

ACTIVATIONS = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "softsign": nn.Softsign,
    "identity": nn.Identity,
}
RELU_LIKE = {"relu", "leaky_relu", "elu", "selu", "gelu"}  # units can be dead: h ≤ 0 throughout
# where φ is flat (φ' < ~0.01), as a mask of (h, φ(h)); NaN compares False: not saturated
SATURATED = {
    "sigmoid": lambda h, a: (a < 0.01) | (a > 0.99),
    "tanh": lambda h, a: a.abs() > 0.99,
    "softsign": lambda h, a: a.abs() > 0.9,
    "elu": lambda h, a: a < -0.99,
    "selu": lambda h, a: h.exp() < 0.01,
}
NORMS = {  # norm_layer: where it sits in a block (before or after φ), and the module
    "none": (None, None),
    "batchnorm_pre": ("pre", nn.BatchNorm1d),
    "batchnorm_post": ("post", nn.BatchNorm1d),
    "layernorm": ("pre", nn.LayerNorm),
}
OPTIMIZERS = {
    "sgd": lambda p, lr, wd: torch.optim.SGD(p, lr=lr, weight_decay=wd),
    "momentum": lambda p, lr, wd: torch.optim.SGD(p, lr=lr, momentum=0.9, weight_decay=wd),
    "nesterov": lambda p, lr, wd: torch.optim.SGD(
        p, lr=lr, momentum=0.9, nesterov=True, weight_decay=wd
    ),
    "adam": lambda p, lr, wd: torch.optim.Adam(p, lr=lr, weight_decay=wd),
    "adamw": lambda p, lr, wd: torch.optim.AdamW(p, lr=lr, weight_decay=wd),
    "rmsprop": lambda p, lr, wd: torch.optim.RMSprop(p, lr=lr, weight_decay=wd),
    "adagrad": lambda p, lr, wd: torch.optim.Adagrad(p, lr=lr, weight_decay=wd),
}


def _cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def lr_factor(schedule: str, step: int, total: int, per_epoch: int) -> float:
    """The multiple of the base learning rate at ``step`` (one_cycle is torch's OneCycleLR)."""
    if schedule == "constant":
        return 1.0
    if schedule == "step":  # ÷10 once a third of the steps is done, again at two thirds
        return 0.1 ** ((3 * step >= total) + (3 * step >= 2 * total))
    if schedule == "exponential":  # ×0.95 per epoch
        return 0.95 ** (step // per_epoch)
    if schedule == "cosine":
        return _cosine(step / total)
    if schedule == "warmup_cosine":  # linear warmup over the first tenth, then cosine to 0
        warmup = max(1, int(0.1 * total))
        if step < warmup:
            return (step + 1) / warmup
        return _cosine((step - warmup) / max(1, total - warmup))
    raise ValueError(f"unknown schedule {schedule!r}")


def _scheduler(optimizer: torch.optim.Optimizer, spec: RunSpec, total: int, per_epoch: int):
    if spec.schedule == "one_cycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=spec.lr, total_steps=total)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(spec.schedule, step, total, per_epoch)
    )


@cache
def gain(activation: str) -> float:
    """g with fan_in · Var[W] = g² under kaiming and orthogonal: torch's ``calculate_gain``, and
    for activations it lacks 1 / sqrt(E[φ(z)²]), z ~ N(0, 1) (the rule that gives relu √2)."""
    torch_name = {"identity": ("linear",), "leaky_relu": ("leaky_relu", 0.01)}
    if activation in {"sigmoid", "tanh", "relu", "selu", *torch_name}:
        return nn.init.calculate_gain(*torch_name.get(activation, (activation,)))
    phi = ACTIVATIONS[activation]()

    def integrand(z: float) -> float:
        value = phi(torch.tensor(z, dtype=torch.float64)).item()
        return value * value * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

    second_moment = sum(integrate.quad(integrand, *ends)[0] for ends in [(-40, 0), (0, 40)])
    return 1.0 / math.sqrt(second_moment)


def _moments(activation: str, q: float) -> tuple[float, float]:
    """E[φ(√q z)²] and E[φ'(√q z)²] for z ~ N(0, 1): adaptive quadrature on each half-line (φ'
    may jump at 0), φ' by autograd in float64."""
    phi = ACTIVATIONS[activation]()

    def value_and_slope(z: float) -> tuple[float, float]:
        h = torch.tensor(math.sqrt(q) * z, dtype=torch.float64, requires_grad=True)
        with torch.enable_grad():  # the oracle draws its weights under no_grad
            out = phi(h)
        (slope,) = torch.autograd.grad(out, h)
        return out.item(), slope.item()

    def expectation(k: int) -> float:
        def integrand(z: float) -> float:
            return value_and_slope(z)[k] ** 2 * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

        return sum(
            integrate.quad(integrand, *ends, epsabs=1e-14, epsrel=1e-12, limit=200)[0]
            for ends in [(-40, 0), (0, 40)]
        )

    return expectation(0), expectation(1)


@cache
def critical_sigma_w2(activation: str, sigma_b2: float) -> float:
    """σ_w² with χ₁(q*) = 1, solved in q* rather than σ_w²: a q is a critical fixed point when
    σ_w² = 1 / E[φ'(√q z)²] and σ_b² = q − E[φ(√q z)²] / E[φ'(√q z)²]. The smallest q in
    [1e-6, 1e4] where that σ_b² crosses ``sigma_b2`` (a log-spaced scan, then Brent's method);
    where none does, q* → 0: σ_w² = 1 / E[φ'(√q z)²] at q = 1e-12 (tanh 1 and relu 2 without
    biases, relu 2 with any). Where χ₁ = 1 at more than one q* (gelu without biases) the smallest
    is not necessarily the engine's choice: use it for the activations whose critical point is
    unique (tanh, relu, sigmoid, elu)."""

    def excess(log_q: float) -> float:
        e_phi2, e_dphi2 = _moments(activation, math.exp(log_q))
        return math.exp(log_q) - e_phi2 / e_dphi2 - sigma_b2

    grid = np.linspace(math.log(1e-6), math.log(1e4), 41)
    before = excess(grid[0])
    for low, high in itertools.pairwise(grid):
        after = excess(high)
        if before * after < 0.0:
            log_q = optimize.brentq(excess, low, high, xtol=1e-14, rtol=1e-14)
            return 1.0 / _moments(activation, math.exp(log_q))[1]
        before = after
    return 1.0 / _moments(activation, 1e-12)[1]


def weight_gain(spec: RunSpec) -> float:
    """The gain of kaiming and orthogonal draws: √sigma_w2 where the spec sets it (``critical``
    solved by ``critical_sigma_w2``, independently of the engine's theory), else ``gain``."""
    if spec.sigma_w2 is None:
        return gain(spec.activation)
    if spec.sigma_w2 == "critical":
        sigma_b2 = 0.0 if spec.bias_std is None else spec.bias_std**2
        return math.sqrt(critical_sigma_w2(spec.activation, sigma_b2))
    return math.sqrt(float(spec.sigma_w2))


class Net(nn.Module):
    """``depth`` blocks ``Linear → [norm] → φ → [norm]`` (the norm on the side its name says)
    and a linear head. ``blocks[i].act``'s input is hidden layer i + 1's pre-activation h."""

    def __init__(self, spec: RunSpec, d_in: int, d_out: int):
        super().__init__()
        position, norm = NORMS[spec.norm_layer]
        self.norm_position = position
        blocks = []
        for i in range(spec.depth):
            parts = [("linear", nn.Linear(d_in if i == 0 else spec.width, spec.width))]
            if position == "pre":
                parts.append(("norm", norm(spec.width)))
            parts.append(("act", ACTIVATIONS[spec.activation]()))
            if position == "post":
                parts.append(("norm", norm(spec.width)))
            blocks.append(nn.Sequential(OrderedDict(parts)))
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(spec.width, d_out)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def all_linears(self) -> list[nn.Linear]:
        return [*(block.linear for block in self.blocks), self.head]

    def engine_state_dict(self) -> dict[str, Tensor]:
        """The state dict under gradlab's ``MLP`` names (``linears.i``, ``pre_norms.i`` or
        ``post_norms.i``, ``head``): the form of ``RunResult.state_dict``."""
        renamed = {}
        for name, tensor in self.state_dict().items():
            engine_name = name
            if name.startswith("blocks."):
                _, i, part, rest = name.split(".", 3)
                prefix = "linears" if part == "linear" else f"{self.norm_position}_norms"
                engine_name = f"{prefix}.{i}.{rest}"
            renamed[engine_name] = tensor.detach().clone()
        return renamed


# noqa reason: the oracle reads top to bottom, in the order of its random draws
@torch.no_grad()
def initialize(  # noqa: C901, PLR0912
    net: "Net | ResidualNet", spec: RunSpec, generator: torch.Generator, probe_x: Tensor
) -> None:
    """Each weight layer in forward order: its bias (N(0, bias_std²) when the spec sets it, else
    U(±1/√fan_in) under default, else 0), then its weight; LSUV then rescales the layers to unit
    output variance on the probe batch."""
    for linear in net.all_linears():
        fan_in = linear.in_features
        if spec.bias_std is not None:  # N(0, bias_std²) whatever the init, drawn first
            nn.init.normal_(linear.bias, 0.0, spec.bias_std, generator=generator)
        if spec.init == "default":  # nn.Linear's own: U(−1/√fan_in, 1/√fan_in) for both
            bound = 1.0 / math.sqrt(fan_in)
            if spec.bias_std is None:
                nn.init.uniform_(linear.bias, -bound, bound, generator=generator)
            nn.init.uniform_(linear.weight, -bound, bound, generator=generator)
            continue
        if spec.bias_std is None:
            nn.init.zeros_(linear.bias)
        weight, g = linear.weight, weight_gain(spec)
        if spec.init == "xavier_uniform":
            nn.init.xavier_uniform_(weight, generator=generator)
        elif spec.init == "xavier_normal":
            nn.init.xavier_normal_(weight, generator=generator)
        elif spec.init == "kaiming_uniform":
            bound = math.sqrt(3.0) * g / math.sqrt(fan_in)
            nn.init.uniform_(weight, -bound, bound, generator=generator)
        elif spec.init == "kaiming_normal":
            nn.init.normal_(weight, 0.0, g / math.sqrt(fan_in), generator=generator)
        elif spec.init == "orthogonal":
            nn.init.orthogonal_(weight, gain=g, generator=generator)
        elif spec.init == "lecun_normal":
            nn.init.normal_(weight, 0.0, 1.0 / math.sqrt(fan_in), generator=generator)
        elif spec.init == "normal":
            nn.init.normal_(weight, 0.0, spec.init_std, generator=generator)
        elif spec.init == "lsuv":
            nn.init.orthogonal_(weight, gain=1.0, generator=generator)
        else:
            raise ValueError(f"unknown init {spec.init!r}")
    if spec.init == "lsuv":
        _lsuv(net, probe_x)


def _lsuv(net: "Net | ResidualNet", x: Tensor) -> None:
    """Mishkin & Matas (2015): layer by layer, W ← W / sqrt(Var[W x + b]) until that variance is
    within ``LSUV_TOL`` of 1 (at most ``LSUV_MAX_TRIES`` times), normalization layers frozen."""
    net.eval()
    for linear in net.all_linears():
        outputs = []
        handle = linear.register_forward_hook(lambda module, inputs, out: outputs.append(out))
        for tries in range(LSUV_MAX_TRIES + 1):
            outputs.clear()
            net(x)
            variance = outputs[0].var().item()
            if abs(variance - 1.0) < LSUV_TOL or variance == 0 or not math.isfinite(variance):
                break
            if tries < LSUV_MAX_TRIES:
                linear.weight /= math.sqrt(variance)
        handle.remove()
    net.train()


class Recorder:
    """h, φ(h) and ∂L/∂h of every hidden layer, from hooks on the activation modules, while
    ``on``."""

    def __init__(self, net: Net):
        self.on = False
        self.depth = len(net.blocks)
        self.h: list[Any] = [None] * self.depth
        self.a: list[Any] = [None] * self.depth
        self.dh: list[Any] = [None] * self.depth
        for i, block in enumerate(net.blocks):
            block.act.register_forward_hook(self._hook(i))

    def _hook(self, i: int):
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
            if not self.on:
                return
            h = inputs[0]
            self.h[i], self.a[i] = h.detach().clone(), out.detach().clone()
            h.register_hook(lambda grad: self.dh.__setitem__(i, grad.detach().clone()))

        return hook


def _std(x: Tensor) -> Tensor:
    return x.std(correction=0)  # over every entry, as a population


def hidden_layer_stats(activation: str, h: Tensor, a: Tensor, dh: Tensor) -> dict[str, float]:
    """One hidden layer's statistics over the batch × units, as probes.py defines them."""
    h, a, dh = h.double(), a.double(), dh.double()
    if activation in SATURATED:
        saturation = SATURATED[activation](h, a).double().mean().item()
    else:
        saturation = math.nan
    if activation in RELU_LIKE:  # a unit is active if h > 0 for some input, and no h is NaN
        active = (h > 0).any(0) & ~h.isnan().any(0)
        dead = 1.0 - active.double().mean().item()
    else:
        dead = math.nan
    return {
        "grad_preact_rms": dh.pow(2).mean().sqrt().item(),
        "grad_preact_mean": dh.mean().item(),
        "grad_preact_std": _std(dh).item(),
        "preact_mean": h.mean().item(),
        "preact_std": _std(h).item(),
        "act_mean": a.mean().item(),
        "act_std": _std(a).item(),
        "act_saturation": saturation,
        "act_dead_frac": dead,
    }


@cache
def quantile_subset(numel: int) -> Tensor:
    """The fixed positions, among a layer's ``numel`` gradient entries, that the quantiles and
    the zero fraction read."""
    if numel <= QUANTILE_SAMPLE:
        return torch.arange(QUANTILE_SAMPLE) * numel // QUANTILE_SAMPLE
    return torch.randperm(numel, generator=torch.Generator().manual_seed(numel))[:QUANTILE_SAMPLE]


def weight_grad_stats(weight_grad: Tensor) -> dict[str, float]:
    """Statistics of one ``nn.Linear`` weight's gradient (out, in)."""
    g = weight_grad.double()
    sample = g.t().flatten()[quantile_subset(g.numel())].abs()
    stats = {
        "grad_weight_norm": g.norm().item(),
        "grad_weight_mean": g.mean().item(),
        "grad_weight_std": _std(g).item(),
        "grad_weight_absmax": g.abs().max().item(),
    }
    levels = torch.tensor(list(QUANTILES.values()), dtype=torch.float64)
    quantiles = torch.quantile(sample, levels, interpolation="nearest").tolist()
    stats.update(zip(QUANTILES, quantiles, strict=True))
    stats["grad_weight_zero_frac"] = (sample == 0).double().mean().item()
    return stats


@dataclass
class SoloRun:
    """What one run produced, in the engine's vocabulary (``RunResult``'s tables)."""

    status: str  # "finished" or "diverged"
    diverged_step: int | None
    steps: int  # optimizer steps taken
    losses: list[float]  # the training loss of each step taken
    history: pd.DataFrame  # epoch, metric, value
    layer_stats: pd.DataFrame  # phase ("init" or "train"), step, layer, quantity, value
    state_dict: dict[str, Tensor]  # under gradlab's MLP / ResMLP names
    probe_q_in: float  # mean squared input coordinate of the probe batch


# noqa reason: the oracle is one plain loop to be read against the engine's; splitting it
# would hide the order of the steps it checks
def train_alone(  # noqa: C901, PLR0912, PLR0915
    spec: RunSpec, data: Any, probe_batch_size: int = 256, divergence_factor: float = 1e4
) -> SoloRun:
    """Train ``spec`` on ``data`` alone, probing at init and every ``log_every`` steps.

    A run diverges at the first step whose loss is NaN/inf or above ``divergence_factor`` times
    the first step's loss; at a probe step also when the gradient norm is not finite (that
    step), and at an epoch's end when its mean train loss or its validation loss is not (the
    epoch's last step). Losses are checked at probe steps and epoch ends only, and training
    stops there.
    """
    generator = torch.Generator().manual_seed(spec.seed)
    n_train, d_in = data.x_train.shape
    probe_rows = torch.randperm(n_train, generator=generator)[:probe_batch_size]
    x_probe, y_probe = data.x_train[probe_rows], data.y_train[probe_rows]
    has_stream = getattr(spec, "arch", "mlp") == "resmlp"
    net: Net | ResidualNet
    if has_stream:
        net = ResidualNet(
            d_in,
            data.n_outputs,
            spec.depth,
            spec.width,
            ACTIVATIONS[spec.activation],
            spec.norm_layer,
            spec.residual_branch,
            spec.residual_scale,
        )
    else:
        net = Net(spec, d_in, data.n_outputs)
    if spec.init == "fixup":  # residual nets only: the stem's weight is all it draws
        assert isinstance(net, ResidualNet)
        fixup(net, gain(spec.activation), generator)
    else:
        initialize(net, spec, generator, x_probe)
    net.train()
    params = list(net.parameters())
    recorder = StreamRecorder(net) if isinstance(net, ResidualNet) else Recorder(net)
    # weight layers: the MLP's hidden layers 1 … L and head L + 1; a residual net's stem is 0
    first_weight = 0 if has_stream else 1
    loss_fn = nn.MSELoss() if data.task == "regression" else nn.CrossEntropyLoss()

    def loss_of(x: Tensor, y: Tensor, out: Tensor | None = None) -> Tensor:
        out = net(x) if out is None else out
        return loss_fn(out.squeeze(-1) if data.task == "regression" else out, y)

    rows: list[tuple[str, int, int, str, float]] = []

    def record(phase: str, step: int, loss: Tensor) -> float:
        """Keep the probe values of the backward pass just taken; returns the gradient norm."""
        for layer in range(spec.depth):
            stats = hidden_layer_stats(
                spec.activation, recorder.h[layer], recorder.a[layer], recorder.dh[layer]
            )
            rows.extend((phase, step, layer + 1, q, v) for q, v in stats.items())
            if isinstance(recorder, StreamRecorder):  # stream layer l: x_{l-1}, block l's input
                stats = stream_layer_stats(recorder.x[layer], recorder.dx[layer])
                rows.extend((phase, step, layer + 1, q, v) for q, v in stats.items())
        for layer, linear in enumerate(net.all_linears(), first_weight):
            stats = weight_grad_stats(linear.weight.grad)
            rows.extend((phase, step, layer, q, v) for q, v in stats.items())
        grad_norm = torch.cat([p.grad.double().flatten() for p in params]).norm().item()
        rows.append((phase, step, 0, "grad_global_norm", grad_norm))
        rows.append((phase, step, 0, "loss", loss.item()))
        return grad_norm

    # phase init: one forward/backward on the probe batch; BatchNorm's running stats put back
    buffers = {name: b.clone() for name, b in net.named_buffers()}
    recorder.on = True
    loss = loss_of(x_probe, y_probe)
    loss.backward()
    record("init", 0, loss)
    recorder.on = False
    rows.extend(
        ("init", 0, layer, "update_ratio", math.nan)
        for layer in range(first_weight, spec.depth + 2)
    )
    net.zero_grad(set_to_none=True)
    with torch.no_grad():
        for name, b in net.named_buffers():
            b.copy_(buffers[name])

    optimizer = OPTIMIZERS[spec.optimizer](params, spec.lr, spec.weight_decay)
    per_epoch = math.ceil(n_train / spec.batch_size)
    scheduler = _scheduler(optimizer, spec, spec.epochs * per_epoch, per_epoch)
    losses: list[float] = []
    history: list[tuple[int, str, float]] = []
    diverged_step = None

    def first_bad() -> int | None:
        limit = divergence_factor * abs(losses[0])
        return next((i for i, v in enumerate(losses) if not math.isfinite(v) or v > limit), None)

    step = 0
    for epoch in range(1, spec.epochs + 1):
        order = torch.randperm(n_train, generator=generator)
        grad_norms = []
        for batch in range(per_epoch):
            rows_now = order[batch * spec.batch_size : (batch + 1) * spec.batch_size]
            probing = step % spec.log_every == 0
            recorder.on = probing
            optimizer.zero_grad(set_to_none=True)
            loss = loss_of(data.x_train[rows_now], data.y_train[rows_now])
            loss.backward()
            recorder.on = False
            losses.append(loss.item())
            if probing:
                grad_norms.append(record("train", step, loss))
                before = [linear.weight.detach().clone() for linear in net.all_linears()]
            if spec.clip is not None:
                nn.utils.clip_grad_norm_(params, spec.clip)
            optimizer.step()
            scheduler.step()
            step += 1
            if probing:
                for layer, (linear, old) in enumerate(zip(net.all_linears(), before), first_weight):
                    ratio = ((linear.weight.detach() - old).norm() / old.norm()).item()
                    rows.append(("train", step - 1, layer, "update_ratio", ratio))
                bad = first_bad()
                if bad is None and not math.isfinite(grad_norms[-1]):
                    bad = step - 1
                if bad is not None:
                    diverged_step = bad
                    break
        if diverged_step is not None:
            break
        net.eval()
        with torch.no_grad():
            out = net(data.x_val)
            val_loss = loss_of(data.x_val, data.y_val, out).item()
            if data.task == "regression":
                residual = (out.squeeze(-1) - data.y_val).pow(2).sum()
                metric = (1 - residual / (data.y_val - data.y_val.mean()).pow(2).sum()).item()
            else:
                metric = (out.argmax(1) == data.y_val).double().mean().item()
        net.train()
        train_loss = sum(losses[-per_epoch:]) / per_epoch
        bad = first_bad()
        if bad is None and not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            bad = step - 1
        if bad is not None:
            diverged_step = bad
            break
        values = {
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_metric": metric,
            "lr": optimizer.param_groups[0]["lr"],
            "grad_norm": sum(grad_norms) / len(grad_norms) if grad_norms else math.nan,
        }
        history.extend((epoch, name, value) for name, value in values.items())

    return SoloRun(
        status="finished" if diverged_step is None else "diverged",
        diverged_step=diverged_step,
        steps=step,
        losses=losses,
        history=pd.DataFrame(history, columns=["epoch", "metric", "value"]),
        layer_stats=pd.DataFrame(rows, columns=["phase", "step", "layer", "quantity", "value"]),
        state_dict=net.engine_state_dict(),
        probe_q_in=x_probe.double().pow(2).mean().item(),
    )
