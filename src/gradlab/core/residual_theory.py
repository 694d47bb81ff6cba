"""Mean-field theory of the residual stream of a randomly initialized residual MLP.

The net (``gradlab.core.residual``): a stem ``x_0 = W_in x + b_in``, then blocks l = 1 … L that
add a branch to the stream of width n, ``x_l = x_{l−1} + α f_l``, with

* preact:  ``f_l = W_l φ(norm(x_{l−1})) + b_l``
* postact: ``f_l = φ(norm(W_l x_{l−1} + b_l))``

and ``Var[W] = σ_w² / fan_in``, ``Var[b] = σ_b²`` (``theory.init_variances``). The theory tracks the
stream's per-unit second moment ``q_l = E[x_l²]``, its mean ``m_l`` (a shift common to all units)
and the mean squared back-propagated gradient ``G_l = E[(∂L/∂x_l)²]``; ``z ~ N(0, 1)``.

Forward. ``W_l`` is drawn independently of the stream it reads, so in the wide limit each unit of
``W_l v`` is Gaussian with variance ``σ_w² · mean_j v_j²``, uncorrelated with ``x_{l−1}``: the
stream is a sum of such Gaussians (preact) and ``E[x_{l−1} f_l] = E[x_{l−1}] E[f_l]``. So

* stem:    ``q_0 = σ_w²(inp) q_in + σ_b²(inp)``, ``m_0 = 0``, ``q_in`` the mean squared input
* preact:  ``q_l = q_{l−1} + α² (σ_w² E[φ(√v z)²] + σ_b²)``, ``m_l = 0``, with φ's input variance
  ``v = q_{l−1}``, or ``v = 1`` under LayerNorm
* postact: ``s² = σ_w² q_{l−1} + σ_b²``, φ's input ``u ~ N(0, v)`` with ``v = s²``, or ``v = 1``
  under LayerNorm; ``m_l = m_{l−1} + α E[φ(u)]`` and
  ``q_l = q_{l−1} + α² E[φ(u)²] + 2 α m_{l−1} E[φ(u)]`` (the cross term is the mean's)

Backward. ``∂L/∂x_{l−1} = ∂L/∂x_l + α Jᵀ ∂L/∂x_l`` with J the branch's Jacobian. Under the
gradient-independence assumption (the ``W_l`` of the backward pass is drawn afresh, as Schoenholz
et al. 2017 and Yang & Schoenholz 2017 take it) the cross term averages to 0 and
``G_{l−1} = G_l (1 + α² χ_l)`` with the branch's mean squared gain

* no norm: ``χ_l = σ_w² E[φ'(√v z)²]``
* LayerNorm: LayerNorm's Jacobian is ``(I − 11ᵀ/n − ĥĥᵀ/n) / std`` over the units; the projection
  removes 2 of n directions, so in the wide limit it is ``1/std``: its input's variance is
  ``q_{l−1} − m_{l−1}²`` (preact) or ``s²`` (postact), and
  ``χ_l = σ_w² E[φ'(z)²] / (q_{l−1} − m_{l−1}²)`` or ``σ_w² E[φ'(z)²] / s²``.

LayerNorm's ε (1e-5) is neglected. BatchNorm mixes the batch and gets no prediction, as for the
MLP; so do LSUV (fitted to the data) and Fixup, which zeroes every block's last layer and the head
(Zhang et al. 2019): no gradient reaches the stream at init.

Growth with depth. For ReLU under He's init (σ_w² = 2, σ_b² = 0) and no norm,
``E[φ(√q z)²] = q/2`` and ``E[φ'²] = 1/2`` make one block multiply G by exactly ``1 + α²``, and
preact's q too (postact's q grows faster: its ReLU outputs add a mean), so the first/last
gradient ratio is ``(1 + α²)^{(L−1)/2}`` (``relu_he_grad_ratio``): exponential in L for fixed α,
bounded for α = 1/√L (Hayou et al. 2021). A bounded φ such as tanh adds at most
``α² σ_w² + σ_b²`` per block, so q grows linearly, ``q_l ≈ α² σ_w² l``; with
``E[tanh'(√q z)²] ≈ (4/3) / √(2πq)`` for large q (∫ sech⁴ = 4/3), the gradient grows
stretched-exponentially, ``ln(G_0 / G_L) ≈ (8/3) α σ_w √(L / 2π) ≈ 1.06 α σ_w √L``
(Yang & Schoenholz 2017), and stays bounded for α = 1/√L.

Finite width. Against a Monte-Carlo simulation at n = 256, L = 30
(tests/core/test_residual_theory.py) the recursions agree within 0.06 decade at every layer, mostly
the simulation's own scatter, except ∂L/∂x of postact ReLU without norm: a ReLU net without biases
is 1-homogeneous, so the Jacobian from x_l to x_{L−1} maps x_l to x_{L−1}, and along that one
direction ∂L/∂x grows like √q, which the stream's mean makes faster than the bulk's ``1 + α² χ``
(per block about 2.9 against 2 at α = 1 under He's init). Its share of G, 1/n at the top, is
dropped by the wide limit but reaches ~(2.9/2)^L / n: there ∂L/∂x_0 is 1.3–1.5 decades above the
recursion at α = 1, and ~0.1 decade at α = 1/√L under He's init.

References:
    G. Yang, S. S. Schoenholz. Mean field residual networks: on the edge of chaos. NeurIPS 2017.
    S. Hayou, E. Clerico, B. He, G. Deligiannidis, A. Doucet, J. Rousseau. Stable ResNet.
    AISTATS 2021.
    H. Zhang, Y. N. Dauphin, T. Ma. Fixup initialization: residual learning without
    normalization. ICLR 2019.
    K. He, X. Zhang, S. Ren, J. Sun. Identity mappings in deep residual networks. ECCV 2016.
    S. S. Schoenholz, J. Gilmer, S. Ganguli, J. Sohl-Dickstein. Deep information propagation.
    ICLR 2017.
"""

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from gradlab.core.activations import get_activation
from gradlab.core.registry import lookup
from gradlab.core.theory import (
    Array,
    ProfilePrediction,
    gaussian_expectation,
    gradient_rms_profile,
    init_variances,
    log_slope,
)


