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

``χ₁(q*) < 1`` is the ordered phase (gradients vanish towards the input), ``χ₁(q*) > 1`` the
chaotic one (they explode), and ``χ₁(q*) = 1`` the critical line ("edge of chaos").

Gaussian expectations use Gauss quadrature on each half-line ``z < 0`` and ``z > 0`` separately:
φ' of relu, leaky_relu, elu and selu jumps at 0, where a rule over the whole line (e.g. odd-order
Gauss–Hermite, which has a node on 0) loses its accuracy. Each half is exact for polynomials of
degree < 2·128: the expectations of the tabulated φ² and φ'² are accurate to ~1e-14 for q ≤ 10,
~1e-12 at q = 100 and ~1e-8 at q = 1000, where a saturating φ(√q z) changes within |z| ≲ 1/√q.

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
"""

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import linalg, special

from gradlab.core.activations import get_activation
from gradlab.core.inits import get_init

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


def init_variances(
    init: str, activation: str, fan_in: int, fan_out: int, std: float | None = None
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

    Args:
        init: One of the schemes above.
        activation: A registered activation (``gradlab.core.activations``).
        fan_in: Input features of the layer.
        fan_out: Output features of the layer.
        std: Weight standard deviation; required by ``normal`` only.
    Returns:
        ``(σ_w², σ_b²)``.
    Raises:
        ValueError: For an unknown init or activation, or ``normal`` without ``std``.
    """
    gain = get_activation(activation).gain
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


def predict_profile(
    activation: str, init: str, widths: Sequence[int], q_in: float, std: float | None = None
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
    Returns:
        The prediction; for ``lsuv`` every entry is NaN but the normalizing ``grad_rms[-1] = 1``.
    """
    return predict_profiles(activation, widths, [(init, std, q_in)])[0]


def predict_profiles(
    activation: str, widths: Sequence[int], nets: Sequence[tuple[str, float | None, float]]
) -> list[ProfilePrediction]:
    """``predict_profile`` for many nets of one activation and shape, in one vectorised pass.

    The runs a grid trains as one stack share activation and widths but not init, init std or
    input; solving each one's fixed point alone would cost as much as their whole probe at init.

    Args:
        activation: A registered activation (``gradlab.core.activations``).
        widths: ``[d_in, n_1, …, n_L, d_out]``, at least one hidden layer.
        nets: ``(init, std, q_in)`` per net, as ``predict_profile`` takes them.
    Returns:
        One prediction per net, in order.
    """
    widths = [int(n) for n in widths]
    if len(widths) < 3 or min(widths) < 1:
        raise ValueError(f"widths must be [d_in, n_1, ..., n_L, d_out] with sizes >= 1: {widths}")
    if not nets:
        return []
    layers = list(itertools.pairwise(widths))
    # (nets, weight layers, 2): σ_w² and σ_b² of every layer, then of a hidden n_L → n_L layer
    variances = np.array(
        [
            [init_variances(init, activation, n_in, n_out, std) for n_in, n_out in layers]
            + [init_variances(init, activation, widths[-2], widths[-2], std)]
            for init, std, _ in nets
        ]
    )
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
