"""Per-layer gradient and activation statistics, cheap enough to take during training.

What is measured (names are the ``quantity`` column of the layer-stats table and the MLflow
metric prefix, ``<quantity>/layer_NN``). Layers are numbered 1…depth for the hidden layers; layer
depth+1 is the output head, which has weight quantities only.

Back-propagated gradient, ∂L/∂h_l with h_l the input of layer l's activation (Glorot & Bengio
2010, Figs 6–7; vanishing shows here even when weight gradients look flat, their eq. 14):
    grad_preact_rms, grad_preact_mean, grad_preact_std     (loss units per pre-activation unit)
Weight gradient ∂L/∂W_l:
    grad_weight_norm (Frobenius), grad_weight_mean, grad_weight_std, grad_weight_absmax,
    grad_weight_q05, grad_weight_q50, grad_weight_q95 (quantiles of |g|),
    grad_weight_zero_frac (fraction exactly 0)
Forward signal:
    preact_mean, preact_std (h_l), act_mean, act_std (φ(h_l)),
    act_saturation (fraction of units×samples in φ's flat region, per ``ACTIVATION_TRAITS``),
    act_dead_frac (fraction of units never active, h ≤ 0, on the whole batch; ReLU-like only)
Update:
    update_ratio = ‖ΔW_l‖ / ‖W_l‖ for the optimizer step taken at that step
Whole network (layer 0):
    grad_global_norm (all parameters, before clipping), loss

Everything is computed on the device as one tensor per log step; the caller turns it into
Python floats with a single host sync.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

SaturationRule = Callable[[Tensor, Tensor], Tensor]  # (h, φ(h)) -> bool mask


@dataclass(frozen=True)
class ActivationTraits:
    """How to read saturation and death off one activation."""

    saturated: SaturationRule | None  # None: φ has no flat region that traps gradients
    relu_like: bool  # units can be "dead": h ≤ 0 for every input


# φ'(h) < ~0.01 in every saturated region below.
ACTIVATION_TRAITS: dict[str, ActivationTraits] = {
    "sigmoid": ActivationTraits(lambda h, a: (a < 0.01) | (a > 0.99), relu_like=False),
    "tanh": ActivationTraits(lambda h, a: a.abs() > 0.99, relu_like=False),
    "softsign": ActivationTraits(lambda h, a: a.abs() > 0.9, relu_like=False),
    "elu": ActivationTraits(lambda h, a: a < -0.99, relu_like=True),
    "selu": ActivationTraits(lambda h, a: h < -4.6, relu_like=True),  # e^h < 0.01
    "relu": ActivationTraits(None, relu_like=True),
    "leaky_relu": ActivationTraits(None, relu_like=True),
    "gelu": ActivationTraits(None, relu_like=True),
    "identity": ActivationTraits(None, relu_like=False),
}

HIDDEN_QUANTITIES = (
    "grad_preact_rms",
    "grad_preact_mean",
    "grad_preact_std",
    "preact_mean",
    "preact_std",
    "act_mean",
    "act_std",
    "act_saturation",
    "act_dead_frac",
)
WEIGHT_QUANTITIES = (
    "grad_weight_norm",
    "grad_weight_mean",
    "grad_weight_std",
    "grad_weight_absmax",
    "grad_weight_q05",
    "grad_weight_q50",
    "grad_weight_q95",
    "grad_weight_zero_frac",
    "update_ratio",
)
GLOBAL_QUANTITIES = ("grad_global_norm", "loss")
DISTRIBUTION_QUANTITIES = ("grad_preact", "preact", "act", "grad_weight")

_QUANTILES = torch.tensor([0.05, 0.5, 0.95])


@dataclass
class Capture:
    """Tensors a probed forward/backward pass leaves behind, one entry per hidden layer."""

    preacts: list[Tensor | None]
    acts: list[Tensor | None]
    grads: list[Tensor | None] = field(default_factory=list)


@contextmanager
def capture(activations: nn.ModuleList) -> Iterator[Capture]:
    """Record h, φ(h) and ∂L/∂h of every hidden layer during one forward and backward pass.

    A forward hook on each activation module registers a tensor hook on its input, so the
    backward pass hands over ∂L/∂h without ``retain_grad``. Enter before the forward pass; every
    hook is removed on exit.
    """
    n = len(activations)
    cap = Capture(preacts=[None] * n, acts=[None] * n, grads=[None] * n)

    def on_forward(i: int) -> Callable:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
            h = inputs[0]
            cap.preacts[i], cap.acts[i] = h.detach(), out.detach()
            if h.requires_grad:
                h.register_hook(lambda g: cap.grads.__setitem__(i, g.detach()))

        return hook

    handles = [act.register_forward_hook(on_forward(i)) for i, act in enumerate(activations)]
    try:
        yield cap
    finally:
        for handle in handles:
            handle.remove()


def hidden_stats(cap: Capture, traits: ActivationTraits) -> Tensor:
    """Statistics of every hidden layer, shape (depth, len(HIDDEN_QUANTITIES))."""
    h, a = torch.stack(cap.preacts), torch.stack(cap.acts)  # (L, B, W)
    g = torch.stack(cap.grads)
    nan = torch.full(h.shape[:1], float("nan"), device=h.device)
    saturation = (
        traits.saturated(h, a).float().mean((1, 2)) if traits.saturated is not None else nan
    )
    dead = 1.0 - (h > 0).any(dim=1).float().mean(1) if traits.relu_like else nan
    g_std, g_mean = torch.std_mean(g, dim=(1, 2))
    h_std, h_mean = torch.std_mean(h, dim=(1, 2))
    a_std, a_mean = torch.std_mean(a, dim=(1, 2))
    rms = g.pow(2).mean((1, 2)).sqrt()
    return torch.stack([rms, g_mean, g_std, h_mean, h_std, a_mean, a_std, saturation, dead], 1)


def weight_grad_stats(grads: list[Tensor]) -> Tensor:
    """Gradient statistics of each weight matrix, shape (len(grads), 8): every column of
    ``WEIGHT_QUANTITIES`` but ``update_ratio``. Layers of one shape are reduced together."""
    out = torch.empty(len(grads), 8, device=grads[0].device)
    by_shape: dict[torch.Size, list[int]] = {}
    for i, grad in enumerate(grads):
        by_shape.setdefault(grad.shape, []).append(i)
    for indices in by_shape.values():
        g = torch.stack([grads[i].flatten() for i in indices])  # (layers, numel)
        magnitude = g.abs()
        std, mean = torch.std_mean(g, dim=1)
        quantiles = torch.quantile(magnitude, _QUANTILES.to(g.device), dim=1).T  # (layers, 3)
        out[indices] = torch.cat(
            [
                torch.stack(
                    [g.pow(2).sum(1).sqrt(), mean, std, magnitude.amax(1)],
                    dim=1,
                ),
                quantiles,
                (g == 0).float().mean(1, keepdim=True),
            ],
            dim=1,
        )
    return out


def update_ratios(before: list[Tensor], after: list[Tensor]) -> Tensor:
    """‖W_after − W_before‖ / ‖W_before‖ per layer."""
    deltas = torch._foreach_sub(after, before)
    return torch.stack(torch._foreach_norm(deltas)) / torch.stack(torch._foreach_norm(before))


def global_grad_norm(grads: list[Tensor]) -> Tensor:
    """The L2 norm of all gradients together (what ``clip_grad_norm_`` compares to ``clip``)."""
    return torch.stack(torch._foreach_norm(grads)).norm()


def sample_indices(numel: int, size: int, generator: torch.Generator) -> Tensor:
    """A fixed random subset of positions, the same at every checkpoint of a run."""
    if numel <= size:
        return torch.arange(numel)
    return torch.randperm(numel, generator=generator)[:size]