class _Moments(NamedTuple):
    """Gaussian moments of φ at φ's input variance v: E[φ], E[φ²], E[φ'²] (one entry per net)."""

    phi: Array
    phi2: Array
    dphi2: Array


class _Block(NamedTuple):
    """One block's step for every net: the stream's next q and m, and the branch's gain χ."""

    q: Array
    mean: Array
    chi: Array


class _Branches(NamedTuple):
    """σ_w², σ_b² of the blocks' linears and the multiplier α, one entry per net."""

    sigma_w2: Array
    sigma_b2: Array
    alpha: Array


# (moments at φ's input variance, q_{l−1}, m_{l−1}, branches, LayerNorm-ed) -> the block's step
BlockMap = Callable[[Callable[[Array], _Moments], Array, Array, _Branches, bool], _Block]


def _preact(
    moments: Callable[[Array], _Moments], q: Array, mean: Array, b: _Branches, normalized: bool
) -> _Block:
    # φ reads the stream itself (variance q, mean 0), or its LayerNorm (variance 1)
    e = moments(np.ones_like(q) if normalized else q)
    gain = b.sigma_w2 * e.dphi2 / (q - mean**2) if normalized else b.sigma_w2 * e.dphi2
    return _Block(q + b.alpha**2 * (b.sigma_w2 * e.phi2 + b.sigma_b2), mean, gain)


