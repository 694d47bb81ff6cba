"""Per-layer gradient and activation statistics, cheap enough to take during training.

What each statistic is, its unit and how it is reduced is registered in
``gradlab.core.quantities``; this module computes the built-in ones, and calls the ``measure`` of
any registered later. Everything is computed on the device, a dict of named (K, layers) tensors
per log step; the caller syncs once to turn them into Python floats.

Weight-gradient quantiles of |g| are estimated on a fixed random subset of ``QUANTILE_SAMPLE``
entries per layer: sorting every entry at every log step would cost more than the rest of the
probe. ``torch.std_mean`` (a Welford pass), ``torch.sort``, ``kthvalue`` and ``torch.quantile``
are each many times slower on CPU than the moment and ``vector_norm`` reductions and numpy's sort
used here; the probe overhead benchmark (benchmarks/probe_overhead.py) is where such choices are
measured.
"""

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

from gradlab.core import quantities
from gradlab.core.activations import Activation

QUANTILE_SAMPLE = 512
_QUANTILES = (0.05, 0.5, 0.95)


@dataclass
class Capture:
    """Tensors a probed forward/backward pass leaves behind, one entry per hidden layer.

    Every tensor is stacked over replicas: (K, B, width), K = 1 for a single ``MLP``. A residual
    net adds its stream entering each block, and the stream's gradient.
    """

    preacts: list[Tensor] = field(default_factory=list)
    acts: list[Tensor] = field(default_factory=list)
    grads: list[Tensor | None] = field(default_factory=list)
    streams: list[Tensor] = field(default_factory=list)
    stream_grads: list[Tensor | None] = field(default_factory=list)

    def add(self, h: Tensor, a: Tensor) -> None:
        """Keep h and φ(h) of the next hidden layer; ∂L/∂h arrives with the backward pass."""
        layer = len(self.preacts)
        self.preacts.append(h.detach())
        self.acts.append(a.detach())
        self.grads.append(None)
        if h.requires_grad:
            h.register_hook(lambda g: self.grads.__setitem__(layer, g.detach()))

    def hooks(self) -> tuple[Callable[[Tensor, Tensor], None], Callable[[Tensor], None]]:
        """``StackedNet.forward``'s ``on_hidden`` and ``on_stream``."""
        return self.add, self.add_stream

    def add_stream(self, x: Tensor) -> None:
        """Keep the stream entering the next residual block; ∂L/∂x arrives with the backward
        pass (the skip's share and the branch's together)."""
        block = len(self.streams)
        self.streams.append(x.detach())
        self.stream_grads.append(None)
        if x.requires_grad:
            x.register_hook(lambda g: self.stream_grads.__setitem__(block, g.detach()))


@contextmanager
def capture(activations: nn.ModuleList) -> Iterator[Capture]:
    """Record h, φ(h) and ∂L/∂h of every hidden layer of one ``MLP`` (as K = 1 stacks).

    A forward hook on each activation module registers a tensor hook on its input, so the
    backward pass hands over ∂L/∂h without ``retain_grad``. Enter before the forward pass; every
    hook is removed on exit. ``StackedMLP.forward`` fills a ``Capture`` directly.
    """
    cap = Capture()

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
        h, layer = inputs[0], len(cap.preacts)
        cap.preacts.append(h.detach().unsqueeze(0))
        cap.acts.append(out.detach().unsqueeze(0))
        cap.grads.append(None)
        if h.requires_grad:
            h.register_hook(lambda g: cap.grads.__setitem__(layer, g.detach().unsqueeze(0)))

    handles = [act.register_forward_hook(hook) for act in activations]
    try:
        yield cap
    finally:
        for handle in handles:
            handle.remove()


class Workspace:
    """Buffers reused from one log step to the next.

    A fresh CPU allocation above glibc's mmap threshold (128 KiB) comes back as new pages, and
    touching them page-faults: for a depth-20, width-128 net that tripled the probe's cost.
    Large temporaries are written into kept buffers (``out=``) instead.
    """

    def __init__(self) -> None:
        self.buffers: dict[str, Tensor] = {}

    def buffer(self, name: str, like: Tensor) -> Tensor:
        """The buffer kept under ``name``, shaped like ``like`` (contents undefined)."""
        buffer = self.buffers.get(name)
        if (
            buffer is None
            or buffer.shape != like.shape
            or buffer.dtype != like.dtype
            or buffer.device != like.device
        ):
            buffer = self.buffers[name] = torch.empty_like(like)
        return buffer


