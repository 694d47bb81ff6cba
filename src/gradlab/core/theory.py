"""Mean-field theory of signal and gradient propagation through a randomly initialized MLP.

A hidden layer computes ``h_l = W_l φ(h_{l−1}) + b_l`` (``φ(h_0)`` read as the input ``x``) with
``Var[W_l] = σ_w²(l) / fan_in`` and ``Var[b_l] = σ_b²(l)``. In the wide limit each pre-activation
unit is Gaussian with variance ``q_l``, and with ``z ~ N(0, 1)``:

* length map:      ``q_l = σ_w²(l) · E_z[φ(√q_{l−1} z)²] + σ_b²(l)`` for l ≥ 2, and
  ``q_1 = σ_w²(1) · q_in + σ_b²(1)`` with ``q_in = mean_i x_i²`` (the input is not passed through φ)
* its fixed point: ``q* = σ_w² · E_z[φ(√q* z)²] + σ_b²``
* gradient map:    ``χ₁(q) = σ_w² · E_z[φ'(√q z)²]``, the factor by which one layer multiplies the
  mean squared back-propagated gradient, ``E[(∂L/∂h_l)²] = χ₁ · E[(∂L/∂h_{l+1})²]``
* depth scale:     ``ξ = −1 / ln χ₁(q*)``, so ``E[(∂L/∂h_l)²] ∝ exp(−(L − l) / ξ)`` deep in a net.
* correlation map: two inputs whose pre-activations have variance q and correlation c,
  ``u₁ = √q z₁``, ``u₂ = √q (c z₁ + √(1 − c²) z₂)``, reach
  ``c_{l+1} = (σ_w² E[φ(u₁)φ(u₂)] + σ_b²) / q_{l+1}``; its fixed point c* (1 in the ordered
  phase), its slope there ``χ_c = σ_w² E[φ'(u₁)φ'(u₂)]`` at (q*, c*), and the depth scales
  ``ξ_c = −1 / ln χ_c`` and ``ξ_q = −1 / ln χ_q`` with ``χ_q = dq_{l+1}/dq_l`` at q*: ξ_c
  diverges on the critical line, and nets train to a depth of about 6 ξ_c (Schoenholz et al.).

``χ₁(q*) < 1`` is the ordered phase (gradients vanish towards the input), ``χ₁(q*) > 1`` the
chaotic one (they explode), and ``χ₁(q*) = 1`` the critical line ("edge of chaos").

Gaussian expectations use Gauss quadrature on each half-line ``z < 0`` and ``z > 0`` separately:
φ' of relu, leaky_relu, elu and selu jumps at 0, where a rule over the whole line (e.g. odd-order
Gauss–Hermite, which has a node on 0) loses its accuracy. Each half is exact for polynomials of
degree < 2·128: the expectations of the tabulated φ² and φ'² are accurate to ~1e-14 for q ≤ 10,
~1e-12 at q = 100 and ~1e-8 at q = 1000, where a saturating φ(√q z) changes within |z| ≲ 1/√q.
Expectations over a correlated pair (u₁, u₂) are taken in polar coordinates, with the same
half-line rule for the radius and Gauss–Legendre rules in the angle between the rays where u₁ = 0
or u₂ = 0, so a kink at 0 again costs no accuracy (``bivariate_expectation``).

References:
    B. Poole, S. Lahiri, M. Raghu, J. Sohl-Dickstein, S. Ganguli. Exponential expressivity in deep
    neural networks through transient chaos. NeurIPS 2016.
    S. S. Schoenholz, J. Gilmer, S. Ganguli, J. Sohl-Dickstein. Deep information propagation.
    ICLR 2017.
    X. Glorot, Y. Bengio. Understanding the difficulty of training deep feedforward neural
    networks. AISTATS 2010.
    K. He, X. Zhang, S. Ren, J. Sun. Delving deep into rectifiers. ICCV 2015.
    W. Gautschi. Orthogonal Polynomials: Computation and Approximation, §2.2 (discretized Stieltjes
    procedure). Oxford University Press, 2004.
    Y. Cho, L. K. Saul. Kernel methods for deep learning. NeurIPS 2009 (the arc-cosine kernels).
"""

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import linalg, special

from gradlab.core.activations import get_activation
from gradlab.core.inits import get_init, init_gain

Array = NDArray[np.float64]

# Nodes per half-line of the Gaussian quadrature.
_HALF_NODES = 128
# q is searched in [_Q_MIN, _Q_MAX]; beyond them the fixed point is reported as 0 or inf.
_Q_MIN = 1e-200
_Q_MAX = 1e100
_LOG_Q_MIN = math.log(_Q_MIN)
_LOG_Q_MAX = math.log(_Q_MAX)
_MAX_LOG_STEP = 8.0 * math.log(4.0)
# Relative differences below this are beyond the quadrature's accuracy (its rounding is ~1e-15):
# |L(q)/q − 1| that small counts as a fixed point, |χ₁ − 1| that small as critical.
_CRITICAL_TOL = 1e-12
_MAX_SOLVER_STEPS = 100


@cache
def _half_line_rule(n: int) -> tuple[Array, Array]:
    """Gauss rule with n nodes for the weight exp(−z²/2)/√(2π) on z > 0 (total weight 1/2).

    Discretized Stieltjes procedure (Gautschi 2004, §2.2): the half-normal measure is replaced by
    composite Gauss–Legendre (40 nodes on each unit interval), whose recurrence coefficients follow
    by Lanczos with full reorthogonalization; the nodes are the Jacobi matrix's eigenvalues and the
    weights Christoffel numbers from the recurrence, which stay accurate where they are tiny.
    """
    z_max = math.ceil(math.sqrt(8.0 * n)) + 12  # the degree-2n integrands are negligible past here
    x, w = special.roots_legendre(40)
    z = (np.arange(z_max)[:, None] + 0.5 * (x + 1.0)).ravel()
    w = np.tile(0.5 * w, z_max) * np.exp(-0.5 * z * z)
    basis = np.zeros((z.size, n + 1))
    basis[:, 0] = np.sqrt(w / w.sum())
    alpha = np.zeros(n)
    beta = np.zeros(n)
    for k in range(n):
        alpha[k] = basis[:, k] @ (z * basis[:, k])
        u = z * basis[:, k]
        for _ in range(2):  # twice is enough to keep the basis orthonormal to rounding
            u -= basis[:, : k + 1] @ (basis[:, : k + 1].T @ u)
        beta[k] = np.linalg.norm(u)
        basis[:, k + 1] = u / beta[k]
    nodes = linalg.eigh_tridiagonal(alpha, beta[:-1], eigvals_only=True)
    # Christoffel numbers: weight_j ∝ 1 / Σ_k p_k(node_j)² with orthonormal p_k
    p_prev, p = np.zeros(n), np.ones(n)
    total = np.ones(n)
    for k in range(n - 1):
        p_prev, p = p, ((nodes - alpha[k]) * p - (beta[k - 1] if k else 0.0) * p_prev) / beta[k]
        total += p * p
    weights = 1.0 / total
    return nodes, 0.5 * weights / weights.sum()


def _gauss_rule() -> tuple[Array, Array]:
    nodes, weights = _half_line_rule(_HALF_NODES)
    return np.concatenate([-nodes[::-1], nodes]), np.concatenate([weights[::-1], weights])


