"""What a run records while it trains: its probe steps, distribution samples and the mean-field
prediction, kept as plain floats and turned into long tables once, at the end.

A probe step is one row of floats per replica, laid out by ``ProbeLayout`` from the quantity
registry (``gradlab.core.quantities``): the hidden quantities of layer 1, of layer 2, …, then the
weight quantities layer by layer (the head last), then the global ones. Every value is read by
its quantity's name, never by a hand-counted position.
"""

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from gradlab.core import probes, quantities, theory
from gradlab.core.activations import Activation
from gradlab.core.schema import PHASES, empty_table, text_column
from gradlab.core.spectrum import SpectrumLog


@dataclass(frozen=True, eq=False)
class ProbeLayout:
    """Where each quantity's values sit in a probe step's row, for nets of one depth and kind.

    Attributes:
        names: The measured quantities, in the order of the ``layer_stats`` rows.
        layer: The layer of each value of a row (0: the whole net, or a residual net's stem for
            a weight quantity; depth + 1: the head).
        quantity: The position in ``names`` of each value of a row.
        scoped: ``names`` by scope: hidden, weight, global and, for a residual net, stream (the
            row's blocks).
    """

    names: tuple[str, ...]
    layer: np.ndarray
    quantity: np.ndarray
    scoped: tuple[tuple[str, ...], ...]

    def positions(self, name: str) -> np.ndarray:
        """The positions of quantity ``name``'s values in a row, layer by layer."""
        return np.flatnonzero(self.quantity == self.names.index(name))

    def row(self, stats: dict[str, Tensor]) -> Tensor:
        """One (K, values) tensor of every replica's named statistics, in this layout's order."""
        blocks = [
            torch.stack([stats[name] for name in block], -1).flatten(1) for block in self.scoped
        ]
        return torch.cat(blocks, 1)


@functools.cache
def probe_layout(depth: int, names: tuple[str, ...], stream: bool = False) -> ProbeLayout:
    """The layout of a probe step of a ``depth``-layer net measuring ``names`` (one per depth,
    kind and registry state: every run of that shape shares it). ``stream``: a residual net, with
    a stream entering each block and a stem (weight layer 0)."""
    scopes = ("hidden", "weight", "global", *("stream",) * stream)
    scoped = {scope: quantities.names(scope) for scope in scopes}
    if names != sum(scoped.values(), ()):
        raise ValueError(f"{names} are not the registry's measured quantities in order")
    layers_of = {
        "hidden": range(1, depth + 1),
        "weight": range(0 if stream else 1, depth + 2),
        "global": [0],
        "stream": range(1, depth + 1),
    }
    layer, quantity = [], []
    for scope, members in scoped.items():
        for at in layers_of[scope]:
            layer += [at] * len(members)
            quantity += [names.index(name) for name in members]
    arrays = np.array(layer), np.array(quantity)
    for shared in arrays:
        shared.setflags(write=False)
    return ProbeLayout(names, *arrays, tuple(scoped.values()))


@dataclass(frozen=True, eq=False)
class Probe:
    """What the probe steps of one stack share: its activation's rules and reused buffers."""

    activation: Activation
    workspace: probes.Workspace

    def measure(
        self, cap: probes.Capture, grads: list[Tensor], weight_grads: list[Tensor], loss: Tensor
    ) -> dict[str, Tensor]:
        """Every quantity available after backward, before clipping and the optimizer step, by
        name: (K, layers) per hidden and weight quantity, (K,) per global one."""
        stats = {
            **probes.hidden_stats(cap, self.activation, self.workspace),
            **probes.weight_grad_stats(weight_grads),
            "grad_global_norm": probes.global_grad_norm(grads),
            "loss": loss.detach(),
        }
        if cap.streams:
            stats.update(probes.stream_stats(cap))
        return stats


