"""Free-probability theory of the input–output Jacobian's singular values at init.

An MLP's hidden layer l computes ``h_l = W_l x_{l−1} + b_l``, ``x_l = φ(h_l)``, with n × n weights
of ``σ_w²(l) = n · Var[W_l]``: iid Gaussian entries, or a scaled orthogonal matrix ``√σ_w² · O``.
The Jacobian from the first hidden layer's output to the last one's is

    ``J = ∂x_L/∂x_1 = D_L W_L D_{L−1} W_{L−1} … D_2 W_2``,  ``D_l = diag(φ'(h_l))``,

L − 1 (W, D) pairs. In the wide limit (Pennington, Schoenholz & Ganguli 2017, 2018):

* the slopes of layer l are φ'(h) with ``h ~ N(0, q_l)`` (``theory.layer_variances``), so D_l² has
  the spectral moments ``μ1_l = E[φ'(h)²]`` and ``μ2_l = E[φ'(h)⁴]``;
* ``W_l W_lᵀ`` has the moments ``σ_w²`` and ``σ_w⁴ (1 + v_W)``: ``v_W = 1`` for Gaussian weights
  (Marchenko–Pastur at aspect ratio 1, whose second moment is 2), ``v_W = 0`` for orthogonal ones
  (every singular value is √σ_w²);
* the moments of ``JJᵀ`` are those of the product ``D_L² · W_L W_Lᵀ · … · D_2² · W_2 W_2ᵀ``
  (``tr (JJᵀ)^k`` is cyclic), and a rotation-invariant W makes the factors asymptotically free.

For free positive a and b, ``φ(abab) = φ(a²) φ(b)² + φ(a)² φ(b²) − φ(a)² φ(b)²`` (the free
moment–cumulant formula at order 2), so ``m1(ab) = m1(a) m1(b)`` and the normalized variance
``v = m2 / m1² − 1`` adds: ``v(ab) = v(a) + v(b)``, exactly. Over the spectrum of JJᵀ, i.e. over
the squared singular values s² of J:

* mean:                ``m1 = E[s²] = Π_l σ_w²(l) μ1_l``, the product of the layers' χ₁
* normalized variance: ``v = Var[s²] / m1² = Σ_l (μ2_l / μ1_l² − 1 + v_W)``

At a fixed point q* the increment ``μ2/μ1² − 1 + v_W`` is the same for every layer and v grows
linearly with depth: Pennington et al. 2017's ``σ²_{JJᵀ} = L (μ2/μ1² − 1 − s1)`` at criticality
(m1 = 1), with ``s1 = −1`` Gaussian and 0 orthogonal. Only orthogonal weights with
``μ2 ≈ μ1²`` (tanh at q* → 0, i.e. σ_w² → 1⁺ with tiny σ_b²) keep the spectrum near 1 deep in a
net ("dynamical isometry"); relu's ``μ2/μ1² − 1 = 1`` never allows it.

At width n the simulated spectrum departs from these limits by O(L/n) relative corrections (e.g.
the n × n Gaussian ``E tr(WWᵀ)²/n = σ_w⁴ (2 + 1/n)``), and a spectrum with ``v ≫ 1`` is carried by
its few largest s², so its sample variance over n singular values falls short of v
(``tests/core/test_spectrum_theory.py`` measures both).

References:
    J. Pennington, S. S. Schoenholz, S. Ganguli. Resurrecting the sigmoid in deep learning through
    dynamical isometry: theory and practice. NeurIPS 2017.
    J. Pennington, S. S. Schoenholz, S. Ganguli. The emergence of spectral universality in deep
    networks. AISTATS 2018.
    J. A. Mingo, R. Speicher. Free Probability and Random Matrices, ch. 1–2. Springer, 2017.
"""

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from gradlab.core.activations import get_activation
from gradlab.core.registry import lookup
from gradlab.core.theory import Array, gaussian_expectation

# v_W = Var[s²] / E[s²]² of one weight matrix's squared singular values, per kind of weights:
# Marchenko–Pastur at aspect ratio 1 (m2 / m1² = 2) for iid Gaussian, a single atom for orthogonal.
WEIGHT_VARIANCE: dict[str, float] = {"gaussian": 1.0, "orthogonal": 0.0}
WEIGHTS = tuple(WEIGHT_VARIANCE)

# q is clipped to [_Q_MIN, _Q_MAX] as theory.chi1 clips it: q = 0 reads as the limit q → 0⁺.
_Q_MIN = 1e-200
_Q_MAX = 1e100


def _as_output(values: Array) -> float | Array:
    return float(values) if values.ndim == 0 else values