def _as_output(values: Array) -> float | Array:
    return float(values) if values.ndim == 0 else values


def gaussian_expectation(fn: Callable[[Array], Array], q: ArrayLike = 1.0) -> float | Array:
    """Expectation of ``fn(√q z)`` over ``z ~ N(0, 1)``, i.e. of ``fn(h)`` over ``h ~ N(0, q)``.

    ``E_z[f(√q z)] = Σ_j w_j (f(−√q z_j) + f(√q z_j))`` with a Gauss rule on the half-line
    ``z > 0``, so a kink or jump of f at 0 costs no accuracy.

    Args:
        fn: A numpy-vectorised function.
        q: Variance(s) ≥ 0; an array gives one expectation per entry.
    Returns:
        The expectation, a float for scalar ``q`` and otherwise an array of ``q``'s shape.
    """
    q = np.asarray(q, dtype=float)
    if np.any(q < 0.0):
        raise ValueError(f"q must be >= 0, got min {q.min()}")
    nodes, weights = _gauss_rule()
    return _as_output(fn(np.sqrt(q)[..., None] * nodes) @ weights)


def length_map(
    activation: str, q: ArrayLike, sigma_w2: ArrayLike, sigma_b2: ArrayLike
) -> float | Array:
    """Pre-activation variance of the next hidden layer: ``σ_w² · E_z[φ(√q z)²] + σ_b²``.

    Args:
        activation: A registered activation (``gradlab.core.activations``).
        q: Pre-activation variance of this layer.
        sigma_w2: ``fan_in · Var[W]`` of the next layer.
        sigma_b2: ``Var[b]`` of the next layer.
    Returns:
        ``q`` of the next layer (broadcast over the arguments).
    """
    phi = get_activation(activation).phi
    second_moment = np.asarray(gaussian_expectation(lambda h: phi(h) ** 2, q))
    return _as_output(np.asarray(sigma_w2) * second_moment + np.asarray(sigma_b2))


def chi1(activation: str, q: ArrayLike, sigma_w2: ArrayLike) -> float | Array:
    """Gradient map ``χ₁(q) = σ_w² · E_z[φ'(√q z)²]``.

    ``q = 0`` and ``q = inf`` are read as the limits ``q → 0⁺`` and ``q → ∞``: for relu at ``q = 0``
    that is ``σ_w² / 2`` (the mean of the one-sided slopes squared), not ``σ_w² φ'(0)²``.

    Args:
        activation: A registered activation (``gradlab.core.activations``).
        q: Pre-activation variance of the layer whose φ' the gradient passes through.
        sigma_w2: ``fan_in · Var[W]`` of the layer above it (whose ``Wᵀ`` the gradient passes).
    Returns:
        χ₁ (broadcast over the arguments).
    """
    dphi = get_activation(activation).dphi
    q = np.clip(np.asarray(q, dtype=float), _Q_MIN, _Q_MAX)
    mean_sq_slope = np.asarray(gaussian_expectation(lambda h: dphi(h) ** 2, q))
    return _as_output(np.asarray(sigma_w2) * mean_sq_slope)


def fixed_point(
    activation: str, sigma_w2: ArrayLike, sigma_b2: ArrayLike, q0: ArrayLike = 1.0
) -> float | Array:
    """Fixed point ``q* = σ_w² · E_z[φ(√q* z)²] + σ_b²`` that iterating the length map reaches.

    For every tabulated φ, ``φ(x)² + φ(−x)²`` is non-decreasing in |x|, so the length map ``L`` is
    non-decreasing in q and the iterates ``q_{l+1} = L(q_l)`` from ``q0`` move monotonically to the
    first fixed point in the direction of ``L(q0) − q0``. Iterating converges only like ``1/l`` at
    criticality (tanh with σ_w² = 1, σ_b² = 0: ``q_l ≈ 1/(2l)``), so that fixed point is found
    directly: ln q steps away from ``ln q0`` (by ln 4, 2 ln 4, 4 ln 4, …, at most 8 ln 4) until
    ``L(q)/q − 1`` changes sign, then Illinois regula falsi solves ``L(q) = q`` in that bracket.
    ``|L(q)/q − 1| ≤ 1e-12``, below the quadrature's accuracy, counts as no sign: ``q0`` is returned
    when it is already that close to fixed (relu with σ_w² = 2, σ_b² = 0 keeps any q), and iterates
    that approach ``L(q) = q`` only asymptotically go to 0 or inf (tanh with σ_w² = 1, σ_b² = 0
    gives 0).

    Args:
        activation: A registered activation (``gradlab.core.activations``).
        sigma_w2: ``fan_in · Var[W]`` of the (identical) layers.
        sigma_b2: ``Var[b]`` of the layers.
        q0: The starting pre-activation variance (≥ 0).
    Returns:
        q*, broadcast over the arguments: 0.0 if the iterates decay to 0 (e.g. relu with σ_w² < 2,
        σ_b² = 0), ``inf`` if they grow without bound (an unbounded φ with e.g. σ_w² > 1 for
        identity or σ_w² > 2 for relu), NaN where an argument is NaN.
    """
    phi = get_activation(activation).phi
    shape = np.broadcast_shapes(np.shape(sigma_w2), np.shape(sigma_b2), np.shape(q0))
    sw, sb, q_start = (
        np.array(np.broadcast_to(a, shape), dtype=float).ravel() for a in (sigma_w2, sigma_b2, q0)
    )
    if np.any(q_start < 0.0):
        raise ValueError(f"q0 must be >= 0, got min {q_start.min()}")

    def length(q: Array, idx: NDArray[np.intp]) -> Array:
        return sw[idx] * np.asarray(gaussian_expectation(lambda h: phi(h) ** 2, q)) + sb[idx]

    # q0 = 0 stays put if L(0) = 0 and is otherwise left for q_1 = L(0) > 0
    from_zero = np.flatnonzero(q_start == 0.0)
    q_start[from_zero] = length(q_start[from_zero], from_zero)
    result = np.where(q_start == 0.0, 0.0, np.nan)
    todo = np.flatnonzero(np.isfinite(sw) & np.isfinite(sb) & np.isfinite(q_start) & (q_start > 0))
    # L(q)/q − 1 is scale-free: one tolerance serves q* = 1e-12 and q* = 1e6 alike
    r_near = length(q_start[todo], todo) / q_start[todo] - 1.0
    at_start = np.abs(r_near) <= _CRITICAL_TOL
    result[todo[at_start]] = q_start[todo[at_start]]

    todo, r_near = todo[~at_start], r_near[~at_start]
    direction = np.sign(r_near)
    s_near = np.log(q_start[todo])
    s_far = s_near.copy()
    step = math.log(4.0)
    empty = np.array([])
    brackets = [(np.array([], dtype=np.intp), empty, empty, empty, empty)]
    while todo.size:
        s_far = s_far + direction * step
        r_far = length(np.exp(s_far), todo) / np.exp(s_far) - 1.0
        escaped = (s_far > _LOG_Q_MAX) | (s_far < _LOG_Q_MIN)
        result[todo[escaped]] = np.where(direction[escaped] > 0.0, np.inf, 0.0)
        crossed = ~escaped & (direction * r_far < -_CRITICAL_TOL)
        brackets.append(tuple(v[crossed] for v in (todo, s_near, r_near, s_far, r_far)))
        # the bracket's near end is the last point still clearly short of the fixed point
        short = direction * r_far > _CRITICAL_TOL
        s_near, r_near = np.where(short, s_far, s_near), np.where(short, r_far, r_near)
        walking = ~(escaped | crossed)
        todo, direction = todo[walking], direction[walking]
        s_near, r_near, s_far = s_near[walking], r_near[walking], s_far[walking]
        step = min(2.0 * step, _MAX_LOG_STEP)

    # solve L(q)/q = 1 for s = ln q in each bracket [a, b] by Illinois regula falsi
    idx, a, fa, b, fb = (np.concatenate(parts) for parts in zip(*brackets, strict=True))
    for _ in range(_MAX_SOLVER_STEPS):
        if not idx.size:
            break
        c = b - fb * (b - a) / (fb - fa)
        fc = length(np.exp(c), idx) / np.exp(c) - 1.0
        flipped = fc * fb < 0.0
        # Illinois: halve the retained end's value so the bracket closes from both sides
        a, fa = np.where(flipped, b, a), np.where(flipped, fb, 0.5 * fa)
        b, fb = c, fc
        done = (fc == 0.0) | (np.abs(b - a) <= 1e-13)
        result[idx[done]] = np.exp(c[done])
        idx, a, fa, b, fb = (v[~done] for v in (idx, a, fa, b, fb))
    result[idx] = np.exp(b)  # only where rounding noise in L(q) − q stalls the solver
    return _as_output(result.reshape(shape))


