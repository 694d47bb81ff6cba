"""Mean-field theory of BatchNorm's gradient explosion at initialization (Yang et al. 2019).

The net (``gradlab.core.models.MLP`` with ``norm_layer: batchnorm_pre``): per hidden layer
``h_l = BN(W_l x_{l−1} + b_l)``, ``x_l = φ(h_l)``, then a linear head. BN uses the batch's
statistics over the B samples with the biased variance and, at init, γ = 1 and β = 0, so each unit's
``h`` has batch mean 0 and batch mean square 1 (ε = 1e-5 neglected); ``h`` is what gradlab's probes
hook (φ's input), so ``grad_preact_rms`` is ``RMS(∂L/∂h_l)`` over units × batch. The bias is
removed by BN's centering and ``W_l``'s scale σ_w by its division, so nothing below depends on
either.

Forward. In the wide limit a unit's pre-BN batch vector ``y = W x`` (one entry per sample) is
Gaussian with covariance ``σ_w² K``, ``K`` the batch Gram matrix of ``x``. Its BSB1 fixed point
(Yang et al. 2019, §3) is ``K ∝ I`` plus a constant, so ``P₁ y`` (``P₁ = I − 11ᵀ/B`` removes the
batch mean) is isotropic in the (B−1)-dimensional space orthogonal to ``1``, and

* ``h = √B · u`` with ``u`` uniform on the unit sphere of that space: ``E[h_a²] = 1`` and the
  per-unit batch correlation is ``E[h_a h_b] = −1/(B−1)``, a ≠ b;
* the unit's batch variance ``σ² = ‖P₁ y‖² / B`` is independent of its direction ``u``, and
  ``‖P₁ y‖² / (σ_w² k)`` is χ² with B−1 degrees of freedom, ``k`` the eigenvalue of ``P₁ K P₁``:
  ``k = B v / (B − 1)`` with ``v = E[mean_b (x_b − x̄)²]``, the mean batch variance of ``x``.

Backward. BN's Jacobian per unit is ``(1/σ) P(h)`` with the orthogonal projection
``P(h) = I − 11ᵀ/B − h hᵀ/B`` (rank B−2), so ``∂L/∂y = P ∂L/∂h / σ``, ``∂L/∂x_{l−1} = W_lᵀ ∂L/∂y``
and ``∂L/∂h_{l−1} = φ'(h_{l−1}) ⊙ ∂L/∂x_{l−1}``. With the gradient-independence assumption (the
``W_l`` of the backward pass drawn afresh; Schoenholz et al. 2017, Yang et al. 2019) the per-unit
batch covariance ``G`` of ``∂L/∂x`` maps, one layer towards the input, to
``G ← σ_w² E[1/σ²] · E_h[P D G D P]`` with ``D = diag φ'(h)``, and
``σ_w² E[1/σ²] = (B − 1) / ((B − 3) v)`` (``E[1/χ²_{B−1}] = 1/(B−3)``). Every image is orthogonal
to ``1`` on both sides and the operator commutes with permutations of the batch, so ``G ∝ P₁`` is an
eigenvector; its eigenvalue is the growth factor (the top one: the simulations in
tests/core/test_bn_theory.py converge to it within a few layers)::

    λ(B) = E tr(P D P₁ D) / ((B − 3) v)
         = [(B − 1) m₁ − m₂ + c₁ + c₂] / [(B − 3) (p₂ − p₁₂)]

where, for two coordinates ``h₁, h₂`` of one unit's batch vector, ``m₁ = E φ'(h₁)²``,
``m₂ = E φ'(h₁)² h₁²``, ``c₁ = E φ'(h₁) φ'(h₂)``, ``c₂ = E φ'(h₁) h₁ φ'(h₂) h₂``, ``p₂ = E φ(h₁)²``,
``p₁₂ = E φ(h₁) φ(h₂)`` (expanding the trace, only one- and two-coordinate moments appear).

``E‖∂L/∂h_l‖²``, ``E‖∂L/∂x_l‖²`` and ``E‖∂L/∂y_l‖²`` (summed over units and batch) all grow by λ
per layer towards the input once ``G`` has settled on its eigenvector, so the RMS of ∂L/∂h that
gradlab measures grows by √λ per layer: ``grad_preact_rms_{l−1} / grad_preact_rms_l → √λ``.

Large batch. ``h₁, h₂`` tend to independent standard normals, ``m₁`` dominates and ``p₁₂ → E[φ]²``:
``λ_∞ = E[φ'(z)²] / Var[φ(z)]``, z ~ N(0, 1): π/(π−1) ≈ 1.467 for ReLU (E[φ'²] = 1/2,
Var φ = 1/2 − 1/(2π)), 1 for the identity, ≈ 1.178 for tanh. λ(B) − λ_∞ is O(1/B) and positive
for these three: smaller batches explode faster (ReLU: 1.590 at B = 16, 1.493 at 64, 1.473 at 256).

Closed form: for the identity ``λ(B) = (B − 2)/(B − 3)`` (``m₁ = m₂ = c₁ = p₂ = 1``,
``c₂ = p₁₂ = −1/(B−1)``): even a linear BN net explodes at finite B, by 1.077 per layer at B = 16.
At small B the factor ``E[1/σ²]`` (``(B − 1)/(B − 3)`` over its large-B value) raises λ, the
projection onto B − 2 directions lowers it. B ≤ 3 has no finite growth (B = 3: ``E[1/χ²₂]``
diverges, only ε bounds it; B = 2: ``P = 0``, no gradient passes).

How the finite-B value is computed. Not by Monte-Carlo: the six moments are integrals over the
joint law of two coordinates ``(h₁, h₂) = √B A (s, t)``, where ``(s, t)`` are two coordinates of a
uniform point on the sphere S^{B−2} (density ∝ (1 − s² − t²)^{(B−5)/2} on the unit disc) and
``A Aᵀ = [[1 − 1/B, −1/B], [−1/B, 1 − 1/B]]`` (the Gram matrix of ``P₁e₁, P₁e₂``). In polar
coordinates ``(s, t) = r (cos ψ, sin ψ)`` the radius ``ρ = r²`` is Beta(1, (B − 3)/2) and ψ is
uniform and independent. Writing ``ρ = 1 − exp(−v² / ((B − 3)/2))`` makes v's density ``2v e^{−v²}``
on v > 0 for every B, and r an analytic odd function of v: v gets one Gauss rule for that density
(48 nodes, discretized Stieltjes as in ``theory``), ψ a Gauss–Legendre rule (24 nodes) on each of
the four arcs between the lines ``h₁ = 0`` and ``h₂ = 0``, where φ' of relu, leaky_relu, selu and
softsign jumps or kinks, so the integrand is smooth in (v, ψ) on each piece. (A Gauss–Jacobi rule
in ρ instead converges only algebraically for elu, selu and softsign: their pieces bring odd
powers of r, i.e. √ρ.) The rule integrates ``E[h₁²] = 1`` and ``E[h₁ h₂] = −1/(B−1)`` to
rounding. Doubling both node counts changes λ by < 1e-14 (relu, leaky_relu, tanh, sigmoid,
identity, gelu, elu, selu, softsign; B = 4 … 10⁶), ``B (λ(B) − λ_∞)`` settles to a constant
(1.59 for relu) as it must, and a Monte-Carlo over sampled batch vectors of ``tr(P D P₁ D) / σ²``
itself agrees within its sampling error (tests/core/test_bn_theory.py).
Cost: ~0.5 ms per (activation, B) once the rule in v is built (~3 ms, once); cached.

Where it stops holding. Against the plain-torch simulation of tests/core/test_bn_theory.py
(depth 30, standard-normal inputs as wide as the net, a random loss gradient, the growth of
E‖∂L/∂h‖² fitted over layers 6–25): within 1 % for relu, tanh and identity at B = 16 and 64
(width 256) and 256 (width 512). The residue is finite width, about halving per doubling of it:
at B = 256, −1.1, −0.7, −0.4 % for relu and +1.2, +0.6, +0.3 % for tanh at width 256, 512, 1024;
at B = 16, +0.45, +0.31, +0.15 % for tanh. A layer's batch Gram matrix is a sample of N vectors in
R^B, anisotropic by O(B/N), so a unit's h is not exactly uniform on the sphere nor σ² exactly χ².
The gradient-independence assumption shows no effect beyond that, and a cross-entropy loss
instead of a random one changes nothing measurable (relu −0.3 %, tanh +1.0 % at B = 64, width
256). Not covered by the theory:

* inputs with fewer features than B: a linear BN net keeps every layer's batch vectors in the
  inputs' span (rank ≤ d_in + 1) and never reaches BSB1; with 64 input features at B = 256 the
  identity grows 1.9 % faster than λ(256) (relu −0.7 %, tanh +0.6 %: φ restores the rank);
* tiny batches: ``E[1/σ²]`` is ``E[1/χ²_{B−1}]``, whose variance is infinite for B ≤ 5, so the
  mean over a few nets falls short of λ and a typical (geometric-mean) net grows slower: at B = 4
  over 64 nets, relu's mean growth is 3.05 and its typical one 2.83 against λ = 3.08, identity's
  1.91 and 1.82 against 2; from B = 6 on the mean is within 1 %;
* the transients at both ends: the first layers' growth while the batch's Gram matrix approaches
  BSB1 (real data start away from it), the last few layers' while the head's gradient settles on
  the eigenvector ``G ∝ P₁``;
* ε = 1e-5, which matters only when ``σ_w² v`` comes near it.

References:
    G. Yang, J. Pennington, V. Rao, J. Sohl-Dickstein, S. S. Schoenholz. A mean field theory of
    batch normalization. ICLR 2019.
    S. Ioffe, C. Szegedy. Batch normalization: accelerating deep network training by reducing
    internal covariate shift. ICML 2015.
    S. S. Schoenholz, J. Gilmer, S. Ganguli, J. Sohl-Dickstein. Deep information propagation.
    ICLR 2017.
    G. H. Golub, J. H. Welsch. Calculation of Gauss quadrature rules. Math. Comp. 23, 1969.
    W. Gautschi. Orthogonal Polynomials: Computation and Approximation, §2.2 (discretized Stieltjes
    procedure). Oxford University Press, 2004.
"""

