"""The activation registry: everything gradlab knows about one activation, in one entry.

An entry holds what each part of the lab needs: the torch module a model is built from (and a
faster function for stacked training where one exists), φ and φ' on numpy arrays for the
mean-field theory, the gain that kaiming and orthogonal inits scale by, and the rule that reads
saturation and dead units off a probe. Adding an activation is one ``register_activation`` call::

    register_activation(Activation(
        name="swish", module=nn.SiLU,
        phi=lambda x: x * special.expit(x),
        dphi=lambda x: special.expit(x) * (1 + x * (1 - special.expit(x))),
        gain=1.0 / math.sqrt(gaussian_expectation(lambda x: (x * special.expit(x)) ** 2)),
        relu_like=True, paper="Ramachandran et al. 2017"))

and the grid's ``activation`` axis accepts ``swish`` from then on.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import special
from torch import Tensor, nn

from gradlab.core.registry import lookup, register

Array = NDArray[np.float64]

# (h, φ(h), out) -> ``out`` holding 1.0 where φ is saturated, else 0.0. ``out`` is a buffer of
# h's shape: on the CPU a fresh temporary that large is a page fault per 4 KiB on every call, and
# a bool mask plus its conversion costs 4× the in-place comparison on a float one.
SaturationRule = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Activation:
    """One activation φ as the model, the theory, the inits and the probes use it.

    Attributes:
        name: The value of the grid's ``activation`` axis.
        module: Builds the ``nn.Module`` of one hidden layer (probes hook its input).
        phi: φ on a numpy array, for the mean-field expectations.
        dphi: φ' on a numpy array; at a kink, the left branch (φ'(0) = 0 for relu), as torch's
            autograd takes it.
        gain: g with ``fan_in · Var[W] = g²`` under kaiming and orthogonal init.
        saturated: Marks where φ is flat enough to trap gradients (φ' < 0.02); None when φ
            has no such region.
        relu_like: Units can be "dead": h ≤ 0 for every input.
        stacked: Computes φ for a stack of replicas faster than ``module`` does; None: use it.
        paper: Where φ comes from.
    """

    name: str
    module: Callable[[], nn.Module]
    phi: Callable[[Array], Array]
    dphi: Callable[[Array], Array]
    gain: float
    saturated: SaturationRule | None = None
    relu_like: bool = False
    stacked: Callable[[Tensor], Tensor] | None = None
    paper: str = ""


ACTIVATIONS: dict[str, Activation] = {}


def register_activation(activation: Activation) -> Activation:
    """Add ``activation`` to ``ACTIVATIONS`` under its name; a name can be registered once."""
    return register(ACTIVATIONS, activation.name, activation, "activation")


def get_activation(name: str) -> Activation:
    """The registered activation ``name``; a ``ValueError`` listing the valid names otherwise."""
    return lookup(ACTIVATIONS, name, "activation")


# Below this many elements the fast path's own autograd overhead outweighs what it saves.
# Measured here, a forward and backward: even at ~12k elements, 47 → 42 µs at 16k, 145 → 91 at 64k.
FAST_TANH_MIN = 16_384


class _ExpTanh(torch.autograd.Function):
    """tanh(h) = e / (e + 2) with e = expm1(2h), and torch's own backward, 1 − tanh².

    In float32 its relative error is below 2e-7 for every h, tiny ones included (torch.tanh's:
    6e-8; float32's epsilon: 1.2e-7): expm1 keeps its precision near 0, where
    1 − 2 / (e^{2h} + 1) would lose it, and e + 2 > 1 cannot cancel. expm1(2h) overflows above
    h ≈ 44; from h = 10 on tanh is 1 in float32 (1 − tanh < 5e-9), so h is clamped there.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, h: Tensor) -> Tensor:
        e = torch.clamp(h, max=10.0).mul_(2.0).expm1_()
        y = e.div_(e + 2.0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # ctx: FunctionCtx with saved_tensors
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


def stacked_tanh(h: Tensor) -> Tensor:
    """``torch.tanh``, computed through expm1 for large float32 tensors on the CPU.

    This CPU build's tanh kernel costs ~2 ns an element, 10× sigmoid and 3× expm1; through
    expm1 a forward and backward take 0.6× the time at 64k elements (a (16, 64, 64) stack), and
    a tanh net's whole step 0.87× (w64 d8, K = 16). Other devices and dtypes, and small
    tensors, get ``torch.tanh`` itself.
    """
    if h.device.type != "cpu" or h.dtype != torch.float32 or h.numel() < FAST_TANH_MIN:
        return torch.tanh(h)
    return _ExpTanh.apply(h)


_LEAKY_SLOPE = 0.01
_SELU_ALPHA = 1.6732632423543772
_SELU_SCALE = 1.0507009873554805


def _sigmoid_grad(x: Array) -> Array:
    s = special.expit(x)
    return s * (1.0 - s)


def _elu(x: Array) -> Array:
    # expm1 of min(x, 0): the unused branch must not overflow for large positive x
    return np.where(x > 0.0, x, np.expm1(np.minimum(x, 0.0)))


def _selu(x: Array) -> Array:
    return _SELU_SCALE * np.where(x > 0.0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0.0)))