def depth_scale(chi: ArrayLike) -> float | Array:
    """Signed depth scale ``ξ = −1 / ln χ₁`` (natural log) of the mean squared gradient.

    ``E[(∂L/∂h_l)²] ∝ exp(−(L − l) / ξ)``: ``ξ > 0`` when ``χ₁ < 1`` (vanishing towards the input),
    ``ξ < 0`` when ``χ₁ > 1`` (exploding), ``ξ = inf`` for ``|χ₁ − 1| ≤ 1e-12`` (critical to the
    quadrature's accuracy, so relu with σ_w² = 2 gives inf) and ``ξ = 0`` at ``χ₁ = 0``. The RMS
    gradient changes with the scale ``2ξ``: its log-slope over layers is ``1 / (2ξ)``.

    Args:
        chi: χ₁ value(s) ≥ 0.
    Returns:
        ξ, broadcast over ``chi``.
    """
    chi = np.asarray(chi, dtype=float)
    with np.errstate(divide="ignore"):
        xi = np.where(np.abs(chi - 1.0) <= _CRITICAL_TOL, np.inf, -1.0 / np.log(chi))
    return _as_output(xi)


# noqa reason: an init's two parameters (std, gain) beside the scheme, activation and shape
def init_variances(  # noqa: PLR0913, PLR0917
    init: str,
    activation: str,
    fan_in: int,
    fan_out: int,
    std: float | None = None,
    gain: float | None = None,
) -> tuple[float, float]:
    """``(σ_w², σ_b²) = (fan_in · Var[W], Var[b])`` that an init scheme gives one Linear layer
    (each entry of ``gradlab.core.inits.INITS`` states its own):

    * ``default`` (``nn.Linear``: W, b ~ U(−1/√fan_in, 1/√fan_in)): ``(1/3, 1/(3 fan_in))``
    * ``xavier_uniform``, ``xavier_normal``: ``(2 fan_in / (fan_in + fan_out), 0)``
    * ``kaiming_uniform``, ``kaiming_normal``: ``(gain², 0)`` with the activation's registered gain
    * ``orthogonal``: ``(gain² · min(1, fan_in / fan_out), 0)``: a tall matrix's orthonormal
      columns give Var[W] = 1 / fan_out
    * ``lecun_normal``: ``(1, 0)``
    * ``normal`` (N(0, std²)): ``(std² · fan_in, 0)``
    * ``lsuv``: ``(nan, 0)``: LSUV rescales the weights to the data, so there is no a-priori
      prediction

    ``gain`` replaces the activation's gain for the ``scalable`` inits (kaiming, orthogonal), as
    ``inits.initialize`` draws them: a run's ``sigma_w2`` gives ``gain = √σ_w²``, so kaiming's
    ``σ_w²`` is ``gain²`` and orthogonal's ``gain² · min(1, fan_in / fan_out)``.

    Args:
        init: One of the schemes above.
        activation: A registered activation (``gradlab.core.activations``).
        fan_in: Input features of the layer.
        fan_out: Output features of the layer.
        std: Weight standard deviation; required by ``normal`` only.
        gain: The gain in place of the activation's; ``scalable`` inits only.
    Returns:
        ``(σ_w², σ_b²)``.
    Raises:
        ValueError: For an unknown init or activation, ``normal`` without ``std``, or a
            ``gain`` for an init that is not ``scalable``.
    """
    gain = init_gain(init, activation, gain)
    if fan_in < 1 or fan_out < 1:
        raise ValueError(f"fan_in and fan_out must be >= 1, got {fan_in} and {fan_out}")
    if init == "normal" and std is None:
        raise ValueError("init 'normal' needs std (the weights' standard deviation)")
    return get_init(init).variances(fan_in, fan_out, gain, std)


def layer_variances(
    activation: str, q_in: ArrayLike, sigma_w2: ArrayLike, sigma_b2: ArrayLike
) -> Array:
    """Pre-activation variances ``q_1 … q_L`` of the hidden layers.

    ``q_1 = σ_w²(1) · q_in + σ_b²(1)`` (the input is not passed through φ), then
    ``q_l = σ_w²(l) · E_z[φ(√q_{l−1} z)²] + σ_b²(l)``.

    Args:
        activation: A registered activation (``gradlab.core.activations``).
        q_in: Mean squared input coordinate, ``mean_i x_i²``; an array (K,) for K nets.
        sigma_w2: ``σ_w²`` of hidden layers 1 … L, the last axis; (K, L) for K nets.
        sigma_b2: ``σ_b²`` of hidden layers 1 … L, as ``sigma_w2``.
    Returns:
        ``[q_1, …, q_L]``, layers on the last axis: (L,), or (K, L) for K nets.
    """
    q_in = np.asarray(q_in, dtype=float)
    sigma_w2, sigma_b2 = np.asarray(sigma_w2, dtype=float), np.asarray(sigma_b2, dtype=float)
    if np.any(q_in < 0.0):
        raise ValueError(f"q_in must be >= 0, got {q_in.min()}")
    q = [sigma_w2[..., 0] * q_in + sigma_b2[..., 0]]
    for layer in range(1, sigma_w2.shape[-1]):
        q.append(
            np.asarray(length_map(activation, q[-1], sigma_w2[..., layer], sigma_b2[..., layer]))
        )
    return np.stack(q, axis=-1)