import math
import operator
from functools import cache, lru_cache
from typing import NamedTuple

import numpy as np
from scipy import linalg, special

from gradlab.core.activations import get_activation
from gradlab.core.theory import (
    Array,
    ProfilePrediction,
    depth_scale,
    gaussian_expectation,
    gradient_rms_profile,
    log_slope,
)

# Nodes of the radial rule (in v), and of the angular rule on each of the four arcs.
_RADIAL_NODES = 48
_ARC_NODES = 24
# The smallest batch with a finite growth factor (see the module docstring).
MIN_BATCH_SIZE = 4


@cache
def _radial_rule(n: int) -> tuple[Array, Array]:
    """Gauss rule with n nodes for the density ``2v e^{−v²}`` on v > 0, weights summing to 1.

    Discretized Stieltjes procedure (Gautschi 2004, §2.2), as ``theory`` builds its half-line
    rule: the density is replaced by composite Gauss–Legendre (40 nodes on each unit interval up
    to where the degree-2n integrands are negligible), Lanczos with full reorthogonalization gives
    the recurrence, Golub–Welsch the nodes and weights.
    """
    v_max = math.ceil(math.sqrt(2.0 * n)) + 8
    x, w = special.roots_legendre(40)
    v = (np.arange(v_max)[:, None] + 0.5 * (x + 1.0)).ravel()
    w = np.tile(0.5 * w, v_max) * 2.0 * v * np.exp(-v * v)
    basis = np.zeros((v.size, n + 1))
    basis[:, 0] = np.sqrt(w / w.sum())
    alpha, beta = np.zeros(n), np.zeros(n)
    for k in range(n):
        u = v * basis[:, k]
        alpha[k] = basis[:, k] @ u
        for _ in range(2):  # twice keeps the basis orthonormal to rounding
            u -= basis[:, : k + 1] @ (basis[:, : k + 1].T @ u)
        beta[k] = np.linalg.norm(u)
        basis[:, k + 1] = u / beta[k]
    nodes, vectors = linalg.eigh_tridiagonal(alpha, beta[:-1])
    weights = vectors[0] ** 2
    return nodes, weights / weights.sum()


