"""Weight initializations, each a function of (weight, activation, std, generator).

Every scheme is written as the variance it gives a layer with ``fan_in`` inputs and ``fan_out``
outputs (``σ_w² = fan_in · Var[W]`` is the number the mean-field theory in ``theory.py`` uses).
Biases start at zero, except under ``default`` which keeps PyTorch's own ``nn.Linear`` init.
"""

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from gradlab.core.models import MLP
from gradlab.core.registry import lookup
from gradlab.core.theory import GAINS  # one table of gains for init and theory

InitFn = Callable[[Tensor, str, float, torch.Generator], None]


def _fans(weight: Tensor) -> tuple[int, int]:
    fan_out, fan_in = weight.shape
    return fan_in, fan_out


def _gaussian(weight: Tensor, std: float, generator: torch.Generator) -> None:
    nn.init.normal_(weight, 0.0, std, generator=generator)


def _uniform(weight: Tensor, std: float, generator: torch.Generator) -> None:
    bound = math.sqrt(3.0) * std  # U(-a, a) has variance a²/3
    nn.init.uniform_(weight, -bound, bound, generator=generator)


def default(weight: Tensor, activation: str, std: float, generator: torch.Generator) -> None:
    """PyTorch's ``nn.Linear`` init: U(−1/√fan_in, 1/√fan_in), so fan_in·Var[W] = 1/3.

    Glorot & Bengio (2010) call this the "standard" init; with it, activations and
    back-propagated gradients shrink layer by layer.
    """
    fan_in, _ = _fans(weight)
    _uniform(weight, 1.0 / math.sqrt(3.0 * fan_in), generator)


def xavier_uniform(weight: Tensor, activation: str, std: float, generator: torch.Generator) -> None:
    """Glorot & Bengio (2010) eq. 16: Var[W] = 2 / (fan_in + fan_out), uniform."""
    fan_in, fan_out = _fans(weight)
    _uniform(weight, math.sqrt(2.0 / (fan_in + fan_out)), generator)


def xavier_normal(weight: Tensor, activation: str, std: float, generator: torch.Generator) -> None:
    """Glorot & Bengio (2010): Var[W] = 2 / (fan_in + fan_out), Gaussian."""
    fan_in, fan_out = _fans(weight)
    _gaussian(weight, math.sqrt(2.0 / (fan_in + fan_out)), generator)


def kaiming_uniform(
    weight: Tensor, activation: str, std: float, generator: torch.Generator
) -> None:
    """He et al. (2015): Var[W] = gain² / fan_in with the activation's gain (2/fan_in for ReLU)."""
    fan_in, _ = _fans(weight)
    _uniform(weight, GAINS[activation] / math.sqrt(fan_in), generator)


def kaiming_normal(weight: Tensor, activation: str, std: float, generator: torch.Generator) -> None:
    """He et al. (2015): Var[W] = gain² / fan_in, Gaussian."""
    fan_in, _ = _fans(weight)
    _gaussian(weight, GAINS[activation] / math.sqrt(fan_in), generator)


def orthogonal(weight: Tensor, activation: str, std: float, generator: torch.Generator) -> None:
    """Saxe et al. (2014): a (semi-)orthogonal matrix times the activation's gain."""
    nn.init.orthogonal_(weight, gain=GAINS[activation], generator=generator)


def lecun_normal(weight: Tensor, activation: str, std: float, generator: torch.Generator) -> None:
    """LeCun et al. (1998): Var[W] = 1 / fan_in; with SELU it gives self-normalization
    (Klambauer et al. 2017)."""
    fan_in, _ = _fans(weight)
    _gaussian(weight, 1.0 / math.sqrt(fan_in), generator)


def normal(weight: Tensor, activation: str, std: float, generator: torch.Generator) -> None:
    """N(0, std²) whatever the layer size: a small std vanishes, a large one explodes."""
    _gaussian(weight, std, generator)


def lsuv_start(weight: Tensor, activation: str, std: float, generator: torch.Generator) -> None:
    """LSUV's start (Mishkin & Matas 2015): orthonormal; ``lsuv_rescale`` then fits it to data."""
    nn.init.orthogonal_(weight, gain=1.0, generator=generator)


INITS: dict[str, InitFn] = {
    "default": default,
    "xavier_uniform": xavier_uniform,
    "xavier_normal": xavier_normal,
    "kaiming_uniform": kaiming_uniform,
    "kaiming_normal": kaiming_normal,
    "orthogonal": orthogonal,
    "lecun_normal": lecun_normal,
    "normal": normal,
    "lsuv": lsuv_start,
}


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
            for _ in range(max_tries + 1):
                seen.clear()
                forward(x)
                var = seen[0].var().item()  # once per try: init only, never in training
                if abs(var - 1.0) < tol or var == 0.0 or not math.isfinite(var):
                    break
                layer.weight.div_(math.sqrt(var))
        finally:
            handle.remove()
        variances.append(var)
    return variances


def initialize(
    model: MLP,
    init: str,
    activation: str,
    std: float,
    generator: torch.Generator,
    data_batch: Tensor | None = None,
) -> None:
    """Initialize every ``nn.Linear`` of ``model`` with the named scheme.

    Args:
        model: An ``MLP`` (its ``all_linears()`` are initialized, in forward order).
        init: A key of ``INITS``.
        activation: A key of ``GAINS``, for schemes that take the activation's gain.
        std: Standard deviation for ``normal``.
        generator: Source of randomness, so a run's weights depend on its seed only.
        data_batch: Required by ``lsuv``; ignored otherwise.
    """
    init_fn = lookup(INITS, init, "init")
    for layer in model.all_linears():
        if init == "default":
            bound = 1.0 / math.sqrt(layer.in_features)
            nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
        else:
            nn.init.zeros_(layer.bias)
        init_fn(layer.weight, activation, std, generator)
    if init == "lsuv":
        if data_batch is None:
            raise ValueError("init 'lsuv' needs a data batch to fit the layer scales on")
        was_training = model.training
        model.eval()  # batch statistics must not move while LSUV measures
        lsuv_rescale(model.all_linears(), model, data_batch)
        model.train(was_training)