def gradient_rms_profile(steps: ArrayLike) -> Array:
    """RMS back-propagated gradient ``RMS(∂L/∂h_l)`` of hidden layers 1 … L, 1 at layer L.

    ``RMS_l = sqrt(Π_{k=l}^{L−1} steps_k)``, where ``steps_k = E[(∂L/∂h_k)²] / E[(∂L/∂h_{k+1})²]
    = σ_w²(k+1) · E_z[φ'(√q_k z)²] · n_{k+1} / n_k``: the layer's χ₁, times a width ratio that is
    1 between hidden layers of equal width n.

    Args:
        steps: The L − 1 factors, for k = 1 … L − 1, on the last axis (one net per row).
    Returns:
        The L normalized RMS values (per row).
    """
    steps = np.asarray(steps, dtype=float)
    # the product over k ≥ l is a reversed cumulative product (over the last axis: one net per row)
    above = np.flip(np.cumprod(np.flip(steps, -1), axis=-1), -1)
    return np.sqrt(np.concatenate([above, np.ones((*steps.shape[:-1], 1))], axis=-1))


def log_slope(rms: ArrayLike) -> float:
    """Least-squares slope of ``ln RMS_l`` (natural log) against the layer index l.

    Positive when gradients shrink towards the input (vanishing), negative when they grow
    (exploding); ``1 / (2ξ)`` deep inside a net at its fixed point. The same fit serves predicted
    and measured profiles.

    Args:
        rms: RMS gradient of hidden layers 1 … L (any normalization).
    Returns:
        The slope per layer; NaN for fewer than two layers.
    """
    y = np.log(np.asarray(rms, dtype=float))
    if y.size < 2:
        return math.nan
    x = np.arange(y.size) - (y.size - 1) / 2.0
    return float(x @ (y - y.mean()) / (x @ x))


@dataclass(frozen=True, eq=False)
class ProfilePrediction:
    """Mean-field prediction for an MLP at initialization; the arrays run over hidden layers 1 … L.

    Attributes:
        q: Pre-activation variances ``q_l``.
        chi1: ``σ_w²(l+1) · E_z[φ'(√q_l z)²]``; the last entry uses the output layer's σ_w².
        grad_rms: Predicted ``RMS(∂L/∂h_l)``, normalized to 1 at the last hidden layer.
        log_slope: Least-squares slope of ``ln grad_rms`` against l (natural log).
        first_last_ratio: ``grad_rms[0] / grad_rms[-1]``.
        q_fixed_point: q* of the hidden layers' length map, iterated from ``q_1``.
        chi1_fixed_point: χ₁ at q* with the hidden layers' σ_w².
        depth_scale: ``−1 / ln chi1_fixed_point`` (see ``depth_scale``).
        mean: The per-layer stream mean ``m_l`` (a shift common to all units) of a residual
            net, whose arrays run over stream layers 1 … L (``gradlab.core.residual_theory``);
            None for MLPs.
        c_fixed_point: c* of the hidden layers' correlation map at q* (``correlation_fixed_point``).
        chi_c: χ_c at (q*, c*) (``chi_c``); equals ``chi1_fixed_point`` where c* = 1.
        xi_c: ``−1 / ln chi_c``, the depth scale of correlations (``depth_scales``).
        xi_q: ``−1 / ln χ_q``, the depth scale of q's approach to q* (``depth_scales``).
        The last four are NaN for lsuv and where another theory (residual, BatchNorm) fills
        the prediction.
    """

    q: Array
    chi1: Array
    grad_rms: Array
    log_slope: float
    first_last_ratio: float
    q_fixed_point: float
    chi1_fixed_point: float
    depth_scale: float
    mean: Array | None = None
    c_fixed_point: float = math.nan
    chi_c: float = math.nan
    xi_c: float = math.nan
    xi_q: float = math.nan


# noqa reason: an init's parameters and σ_b² beside the net's activation, shape and input
def predict_profile(  # noqa: PLR0913, PLR0917
    activation: str,
    init: str,
    widths: Sequence[int],
    q_in: float,
    std: float | None = None,
    sigma_b2: float | None = None,
    gain: float | None = None,
) -> ProfilePrediction:
    """Predict q, χ₁ and the back-propagated gradient RMS of every hidden layer at init.

    With ``widths = [d_in, n_1, …, n_L, d_out]`` and hidden pre-activations ``h_1 … h_L``,
    ``∂L/∂h_l = φ'(h_l) ⊙ W_{l+1}ᵀ ∂L/∂h_{l+1}``, so per unit
    ``E[(∂L/∂h_l)²] = σ_w²(l+1) · E_z[φ'(√q_l z)²] · (n_{l+1} / n_l) · E[(∂L/∂h_{l+1})²]``.
    The output layer's σ_w² only scales the gradient arriving at h_L, so it drops out of the
    profile normalized to 1 there. The fixed point uses a hidden ``n_L → n_L`` layer's variances.

    Args:
        activation: A registered activation (``gradlab.core.activations``).
        init: A scheme of ``init_variances``.
        widths: ``[d_in, n_1, …, n_L, d_out]``, at least one hidden layer.
        q_in: Mean squared input coordinate, ``mean_i x_i²``; ``q_1 = σ_w²(1) q_in + σ_b²(1)``.
        std: Weight standard deviation for ``init="normal"``.
        sigma_b2: Every layer's σ_b² in place of the init's (``bias_std²``); None keeps it.
        gain: Every layer's gain in place of the activation's (``√sigma_w2``; see
            ``init_variances``); None keeps it.
    Returns:
        The prediction; for ``lsuv`` every entry is NaN but the normalizing ``grad_rms[-1] = 1``.
    """
    return predict_profiles(activation, widths, [(init, std, q_in)], [sigma_b2], [gain])[0]


def predict_profiles(
    activation: str,
    widths: Sequence[int],
    nets: Sequence[tuple[str, float | None, float]],
    bias_variances: Sequence[float | None] | None = None,
    gains: Sequence[float | None] | None = None,
) -> list[ProfilePrediction]:
    """``predict_profile`` for many nets of one activation and shape, in one vectorised pass.

    The runs a grid trains as one stack share activation and widths but not init, init std or
    input; solving each one's fixed point alone would cost as much as their whole probe at init.

    Args:
        activation: A registered activation (``gradlab.core.activations``).
        widths: ``[d_in, n_1, …, n_L, d_out]``, at least one hidden layer.
        nets: ``(init, std, q_in)`` per net, as ``predict_profile`` takes them.
        bias_variances: Per net, σ_b² of every layer in place of its init's (a run's
            bias_std²), or None to keep the init's.
        gains: Per net, every layer's gain in place of the activation's (a run's
            ``√sigma_w2``; see ``init_variances``), or None to keep it.
    Returns:
        One prediction per net, in order.
    """
    widths = [int(n) for n in widths]
    if len(widths) < 3 or min(widths) < 1:
        raise ValueError(f"widths must be [d_in, n_1, ..., n_L, d_out] with sizes >= 1: {widths}")
    if not nets:
        return []
    layers = [*itertools.pairwise(widths), (widths[-2], widths[-2])]
    gains = list(gains) if gains is not None else [None] * len(nets)
    if len(gains) != len(nets):
        raise ValueError(f"gains has {len(gains)} entries for {len(nets)} nets")
    # (nets, weight layers, 2): σ_w² and σ_b² of every layer, then of a hidden n_L → n_L layer
    variances = np.array(
        [
            [init_variances(init, activation, n_in, n_out, std, gain) for n_in, n_out in layers]
            for (init, std, _), gain in zip(nets, gains, strict=True)
        ]
    )
    for k, bias in enumerate(bias_variances or ()):
        if bias is not None:
            variances[k, :, 1] = bias
    sigma_w2, sigma_b2 = variances[:, :-1, 0], variances[:, :-1, 1]
    q_in = np.array([q for _, _, q in nets], dtype=float)
    q = layer_variances(activation, q_in, sigma_w2[:, :-1], sigma_b2[:, :-1])
    chi = np.asarray(chi1(activation, q, sigma_w2[:, 1:]))
    hidden = np.array(widths[1:-1], dtype=float)
    grad_rms = gradient_rms_profile(chi[:, :-1] * hidden[1:] / hidden[:-1])

    sw_hidden, sb_hidden = variances[:, -1, 0], variances[:, -1, 1]
    q_star = np.asarray(fixed_point(activation, sw_hidden, sb_hidden, q0=q[:, 0]))
    chi_star = np.asarray(chi1(activation, q_star, sw_hidden))
    xi = np.asarray(depth_scale(chi_star))
    # nets of one stack share few (σ_w², σ_b², q*): _correlation_point solves each once
    point = _correlation_point(activation, sw_hidden, sb_hidden, q_star)
    chi_corr = np.where(point.c_star == 1.0, chi_star, point.chi_c)  # χ_c = χ₁ to the bit at c* = 1
    xi_c, xi_q = np.asarray(depth_scale(chi_corr)), np.asarray(depth_scale(point.chi_q))
    for values in (q, chi, grad_rms):
        values.setflags(write=False)
    return [
        ProfilePrediction(
            q=q[k],
            chi1=chi[k],
            grad_rms=grad_rms[k],
            log_slope=log_slope(grad_rms[k]),
            first_last_ratio=float(grad_rms[k, 0] / grad_rms[k, -1]),
            q_fixed_point=float(q_star[k]),
            chi1_fixed_point=float(chi_star[k]),
            depth_scale=float(xi[k]),
            c_fixed_point=float(point.c_star[k]),
            chi_c=float(chi_corr[k]),
            xi_c=float(xi_c[k]),
            xi_q=float(xi_q[k]),
        )
        for k in range(len(nets))
    ]