@lru_cache(maxsize=64)
def _pair_rule(batch_size: int) -> tuple[Array, Array, Array]:
    """Nodes ``(h₁, h₂)`` and weights of a rule for the joint law of two coordinates of one unit's
    BN output over a batch at the BSB1 fixed point (module docstring)."""
    b = batch_size
    # ρ = r² ~ Beta(1, (B − 3)/2), i.e. −ln(1 − ρ) (B − 3)/2 = v² with density 2v e^{−v²}: r is
    # an analytic, odd function of v, so the rule in v is exact for r's odd powers too
    v, w_rho = _radial_rule(_RADIAL_NODES)
    rho = -np.expm1(-v * v / ((b - 3) / 2.0))
    a = np.linalg.cholesky(np.array([[1.0 - 1.0 / b, -1.0 / b], [-1.0 / b, 1.0 - 1.0 / b]]))
    # h_i = √B r |a_i| cos(ψ − atan2(a_i)): zero at that angle ± π/2
    cuts = np.sort(
        [
            (math.atan2(row[1], row[0]) + sign * math.pi / 2) % (2 * math.pi)
            for row in a
            for sign in (1, -1)
        ]
    )
    edges = np.append(cuts, cuts[0] + 2 * math.pi)
    x, w = special.roots_legendre(_ARC_NODES)
    half = np.diff(edges)[:, None] / 2.0
    psi = ((edges[:-1, None] + edges[1:, None]) / 2.0 + half * x).ravel()
    w_psi = (half * w).ravel() / (2 * math.pi)
    unit = np.stack([np.cos(psi), np.sin(psi)])  # (2, angles)
    h = math.sqrt(b) * np.sqrt(rho)[:, None, None] * (a @ unit)[None]  # (radii, 2, angles)
    weights = (w_rho[:, None] * w_psi[None]).ravel()
    for values in (h, weights):
        values.setflags(write=False)
    return h[:, 0].ravel(), h[:, 1].ravel(), weights


