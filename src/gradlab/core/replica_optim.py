"""The optimizers and schedules of :mod:`gradlab.core.optim`, for K stacked replicas at once.

A stacked model holds every parameter as one tensor whose dim 0 is the replica (weights
``(K, in, out)``, biases ``(K, out)``), so K runs of a grid train with one op per parameter tensor
instead of K optimizers. Each replica keeps its own learning rate, weight decay and optimizer
state, and follows, replica by replica, what ``torch.optim`` (its default single-tensor CPU path)
and the ``SCHEDULES`` scheduler do to that replica alone: the update is the same arithmetic in
the same order and rounding (fused multiply-adds included), so on the CPU the parameters come out
bitwise equal to torch's (the one known exception is in ``_rmsprop_update``).

* :func:`schedule_table` turns (optimizer, schedule, lr) into the learning rate and momentum of
  every step, once per replica at the start; :meth:`ReplicaOptimizer.step` then takes one column
  of those tables per step.
* Hyperparameters other than lr, momentum and weight decay (betas[1], eps, alpha, nesterov, ...)
  are read from the torch optimizer that ``OPTIMIZERS`` builds, so the two cannot drift apart.
"""

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from gradlab.core.optim import OPTIMIZERS, SCHEDULES
from gradlab.core.registry import lookup

# Options of the torch optimizers this module does not reproduce, with the value it does.
_SUPPORTED_SETTINGS = {
    "maximize": False,
    "dampening": 0,
    "amsgrad": False,
    "centered": False,
    "lr_decay": 0,
}


def _momentum_of(group: dict) -> float:
    """What the optimizer reads as momentum: Adam's beta1, SGD's and RMSprop's momentum, else 0."""
    if "betas" in group:
        return group["betas"][0]
    return group.get("momentum", 0.0)


def _torch_optimizer(name: str, lr: float) -> torch.optim.Optimizer:
    """``OPTIMIZERS[name]`` on a one-element probe parameter; its group holds the settings."""
    return lookup(OPTIMIZERS, name, "optimizer")([nn.Parameter(torch.zeros(1))], lr, 0.0)


def schedule_table(
    optimizer: str, schedule: str, lr: float, total_steps: int, steps_per_epoch: int
) -> tuple[np.ndarray, np.ndarray]:
    """The (lr, momentum) ``OPTIMIZERS[optimizer]`` under ``SCHEDULES[schedule]`` uses per step.

    It steps the real torch scheduler on a probe optimizer, so every value (OneCycleLR's momentum
    and beta1 cycling included) is torch's own, at about 2.5 µs a step.

    Args:
        optimizer: A key of ``OPTIMIZERS``.
        schedule: A key of ``SCHEDULES``.
        lr: The base learning rate.
        total_steps: Optimizer steps in the run (epochs × batches per epoch).
        steps_per_epoch: Batches per epoch (the exponential schedule decays per epoch).
    Returns:
        Two float64 arrays of length ``total_steps + 1``: the lr of each step, and the momentum
        the optimizer reads at it (``momentum`` for SGD and RMSprop, beta1 for Adam/AdamW, 0 for
        Adagrad); the last entry is what the optimizer holds after the last step (a run's history
        reports the lr at the end of each epoch).
    Raises:
        ValueError: An unknown name, or a schedule torch refuses for this optimizer (one_cycle on
            Adagrad, which has neither momentum nor betas to cycle).
    """
    torch_optimizer = _torch_optimizer(optimizer, lr)
    make_scheduler = lookup(SCHEDULES, schedule, "schedule")
    try:
        scheduler = make_scheduler(torch_optimizer, total_steps, steps_per_epoch)
    except ValueError as error:
        raise ValueError(
            f"schedule {schedule!r} cannot drive optimizer {optimizer!r}: {error}"
        ) from error
    # A no-op step (the probe has no gradient), so the scheduler does not warn about call order.
    torch_optimizer.step()
    group = torch_optimizer.param_groups[0]
    lrs, momenta = [], []
    for step in range(total_steps + 1):
        if step:  # the scheduler's constructor has already set step 0's values
            scheduler.step()
        lrs.append(group["lr"])
        momenta.append(_momentum_of(group))
    return np.array(lrs, dtype=np.float64), np.array(momenta, dtype=np.float64)