def chi1_grid(activation: str, sigma_w2: ArrayLike, sigma_b2: ArrayLike, q0: float = 1.0) -> Array:
    """χ₁ at the fixed point over a (σ_w², σ_b²) grid: the phase diagram of Poole et al. (2016).

    ``grid[i, j] = χ₁(q*(σ_w2[j], σ_b2[i]), σ_w2[j])``, the ``meshgrid(sigma_w2, sigma_b2)`` layout
    that ``matplotlib.pyplot.contour(sigma_w2, sigma_b2, grid, levels=[1])`` takes; the level 1
    contour is the order-to-chaos transition.

    Args:
        activation: A registered activation (``gradlab.core.activations``).
        sigma_w2: 1-D array of σ_w² values (x axis).
        sigma_b2: 1-D array of σ_b² values (y axis).
        q0: Where the length map's iteration starts (matters only where q* is not unique).
    Returns:
        Array of shape ``(len(sigma_b2), len(sigma_w2))``.
    """
    sw, sb = np.meshgrid(np.asarray(sigma_w2, dtype=float), np.asarray(sigma_b2, dtype=float))
    q_star = fixed_point(activation, sw, sb, q0=q0)
    return np.asarray(chi1(activation, q_star, sw))


# --- the correlation map and its depth scales ----------------------------------------------------

# Nodes of the polar rule for bivariate expectations: radial ones (a half-line rule for
# r e^{−r²/2}), and Gauss–Legendre ones on each arc of the circle between kinks.
_RADIAL_NODES = 48
_ARC_NODES = 32
# (c, q) pairs evaluated at once: 128 × 48 × 192 nodes, 9 MB per float array of a block
_PAIR_BLOCK = 128
# |D − 1| below this ends the solve for c* (see correlation_fixed_point)
_CORRELATION_TOL = 1e-13
_EPS = float(np.finfo(float).eps)
# critical_sigma_w2 looks for χ₁ = 1 within σ_w² ∈ [e^−_LOG_SW_RANGE, e^_LOG_SW_RANGE]
_LOG_SW_RANGE = math.log(1e4)


@cache
def _polar_rule() -> tuple[Array, Array, Array, Array]:
    """Radial nodes and weights, and Gauss–Legendre nodes and weights mapped to [0, 1].

    With ``(z₁, z₂) = r (cos ψ, sin ψ)``, ``E[f] = (1/2π) ∫dψ ∫_0^∞ f · r e^{−r²/2} dr``, and the
    half-line rule gives ``∫_0^∞ g(r) e^{−r²/2} dr = √(2π) Σ_j w_j g(r_j)``; the radial weights
    carry ``r_j`` and ``√(2π) / 2π``, so they sum to 1/2π and the angular ones to each arc's length.
    """
    r, w = _half_line_rule(_RADIAL_NODES)
    x, w_x = special.roots_legendre(_ARC_NODES)
    return r, w * r / math.sqrt(2.0 * math.pi), 0.5 * (x + 1.0), 0.5 * w_x


def _pair_expectation(
    fn: Callable[[Array, Array], Array], half_angle: Array, q: Array, symmetric: bool = False
) -> Array:
    """``E[fn(u₁, u₂)]`` for flat arrays of half-angles ``θ/2`` (``c = cos θ``) and variances q.

    ``u₁ = √q r cos(ψ + θ/2)``, ``u₂ = √q r cos(ψ − θ/2)``: ``E[u₁u₂] = q cos θ``. The rays
    ``ψ = ±π/2 − θ/2`` (u₁ = 0) and ``ψ = ±π/2 + θ/2`` (u₂ = 0) and, to keep arcs short, ψ = 0
    and ψ = π cut the circle into six arcs; on each ray and arc a φ that is smooth but at 0 gives a
    smooth integrand. ψ → −ψ swaps u₁ and u₂, so a ``symmetric`` fn needs only the three arcs of
    [0, π], counted twice: the same sum at half the cost.
    """
    r, w_r, x, w_x = _polar_rule()
    out = np.empty(half_angle.shape)
    right = 0.5 * math.pi
    for start in range(0, half_angle.size, _PAIR_BLOCK):
        part = slice(start, start + _PAIR_BLOCK)
        h = half_angle[part, None]
        cuts = [np.zeros_like(h), right - h, right + h, np.full_like(h, math.pi)]
        if not symmetric:
            cuts = [-e for e in cuts[:0:-1]] + cuts
        ends = np.hstack(cuts)
        width = np.diff(ends, axis=1)  # (m, arcs)
        psi = (ends[:, :-1, None] + width[:, :, None] * x).reshape(h.shape[0], -1)
        w_psi = ((2.0 if symmetric else 1.0) * width[:, :, None] * w_x).reshape(h.shape[0], -1)
        radius = np.sqrt(q[part])[:, None, None] * r[:, None]  # (m, radial, 1)
        values = fn(radius * np.cos(psi + h)[:, None, :], radius * np.cos(psi - h)[:, None, :])
        out[part] = np.matmul(values, w_psi[:, :, None])[..., 0] @ w_r
    return out