class _PairMoments(NamedTuple):
    m1: float  # E φ'(h₁)²
    m2: float  # E φ'(h₁)² h₁²
    c1: float  # E φ'(h₁) φ'(h₂)
    c2: float  # E φ'(h₁) h₁ φ'(h₂) h₂
    p2: float  # E φ(h₁)²
    p12: float  # E φ(h₁) φ(h₂)


def _pair_moments(activation: str, batch_size: int) -> _PairMoments:
    entry = get_activation(activation)
    h1, h2, w = _pair_rule(batch_size)
    d1, d2 = entry.dphi(h1), entry.dphi(h2)
    f1, f2 = entry.phi(h1), entry.phi(h2)
    return _PairMoments(
        m1=float(d1 * d1 @ w),
        m2=float((d1 * h1) ** 2 @ w),
        c1=float(d1 * d2 @ w),
        c2=float(d1 * h1 * d2 * h2 @ w),
        p2=float(f1 * f1 @ w),
        p12=float(f1 * f2 @ w),
    )


def _check_batch_size(batch_size: int) -> int:
    try:
        b = operator.index(batch_size)
    except TypeError:
        raise ValueError(f"batch_size must be an integer or None, got {batch_size!r}") from None
    if b < MIN_BATCH_SIZE:
        raise ValueError(
            f"batch_size must be >= {MIN_BATCH_SIZE}, got {b}: at B = 3 the mean-field growth is "
            "infinite (E[1/σ²] diverges; only BN's eps bounds it), at B = 2 BN passes no gradient"
        )
    return b


