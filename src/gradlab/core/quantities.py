"""The quantity registry: every per-layer number gradlab measures or predicts, named once.

A quantity's name is the ``quantity`` column of the ``layer_stats`` (or ``distributions``) table
and the prefix of its MLflow metrics (``<name>/first``, ``<name>/last``, ``<name>/layer_NN``); its
meaning is the report's glossary entry. The probe layout, the tables' columns, the claims' and
``train.mlflow_quantities``' valid names all come from here, in registration order.

Scopes: ``hidden`` (one value per hidden layer 1 … depth, h_l being the input of layer l's
activation), ``weight`` (per weight layer 1 … depth + 1, the head last; a residual net's stem is
weight layer 0), ``global`` (the whole network, layer 0), ``stream`` (a residual net's stream
entering block l, per block 1 … depth), ``theory`` (predicted only, per hidden layer) and
``distribution`` (raw values sampled at checkpoints into the ``distributions`` table).

The built-in measured quantities are computed together by ``gradlab.core.probes`` (one fused pass
per log step). A new one brings its own ``measure``::

    register_quantity(Quantity(
        "act_abs_max", "hidden", "activation units", "max over units and batch",
        "largest |φ(h)| of the layer", measure=lambda h, a, g: a.abs().amax((1, 2))))

``measure`` gets, for a hidden quantity, h, φ(h) and ∂L/∂h of one layer as (K, B, width) stacks
(K replicas) and returns (K,); for a weight quantity, ∂L/∂W of one layer as a (K, in, out) stack.
"""

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from gradlab.core.registry import lookup, register

SCOPES = ("hidden", "weight", "global", "stream", "theory", "distribution")


@dataclass(frozen=True)
class Quantity:
    """One named measurement (or prediction).

    Attributes:
        name: The ``quantity`` column's value and the MLflow metric prefix.
        scope: One of ``SCOPES``: which layers it has a value for.
        unit: What its value is measured in.
        reduction: How a layer's tensor becomes one number.
        meaning: One line on what it tells, for the report's glossary.
        measure: Computes a quantity that the built-in probe does not (see the module's
            docstring); None for the built-in ones.
    """

    name: str
    scope: str
    unit: str
    reduction: str
    meaning: str
    measure: Callable[..., Tensor] | None = None


def register_quantity(quantity: Quantity) -> Quantity:
    """Add ``quantity`` to ``QUANTITIES``: a new name, of scope hidden or weight (the global,
    theory and distribution ones are what the loop, the theory and the samples produce), with a
    ``measure`` (the probe computes only the built-in ones)."""
    lookup(dict.fromkeys(("hidden", "weight")), quantity.scope, "quantity scope")
    if quantity.measure is None:
        raise ValueError(f"quantity {quantity.name!r} needs a measure: the probe cannot compute it")
    return register(QUANTITIES, quantity.name, quantity, "quantity")


def names(*scopes: str) -> tuple[str, ...]:
    """The registered quantities of ``scopes``, scope by scope, each in registration order."""
    return tuple(q.name for scope in scopes for q in QUANTITIES.values() if q.scope == scope)


def measured(stream: bool = False) -> tuple[str, ...]:
    """Every quantity a probe step records, in the order of its ``layer_stats`` rows; with
    ``stream``, a residual net's stream quantities too."""
    return names("hidden", "weight", "global", *("stream",) * stream)


def layer_quantities() -> tuple[str, ...]:
    """Every value the ``layer_stats`` table's ``quantity`` column can hold; the measured ones of
    a residual net (``measured(stream=True)``) first."""
    return names("hidden", "weight", "global", "stream", "theory")


def custom(scope: str) -> list[Quantity]:
    """The quantities of ``scope`` that bring their own ``measure``."""
    return [q for q in QUANTITIES.values() if q.scope == scope and q.measure is not None]