def bivariate_expectation(
    fn: Callable[[Array, Array], Array], c: ArrayLike, q: ArrayLike = 1.0, symmetric: bool = False
) -> float | Array:
    """``E[fn(u₁, u₂)]`` over a Gaussian pair with ``E[u₁²] = E[u₂²] = q`` and ``E[u₁u₂] = q c``.

    Polar coordinates: ``(u₁, u₂) = √q r (cos(ψ + θ/2), cos(ψ − θ/2))`` with ``c = cos θ``;
    a 48-node Gauss rule for ``r e^{−r²/2}`` on ``r > 0`` (the half-line construction of
    ``gaussian_expectation``) times 32 Gauss–Legendre nodes on each arc of ψ between the rays where
    u₁ = 0 or u₂ = 0 (and ψ = 0, π): 9,216 nodes, 4,608 for a symmetric fn. A kink or jump of fn
    at ``u₁ = 0`` or ``u₂ = 0`` then lies on arc ends: relu's ``E[φ(u₁)φ(u₂)]`` and
    ``E[φ'(u₁)φ'(u₂)]`` (the arc-cosine kernels of Cho & Saul 2009) come out within 2e-15 for
    every c. A tensor product of the half-line rule in ``(z₁, z₂)`` with
    ``u₂ = √q (c z₁ + √(1 − c²) z₂)`` splits only at ``z₁ = 0`` and ``z₂ = 0``: relu's
    ``E[φ'(u₁)φ'(u₂)]`` jumps across the oblique line u₂ = 0 and that rule misses it by ~3e-4
    (6e-7 for ``E[φ(u₁)φ(u₂)]``). Against nested adaptive quadrature (c = 0, 0.6, 0.95,
    0.9999), every registered φ's ``E[φ(u₁)φ(u₂)]`` and ``E[φ'(u₁)φ'(u₂)]`` are within 6e-15 for
    q ≤ 3, 4e-13 at q = 10 and 6e-10 at q = 30 (tanh's ``E[φ'φ']``, the steepest): a saturating φ
    varies over ψ within ``1/(√q r)`` of the rays, so the error grows with q.

    Args:
        fn: A numpy-vectorised function of two arrays of one shape.
        c: Correlation(s) in [−1, 1].
        q: Variance(s) ≥ 0.
        symmetric: ``fn(a, b) == fn(b, a)``; halves the nodes.
    Returns:
        The expectation, a float for scalar arguments and otherwise an array of their broadcast
        shape.
    """
    c, q = np.asarray(c, dtype=float), np.asarray(q, dtype=float)
    if np.any(q < 0.0):
        raise ValueError(f"q must be >= 0, got min {q.min()}")
    if np.any(np.abs(c) > 1.0):
        raise ValueError(f"c must lie in [-1, 1], got {c[np.abs(c) > 1.0].ravel()[0]}")
    shape = np.broadcast_shapes(c.shape, q.shape)
    c_flat, q_flat = (np.broadcast_to(a, shape).ravel() for a in (c, q))
    half_angle = 0.5 * np.arccos(c_flat)
    return _as_output(_pair_expectation(fn, half_angle, q_flat, symmetric).reshape(shape))


def correlation_map(
    activation: str, c: ArrayLike, q: ArrayLike, sigma_w2: ArrayLike, sigma_b2: ArrayLike
) -> float | Array:
    """Pre-activation correlation of two inputs in the next hidden layer.

    ``c ↦ (σ_w² E[φ(u₁)φ(u₂)] + σ_b²) / q_next`` with ``u₁ = √q z₁``,
    ``u₂ = √q (c z₁ + √(1 − c²) z₂)`` and ``q_next = length_map(q)``, for two inputs whose
    pre-activations both have variance q (Poole et al. 2016; Schoenholz et al. 2017, eq. 3–5).
    At q = q* it maps c = 1 to 1; its slope is ``σ_w² q E[φ'(u₁)φ'(u₂)] / q_next``
    (Price's theorem), χ_c at ``(q*, c*)``. ``q = 0`` and ``q = inf`` are read as the limits,
    as ``chi1`` reads them (tanh with σ_b² = 0 at q → 0⁺ maps c to c).

    Args:
        activation: A registered activation (``gradlab.core.activations``).
        c: Correlation(s) of this layer's pre-activations, in [−1, 1].
        q: Their variance (both inputs alike).
        sigma_w2: ``fan_in · Var[W]`` of the next layer.
        sigma_b2: ``Var[b]`` of the next layer.
    Returns:
        The next layer's correlation (broadcast over the arguments).
    """
    phi = get_activation(activation).phi
    q = np.asarray(q, dtype=float)
    if np.any(q < 0.0):
        raise ValueError(f"q must be >= 0, got min {q.min()}")
    q = np.clip(q, _Q_MIN, _Q_MAX)
    cross = np.asarray(bivariate_expectation(lambda a, b: phi(a) * phi(b), c, q, True))
    q_next = np.asarray(length_map(activation, q, sigma_w2, sigma_b2))
    return _as_output((np.asarray(sigma_w2) * cross + np.asarray(sigma_b2)) / q_next)


def length_map_slope(activation: str, q: ArrayLike, sigma_w2: ArrayLike) -> float | Array:
    """Slope ``χ_q = dq_next/dq`` of the length map at q.

    Schoenholz et al. (2017, eq. 9) write it ``χ₁ + σ_w² E[φ''(u)φ(u)]``; the activations register
    φ and φ' only, so it is taken as the exact derivative of the quadrature's length map instead,
    ``d/dq Σ_j w_j φ(√q z_j)² = Σ_j w_j φ(h_j) φ'(h_j) h_j / q`` with ``h_j = √q z_j`` (the same
    value by Stein's lemma, with no step size; a centred difference of ``length_map`` in ln q
    approaches it as the step², to ~1e-11 at a step of 1e-5). ``q = 0`` and ``q = inf`` are read
    as the limits, as in ``chi1``.

    Args:
        activation: A registered activation (``gradlab.core.activations``).
        q: Pre-activation variance of this layer.
        sigma_w2: ``fan_in · Var[W]`` of the next layer.
    Returns:
        χ_q (broadcast over the arguments).
    """
    act = get_activation(activation)
    q = np.clip(np.asarray(q, dtype=float), _Q_MIN, _Q_MAX)
    moment = np.asarray(gaussian_expectation(lambda h: act.phi(h) * act.dphi(h) * h, q))
    return _as_output(np.asarray(sigma_w2) * moment / q)


def _illinois(
    fn: Callable[[Array, NDArray[np.intp]], Array],
    idx: NDArray[np.intp],
    bracket: tuple[Array, Array, Array, Array],
    f_tol: float,
    x_rtol: float,
) -> tuple[NDArray[np.intp], Array]:
    """Illinois regula falsi, one root of ``fn(x, idx)`` per bracket ``(a, f(a), b, f(b))``.

    Stops where ``|f| ≤ f_tol`` or the bracket's width is at most ``x_rtol · |x|``, after
    ``_MAX_SOLVER_STEPS`` at the latest; returns the indices and their roots.
    """
    a, fa, b, fb = bracket
    found_idx, found = [np.array([], dtype=np.intp)], [np.array([])]
    for _ in range(_MAX_SOLVER_STEPS):
        if not idx.size:
            break
        x = b - fb * (b - a) / (fb - fa)
        fx = fn(x, idx)
        flipped = fx * fb < 0.0
        # Illinois: halve the retained end's value so the bracket closes from both sides
        a, fa = np.where(flipped, b, a), np.where(flipped, fb, 0.5 * fa)
        b, fb = x, fx
        done = (np.abs(fx) <= f_tol) | (np.abs(b - a) <= x_rtol * np.abs(x)) | np.isnan(fx)
        found_idx.append(idx[done])
        found.append(x[done])
        idx = idx[~done]
        a, fa, b, fb = (v[~done] for v in (a, fa, b, fb))
    found_idx.append(idx)  # only where rounding noise stalls the solver
    found.append(b)
    return np.concatenate(found_idx), np.concatenate(found)


