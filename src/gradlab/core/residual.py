"""Residual MLPs: a stream of constant width that every block adds its branch to.

::

    x_0 = W_in x + b_in                                     # the stem ("inp")
    block l = 1 … L reads the stream x_{l−1}:
        preact  (He et al. 2016b):  h_l = norm(x_{l−1}),          f_l = W_l φ(h_l) + b_l
        postact (He et al. 2016a):  h_l = norm(W_l x_{l−1} + b_l),  f_l = φ(h_l)
        x_l = x_{l−1} + α_l f_l
    out = W_head x_L + b_head

h_l, the input of block l's φ, is hidden layer l, as in the MLP, so the hidden quantities describe
the branch; the stream x_{l−1} entering block l is stream layer l. The branch multiplier α
(``residual_scale``) is a number or a rule of ``RESIDUAL_SCALES``: with α = 1 the stream's
variance and the back-propagated gradient grow by a constant factor per block (1 + α² for ReLU
under He's init, ``gradlab.core.residual_theory``), α = 1/√L keeps that growth bounded at any
depth, and ReZero / SkipInit start at α = 0 with α learned.

References:
    K. He, X. Zhang, S. Ren, J. Sun. Deep residual learning for image recognition. CVPR 2016 (a).
    K. He, X. Zhang, S. Ren, J. Sun. Identity mappings in deep residual networks. ECCV 2016 (b).
    T. Bachlechner et al. ReZero is all you need: fast convergence at large depth. 2020.
    S. De, S. Smith. Batch normalization biases residual blocks towards the identity function in
    deep networks (SkipInit). NeurIPS 2020.
    S. Hayou et al. Stable ResNet. AISTATS 2021 (α = 1/√L).
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gradlab.core.activations import get_activation
from gradlab.core.models import NORM_LAYERS, NormLayer, StackedNet, linear
from gradlab.core.registry import lookup

BRANCHES = {
    "preact": "norm → φ → linear (He et al. 2016b, identity mappings)",
    "postact": "linear → norm → φ (He et al. 2016a)",
}
# A residual branch normalizes φ's input: the MLP's post-activation placement has no place here.
RESIDUAL_NORMS = ("none", "batchnorm_pre", "layernorm")


@dataclass(frozen=True)
class ResidualScale:
    """A rule for the branch multiplier α of a net of ``depth`` blocks.

    Attributes:
        name: The value of the grid's ``residual_scale`` axis.
        alpha: α at init, for a net of ``depth`` blocks.
        learnable: α is a trained parameter (one per block), not a constant.
        paper: Where the rule comes from.
    """

    name: str
    alpha: Callable[[int], float]
    learnable: bool
    paper: str


RESIDUAL_SCALES: dict[str, ResidualScale] = {
    "1/sqrt(depth)": ResidualScale(
        "1/sqrt(depth)", lambda depth: 1.0 / math.sqrt(depth), False, "Hayou et al. 2021"
    ),
    "rezero": ResidualScale(
        "rezero", lambda depth: 0.0, True, "Bachlechner et al. 2020; De & Smith 2020 (SkipInit)"
    ),
}
SCALE_RULE = f"expected a number >= 0 or one of {sorted(RESIDUAL_SCALES)}"


def residual_alpha(residual_scale: str, depth: int) -> tuple[float, bool]:
    """α at init and whether it is learned, for ``residual_scale`` (a rule's name or a number
    written as text, e.g. ``"0.5"``) in a net of ``depth`` blocks."""
    if residual_scale in RESIDUAL_SCALES:
        rule = RESIDUAL_SCALES[residual_scale]
        return rule.alpha(depth), rule.learnable
    try:
        alpha = float(residual_scale)
    except ValueError:
        raise ValueError(f"residual_scale {residual_scale!r}: {SCALE_RULE}") from None
    if not (math.isfinite(alpha) and alpha >= 0.0):
        raise ValueError(f"residual_scale {residual_scale!r}: {SCALE_RULE}")
    return alpha, False


def residual_norm(norm_layer: str) -> NormLayer:
    """The normalization layer of a residual branch; a ``ValueError`` for one that has none
    (``batchnorm_post`` normalizes φ's output, and a branch's norm sits before φ)."""
    if norm_layer not in RESIDUAL_NORMS:
        raise ValueError(
            f"norm_layer {norm_layer!r} has no place in a residual branch, which normalizes "
            f"φ's input; expected one of {list(RESIDUAL_NORMS)}"
        )
    return NORM_LAYERS[norm_layer]


class ResMLP(nn.Module):
    """A stem, ``depth`` residual blocks on a stream of ``width`` units, and a linear head.

    ``acts[l]``'s input is hidden layer ``l + 1``'s h (probes hook those modules). ``alpha``
    holds α per block: a parameter under a learnable rule, else a buffer.
    """

    # noqa reason: a net's shape, its two layer kinds and the residual's branch and scale
    def __init__(  # noqa: PLR0913, PLR0917
        self,
        d_in: int,
        d_out: int,
        depth: int,
        width: int,
        activation: str,
        norm_layer: str,
        branch: str = "preact",
        residual_scale: str = "1",
    ) -> None:
        super().__init__()
        lookup(BRANCHES, branch, "residual_branch")
        norm = residual_norm(norm_layer)
        self.branch = branch
        self.inp = nn.Linear(d_in, width)
        self.linears = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.norms = nn.ModuleList(
            nn.Identity() if norm.factory is None else norm.factory(width) for _ in range(depth)
        )
        make_act = get_activation(activation).module
        self.acts = nn.ModuleList(make_act() for _ in range(depth))
        self.head = nn.Linear(width, d_out)
        alpha, learnable = residual_alpha(residual_scale, depth)
        alphas = torch.full((depth,), alpha)
        if learnable:
            self.alpha = nn.Parameter(alphas)
        else:
            self.register_buffer("alpha", alphas)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, d_in) -> (B, d_out)
        x = self.inp(x)
        for i, (layer, norm, act) in enumerate(zip(self.linears, self.norms, self.acts)):
            if self.branch == "preact":
                branch = layer(act(norm(x)))
            else:
                branch = act(norm(layer(x)))
            x = x + self.alpha[i] * branch
        return self.head(x)

    def all_linears(self) -> list[nn.Linear]:
        """Every weight layer in forward order: the stem, the blocks, then the head."""
        return [self.inp, *self.linears, self.head]

    def zero_init_linears(self) -> list[nn.Linear]:
        """The layers Fixup starts at zero: each branch's last (here its only) one, and the
        head."""
        return [*self.linears, self.head]


class StackedResMLP(StackedNet):
    """K same-shape ``ResMLP``s as one model (``StackedNet``); α may differ per replica."""

    def __init__(self, models: Sequence[nn.Module], activation: str, norm_layer: str) -> None:
        super().__init__(models, activation, norm_layer)
        self.branch = models[0].branch

    def features(
        self,
        x: Tensor,
        training: bool,
        on_hidden: Callable[[Tensor, Tensor], None] | None = None,
        on_stream: Callable[[Tensor], None] | None = None,
    ) -> Tensor:
        """(K, B, d_in), or (B, d_in) shared by every replica, → (K, B, width), the head's input.

        Args:
            x: The inputs.
            training: BatchNorm normalizes by batch statistics and updates its running ones.
            on_hidden: Called with (h_l, φ(h_l)) of each block's branch in order, h_l being the
                input of its activation.
            on_stream: Called with the stream x_{l−1} entering each block, in order.
        """
        t = self.tensors
        if x.dim() == 2:
            x = x.expand(self.replicas, *x.shape)
        x = linear(x, t["inp.weight"], t["inp.bias"])
        alpha = t["alpha"].unsqueeze(-1).unsqueeze(-1)  # (K, L, 1, 1)
        for i in range(self.depth):
            if on_stream is not None:
                on_stream(x)
            weight, bias = t[f"linears.{i}.weight"], t[f"linears.{i}.bias"]
            if self.branch == "preact":
                # a view, so that ∂L/∂h is the branch's share of the stream's gradient
                h = self._normalize(f"norms.{i}", x.view_as(x), training)
                a = self.activation(h)
                branch = linear(a, weight, bias)
            else:
                h = self._normalize(f"norms.{i}", linear(x, weight, bias), training)
                a = branch = self.activation(h)
            if on_hidden is not None:
                on_hidden(h, a)
            x = x + alpha[:, i] * branch
        return x