def _postact(
    moments: Callable[[Array], _Moments], q: Array, mean: Array, b: _Branches, normalized: bool
) -> _Block:
    s2 = b.sigma_w2 * q + b.sigma_b2  # W x + b: per unit N(0, s²), whatever the stream's mean
    e = moments(np.ones_like(q) if normalized else s2)
    gain = b.sigma_w2 * e.dphi2 / s2 if normalized else b.sigma_w2 * e.dphi2
    q_next = q + b.alpha**2 * e.phi2 + 2.0 * b.alpha * mean * e.phi
    return _Block(q_next, mean + b.alpha * e.phi, gain)


BRANCH_MAPS: dict[str, BlockMap] = {"preact": _preact, "postact": _postact}
# Whether φ's input is LayerNorm-ed; None: no prediction (BatchNorm mixes the batch).
NORM_PREDICTIONS: dict[str, bool | None] = {
    "none": False,
    "layernorm": True,
    "batchnorm_pre": None,
    "batchnorm_post": None,
}
# Inits with no a-priori prediction: LSUV fits the weights to the data; Fixup zeroes the head, so
# no gradient reaches the stream at init and its normalized profile is 0/0.
UNPREDICTED_INITS = ("lsuv", "fixup")


def predict_residual_profiles(  # noqa: PLR0913, PLR0917
    activation: str,
    branch: str,
    norm_layer: str,
    d_in: int,
    width: int,
    depth: int,
    d_out: int,
    nets: Sequence[tuple[str, float | None, float, float]],
) -> list[ProfilePrediction | None]:
    """Predict the stream's q, mean and back-propagated gradient RMS of residual MLPs at init.

    The arrays run over stream layers 1 … L, the inputs ``x_0 … x_{L−1}`` of blocks 1 … L (see the
    module docstring for the recursions): ``q`` and ``mean`` of the stream, ``chi1`` the branch's
    gain of the block that reads it (one block multiplies G by ``1 + α² chi1``), ``grad_rms`` =
    ``sqrt(G_{l−1} / G_{L−1})``, 1 at layer L, with its ``log_slope`` and ``first_last_ratio``.
    The stream has no fixed point: ``q_fixed_point``, ``chi1_fixed_point`` and ``depth_scale``
    are NaN. The head's σ_w² only scales G, so it drops out of the normalized profile.

    Args:
        activation: A registered activation (``gradlab.core.activations``).
        branch: ``preact`` or ``postact``.
        norm_layer: ``none``, ``layernorm``, ``batchnorm_pre`` or ``batchnorm_post``.
        d_in: Input features (the stem's fan_in).
        width: The stream's width n.
        depth: The number of blocks L.
        d_out: Output features (the head's fan_out).
        nets: ``(init, init_std, q_in, alpha)`` per net: a scheme of
            ``theory.init_variances``, its std (for ``normal``), the mean squared input
            coordinate and the branch multiplier α at init (0 for ReZero).
    Returns:
        One prediction per net, in order; None for every net under BatchNorm, and for a net
        whose init is ``lsuv`` or ``fixup`` or whose variances (σ_w², σ_b², q_in) are NaN.
    Raises:
        ValueError: For an unknown activation, branch, norm layer or init, sizes below 1, or
            ``q_in < 0``.
    """
    block = lookup(BRANCH_MAPS, branch, "residual_branch")
    normalized = lookup(NORM_PREDICTIONS, norm_layer, "norm_layer")
    act = get_activation(activation)
    if min(d_in, width, depth, d_out) < 1:
        raise ValueError(
            f"d_in, width, depth and d_out must be >= 1, got {d_in}, {width}, {depth}, {d_out}"
        )
    if normalized is None:
        return [None for _ in nets]
    predicted = [k for k, net in enumerate(nets) if net[0] not in UNPREDICTED_INITS]
    # (nets, 2 layers, 2): σ_w² and σ_b² of the stem and of a block's n → n linear
    variances = np.array(
        [
            [
                init_variances(nets[k][0], activation, d_in, width, nets[k][1]),
                init_variances(nets[k][0], activation, width, width, nets[k][1]),
            ]
            for k in predicted
        ]
    ).reshape(len(predicted), 2, 2)
    q_in = np.array([nets[k][2] for k in predicted], dtype=float)
    alpha = np.array([nets[k][3] for k in predicted], dtype=float)
    if np.any(q_in < 0.0):
        raise ValueError(f"q_in must be >= 0, got {q_in.min()}")
    finite = ~np.isnan(variances).any(axis=(1, 2)) & ~np.isnan(q_in) & ~np.isnan(alpha)
    keep = np.flatnonzero(finite)
    results: list[ProfilePrediction | None] = [None for _ in nets]
    if not keep.size:
        return results
    variances, q_in, alpha = variances[keep], q_in[keep], alpha[keep]

    def moments(v: Array) -> _Moments:
        def stacked(h: Array) -> Array:
            y = act.phi(h)
            return np.stack([y, y * y, act.dphi(h) ** 2])

        return _Moments(*np.asarray(gaussian_expectation(stacked, v)).reshape(3, -1))

    branches = _Branches(variances[:, 1, 0], variances[:, 1, 1], alpha)
    q = [variances[:, 0, 0] * q_in + variances[:, 0, 1]]
    mean = [np.zeros_like(q_in)]
    chi = []
    with np.errstate(divide="ignore", invalid="ignore"):  # q = 0 under LayerNorm: no scale
        for _ in range(depth):
            step = block(moments, q[-1], mean[-1], branches, normalized)
            q.append(step.q)
            mean.append(step.mean)
            chi.append(step.chi)
    # stream layers 1 … L are x_0 … x_{L−1}; block L's χ only scales G at x_{L−1}
    q_layers, mean_layers = np.stack(q[:-1], axis=-1), np.stack(mean[:-1], axis=-1)
    chi_layers = np.stack(chi, axis=-1)
    grad_rms = gradient_rms_profile(1.0 + alpha[:, None] ** 2 * chi_layers[:, :-1])
    for values in (q_layers, mean_layers, chi_layers, grad_rms):
        values.setflags(write=False)

    for row, k in enumerate(np.asarray(predicted)[keep]):
        results[k] = ProfilePrediction(
            q=q_layers[row],
            chi1=chi_layers[row],
            grad_rms=grad_rms[row],
            log_slope=log_slope(grad_rms[row]),
            first_last_ratio=float(grad_rms[row, 0] / grad_rms[row, -1]),
            q_fixed_point=math.nan,
            chi1_fixed_point=math.nan,
            depth_scale=math.nan,
            mean=mean_layers[row],
        )
    return results


