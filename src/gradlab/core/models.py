"""The MLP, the stacked form that trains many replicas of a net as one, and the
normalization-layer registry (activations: ``gradlab.core.activations``; residual nets:
``gradlab.core.residual``)."""

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from gradlab.core.activations import get_activation
from gradlab.core.registry import lookup


@dataclass(frozen=True)
class NormLayer:
    """Where a normalization layer sits in a hidden block, and how to build it for a width."""

    position: str  # "pre": normalizes h before the activation; "post": normalizes φ(h)
    factory: Callable[[int], nn.Module] | None
    # it normalizes by statistics over the batch, so a sample's output depends on the others
    mixes_batch: bool = False


NORM_LAYERS: dict[str, NormLayer] = {
    "none": NormLayer("pre", None),
    "batchnorm_pre": NormLayer("pre", nn.BatchNorm1d, mixes_batch=True),
    "batchnorm_post": NormLayer("post", nn.BatchNorm1d, mixes_batch=True),
    "layernorm": NormLayer("pre", nn.LayerNorm),
}


class MLP(nn.Module):
    """``depth`` hidden blocks ``Linear → [pre-norm] → φ → [post-norm]`` and a linear head.

    The pre-activation of hidden layer ``l`` is the input of ``acts[l]``: probes hook those modules,
    so each block has its own activation instance.
    """

    # noqa reason: a net's shape and its two layer kinds, as torchvision's MLP takes them
    def __init__(  # noqa: PLR0913, PLR0917
        self, d_in: int, d_out: int, depth: int, width: int, activation: str, norm_layer: str
    ) -> None:
        super().__init__()
        make_act = get_activation(activation).module
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