def _selu_grad(x: Array) -> Array:
    return _SELU_SCALE * np.where(x > 0.0, 1.0, _SELU_ALPHA * np.exp(np.minimum(x, 0.0)))


def _gelu_grad(x: Array) -> Array:
    return special.ndtr(x) + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


# The gains: torch.nn.init.calculate_gain where it has one; for elu, gelu and softsign (which it
# lacks) g = 1 / sqrt(E_z[φ(z)²]), the rule that gives relu its √2 (tests/core/test_theory.py
# recomputes them). Saturation rules: φ'(h) < 0.02 in every region they mark (tanh's |φ| > 0.99).
for _activation in (
    Activation(
        "sigmoid",
        nn.Sigmoid,
        special.expit,
        _sigmoid_grad,
        gain=1.0,
        # a < 0.01 or a > 0.99: exactly where clamping to [0.01, 0.99] moves a (NaN: not saturated)
        saturated=lambda h, a, out: torch.clamp(a, 0.01, 0.99, out=out).sub_(a).abs_().gt_(0.0),
        paper="Rumelhart, Hinton & Williams 1986",
    ),
    Activation(
        "tanh",
        nn.Tanh,
        np.tanh,
        lambda x: 1.0 - np.tanh(x) ** 2,
        gain=5.0 / 3.0,
        saturated=lambda h, a, out: torch.abs(a, out=out).gt_(0.99),
        stacked=stacked_tanh,
        paper="LeCun et al. 1998, Efficient BackProp",
    ),
    Activation(
        "relu",
        nn.ReLU,
        lambda x: np.maximum(x, 0.0),
        lambda x: np.where(x > 0.0, 1.0, 0.0),
        gain=math.sqrt(2.0),
        relu_like=True,
        paper="Nair & Hinton 2010",
    ),
    Activation(
        "leaky_relu",
        partial(nn.LeakyReLU, negative_slope=_LEAKY_SLOPE),
        lambda x: np.where(x > 0.0, x, _LEAKY_SLOPE * x),
        lambda x: np.where(x > 0.0, 1.0, _LEAKY_SLOPE),
        gain=math.sqrt(2.0 / (1.0 + _LEAKY_SLOPE**2)),
        relu_like=True,
        paper="Maas, Hannun & Ng 2013",
    ),
    Activation(
        "elu",
        nn.ELU,
        _elu,
        lambda x: np.where(x > 0.0, 1.0, np.exp(np.minimum(x, 0.0))),
        gain=1.2451983007007064,
        saturated=lambda h, a, out: torch.neg(a, out=out).gt_(0.99),  # a < -0.99
        relu_like=True,
        paper="Clevert, Unterthiner & Hochreiter 2016",
    ),
    Activation(
        "selu",
        nn.SELU,
        _selu,
        _selu_grad,
        gain=3.0 / 4.0,
        saturated=lambda h, a, out: torch.neg(h, out=out).gt_(4.6),  # e^h < 0.0101
        relu_like=True,
        paper="Klambauer et al. 2017",
    ),
    Activation(
        "gelu",
        nn.GELU,
        lambda x: x * special.ndtr(x),
        _gelu_grad,
        gain=1.5335304411955328,
        relu_like=True,
        paper="Hendrycks & Gimpel 2016",
    ),
    Activation(
        "softsign",
        nn.Softsign,
        lambda x: x / (1.0 + np.abs(x)),
        lambda x: 1.0 / (1.0 + np.abs(x)) ** 2,
        gain=2.337533363108541,
        saturated=lambda h, a, out: torch.abs(a, out=out).gt_(0.9),
        paper="Bergstra et al. 2009; Glorot & Bengio 2010",
    ),
    Activation(
        "identity",
        nn.Identity,
        lambda x: np.asarray(x, dtype=float),
        lambda x: np.ones_like(x, dtype=float),
        gain=1.0,
        paper="the linear network of Saxe, McClelland & Ganguli 2014",
    ),
):
    register_activation(_activation)
