"""The MLP every run trains, and the activation and normalization-layer registries."""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from torch import Tensor, nn

from gradlab.core.registry import lookup

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": partial(nn.LeakyReLU, negative_slope=0.01),
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "softsign": nn.Softsign,
    "identity": nn.Identity,
}


@dataclass(frozen=True)
class NormLayer:
    """Where a normalization layer sits in a hidden block, and how to build it for a width."""

    position: str  # "pre": normalizes h before the activation; "post": normalizes φ(h)
    factory: Callable[[int], nn.Module] | None


NORM_LAYERS: dict[str, NormLayer] = {
    "none": NormLayer("pre", None),
    "batchnorm_pre": NormLayer("pre", nn.BatchNorm1d),
    "batchnorm_post": NormLayer("post", nn.BatchNorm1d),
    "layernorm": NormLayer("pre", nn.LayerNorm),
}


class MLP(nn.Module):
    """``depth`` hidden blocks ``Linear → [pre-norm] → φ → [post-norm]`` and a linear head.

    The pre-activation of hidden layer ``l`` is the input of ``acts[l]``: probes hook those modules,
    so each block has its own activation instance.
    """

    def __init__(
        self, d_in: int, d_out: int, depth: int, width: int, activation: str, norm_layer: str
    ) -> None:
        super().__init__()
        make_act = lookup(ACTIVATIONS, activation, "activation")
        norm = lookup(NORM_LAYERS, norm_layer, "norm_layer")

        def norm_at(position: str) -> nn.Module:
            if norm.factory is None or norm.position != position:
                return nn.Identity()
            return norm.factory(width)

        self.linears = nn.ModuleList(
            nn.Linear(d_in if i == 0 else width, width) for i in range(depth)
        )
        self.pre_norms = nn.ModuleList(norm_at("pre") for _ in range(depth))
        self.acts = nn.ModuleList(make_act() for _ in range(depth))
        self.post_norms = nn.ModuleList(norm_at("post") for _ in range(depth))
        self.head = nn.Linear(width, d_out)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, d_in) -> (B, d_out)
        for linear, pre_norm, act, post_norm in zip(
            self.linears, self.pre_norms, self.acts, self.post_norms, strict=True
        ):
            x = post_norm(act(pre_norm(linear(x))))
        return self.head(x)

    def all_linears(self) -> list[nn.Linear]:
        """Every weight layer in forward order: the hidden layers, then the head."""
        return [*self.linears, self.head]
