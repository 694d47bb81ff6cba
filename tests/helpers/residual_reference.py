"""The residual MLP of issue 26 in plain ``torch.nn``: the oracle's net for ``arch: resmlp``.

Written from the contract, not from ``gradlab.core.residual``, and importing nothing of gradlab::

    x_0 = W_in x + b_in                                    # inp
    block l = 1 … L reads the stream x_{l-1}:
        preact : h_l = norm_l(x_{l-1});         f_l = W_l φ(h_l) + b_l
        postact: h_l = norm_l(W_l x_{l-1} + b_l); f_l = φ(h_l)
        x_l = x_{l-1} + α_l f_l
    out = W_head x_L + b_head                              # head

norm_l is nothing, ``nn.LayerNorm`` or ``nn.BatchNorm1d`` (always right before φ); α (L,) is a
buffer ``alpha`` for a fixed scale and a parameter ``alpha`` (starting at 0) for ``rezero``.
The state dict's names are the engine's: ``inp.*``, ``linears.{i}.*``, ``norms.{i}.*`` (with a
norm only), ``alpha``, ``head.*``.

What the probes read, through module and tensor hooks (``StreamRecorder``):

* hidden layer l: h_l (the input of block l's φ), φ(h_l) and ∂L/∂h_l *through the branch only*:
  a full backward hook on the activation module gets the gradient of φ's input as φ passes it
  back, which in preact without a norm (where h_l is the stream itself) is not the stream's
  total gradient;
* stream layer l: x_{l-1} and its total gradient ∂L/∂x_{l-1} (skip and branch together), from a
  tensor hook on the stream entering block l.
"""

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

BRANCHES = ("preact", "postact")
NORMS: dict[str, Callable[[int], nn.Module] | None] = {
    "none": None,
    "layernorm": nn.LayerNorm,
    "batchnorm_pre": nn.BatchNorm1d,
}


def resolve_scale(residual_scale: str, depth: int) -> tuple[float, bool]:
    """α at init and whether it is learned: ``"1/sqrt(depth)"`` → 1/√depth, fixed; ``"rezero"``
    → 0, learned; any other text is the number it spells, fixed."""
    if residual_scale == "1/sqrt(depth)":
        return 1.0 / math.sqrt(depth), False
    if residual_scale == "rezero":
        return 0.0, True
    return float(residual_scale), False


class ResidualNet(nn.Module):
    """``depth`` residual blocks on a stream of ``width`` units between a stem and a head."""

    # noqa reason: the net's shape and its residual choices, each independent
    def __init__(  # noqa: PLR0913, PLR0917
        self,
        d_in: int,
        d_out: int,
        depth: int,
        width: int,
        make_act: Callable[[], nn.Module],
        norm_layer: str,
        branch: str,
        residual_scale: str,
    ) -> None:
        super().__init__()
        if branch not in BRANCHES:
            raise ValueError(f"unknown residual branch {branch!r}")
        self.branch = branch
        self.inp = nn.Linear(d_in, width)
        self.linears = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        norm = NORMS[norm_layer]
        self.norms = nn.ModuleList(
            nn.Identity() if norm is None else norm(width) for _ in range(depth)
        )
        self.acts = nn.ModuleList(make_act() for _ in range(depth))
        self.head = nn.Linear(width, d_out)
        alpha, learnable = resolve_scale(residual_scale, depth)
        alphas = torch.full((depth,), alpha, dtype=torch.float32)
        if learnable:
            self.alpha = nn.Parameter(alphas)
        else:
            self.register_buffer("alpha", alphas)
        # called with (l, x_{l-1}) for each block l = 1 … L while set (the stream probe)
        self.on_stream: Callable[[int, Tensor], None] | None = None

    def forward(self, x: Tensor) -> Tensor:
        x = self.inp(x)
        for i, (linear, norm, act) in enumerate(zip(self.linears, self.norms, self.acts)):
            if self.on_stream is not None:
                self.on_stream(i, x)
            if self.branch == "preact":
                f = linear(act(norm(x)))
            else:
                f = act(norm(linear(x)))
            x = x + self.alpha[i] * f
        return self.head(x)

    def all_linears(self) -> list[nn.Linear]:
        """The weight layers 0 (stem) … L + 1 (head), in forward order."""
        return [self.inp, *self.linears, self.head]

    def engine_state_dict(self) -> dict[str, Tensor]:
        """The state dict, already under the engine's names (``RunResult.state_dict``'s form)."""
        return {name: t.detach().clone() for name, t in self.state_dict().items()}


@torch.no_grad()
def fixup(net: ResidualNet, gain: float, generator: torch.Generator) -> None:
    """Fixup (Zhang et al. 2019) for one-linear branches: the stem's weight N(0, gain²/fan_in)
    and its bias 0; every branch's linear and the head start at zero, nothing drawn for them."""
    nn.init.zeros_(net.inp.bias)
    nn.init.normal_(net.inp.weight, 0.0, gain / math.sqrt(net.inp.in_features), generator=generator)
    for linear in [*net.linears, net.head]:
        nn.init.zeros_(linear.weight)
        nn.init.zeros_(linear.bias)


class StreamRecorder:
    """While ``on``: each block's h, φ(h), branch gradient ∂L/∂h, stream x_{l-1} and its total
    gradient ∂L/∂x_{l-1}, as detached copies."""

    def __init__(self, net: ResidualNet):
        self.on = False
        depth = len(net.linears)
        self.h: list[Any] = [None] * depth
        self.a: list[Any] = [None] * depth
        self.dh: list[Any] = [None] * depth
        self.x: list[Any] = [None] * depth
        self.dx: list[Any] = [None] * depth
        for i, act in enumerate(net.acts):
            act.register_forward_hook(self._forward(i))
            act.register_full_backward_hook(self._backward(i))
        net.on_stream = self._stream

    def _forward(self, i: int):
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
            if self.on:
                self.h[i], self.a[i] = inputs[0].detach().clone(), out.detach().clone()

        return hook

    def _backward(self, i: int):
        def hook(module: nn.Module, grad_in: tuple[Tensor, ...], grad_out: tuple[Tensor, ...]):
            if self.on:
                self.dh[i] = grad_in[0].detach().clone()

        return hook

    def _stream(self, i: int, x: Tensor) -> None:
        if not self.on:
            return
        self.x[i] = x.detach().clone()
        if x.requires_grad:
            x.register_hook(lambda grad: self.dx.__setitem__(i, grad.detach().clone()))


def stream_layer_stats(x: Tensor, dx: Tensor) -> dict[str, float]:
    """One stream layer's statistics over the batch × units, in float64."""
    x, dx = x.double(), dx.double()
    return {
        "stream_mean": x.mean().item(),
        "stream_std": x.std(correction=0).item(),
        "grad_stream_rms": dx.pow(2).mean().sqrt().item(),
        "grad_stream_mean": dx.mean().item(),
        "grad_stream_std": dx.std(correction=0).item(),
    }