def _std(mean: Tensor, mean_sq: Tensor) -> Tensor:
    """sqrt(E[x²] − E[x]²): on CPU ~10× faster than ``torch.std_mean``, whose Welford pass
    dominated the probe's cost; the cancellation it risks is far below the precision these
    statistics are read at."""
    return (mean_sq - mean.pow(2)).clamp_min(0).sqrt()


def hidden_stats(cap: Capture, activation: Activation, workspace: Workspace) -> dict[str, Tensor]:
    """Every hidden quantity of every layer and replica, by name: (K, depth) each.

    Each (K, B, W) tensor is reduced where it lies, one kernel per tensor and moment. Copying
    h, φ(h) and ∂L/∂h of every layer into one block first, to reduce them with fewer kernels,
    took twice as long in a run (depth 5 to 20): the copy cost more than the launches it saved.
    """
    depth = len(cap.preacts)
    first = cap.preacts[0]
    replicas, dims = first.shape[0], tuple(range(1, first.dim()))
    grads = cast(list[Tensor], cap.grads)  # every one set by the backward pass that came first
    tensors = [*cap.preacts, *cap.acts, *grads]

    def per_layer(values: list[Tensor]) -> Tensor:  # (K,) each → (K, 3, depth)
        return torch.stack(values, 1).view(replicas, 3, depth)

    mean = per_layer([t.mean(dims) for t in tensors])
    mean_sq = per_layer([torch.linalg.vector_norm(t, dim=dims) for t in tensors]).pow(2)
    mean_sq /= first[0].numel()
    nan = torch.full((replicas, depth), float("nan"), device=first.device)
    if activation.saturated is not None:
        mask = workspace.buffer("saturation", first)
        saturation = torch.stack(
            [activation.saturated(h, a, mask).mean(dims) for h, a in zip(cap.preacts, cap.acts)],
            1,
        )
    else:
        saturation = nan
    if activation.relu_like:
        # a unit is active if h > 0 for some input: its largest h over the batch (K, L, W);
        # NaN if any h is (a diverged step), and then not active
        active = torch.stack([h.amax(dim=dims[:-1]) for h in cap.preacts], 1) > 0
        dead = 1.0 - active.float().mean(-1)
    else:
        dead = nan
    std = _std(mean, mean_sq)
    stats = {
        "grad_preact_rms": mean_sq[:, 2].sqrt(),
        "grad_preact_mean": mean[:, 2],
        "grad_preact_std": std[:, 2],
        "preact_mean": mean[:, 0],
        "preact_std": std[:, 0],
        "act_mean": mean[:, 1],
        "act_std": std[:, 1],
        "act_saturation": saturation,
        "act_dead_frac": dead,
    }
    for quantity in quantities.custom("hidden"):
        measure = cast(Callable[[Tensor, Tensor, Tensor], Tensor], quantity.measure)
        stats[quantity.name] = torch.stack(
            [measure(h, a, g) for h, a, g in zip(cap.preacts, cap.acts, grads, strict=True)], 1
        )
    return stats


def stream_stats(cap: Capture) -> dict[str, Tensor]:
    """Every stream quantity of every block and replica, by name: (K, depth) each; reduced as
    ``hidden_stats`` reduces h and ∂L/∂h."""
    grads = cast(list[Tensor], cap.stream_grads)  # every one set by the backward pass
    tensors = [*cap.streams, *grads]
    depth, first = len(cap.streams), cap.streams[0]
    replicas, dims = first.shape[0], tuple(range(1, first.dim()))

    def per_layer(values: list[Tensor]) -> Tensor:  # (K,) each → (K, 2, depth)
        return torch.stack(values, 1).view(replicas, 2, depth)

    mean = per_layer([t.mean(dims) for t in tensors])
    mean_sq = per_layer([torch.linalg.vector_norm(t, dim=dims) for t in tensors]).pow(2)
    mean_sq /= first[0].numel()
    std = _std(mean, mean_sq)
    return {
        "grad_stream_rms": mean_sq[:, 1].sqrt(),
        "grad_stream_mean": mean[:, 1],
        "grad_stream_std": std[:, 1],
        "stream_mean": mean[:, 0],
        "stream_std": std[:, 0],
    }


