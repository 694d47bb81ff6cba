"""The weight-initialization registry: one entry per scheme, with the variances it gives.

Every scheme is written as the variance it gives a layer with ``fan_in`` inputs and ``fan_out``
outputs (``σ_w² = fan_in · Var[W]`` is the number the mean-field theory in ``theory.py`` uses).
Biases start at zero, except under ``default`` which keeps PyTorch's own ``nn.Linear`` init.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gradlab.core.activations import get_activation
from gradlab.core.models import MLP
from gradlab.core.registry import lookup, register
from gradlab.core.residual import ResMLP


@dataclass(frozen=True)
class Init:
    """One weight initialization: how it draws a layer's weights, and the variances it gives.

    Attributes:
        name: The value of the grid's ``init`` axis.
        draw: Fills a ``(fan_out, fan_in)`` weight in place: ``draw(weight, gain, std,
            generator)``, ``gain`` being the activation's registered gain (or a run's
            ``√sigma_w2`` where the init is ``scalable``).
        variances: ``(σ_w², σ_b²) = (fan_in · Var[W], Var[b])`` it gives a layer, as
            ``variances(fan_in, fan_out, gain, std)``: what the mean-field theory starts from.
            NaN where no a-priori value exists (``lsuv`` fits the weights to the data).
        paper: Where the scheme comes from.
        torch_bias: Keep ``nn.Linear``'s own bias init (``default``); every other scheme starts
            the biases at zero.
        zero_init: The layers a residual net names in ``zero_init_linears()`` (each branch's last
            and the head) start at zero and draw nothing (Fixup); only residual nets have them.
        scalable: Its ``σ_w²`` is the gain² (times a shape factor for orthogonal's tall layers),
            so a run may choose ``σ_w²`` by drawing with the gain ``√σ_w²`` in place of the
            activation's (the grid's ``sigma_w2``; Pennington et al. 2017 set orthogonal and
            Gaussian nets to any σ_w²).
        weights: The ensemble its weight matrices belong to, for the free-probability theory of
            the Jacobian's spectrum (``gradlab.core.spectrum_theory.WEIGHTS``): ``gaussian`` for
            independent entries of any law (WᵀW's spectrum is Marchenko–Pastur whatever the
            entries' distribution), ``orthogonal`` for a scaled orthogonal matrix.
    """

    name: str
    draw: Callable[[Tensor, float, float, torch.Generator], object]
    variances: Callable[[int, int, float, float | None], tuple[float, float]]
    paper: str
    torch_bias: bool = False
    zero_init: bool = False
    scalable: bool = False
    weights: str = "gaussian"


INITS: dict[str, Init] = {}


def register_init(init: Init) -> Init:
    """Add ``init`` to ``INITS`` under its name; a name can be registered once."""
    return register(INITS, init.name, init, "init")


def _fans(weight: Tensor) -> tuple[int, int]:
    fan_out, fan_in = weight.shape
    return fan_in, fan_out


def _gaussian(weight: Tensor, std: float, generator: torch.Generator) -> None:
    nn.init.normal_(weight, 0.0, std, generator=generator)


def _uniform(weight: Tensor, std: float, generator: torch.Generator) -> None:
    bound = math.sqrt(3.0) * std  # U(-a, a) has variance a²/3
    nn.init.uniform_(weight, -bound, bound, generator=generator)


def _xavier_variances(
    fan_in: int, fan_out: int, gain: float, std: float | None
) -> tuple[float, float]:
    return 2.0 * fan_in / (fan_in + fan_out), 0.0


def _gain_variances(
    fan_in: int, fan_out: int, gain: float, std: float | None
) -> tuple[float, float]:
    return gain**2, 0.0


for _init in (
    # PyTorch's nn.Linear init, W, b ~ U(−1/√fan_in, 1/√fan_in): Glorot & Bengio's "standard"
    # init, under which activations and back-propagated gradients shrink layer by layer
    Init(
        "default",
        lambda w, gain, std, gen: _uniform(w, 1.0 / math.sqrt(3.0 * _fans(w)[0]), gen),
        lambda fan_in, fan_out, gain, std: (1.0 / 3.0, 1.0 / (3.0 * fan_in)),
        paper="PyTorch nn.Linear; Glorot & Bengio 2010 (their 'standard' init)",
        torch_bias=True,
    ),
    # Var[W] = 2 / (fan_in + fan_out), their eq. 16
    Init(
        "xavier_uniform",
        lambda w, gain, std, gen: _uniform(w, math.sqrt(2.0 / sum(_fans(w))), gen),
        _xavier_variances,
        paper="Glorot & Bengio 2010",
    ),
    Init(
        "xavier_normal",
        lambda w, gain, std, gen: _gaussian(w, math.sqrt(2.0 / sum(_fans(w))), gen),
        _xavier_variances,
        paper="Glorot & Bengio 2010",
    ),
    # Var[W] = gain² / fan_in (2 / fan_in for ReLU)
    Init(
        "kaiming_uniform",
        lambda w, gain, std, gen: _uniform(w, gain / math.sqrt(_fans(w)[0]), gen),
        _gain_variances,
        paper="He et al. 2015",
        scalable=True,
    ),
    Init(
        "kaiming_normal",
        lambda w, gain, std, gen: _gaussian(w, gain / math.sqrt(_fans(w)[0]), gen),
        _gain_variances,
        paper="He et al. 2015",
        scalable=True,
    ),
    # a (semi-)orthogonal matrix times the gain; a tall matrix's orthonormal columns give
    # Var[W] = 1 / fan_out
    Init(
        "orthogonal",
        lambda w, gain, std, gen: nn.init.orthogonal_(w, gain=gain, generator=gen),
        lambda fan_in, fan_out, gain, std: (gain**2 * min(1.0, fan_in / fan_out), 0.0),
        paper="Saxe, McClelland & Ganguli 2014",
        scalable=True,
        weights="orthogonal",
    ),
    # Var[W] = 1 / fan_in; with SELU it self-normalizes (Klambauer et al. 2017)
    Init(
        "lecun_normal",
        lambda w, gain, std, gen: _gaussian(w, 1.0 / math.sqrt(_fans(w)[0]), gen),
        lambda fan_in, fan_out, gain, std: (1.0, 0.0),
        paper="LeCun et al. 1998",
    ),
    # N(0, std²) whatever the layer size: a small std vanishes, a large one explodes
    Init(
        "normal",
        lambda w, gain, std, gen: _gaussian(w, std, gen),
        lambda fan_in, fan_out, gain, std: (math.nan if std is None else std**2 * fan_in, 0.0),
        paper="Glorot & Bengio 2010, §4 (a fixed-scale Gaussian)",
    ),
    # Fixup (Zhang et al. 2019, §3): each residual branch's last layer and the head start at 0,
    # the others with He's rule. Its L^(−1/(2m−2)) rescaling of a branch's other layers has
    # nothing to act on in gradlab's one-layer branches (m = 1). The variances are those of a
    # drawn layer (the stem); the stream's gradient is zero at init (the head is), so theory
    # predicts no profile for it.
    Init(
        "fixup",
        lambda w, gain, std, gen: _gaussian(w, gain / math.sqrt(_fans(w)[0]), gen),
        _gain_variances,
        paper="Zhang, Dauphin & Ma 2019",
        zero_init=True,
    ),
    # LSUV's start is orthonormal; ``lsuv_rescale`` then fits each layer to the data
    Init(
        "lsuv",
        lambda w, gain, std, gen: nn.init.orthogonal_(w, gain=1.0, generator=gen),
        lambda fan_in, fan_out, gain, std: (math.nan, 0.0),
        paper="Mishkin & Matas 2015",
        weights="orthogonal",  # each layer rescaled: still orthogonal
    ),
):
    register_init(_init)


def get_init(name: str) -> Init:
    """The registered init ``name``; a ``ValueError`` listing the valid names otherwise."""
    return lookup(INITS, name, "init")


def scalable_inits() -> list[str]:
    """The inits whose gain a run may replace (``Init.scalable``), in registry order."""
    return [name for name, init in INITS.items() if init.scalable]


def init_gain(init: str, activation: str, gain: float | None = None) -> float:
    """The gain ``init`` draws with: ``gain`` where given (``√σ_w²``), else the activation's
    registered gain.

    Raises:
        ValueError: For an unknown init or activation, a ``gain`` that is not a positive finite
            number, or a ``gain`` for an init that is not ``scalable``.
    """
    scheme, registered = get_init(init), get_activation(activation).gain
    if gain is None:
        return registered
    if not scheme.scalable:
        raise ValueError(
            f"init {init!r} has no gain to replace; a gain applies to inits {scalable_inits()}"
        )
    if not (math.isfinite(gain) and gain > 0.0):
        raise ValueError(f"gain must be a positive finite number, got {gain!r}")
    return gain


@torch.no_grad()
def lsuv_rescale(
    linears: list[nn.Linear],
    forward: Callable[[Tensor], Tensor],
    x: Tensor,
    tol: float = 0.1,
    max_tries: int = 10,
) -> list[float]:
    """Rescale each layer, in order, until its output variance on ``x`` is within ``tol`` of 1.

    Mishkin & Matas (2015), Algorithm 1: W ← W / sqrt(Var[W x]) at most ``max_tries`` times a layer.

    Args:
        linears: The layers to rescale, in forward order.
        forward: Runs the network on ``x`` (the outputs are read with forward hooks).
        x: A data batch.
        tol: Accepted distance of the output variance from 1.
        max_tries: Rescalings per layer.
    Returns:
        The output variance each layer ended with.
    """
    variances = []
    for layer in linears:
        seen: list[Tensor] = []
        handle = layer.register_forward_hook(lambda m, i, out: seen.append(out))
        try:
            for tries in range(max_tries + 1):  # the last pass measures the last rescaling
                seen.clear()
                forward(x)
                var = seen[0].var().item()  # once per try: init only, never in training
                done = abs(var - 1.0) < tol or var == 0.0 or not math.isfinite(var)
                if done or tries == max_tries:
                    break
                layer.weight.div_(math.sqrt(var))
        finally:
            handle.remove()
        variances.append(var)
    return variances


# noqa reason: the scheme, the activation (its gain), std and seed are independent choices
def initialize(  # noqa: PLR0913, PLR0917
    model: MLP | ResMLP,
    init: str,
    activation: str,
    std: float,
    generator: torch.Generator,
    data_batch: Tensor | None = None,
    bias_std: float | None = None,
    gain: float | None = None,
) -> None:
    """Initialize every ``nn.Linear`` of ``model`` with the named scheme.

    Args:
        model: An ``MLP`` or ``ResMLP`` (its ``all_linears()`` are initialized, in forward
            order).
        init: A key of ``INITS``.
        activation: A registered activation, whose gain kaiming and orthogonal take.
        std: Standard deviation for ``normal``.
        generator: Source of randomness, so a run's weights depend on its seed only.
        data_batch: Required by ``lsuv``; ignored otherwise.
        bias_std: Draw each bias from N(0, bias_std²), before its weight, instead of the
            scheme's rule (σ_b² = bias_std², as Schoenholz et al. 2017 sweep it).
        gain: Every layer's gain (the first and the head included) in place of the
            activation's: ``√σ_w²`` for a run's ``sigma_w2``, so orthogonal draws ``gain · O``
            and kaiming a std of ``gain / √fan_in``. Only for ``scalable`` inits.
    """
    scheme, gain = get_init(init), init_gain(init, activation, gain)
    zeroed: list[nn.Linear] = []
    if scheme.zero_init:
        if not isinstance(model, ResMLP):
            raise ValueError(f"init {init!r} zero-initializes residual branches: a ResMLP only")
        zeroed = model.zero_init_linears()
    for layer in model.all_linears():
        if any(layer is z for z in zeroed):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
            continue
        if bias_std is not None:
            nn.init.normal_(layer.bias, 0.0, bias_std, generator=generator)
        elif scheme.torch_bias:
            bound = 1.0 / math.sqrt(layer.in_features)
            nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
        else:
            nn.init.zeros_(layer.bias)
        scheme.draw(layer.weight, gain, std, generator)
    if init == "lsuv":
        if data_batch is None:
            raise ValueError("init 'lsuv' needs a data batch to fit the layer scales on")
        was_training = model.training
        model.eval()  # batch statistics must not move while LSUV measures
        lsuv_rescale(model.all_linears(), model, data_batch)
        model.train(was_training)