class ProbeLog:
    """One run's probe steps and distribution samples; builds its long tables once, at the end."""

    def __init__(self, depth: int, sample_size: int, seed: int, stream: bool = False):
        self.depth, self.sample_size = depth, sample_size
        self.layout = probe_layout(depth, quantities.measured(stream), stream)
        self.steps: list[tuple[str, int, list[float]]] = []  # phase, step, row of ``layout``
        # per call of keep_samples: phase, step, quantity (codes) and layer of each row, rows
        self.samples: list[tuple[str, int, list[int], list[int], Tensor]] = []
        self.generator = torch.Generator().manual_seed(seed)  # distribution samples only
        self.spectrum = SpectrumLog()  # the Jacobian's singular values, where measured

    def add(self, phase: str, step: int, row: list[float]) -> None:
        """Keep one probe step: a row laid out as ``self.layout``."""
        self.steps.append((phase, step, row))

    def last(self, phase: str, name: str) -> np.ndarray:
        """Quantity ``name`` per layer at the last probe step of ``phase`` (empty if none)."""
        rows = [row for p, _, row in self.steps if p == phase]
        if not rows:
            return np.array([])
        return np.asarray(rows[-1])[self.layout.positions(name)]

    def layer_stats(
        self,
        prediction: theory.ProfilePrediction | None = None,
        predicted: tuple[str, str] = ("grad_preact_rms", "preact_std"),
    ) -> pd.DataFrame:
        """Every probe step's values, then phase ``theory``: per layer the mean-field
        prediction of the gradient and the signal named by ``predicted`` (an architecture's
        ``profile`` and ``signal``: the last layer's gradient is 1) and ``chi1``."""
        parts = [self._probe_rows(), _theory_rows(prediction, predicted)]
        if not any(len(part[-1]) for part in parts):
            return empty_table("layer_stats")
        phase, step, layer, quantity, value = (np.concatenate(c) for c in zip(*parts, strict=True))
        return pd.DataFrame(
            {
                "phase": text_column(PHASES, phase),
                "step": step,
                "layer": layer,
                "quantity": text_column(quantities.layer_quantities(), quantity),
                "value": value,
            }
        )

    def _probe_rows(self) -> tuple[np.ndarray, ...]:
        """Phase, step, layer, quantity (codes into ``PHASES`` and the layout's names, which
        ``quantities.layer_quantities`` begins with) and value of every probe step's rows."""
        if not self.steps:
            return _no_rows()
        values = np.array([row for _, _, row in self.steps])  # (probe steps, values)
        per_step = values.shape[1]
        return (
            np.repeat([PHASES.index(phase) for phase, _, _ in self.steps], per_step),
            np.repeat([step for _, step, _ in self.steps], per_step),
            np.tile(self.layout.layer, len(values)),
            np.tile(self.layout.quantity, len(values)),
            values.ravel(),
        )

    def distributions(self) -> pd.DataFrame:
        if not self.samples:
            return empty_table("distributions")
        values = torch.cat([sample[4] for sample in self.samples]).float().cpu().numpy()
        size = values.shape[1]
        rows_per_call = [len(sample[2]) for sample in self.samples]
        phases = [PHASES.index(s[0]) for s in self.samples]
        return pd.DataFrame(
            {
                "phase": text_column(PHASES, np.repeat(phases, rows_per_call).repeat(size)),
                "step": np.repeat([s[1] for s in self.samples], rows_per_call).repeat(size),
                "layer": np.concatenate([s[3] for s in self.samples]).repeat(size),
                "quantity": text_column(
                    quantities.names("distribution"),
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
        per_quantity: For each distribution quantity (``quantities.names("distribution")``), a
            (K, …) stack per layer.
    """
    quantity_codes = [q for q, stacks in enumerate(per_quantity) for _ in stacks]
    layers = [layer for stacks in per_quantity for layer in range(1, len(stacks) + 1)]
    tensors = [t for stacks in per_quantity for t in stacks]
    if len(per_quantity) != len(quantities.names("distribution")) or not all(
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
        log.samples.append((phase, step, quantity_codes, layers, run_values))


def sample_tensors(cap: probes.Capture, weight_grads: list[Tensor]) -> tuple[list[Tensor], ...]:
    """The stacks ``keep_samples`` draws from, in the order of the distribution quantities:
    ∂L/∂h, h, φ(h) per hidden layer and ∂L/∂W per weight layer."""
    grads = cast(list[Tensor], cap.grads)  # every one set by the backward pass
    return grads, cap.preacts, cap.acts, weight_grads


def _theory_rows(
    prediction: theory.ProfilePrediction | None, predicted: tuple[str, str]
) -> tuple[np.ndarray, ...]:
    """``ProbeLog._probe_rows``' columns for phase ``theory``: the ``predicted`` gradient and
    signal quantities and ``chi1``, per layer."""
    if prediction is None:
        return _no_rows()
    names = (*predicted, "chi1")
    depth, n = len(prediction.q), len(names)
    codes = [quantities.layer_quantities().index(q) for q in names]
    # the spread around a mean (a residual stream's shift, common to its units), as measured
    mean_sq = 0.0 if prediction.mean is None else prediction.mean**2
    return (
        np.full(depth * n, PHASES.index("theory")),
        np.zeros(depth * n, dtype=np.int64),
        np.tile(np.arange(1, depth + 1), n),
        np.repeat(codes, depth),
        np.concatenate([prediction.grad_rms, np.sqrt(prediction.q - mean_sq), prediction.chi1]),
    )


def _no_rows() -> tuple[np.ndarray, ...]:
    integers = np.zeros(0, dtype=np.int64)
    return integers, integers, integers, integers, np.zeros(0)


def nan_updates(replicas: int, weight_layers: int, device: torch.device) -> Tensor:
    """``update_ratio`` at init, where no step has been taken: NaN for every weight layer."""
    return torch.full((replicas, weight_layers), math.nan, device=device)