class JacobianMoments(NamedTuple):
    """The first two moments of the squared singular values s² of J (the spectrum of JJᵀ).

    Attributes:
        mean_s2: ``m1 = E[s²]``.
        var_s2: ``Var[s²] = v · m1²``.
        normalized_var: ``v = Var[s²] / m1²``.
    """

    mean_s2: float | Array
    var_s2: float | Array
    normalized_var: float | Array


def weight_variance(weights: str) -> float:
    """``v_W`` of ``weights`` (``WEIGHT_VARIANCE``); a ``ValueError`` naming the kinds otherwise."""
    return lookup(WEIGHT_VARIANCE, weights, "weights kind")


def slope_moments(activation: str, q: ArrayLike) -> tuple[Array, Array]:
    """``μ1 = E[φ'(h)²]`` and ``μ2 = E[φ'(h)⁴]`` for ``h ~ N(0, q)``: D²'s first two moments.

    ``q`` is clipped to [1e-200, 1e100] as in ``theory.chi1``, so ``q = 0`` is the limit
    ``q → 0⁺`` (relu: ``μ1 = μ2 = 1/2``).

    Args:
        activation: A registered activation (``gradlab.core.activations``).
        q: Pre-activation variance(s) of the layer.
    Returns:
        ``(μ1, μ2)``, arrays of ``q``'s shape.
    """
    dphi = get_activation(activation).dphi
    q = np.clip(np.asarray(q, dtype=float), _Q_MIN, _Q_MAX)
    mu1 = np.asarray(gaussian_expectation(lambda h: dphi(h) ** 2, q))
    mu2 = np.asarray(gaussian_expectation(lambda h: dphi(h) ** 4, q))
    return mu1, mu2


def _layer_spread(mu1: Array, mu2: Array, v_w: float) -> Array:
    """``μ2/μ1² − 1 + v_W``, NaN where μ1 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return mu2 / (mu1 * mu1) - 1.0 + v_w


def jacobian_moments(
    activation: str, q: ArrayLike, sigma_w2: ArrayLike, weights: str
) -> JacobianMoments:
    """Mean and variance of J's squared singular values in the wide limit.

    ``m1 = Π_l σ_w²(l) μ1_l`` and ``v = Σ_l (μ2_l / μ1_l² − 1 + v_W)``, l = 2 … L (see the module
    docstring). An empty last axis (a net of one hidden layer, J = I) gives ``m1 = 1, v = 0``.

    Args:
        activation: A registered activation (``gradlab.core.activations``).
        q: Pre-activation variances of the layers whose slopes enter J (layers 2 … L), layers on
            the last axis; leading axes run over nets.
        sigma_w2: σ_w² of those layers' weights (W_2 … W_L), broadcast against ``q``.
        weights: ``"gaussian"`` or ``"orthogonal"`` (``WEIGHTS``).
    Returns:
        ``(mean_s2, var_s2, normalized_var)``, reduced over the last axis; NaN in v where a
        layer's μ1 is 0.
    Raises:
        ValueError: For an unknown activation or weights kind.
    """
    v_w = weight_variance(weights)
    q, sigma_w2 = np.broadcast_arrays(np.asarray(q, dtype=float), np.asarray(sigma_w2, dtype=float))
    if q.ndim == 0:
        raise ValueError("q needs a last axis over layers")
    mu1, mu2 = slope_moments(activation, q)
    mean = np.prod(sigma_w2 * mu1, axis=-1)
    spread = np.sum(_layer_spread(mu1, mu2, v_w), axis=-1)
    return JacobianMoments(
        _as_output(mean), _as_output(spread * mean * mean), _as_output(np.asarray(spread))
    )


def critical_spread_per_layer(activation: str, q_star: ArrayLike, weights: str) -> float | Array:
    """The per-layer increment ``μ2/μ1² − 1 + v_W`` of v at a fixed point q*.

    In a net of identical layers at q*, ``v = (L − 1) ×`` this. It is 0 only for orthogonal
    weights with constant slopes (identity, or tanh as q* → 0); Gaussian weights add 1 per layer.

    Args:
        activation: A registered activation (``gradlab.core.activations``).
        q_star: The fixed point(s) q* (``theory.fixed_point``).
        weights: ``"gaussian"`` or ``"orthogonal"`` (``WEIGHTS``).
    Returns:
        The increment, a float for scalar ``q_star`` and otherwise an array of its shape.
    """
    v_w = weight_variance(weights)
    mu1, mu2 = slope_moments(activation, q_star)
    return _as_output(_layer_spread(mu1, mu2, v_w))