def bn_gradient_growth(activation: str, batch_size: int | None = None) -> float:
    """Per-layer growth factor λ of ``E‖∂L/∂h_l‖²`` towards the input in a BatchNorm MLP at init.

    ``E‖∂L/∂h_{l−1}‖² = λ · E‖∂L/∂h_l‖²`` with ``h_l`` the BN output (φ's input, where gradlab's
    ``grad_preact_rms`` is measured), the norm over units and batch; the RMS therefore grows by
    ``√λ`` per layer. ∂L/∂x and ∂L/∂(W x) grow by the same λ. Independent of σ_w and the biases.

    * ``batch_size=None``: the large-batch limit ``λ_∞ = E[φ'(z)²] / Var[φ(z)]``, z ~ N(0, 1),
      from ``theory.gaussian_expectation`` (π/(π−1) for relu, 1 for identity).
    * ``batch_size=B``: ``λ(B) = [(B − 1) m₁ − m₂ + c₁ + c₂] / [(B − 3)(p₂ − p₁₂)]``, the eigenvalue
      of the mean-field backward operator at the BSB1 fixed point (Yang et al. 2019), with the
      two-coordinate moments by a product Gauss rule (module docstring: accurate to ~1e-14,
      < 1 ms, cached). ``(B − 2)/(B − 3)`` for the identity.

    Args:
        activation: A registered activation (``gradlab.core.activations``).
        batch_size: The batch size B ≥ 4 whose statistics BN uses, or None for B → ∞.
    Returns:
        λ.
    Raises:
        ValueError: For an unknown activation, or a batch size that is not an integer ≥ 4.
    """
    get_activation(activation)  # an unknown name: its error, before the batch size's
    return _growth(activation, None if batch_size is None else _check_batch_size(batch_size))


@cache
def _growth(activation: str, batch_size: int | None) -> float:
    entry = get_activation(activation)
    if batch_size is None:
        slope_sq = float(gaussian_expectation(lambda z: entry.dphi(z) ** 2))
        mean = float(gaussian_expectation(entry.phi))
        second = float(gaussian_expectation(lambda z: entry.phi(z) ** 2))
        return slope_sq / (second - mean * mean)
    b = batch_size
    m = _pair_moments(activation, b)
    return ((b - 1) * m.m1 - m.m2 + m.c1 + m.c2) / ((b - 3) * (m.p2 - m.p12))


def predict_bn_profile(activation: str, depth: int, batch_size: int | None) -> ProfilePrediction:
    """Mean-field profile of a ``batchnorm_pre`` MLP's hidden layers 1 … L at init.

    Every layer is taken at the BSB1 fixed point, so BN's output has unit variance and the RMS
    back-propagated gradient grows by ``√λ`` per layer towards the input (``bn_gradient_growth``):
    ``grad_rms_l = λ^{(L − l)/2}``. The transients at both ends are not modelled (module
    docstring): the first layers while the batch's Gram matrix approaches the fixed point, the last
    ones while the head's gradient settles on the operator's eigenvector.

    Args:
        activation: A registered activation (``gradlab.core.activations``).
        depth: Hidden layers L ≥ 1.
        batch_size: The training batch size (≥ 4), or None for the large-batch limit.
    Returns:
        ``q`` = 1 per layer (BN's output; preact std 1), ``chi1`` = λ per layer with NaN for the
        last (the head has no BN: its factor depends on its own weights), ``grad_rms``,
        ``log_slope`` (= −ln λ / 2), ``first_last_ratio`` (= λ^{(L−1)/2}), ``q_fixed_point`` = 1,
        ``chi1_fixed_point`` = λ and ``depth_scale`` = −1 / ln λ (negative: exploding).
    """
    if operator.index(depth) < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    growth = bn_gradient_growth(activation, batch_size)
    chi = np.append(np.full(depth - 1, growth), math.nan)
    grad_rms = gradient_rms_profile(chi[:-1])
    q = np.ones(depth)
    for values in (q, chi, grad_rms):
        values.setflags(write=False)
    return ProfilePrediction(
        q=q,
        chi1=chi,
        grad_rms=grad_rms,
        log_slope=log_slope(grad_rms),
        first_last_ratio=float(grad_rms[0]),
        q_fixed_point=1.0,
        chi1_fixed_point=growth,
        depth_scale=float(depth_scale(growth)),
    )
