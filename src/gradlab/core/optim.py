"""Optimizers and learning-rate schedules, as name → factory tables.

Every schedule is stepped once per optimizer step, so ``total_steps`` = epochs × batches per epoch.
"""

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

OptimizerFactory = Callable[[Iterable[nn.Parameter], float, float], torch.optim.Optimizer]
ScheduleFactory = Callable[[torch.optim.Optimizer, int, int], LRScheduler]

OPTIMIZERS: dict[str, OptimizerFactory] = {
    "sgd": lambda params, lr, wd: torch.optim.SGD(params, lr=lr, weight_decay=wd),
    "momentum": lambda params, lr, wd: torch.optim.SGD(
        params, lr=lr, momentum=0.9, weight_decay=wd
    ),
    "nesterov": lambda params, lr, wd: torch.optim.SGD(
        params, lr=lr, momentum=0.9, nesterov=True, weight_decay=wd
    ),
    "adam": lambda params, lr, wd: torch.optim.Adam(params, lr=lr, weight_decay=wd),
    "adamw": lambda params, lr, wd: torch.optim.AdamW(params, lr=lr, weight_decay=wd),
    "rmsprop": lambda params, lr, wd: torch.optim.RMSprop(params, lr=lr, weight_decay=wd),
    "adagrad": lambda params, lr, wd: torch.optim.Adagrad(params, lr=lr, weight_decay=wd),
}

WARMUP_FRACTION = 0.1  # share of the steps that warmup_cosine spends ramping up linearly
EXPONENTIAL_GAMMA = 0.95  # the seed course's per-epoch decay
STEP_GAMMA = 0.1  # "step" divides the rate by 10 at 1/3 and 2/3 of training


def _cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _warmup_cosine(total_steps: int) -> Callable[[int], float]:
    warmup = max(1, int(WARMUP_FRACTION * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return _cosine((step - warmup) / max(1, total_steps - warmup))

    return factor


SCHEDULES: dict[str, ScheduleFactory] = {
    "constant": lambda opt, total, per_epoch: LambdaLR(opt, lambda step: 1.0),
    "step": lambda opt, total, per_epoch: LambdaLR(
        opt, lambda step: STEP_GAMMA ** min(2, 3 * step // max(1, total))
    ),
    "exponential": lambda opt, total, per_epoch: LambdaLR(
        opt, lambda step: EXPONENTIAL_GAMMA ** (step // per_epoch)
    ),
    "cosine": lambda opt, total, per_epoch: LambdaLR(opt, lambda step: _cosine(step / total)),
    "one_cycle": lambda opt, total, per_epoch: OneCycleLR(
        opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total
    ),
    "warmup_cosine": lambda opt, total, per_epoch: LambdaLR(opt, _warmup_cosine(total)),
}