def relu_he_grad_ratio(alpha: ArrayLike, depth: ArrayLike) -> float | Array:
    """Predicted ``RMS(∂L/∂x_0) / RMS(∂L/∂x_{L−1})`` of a ReLU residual net under He's init.

    With σ_w² = 2, σ_b² = 0 and no norm, each block multiplies the stream's mean squared
    gradient by exactly ``1 + α² · 2 · E[relu'(z)²] = 1 + α²`` (preact and postact alike), and
    a preact stream's q by the same factor, so over the L − 1 blocks between stream layers 1 and L

        ``ratio = (1 + α²)^{(L−1)/2}``

    e.g. ``2^{(L−1)/2}`` for α = 1, while α = 1/√L gives ``(1 + 1/L)^{(L−1)/2} → √e ≈ 1.65``
    as L → ∞ (Hayou et al. 2021), and α = 0 (ReZero) gives 1.

    Args:
        alpha: The branch multiplier α.
        depth: The number of blocks L.
    Returns:
        The ratio (broadcast over the arguments): ``first_last_ratio`` of
        ``predict_residual_profiles`` for these nets.
    """
    alpha, depth = np.asarray(alpha, dtype=float), np.asarray(depth, dtype=float)
    ratio = (1.0 + alpha**2) ** ((depth - 1.0) / 2.0)
    return float(ratio) if ratio.ndim == 0 else ratio