_LOSS = "loss units"
# The built-in ones, computed together by ``gradlab.core.probes``.
_BUILT_IN = (
    # Back-propagated gradient ∂L/∂h_l (Glorot & Bengio 2010, Figs 6–7): vanishing shows here even
    # when weight gradients look flat (their eq. 14)
    Quantity(
        "grad_preact_rms",
        "hidden",
        _LOSS,
        "RMS over units and batch",
        "size of the back-propagated gradient ∂L/∂h at the layer",
    ),
    Quantity("grad_preact_mean", "hidden", _LOSS, "mean over units and batch", "mean of ∂L/∂h"),
    Quantity("grad_preact_std", "hidden", _LOSS, "std over units and batch", "spread of ∂L/∂h"),
    Quantity(
        "preact_mean",
        "hidden",
        "pre-activation units",
        "mean over units and batch",
        "mean of the pre-activation h",
    ),
    Quantity(
        "preact_std",
        "hidden",
        "pre-activation units",
        "std over units and batch",
        "spread of the pre-activation h: the forward signal's scale",
    ),
    Quantity("act_mean", "hidden", "activation units", "mean over units and batch", "mean of φ(h)"),
    Quantity("act_std", "hidden", "activation units", "std over units and batch", "spread of φ(h)"),
    Quantity(
        "act_saturation",
        "hidden",
        "fraction",
        "mean over units and batch",
        "share of units × samples in φ's flat region (φ' < 0.02; the activation's rule)",
    ),
    Quantity(
        "act_dead_frac",
        "hidden",
        "fraction",
        "over units, on the whole batch",
        "share of units never active (h ≤ 0 for every input; ReLU-like only)",
    ),
    Quantity(
        "grad_weight_norm", "weight", _LOSS, "Frobenius norm", "size of the weight gradient ∂L/∂W"
    ),
    Quantity("grad_weight_mean", "weight", _LOSS, "mean over entries", "mean of ∂L/∂W"),
    Quantity("grad_weight_std", "weight", _LOSS, "std over entries", "spread of ∂L/∂W"),
    Quantity(
        "grad_weight_absmax", "weight", _LOSS, "max |·| over entries", "largest entry of |∂L/∂W|"
    ),
    Quantity(
        "grad_weight_q05",
        "weight",
        _LOSS,
        "5 % quantile of |·| on a fixed subset",
        "small end of |∂L/∂W|",
    ),
    Quantity(
        "grad_weight_q50", "weight", _LOSS, "median of |·| on a fixed subset", "typical |∂L/∂W|"
    ),
    Quantity(
        "grad_weight_q95",
        "weight",
        _LOSS,
        "95 % quantile of |·| on a fixed subset",
        "large end of |∂L/∂W|",
    ),
    Quantity(
        "grad_weight_zero_frac",
        "weight",
        "fraction",
        "on the quantiles' subset",
        "share of weight-gradient entries exactly 0",
    ),
    Quantity(
        "update_ratio",
        "weight",
        "ratio",
        "‖ΔW‖ / ‖W‖",
        "relative size of the optimizer step taken at that step",
    ),
    Quantity(
        "grad_global_norm",
        "global",
        _LOSS,
        "L2 norm of all gradients, before clipping",
        "what gradient clipping compares with its threshold",
    ),
    Quantity("loss", "global", _LOSS, "mean over the batch", "training loss at that step"),
    # The residual stream x_{l−1} entering block l, and the whole gradient ∂L/∂x_{l−1} it
    # carries back (the skip's and the branch's): what a residual net's grad_ratio reads
    Quantity(
        "grad_stream_rms",
        "stream",
        _LOSS,
        "RMS over units and batch",
        "size of the back-propagated gradient ∂L/∂x on the residual stream entering the block",
    ),
    Quantity("grad_stream_mean", "stream", _LOSS, "mean over units and batch", "mean of ∂L/∂x"),
    Quantity("grad_stream_std", "stream", _LOSS, "std over units and batch", "spread of ∂L/∂x"),
    Quantity(
        "stream_mean", "stream", "stream units", "mean over units and batch", "mean of the stream x"
    ),
    Quantity(
        "stream_std",
        "stream",
        "stream units",
        "std over units and batch",
        "spread of the stream x entering the block: a residual net's forward signal",
    ),
    Quantity(
        "chi1",
        "theory",
        "ratio",
        "mean-field",
        "χ₁ = σ_w² E[φ'(h)²]: how much one layer multiplies the mean squared ∂L/∂h (a residual "
        "block multiplies the stream's by 1 + α² χ₁)",
    ),
    Quantity("grad_preact", "distribution", _LOSS, "sampled values", "values of ∂L/∂h"),
    Quantity("preact", "distribution", "pre-activation units", "sampled values", "values of h"),
    Quantity("act", "distribution", "activation units", "sampled values", "values of φ(h)"),
    Quantity("grad_weight", "distribution", _LOSS, "sampled values", "values of ∂L/∂W"),
)
QUANTITIES: dict[str, Quantity] = {quantity.name: quantity for quantity in _BUILT_IN}