class _CorrelationPoint(NamedTuple):
    c_star: Array
    chi_c: Array
    chi_q: Array


def _correlation_point(
    activation: str, sigma_w2: Array, sigma_b2: Array, q_star: Array
) -> _CorrelationPoint:
    """c*, χ_c and χ_q for flat arrays of (σ_w², σ_b², q*), once per distinct triple.

    c* solves ``D(c) = 1`` for the secant slope ``D(c) = (M(1) − M(c)) / (1 − c)`` of the
    correlation map M (see ``correlation_fixed_point``).
    """
    act = get_activation(activation)
    rows, inverse = np.unique(
        np.stack([sigma_w2, sigma_b2, q_star], axis=1), axis=0, return_inverse=True
    )
    inverse = inverse.reshape(-1)
    sw, sb, q = rows.T
    q = np.clip(q, _Q_MIN, _Q_MAX)  # q* = 0 or inf: the limits, as chi1 reads them
    with np.errstate(divide="ignore", invalid="ignore"):
        chi = np.asarray(chi1(activation, q, sw))
        q_next = np.asarray(length_map(activation, q, sw, sb))
        chi_q = np.asarray(length_map_slope(activation, q, sw))
        means = gaussian_expectation(lambda h: np.stack([act.phi(h), act.dphi(h)]), q)
        mean_phi, mean_dphi = np.asarray(means).reshape(2, -1)
        # M'(1) = σ_w² q E[φ'²] / q_next (Price's theorem) and M(0) = (σ_w² E[φ]² + σ_b²) / q_next
        slope_at_one = chi * q / q_next
        at_zero = (sw * mean_phi**2 + sb) / q_next
    c_star = np.where(np.isnan(slope_at_one), np.nan, 1.0)
    chi_c = chi.copy()

    # chaotic: M(c) > c just below 1. M is a power series in c with non-negative coefficients
    # (Mehler), so D decreases from M'(1) at c = 1 to 1 − M(0) ≤ 1 at c = 0: one root in [0, 1),
    # c* = 0 where M(0) = 0 (within 1e-13), and there E[φ'(u₁)φ'(u₂)] = E[φ']²
    chaotic = slope_at_one > 1.0 + _CRITICAL_TOL
    c_star[chaotic] = 0.0
    chi_c[chaotic] = sw[chaotic] * mean_dphi[chaotic] ** 2
    unsolved = np.flatnonzero(chaotic & (at_zero > _CORRELATION_TOL))

    def secant_excess(t: Array, idx: NDArray[np.intp]) -> Array:
        # in t = (θ/2)²: M(1) − M(c) = σ_w² E[(φ(u₁) − φ(u₂))²] / (2 q_next) as E[φ(u₁)²] and
        # E[φ(u₂)²] agree, and 1 − c = 2 sin²(θ/2): a sum of squares over an exact denominator
        h = np.sqrt(t)
        gap = _pair_expectation(lambda a, b: (act.phi(a) - act.phi(b)) ** 2, h, q[idx], True)
        excess = sw[idx] * gap / (4.0 * q_next[idx] * np.sin(h) ** 2) - 1.0
        # φ(u₁) − φ(u₂) ~ θ carries a rounding error ~ε, so D one of ~ε/θ: within it, D = 1
        return np.where(np.abs(excess) <= 4.0 * _EPS / h, 0.0, excess)

    t_end = np.full(unsolved.size, (0.25 * math.pi) ** 2)
    bracket = (np.zeros(unsolved.size), slope_at_one[unsolved] - 1.0, t_end, -at_zero[unsolved])
    solved, t = _illinois(secant_excess, unsolved, bracket, _CORRELATION_TOL, 1e-12)
    half = np.sqrt(t)
    c_star[solved] = np.cos(2.0 * half)
    chi_c[solved] = sw[solved] * _pair_expectation(
        lambda a, b: act.dphi(a) * act.dphi(b), half, q[solved], True
    )
    return _CorrelationPoint(c_star[inverse], chi_c[inverse], chi_q[inverse])


def _at_fixed_point(
    activation: str, sigma_w2: ArrayLike, sigma_b2: ArrayLike, q0: ArrayLike
) -> tuple[_CorrelationPoint, tuple[int, ...]]:
    shape = np.broadcast_shapes(np.shape(sigma_w2), np.shape(sigma_b2), np.shape(q0))
    q_star = np.asarray(fixed_point(activation, sigma_w2, sigma_b2, q0), dtype=float)
    sw, sb = (
        np.array(np.broadcast_to(a, shape), dtype=float).ravel() for a in (sigma_w2, sigma_b2)
    )
    return _correlation_point(activation, sw, sb, np.broadcast_to(q_star, shape).ravel()), shape


def correlation_fixed_point(
    activation: str, sigma_w2: ArrayLike, sigma_b2: ArrayLike, q0: ArrayLike = 1.0
) -> float | Array:
    """Fixed point ``c* = M(c*)`` of the correlation map at ``q* = fixed_point(…, q0)``.

    M maps c = 1 to 1 at q*, and its slope there is χ₁(q*). M is a power series in c with
    non-negative coefficients (Mehler's expansion of ``E[φ(u₁)φ(u₂)]``), so convex on [0, 1] with
    ``M(0) ≥ 0``: where ``χ₁ ≤ 1 + 1e-12`` (ordered, or critical to the quadrature's accuracy)
    ``c* = 1``, and otherwise (chaotic) the one root of ``M(c) = c`` in [0, 1) attracts every
    c ∈ [0, 1) (Schoenholz et al. 2017, §3). Iterating M converges like ``χ_c^l``, too slowly near
    the critical line, so c* is solved: the secant slope ``D(c) = (M(1) − M(c)) / (1 − c)``
    decreases from χ₁ at c → 1 to ``1 − M(0)`` at c = 0, and Illinois regula falsi finds
    ``D = 1`` in ``t = (θ/2)²``, ``c = cos θ``, where D is near-linear, until ``|D − 1| ≤ 1e-13``
    (or below D's rounding, ~4ε/θ, near the critical line) or t is known to a relative 1e-12.
    ``M(1) − M(c)`` is evaluated as ``σ_w² E[(φ(u₁) − φ(u₂))²] / (2 q_next)``, a sum of squares,
    and ``1 − c`` as ``2 sin²(θ/2)``, so no cancellation grows as c* nears 1: for tanh with
    σ_b² = 0.05, c* is within 1.3e-13 of an independently solved trapezoid reference for
    ``σ_w² ≥ 1.0001 σ_c²`` and within 4e-12 down to ``1 + 1e-8``. Where ``M(0) ≤ 1e-13`` (an
    odd φ with σ_b² = 0) c* = 0.

    Args:
        activation: A registered activation (``gradlab.core.activations``).
        sigma_w2: ``fan_in · Var[W]`` of the (identical) layers.
        sigma_b2: ``Var[b]`` of the layers.
        q0: Where the length map's iteration starts (see ``fixed_point``).
    Returns:
        c*, broadcast over the arguments; NaN where an argument is NaN. Where q* is 0 or inf (no
        finite fixed point) the limits are used, and for a positively homogeneous φ with σ_b² = 0
        (relu) ``M'(1) = χ₁ q / q_next = 1`` whatever σ_w², so c* = 1.
    """
    point, shape = _at_fixed_point(activation, sigma_w2, sigma_b2, q0)
    return _as_output(point.c_star.reshape(shape))