def weight_grad_stats(grads: list[Tensor]) -> dict[str, Tensor]:
    """Gradient quantities of each (K, in, out) weight stack, by name: (K, len(grads)) each;
    every weight quantity but ``update_ratio``, which the optimizer step has yet to give. Each
    stack is reduced where it lies (as in ``hidden_stats``); the quantiles come from one fixed
    subset of each layer's entries."""
    first = grads[0]
    replicas, dims = first.shape[0], tuple(range(1, first.dim()))
    numel, subsets = _weight_layout(tuple(g[0].numel() for g in grads), first.dtype, first.device)

    def per_layer(values: list[Tensor]) -> Tensor:  # (K,) each → (K, layers)
        return torch.stack(values, 1)

    norm = per_layer([torch.linalg.vector_norm(g, dim=dims) for g in grads])
    mean = per_layer([g.sum(dims) for g in grads]) / numel
    # vector_norm(ord=inf) would make a temporary as big as g
    absmax = torch.maximum(
        per_layer([g.amax(dims) for g in grads]), per_layer([g.amin(dims) for g in grads]).neg_()
    )
    sample = torch.stack(  # (K, layers, QUANTILE_SAMPLE)
        [g.reshape(replicas, -1).index_select(1, at) for g, at in zip(grads, subsets, strict=True)],
        1,
    ).abs_()
    q05, q50, q95 = _nearest_rank(sample).unbind(-1)
    stats = {
        "grad_weight_norm": norm,
        "grad_weight_mean": mean,
        "grad_weight_std": _std(mean, norm.pow(2) / numel),
        "grad_weight_absmax": absmax,
        "grad_weight_q05": q05,
        "grad_weight_q50": q50,
        "grad_weight_q95": q95,
        "grad_weight_zero_frac": (sample == 0).float().mean(-1),
    }
    for quantity in quantities.custom("weight"):
        measure = cast(Callable[[Tensor], Tensor], quantity.measure)
        stats[quantity.name] = per_layer([measure(g) for g in grads])
    return stats


@functools.cache
def _weight_layout(
    numels: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, list[Tensor]]:
    """Entries per replica of each weight layer, as a tensor, and each layer's quantile subset."""
    as_tensor = torch.tensor(numels, dtype=dtype, device=device)
    return as_tensor, [_subset(n, device) for n in numels]


@functools.cache
def _subset(numel: int, device: torch.device) -> Tensor:
    """QUANTILE_SAMPLE positions among ``numel``: a fixed random subset, or every position
    repeated near-evenly when there are fewer (the empirical distribution is then unchanged)."""
    if numel <= QUANTILE_SAMPLE:
        return (torch.arange(QUANTILE_SAMPLE) * numel // QUANTILE_SAMPLE).to(device)
    # fixed across calls and runs: the same entries are compared from one log step to the next
    generator = torch.Generator().manual_seed(numel)
    return torch.randperm(numel, generator=generator)[:QUANTILE_SAMPLE].to(device)


def _nearest_rank(samples: Tensor) -> Tensor:
    """Quantiles ``_QUANTILES`` (5 %, 50 %, 95 %) along the last dim as nearest-rank order
    statistics.

    On the CPU the rows are sorted by numpy, whose SIMD sort is ~40× faster here than torch's
    per-row ``sort`` or ``kthvalue`` (1 ms for 80 rows of 512: as much as the rest of a probe).
    """
    last = samples.shape[-1] - 1
    positions = [round(level * last) for level in _QUANTILES]
    if samples.device.type == "cpu":
        ordered = torch.from_numpy(np.sort(samples.numpy(), axis=-1))
    else:
        ordered = samples.sort(dim=-1).values
    return ordered[..., positions]


@torch.no_grad()
def snapshot(weights: list[Tensor]) -> list[Tensor]:
    """Copies of ``weights`` (one fused call), to measure the step that follows."""
    return list(torch._foreach_mul(weights, 1.0))


@torch.no_grad()
def update_ratios(before: list[Tensor], after: list[Tensor]) -> Tensor:
    """‖W_after − W_before‖ / ‖W_before‖ per replica and layer of (K, in, out) stacks: (K, L)."""
    deltas = torch._foreach_sub(after, before)
    return torch.stack([_replica_norm(d) for d in deltas], 1) / torch.stack(
        [_replica_norm(w) for w in before], 1
    )


def _replica_norm(x: Tensor) -> Tensor:
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.dim())))


def global_grad_norm(grads: list[Tensor]) -> Tensor:
    """Each replica's L2 norm of all its gradients together, (K,): what ``clip_grad_norm_``
    compares to ``clip``."""
    return torch.linalg.vector_norm(torch.stack([_replica_norm(g) for g in grads]), dim=0)