class ReplicaOptimizer:
    """``OPTIMIZERS[name]`` for K stacked replicas, each with its own lr, momentum and weight decay.

    Per-replica scalars are computed in float64, as torch computes its Python-float
    hyperparameters, then cast to the parameters' dtype; they broadcast over each parameter's
    trailing dims. In-place updates are ``torch._foreach_*`` ops over the parameter list (one
    dispatch per op; on the CPU the same per-tensor kernels as torch's single-tensor path);
    intermediates are written into scratch tensors kept between steps, so a step allocates no
    parameter-sized tensor.

    Compaction: ``keep(index, params)`` drops every replica not in ``index`` from the optimizer
    state and the weight decay, and from then on steps ``params``: the caller's parameters
    indexed the same way (``[p[index] for p in old_params]``, re-wrapped as it likes).

    Attributes:
        name: The ``OPTIMIZERS`` key.
        params: The stacked parameters, stepped in place; dim 0 is the replica.
        weight_decay: ``(K,)`` float64, each replica's weight decay.
        steps_taken: Steps so far (all replicas step together); Adam's bias corrections use it.
    """

    def __init__(
        self,
        name: str,
        params: list[Tensor],
        weight_decay: Tensor,
        uses_momentum: bool | None = None,
    ) -> None:
        """Zero state for ``params`` (dim 0 = replica, K), with a ``(K,)`` ``weight_decay``.

        ``uses_momentum``: whether any replica's momentum is ever nonzero, when the caller knows
        it from the schedule tables; None: read it off each step's momentum (on a GPU, a host
        sync per step).
        """
        torch_optimizer = _torch_optimizer(name, 0.0)
        group = torch_optimizer.param_groups[0]
        for setting, supported in _SUPPORTED_SETTINGS.items():
            if group.get(setting, supported) != supported:
                raise NotImplementedError(
                    f"optimizer {name!r} sets {setting}={group[setting]!r}; "
                    f"replicas support only {supported!r}"
                )
        self.name = name
        self.steps_taken = 0
        self._uses_momentum = uses_momentum
        first = params[0]
        self._dtype, self._device = first.dtype, first.device
        # NaN where the optimizer has no such setting: its update rule never reads it
        self._eps: float = group.get("eps", math.nan)
        self._nesterov = group.get("nesterov", False)
        self._decoupled_weight_decay = group.get("decoupled_weight_decay", False)
        self._beta2: float = group["betas"][1] if "betas" in group else math.nan
        self._alpha: float = group.get("alpha", math.nan)
        self._update_rule: Callable[[list[Tensor], Tensor, Tensor], None]
        # Optimizer state, one list per kind aligned with params, so keep() can index all of it.
        # A momentum buffer appears at the first step with a nonzero momentum, as in torch.
        self._state: dict[str, list[Tensor]]
        if isinstance(torch_optimizer, torch.optim.Adam):  # AdamW included
            self._update_rule = self._adam_update
            self._state = {
                "exp_avg": [torch.zeros_like(p) for p in params],
                "exp_avg_sq": [torch.zeros_like(p) for p in params],
            }
        elif isinstance(torch_optimizer, torch.optim.RMSprop):
            self._update_rule = self._rmsprop_update
            self._state = {"square_avg": [torch.zeros_like(p) for p in params]}
        elif isinstance(torch_optimizer, torch.optim.Adagrad):
            self._update_rule = self._adagrad_update
            initial = group["initial_accumulator_value"]
            self._state = {"sum": [torch.full_like(p, initial) for p in params]}
        elif isinstance(torch_optimizer, torch.optim.SGD):
            self._update_rule = self._sgd_update
            self._state = {}
        else:
            raise NotImplementedError(
                f"optimizer {name!r} is a {type(torch_optimizer).__name__}, "
                "which has no replica version"
            )
        self._bind(params, weight_decay.to(self._device, torch.float64))

    @torch.no_grad()
    def step(self, grads: list[Tensor], lr: Tensor, momentum: Tensor) -> None:
        """One optimizer step of every replica, in place on ``self.params``.

        Args:
            grads: One gradient per parameter, shaped like it; left unchanged.
            lr: ``(K,)`` this step's learning rate per replica (a column of schedule_table's lr;
                float64 keeps torch's exact values).
            momentum: ``(K,)`` this step's momentum (beta1 for Adam) per replica; Adagrad ignores
                it.
        """
        self.steps_taken += 1
        self._update_rule(
            grads,
            lr.to(self._device, torch.float64),
            momentum.to(self._device, torch.float64),
        )

    def keep(self, index: Tensor, params: list[Tensor]) -> None:
        """Keep only replicas ``index`` (in that order) and step ``params`` from now on.

        Args:
            index: LongTensor of the replicas to keep.
            params: The new stacked parameters, ``[p[index] for p in self.params]`` as the caller
                re-wraps them.
        """
        index = index.to(self._device)
        for old, new in zip(self.params, params, strict=True):
            if new.shape != (len(index), *old.shape[1:]):
                raise ValueError(f"kept param has shape {tuple(new.shape)}; expected old[index]")
        self._state = {kind: [t[index] for t in tensors] for kind, tensors in self._state.items()}
        self._bind(params, self.weight_decay[index])

    def _bind(self, params: list[Tensor], weight_decay: Tensor) -> None:
        """Set params and weight decay, and what step() derives from them once, not per step."""
        self.params = list(params)
        self.weight_decay = weight_decay
        replicas = len(weight_decay)
        self._column_shapes = [(replicas,) + (1,) * (p.dim() - 1) for p in self.params]
        self._has_weight_decay = bool(weight_decay.any())
        self._weight_decay_columns = self._columns(weight_decay)
        # Per-step intermediates go to these instead of fresh tensors: stacked tensors are large
        # enough that glibc may serve each allocation with mmap, and the page faults then cost
        # more than the arithmetic (measured: Adam's step 0.75 ms -> 2.2 ms).
        self._update_scratch = [torch.empty_like(p) for p in self.params]
        self._denominator_scratch = [torch.empty_like(p) for p in self.params]

    def _any_momentum(self, momentum: Tensor) -> bool:
        if self._uses_momentum is not None:
            return self._uses_momentum
        return bool(momentum.any())

    def _columns(self, per_replica: Tensor) -> list[Tensor]:
        """``(K,)`` float64 values as one view per param that broadcasts over its trailing dims."""
        values = per_replica.to(self._dtype)
        return [values.view(shape) for shape in self._column_shapes]

    def _with_l2(self, grads: list[Tensor]) -> list[Tensor]:
        """grad + weight_decay · param (torch's coupled decay) in the update scratch; the caller's
        grads themselves when no replica decays."""
        if not self._has_weight_decay:
            return grads
        for out, grad, param, weight_decay in zip(
            self._update_scratch, grads, self.params, self._weight_decay_columns, strict=True
        ):
            torch.addcmul(grad, param, weight_decay, out=out)
        return self._update_scratch

    def _denominators(self, tensors: list[Tensor], divisor: float = 1.0) -> list[Tensor]:
        """sqrt(tensor) / divisor + eps, in the denominator scratch."""
        for out, tensor in zip(self._denominator_scratch, tensors, strict=True):
            torch.sqrt(tensor, out=out)
        if divisor != 1.0:
            torch._foreach_div_(self._denominator_scratch, divisor)
        torch._foreach_add_(self._denominator_scratch, self._eps)
        return self._denominator_scratch

    def _descend(self, updates: list[Tensor], lr: Tensor) -> None:
        """param -= lr · update, rounded as torch's ``param.add_(update, alpha=-lr)``."""
        torch._foreach_addcmul_(self.params, updates, self._columns(lr), value=-1)

    def _descend_by_ratio(
        self, numerators: list[Tensor], denominators: list[Tensor], lr: Tensor
    ) -> None:
        """param += (-lr · numerator) / denominator, rounded as torch's
        ``param.addcdiv_(numerator, denominator, value=-lr)`` (scale first, then divide).

        The scaled numerators overwrite the update scratch, which may hold the numerators."""
        for out, numerator, neg_lr in zip(
            self._update_scratch, numerators, self._columns(-lr), strict=True
        ):
            torch.mul(numerator, neg_lr, out=out)
        torch._foreach_addcdiv_(self.params, self._update_scratch, denominators)

    def _sgd_update(self, grads: list[Tensor], lr: Tensor, momentum: Tensor) -> None:
        grads = self._with_l2(grads)
        buffers = self._state.get("momentum_buffer")
        updates = grads
        # Until some replica has momentum, skip the buffer as torch does (momentum == 0). Once it
        # exists, a replica with momentum 0 gets buffer = 0·buffer + grad = grad: plain SGD.
        if buffers is not None or self._any_momentum(momentum):
            momenta = self._columns(momentum)
            if buffers is None:
                # torch's first buffer is the gradient itself, not (1 - dampening) · gradient.
                buffers = self._state["momentum_buffer"] = [g.clone() for g in grads]
            else:
                torch._foreach_mul_(buffers, momenta)
                torch._foreach_add_(buffers, grads)
            updates = buffers
            if self._nesterov:
                updates = self._update_scratch  # grad + momentum · buffer; grads may live here
                for out, grad, buffer, momentum_column in zip(
                    updates, grads, buffers, momenta, strict=True
                ):
                    torch.addcmul(grad, buffer, momentum_column, out=out)
        self._descend(updates, lr)

    def _adam_update(self, grads: list[Tensor], lr: Tensor, beta1: Tensor) -> None:
        if not self._decoupled_weight_decay:
            grads = self._with_l2(grads)
        elif self._has_weight_decay:
            torch._foreach_mul_(self.params, self._columns(1 - lr * self.weight_decay))
        exp_avgs, exp_avg_sqs = self._state["exp_avg"], self._state["exp_avg_sq"]
        torch._foreach_lerp_(exp_avgs, grads, self._columns(1 - beta1))
        torch._foreach_mul_(exp_avg_sqs, self._beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - self._beta2)
        # Bias corrections: beta2 is shared, beta1 is each replica's current one, as in torch.
        bias_correction2_sqrt = (1 - self._beta2**self.steps_taken) ** 0.5
        step_sizes = lr / (1 - beta1**self.steps_taken)
        denominators = self._denominators(exp_avg_sqs, bias_correction2_sqrt)
        self._descend_by_ratio(exp_avgs, denominators, step_sizes)

    def _rmsprop_update(self, grads: list[Tensor], lr: Tensor, momentum: Tensor) -> None:
        grads = self._with_l2(grads)
        square_avgs = self._state["square_avg"]
        torch._foreach_mul_(square_avgs, self._alpha)
        torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - self._alpha)
        avgs = self._denominators(square_avgs)
        buffers = self._state.get("momentum_buffer")
        if buffers is None and self._any_momentum(momentum):
            buffers = self._state["momentum_buffer"] = [torch.zeros_like(p) for p in self.params]
        if buffers is None:
            self._descend_by_ratio(grads, avgs, lr)
        else:
            # A replica with momentum 0 gets buffer = grad / avg, so param -= lr · grad / avg:
            # plain RMSprop's update, though rounded as (lr · grad) / avg is not (~1 ulp a step).
            torch._foreach_mul_(buffers, self._columns(momentum))
            torch._foreach_addcdiv_(buffers, grads, avgs)
            self._descend(buffers, lr)

    def _adagrad_update(self, grads: list[Tensor], lr: Tensor, momentum: Tensor) -> None:
        grads = self._with_l2(grads)
        sums = self._state["sum"]
        torch._foreach_addcmul_(sums, grads, grads, value=1)
        self._descend_by_ratio(grads, self._denominators(sums), lr)
