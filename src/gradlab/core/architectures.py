"""The architecture registry: which net a run builds, its stacked form, and which quantity
reads its gradient profile.

Adding an architecture is one ``register_architecture`` call with a builder of its ``nn.Module``
(from the run spec), the ``StackedNet`` that trains its replicas together and what it measures.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gradlab.core import bn_theory, residual_theory, theory
from gradlab.core.models import MLP, StackedMLP, StackedNet
from gradlab.core.registry import lookup, register
from gradlab.core.residual import ResMLP, StackedResMLP, residual_alpha

# predict(specs, q_ins, d_in, d_out, batch): the mean-field profile at init of each of a stack's
# runs (same shape, each with its mean squared input coordinate, probed on a batch of ``batch``
# rows), None where no prediction applies
Predict = Callable[
    [Sequence[Any], Sequence[float], int, int, int], list[theory.ProfilePrediction | None]
]


@dataclass(frozen=True)
class Architecture:
    """One architecture as the engine, the probes and the theory use it.

    Attributes:
        name: The value of the grid's ``arch`` axis.
        build: ``build(d_in, d_out, spec)``: the ``nn.Module`` of one run (its ``all_linears()``
            in forward order, ``acts`` the hidden layers' activations, ``linears`` one per block).
        stacked: Trains K same-shape models of this architecture as one.
        stream: It has a residual stream: the probes measure the ``stream`` quantities too, and
            its weight layer 0 is the stem.
        profile: The per-layer quantity of the gradient profile: its first/last ratio is the
            run's ``grad_ratio``, and theory predicts it.
        signal: The per-layer quantity of the forward signal's scale that theory predicts.
        predict: The mean-field profiles at init of a stack's runs (``Predict``).
        paper: Where it comes from.
    """

    name: str
    build: Callable[[int, int, Any], MLP | ResMLP]
    stacked: type[StackedNet]
    stream: bool
    profile: str
    signal: str
    predict: Predict
    paper: str


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(architecture: Architecture) -> Architecture:
    """Add ``architecture`` to ``ARCHITECTURES`` under its name; a name can be registered once."""
    return register(ARCHITECTURES, architecture.name, architecture, "arch")


def get_architecture(name: str) -> Architecture:
    """The registered architecture ``name``; a ``ValueError`` listing the valid names otherwise."""
    return lookup(ARCHITECTURES, name, "arch")


def _predict_mlp(
    specs: Sequence[Any], q_ins: Sequence[float], d_in: int, d_out: int, batch: int
) -> list[theory.ProfilePrediction | None]:
    """``theory.predict_profiles`` where it applies: no normalization layer, an a-priori init;
    one vectorised solve for the stack (its runs share activation, depth and width). With
    BatchNorm before φ, ``bn_theory.predict_bn_profile`` at the probe's batch size, whatever the
    init (Yang et al. 2019: BatchNorm's growth does not depend on σ_w). A run's ``sigma_w2`` is
    its ``weight_gain``, which replaces the activation's gain in every layer's σ_w²."""
    first = specs[0]
    if first.norm_layer == "batchnorm_pre":
        # one profile for the stack: activation, depth and batch are shared
        prediction = bn_theory.predict_bn_profile(first.activation, first.depth, batch)
        return [prediction] * len(specs)
    widths = [d_in, *[first.width] * first.depth, d_out]

    def predict(those: list[Any], their_q_ins: list[float]) -> list[Any]:
        nets = [
            (spec.init, spec.init_std, q_in) for spec, q_in in zip(those, their_q_ins, strict=True)
        ]
        biases = [None if spec.bias_std is None else spec.bias_std**2 for spec in those]
        gains = [spec.weight_gain for spec in those]
        return theory.predict_profiles(first.activation, widths, nets, biases, gains)

    return _where(
        specs, q_ins, lambda spec: spec.norm_layer == "none" and spec.init != "lsuv", predict
    )


def _predict_resmlp(
    specs: Sequence[Any], q_ins: Sequence[float], d_in: int, d_out: int, batch: int
) -> list[theory.ProfilePrediction | None]:
    """``residual_theory.predict_residual_profiles`` for a stack of residual nets; none for a
    run with ``bias_std`` or ``sigma_w2`` (the residual recursion takes σ_b² and σ_w² from the
    init and the activation's gain)."""
    first = specs[0]

    def predict(those: list[Any], their_q_ins: list[float]) -> list[Any]:
        nets = [
            (spec.init, spec.init_std, q_in, residual_alpha(spec.residual_scale, spec.depth)[0])
            for spec, q_in in zip(those, their_q_ins, strict=True)
        ]
        return residual_theory.predict_residual_profiles(
            first.activation,
            first.residual_branch,
            first.norm_layer,
            d_in,
            first.width,
            first.depth,
            d_out,
            nets,
        )

    return _where(
        specs, q_ins, lambda spec: spec.bias_std is None and spec.sigma_w2 is None, predict
    )


def _where(
    specs: Sequence[Any],
    q_ins: Sequence[float],
    applies: Callable[[Any], bool],
    predict: Callable[[list[Any], list[float]], list[Any]],
) -> list[theory.ProfilePrediction | None]:
    """``predict(specs, q_ins)`` in one vectorised call for the runs it ``applies`` to, in
    order; None for the others."""
    chosen = [k for k, spec in enumerate(specs) if applies(spec)]
    predictions: list[theory.ProfilePrediction | None] = [None] * len(specs)
    if chosen:
        predicted = predict([specs[k] for k in chosen], [q_ins[k] for k in chosen])
        for k, prediction in zip(chosen, predicted, strict=True):
            predictions[k] = prediction
    return predictions


register_architecture(
    Architecture(
        "mlp",
        lambda d_in, d_out, spec: MLP(
            d_in, d_out, spec.depth, spec.width, spec.activation, spec.norm_layer
        ),
        StackedMLP,
        stream=False,
        profile="grad_preact_rms",
        signal="preact_std",
        predict=_predict_mlp,
        paper="Glorot & Bengio 2010",
    )
)
register_architecture(
    Architecture(
        "resmlp",
        lambda d_in, d_out, spec: ResMLP(
            d_in,
            d_out,
            spec.depth,
            spec.width,
            spec.activation,
            spec.norm_layer,
            spec.residual_branch,
            spec.residual_scale,
        ),
        StackedResMLP,
        stream=True,
        profile="grad_stream_rms",
        signal="stream_std",
        predict=_predict_resmlp,
        paper="He et al. 2016",
    )
)