class StackedNet(ABC):
    """K same-shape models as one: every tensor of their state dicts stacked on dim 0.

    ``tensors`` maps the models' state-dict names to (K, …) tensors: biases and norm parameters
    (K, width), weights (K, in, out), i.e. ``nn.Linear``'s transposed, so that a layer is
    ``x @ W`` and autograd returns each weight gradient contiguous for the optimizer and the
    probes. ``state_dict(k)`` is replica k's state dict. A layer is one ``baddbmm`` for all
    replicas: for small nets the time of a step goes to dispatching kernels, not to arithmetic,
    so K models cost little more than one. Subclasses write ``forward`` for their architecture.
    """

    def __init__(self, models: Sequence[nn.Module], activation: str, norm_layer: str) -> None:
        prototype = models[0]
        self.depth = len(cast(nn.ModuleList, prototype.linears))
        entry = get_activation(activation)
        self.activation = entry.stacked or entry.module()
        self.norm = lookup(NORM_LAYERS, norm_layer, "norm_layer")
        names = {name for name, _ in prototype.named_parameters()}
        # in forward order: every nn.Linear's weight (MLP: the hidden layers, then the head)
        self.weight_names = [f"{name}.weight" for name in _linear_order(prototype)]
        states = [model.state_dict() for model in models]
        self.tensors = {
            name: torch.stack([self._stored(name, state[name]) for state in states]).requires_grad_(
                name in names
            )
            for name in states[0]
        }
        self.param_names = [name for name in self.tensors if name in names]
        self.weight_positions = [self.param_names.index(name) for name in self.weight_names]
        self._prototype = prototype  # read for its BatchNorm / LayerNorm settings only

    @property
    def replicas(self) -> int:
        return len(self.tensors["head.weight"])

    def params(self) -> list[Tensor]:
        return [self.tensors[name] for name in self.param_names]

    def weights(self) -> list[Tensor]:
        """Every weight stack in forward order, the head last."""
        params = self.params()
        return [params[i] for i in self.weight_positions]

    def to(self, device: torch.device) -> "StackedNet":
        self._replace(lambda tensor: tensor.to(device))
        return self

    def keep(self, index: Tensor) -> None:
        """Keep only replicas ``index``, in that order (the others finished or diverged)."""
        self._replace(lambda tensor: tensor[index])

    def _replace(self, change: Callable[[Tensor], Tensor]) -> None:
        self.tensors = {
            name: change(tensor.detach()).requires_grad_(tensor.requires_grad)
            for name, tensor in self.tensors.items()
        }

    def _stored(self, name: str, tensor: Tensor) -> Tensor:
        """A state-dict tensor as the stack holds it (weights transposed), and back."""
        return tensor.t() if name in self.weight_names else tensor

    def state_dict(self, replica: int) -> dict[str, Tensor]:
        """Replica ``replica``'s weights as its model's state dict, on the CPU."""
        return {
            name: self._stored(name, t[replica].detach().cpu()).clone(
                memory_format=torch.contiguous_format
            )
            for name, t in self.tensors.items()
        }

    def forward(
        self,
        x: Tensor,
        training: bool,
        on_hidden: Callable[[Tensor, Tensor], None] | None = None,
        on_stream: Callable[[Tensor], None] | None = None,
    ) -> Tensor:
        """(K, B, d_in), or (B, d_in) shared by every replica, → (K, B, d_out): the head on
        ``features`` (which takes the same arguments)."""
        features = self.features(x, training, on_hidden, on_stream)
        return linear(features, self.tensors["head.weight"], self.tensors["head.bias"])

    @abstractmethod
    def features(
        self,
        x: Tensor,
        training: bool,
        on_hidden: Callable[[Tensor, Tensor], None] | None = None,
        on_stream: Callable[[Tensor], None] | None = None,
    ) -> Tensor:
        """(K, B, d_in), or (B, d_in) shared by every replica, → (K, B, width): the head's input."""

    def _normalize(self, prefix: str, h: Tensor, training: bool) -> Tensor:
        if self.norm.factory is None:
            return h
        t, module = self.tensors, self._prototype.get_submodule(prefix)
        weight, bias = t[f"{prefix}.weight"], t[f"{prefix}.bias"]
        if isinstance(module, nn.LayerNorm):
            out = nn.functional.layer_norm(h, h.shape[-1:], eps=module.eps)
            return torch.addcmul(bias.unsqueeze(1), out, weight.unsqueeze(1))
        # BatchNorm per replica: (K, B, W) as (B, K·W) channels, the same kernel as one model
        module = cast(nn.BatchNorm1d, module)
        k, b, w = h.shape
        if training:
            t[f"{prefix}.num_batches_tracked"] += 1
        out = nn.functional.batch_norm(
            h.transpose(0, 1).reshape(b, k * w),
            t[f"{prefix}.running_mean"].view(-1),
            t[f"{prefix}.running_var"].view(-1),
            weight.reshape(-1),
            bias.reshape(-1),
            training=training,
            momentum=cast(float, module.momentum),  # torch's default 0.1 here, never None
            eps=module.eps,
        )
        return out.view(b, k, w).transpose(0, 1)


def _linear_order(model: nn.Module) -> list[str]:
    """The names of ``model``'s ``nn.Linear`` layers in forward order (its ``all_linears``)."""
    names = {id(module): name for name, module in model.named_modules()}
    return [names[id(linear)] for linear in cast(MLP, model).all_linears()]


class StackedMLP(StackedNet):
    """K same-shape ``MLP``s as one model (``StackedNet``)."""

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
            on_hidden: Called with (h_l, φ(h_l)) of each hidden layer in order, h_l being the
                input of the activation (e.g. ``probes.Capture.add``, which reads ∂L/∂h_l too).
            on_stream: Unused: an MLP has no residual stream.
        """
        t = self.tensors
        if x.dim() == 2:
            x = x.expand(self.replicas, *x.shape)
        for i in range(self.depth):
            h = linear(x, t[f"linears.{i}.weight"], t[f"linears.{i}.bias"])
            if self.norm.position == "pre":
                h = self._normalize(f"pre_norms.{i}", h, training)
            x = self.activation(h)
            if on_hidden is not None:
                on_hidden(h, x)
            if self.norm.position == "post":
                x = self._normalize(f"post_norms.{i}", x, training)
        return x


def linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """x (K, B, in) · weight (K, in, out) + bias (K, out), per replica."""
    return torch.baddbmm(bias.unsqueeze(1), x, weight)