def chi_c(
    activation: str, sigma_w2: ArrayLike, sigma_b2: ArrayLike, q0: ArrayLike = 1.0
) -> float | Array:
    """``χ_c = σ_w² E[φ'(u₁)φ'(u₂)]`` at ``(q*, c*)``, the correlation map's slope at its fixed
    point (Schoenholz et al. 2017, §3).

    At ``c* = 1`` (ordered or critical) it is ``chi1(q*)``; in the chaotic phase
    ``χ_c < 1 < χ₁``. ``E[φ'(u₁)φ'(u₂)]`` is ``bivariate_expectation``'s polar rule.

    Args:
        activation: A registered activation (``gradlab.core.activations``).
        sigma_w2: ``fan_in · Var[W]`` of the (identical) layers.
        sigma_b2: ``Var[b]`` of the layers.
        q0: Where the length map's iteration starts (see ``fixed_point``).
    Returns:
        χ_c, broadcast over the arguments.
    """
    point, shape = _at_fixed_point(activation, sigma_w2, sigma_b2, q0)
    return _as_output(point.chi_c.reshape(shape))


class DepthScales(NamedTuple):
    """Signed depth scales (see ``depth_scale``) over which q and c approach their fixed points."""

    xi_q: float | Array
    xi_c: float | Array


def depth_scales(
    activation: str, sigma_w2: ArrayLike, sigma_b2: ArrayLike, q0: ArrayLike = 1.0
) -> DepthScales:
    """Depth scales ``ξ_q = −1 / ln χ_q`` and ``ξ_c = −1 / ln χ_c`` (Schoenholz et al. 2017, §3).

    ``|q_l − q*| ∝ exp(−l / ξ_q)`` and ``|c_l − c*| ∝ exp(−l / ξ_c)`` deep in a net, with χ_q the
    length map's slope at q* (``length_map_slope``) and χ_c from ``chi_c``. ξ_c diverges at the
    order-to-chaos line (χ₁ = 1, ``critical_sigma_w2``) and nets train up to depth ≈ 6 ξ_c in
    Schoenholz et al.'s experiments; ξ_q stays finite there. Both go through ``depth_scale``, so
    ``inf`` where χ is 1 within 1e-12 and negative where it exceeds 1 (relu's χ_c = χ₁ = σ_w²/2
    above σ_w² = 2, where q* = inf: there ξ_c reflects χ₁, while c itself approaches 1 only
    polynomially). For the ``chi1_grid`` layout pass ``sigma_w2[None, :]`` and
    ``sigma_b2[:, None]``.

    Args:
        activation: A registered activation (``gradlab.core.activations``).
        sigma_w2: ``fan_in · Var[W]`` of the (identical) layers.
        sigma_b2: ``Var[b]`` of the layers.
        q0: Where the length map's iteration starts (see ``fixed_point``).
    Returns:
        ``(xi_q, xi_c)``, each broadcast over the arguments.
    """
    point, shape = _at_fixed_point(activation, sigma_w2, sigma_b2, q0)
    return DepthScales(
        _as_output(np.asarray(depth_scale(point.chi_q)).reshape(shape)),
        _as_output(np.asarray(depth_scale(point.chi_c)).reshape(shape)),
    )


def critical_sigma_w2(activation: str, sigma_b2: ArrayLike, q0: ArrayLike = 1.0) -> float | Array:
    """σ_w² on the order-to-chaos line: the root of ``χ₁(q*(σ_w², σ_b²), σ_w²) = 1``.

    From σ_w² = 1, ln σ_w² steps by ln 1.5 towards χ₁ = 1 (up while χ₁ < 1) until χ₁ − 1 changes
    sign, then Illinois regula falsi solves in ln σ_w² until ``|χ₁ − 1| ≤ 1e-13``. χ₁ at q* grows
    with σ_w² for every registered activation but elu and selu, whose χ₁ dips after its first
    crossing (elu touches 1 again at σ_w² = 2, where q* = inf): the root returned is the first
    crossing's, unless a step lands on a touching point. Where χ₁ is nearly flat past the root
    (selu with σ_b² = 0, whose q* leaves 0 there) ``|χ₁ − 1| ≤ 1e-13`` pins σ_w² to ~1e-7 only.
    tanh with σ_b² = 0.05 gives 1.7610, Schoenholz et al. (2017) Fig. 1's ≈ 1.76; relu 2 for
    every σ_b²; tanh with σ_b² = 0 gives 1.

    Args:
        activation: A registered activation (``gradlab.core.activations``).
        sigma_b2: ``Var[b]`` of the layers.
        q0: Where the length map's iteration starts (see ``fixed_point``).
    Returns:
        The critical σ_w², broadcast over the arguments; NaN where χ₁ does not cross 1 in
        σ_w² ∈ [1e-4, 1e4].
    """
    shape = np.broadcast_shapes(np.shape(sigma_b2), np.shape(q0))
    sb, q_start = (np.array(np.broadcast_to(a, shape), dtype=float).ravel() for a in (sigma_b2, q0))

    def excess(s: Array, idx: NDArray[np.intp]) -> Array:
        sw = np.exp(s)
        return (
            np.asarray(chi1(activation, fixed_point(activation, sw, sb[idx], q_start[idx]), sw))
            - 1.0
        )

    result = np.full(sb.size, np.nan)
    todo = np.flatnonzero(np.isfinite(sb) & np.isfinite(q_start))
    s_near = np.zeros(todo.size)
    r_near = excess(s_near, todo)
    at_start = np.abs(r_near) <= _CORRELATION_TOL
    result[todo[at_start]] = 1.0
    todo, s_near, r_near = todo[~at_start], s_near[~at_start], r_near[~at_start]
    direction = -np.sign(r_near)
    s_far = s_near.copy()
    empty = np.array([])
    brackets = [(np.array([], dtype=np.intp), empty, empty, empty, empty)]
    while todo.size:
        s_far = s_far + direction * math.log(1.5)
        r_far = excess(s_far, todo)
        crossed = r_far * r_near <= 0.0
        bounds = (s_near[crossed], r_near[crossed], s_far[crossed], r_far[crossed])
        brackets.append((todo[crossed], *bounds))
        walking = ~crossed & (np.abs(s_far) < _LOG_SW_RANGE)
        todo = todo[walking]
        direction, s_near, r_near = direction[walking], s_far[walking], r_far[walking]
        s_far = s_near
    idx, a, fa, b, fb = (np.concatenate(parts) for parts in zip(*brackets, strict=True))
    solved, s = _illinois(excess, idx, (a, fa, b, fb), _CORRELATION_TOL, 1e-15)
    result[solved] = np.exp(s)
    return _as_output(result.reshape(shape))
