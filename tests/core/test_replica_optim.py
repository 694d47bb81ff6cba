"""ReplicaOptimizer + schedule_table against torch: each replica must follow what OPTIMIZERS[name]
+ SCHEDULES[schedule] do to that replica's slice alone, step by step, through compaction too."""

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from gradlab.core.optim import OPTIMIZERS, SCHEDULES
from gradlab.core.replica_optim import ReplicaOptimizer, schedule_table

REPLICAS = 3
STEPS = 50
STEPS_PER_EPOCH = 10  # so the exponential schedule decays 4 times within the run
LRS = (0.05, 0.02, 0.005)
WEIGHT_DECAYS = (0.0, 0.01, 0.1)  # 0 checks that a replica without decay gets none
SHAPES = ((5, 4), (5,))  # one layer's weight and bias
COMBINATIONS = [
    (name, schedule)
    for name in OPTIMIZERS
    for schedule in SCHEDULES
    if (name, schedule) != ("adagrad", "one_cycle")
]


def _momentum_read_by(optimizer: torch.optim.Optimizer) -> float:
    group = optimizer.param_groups[0]
    return group["betas"][0] if "betas" in group else group.get("momentum", 0.0)


class Problem:
    """A separable noisy quadratic per replica: grad = curvature · (param - target) + noise[step].

    Each replica draws from its own seed; the gradient is elementwise, so the stacked and the solo
    computation give identical gradients for identical parameters.
    """

    def __init__(self) -> None:
        generators = [torch.Generator().manual_seed(100 + r) for r in range(REPLICAS)]

        def stacked(draw: Callable[[tuple[int, ...], torch.Generator], Tensor]) -> list[Tensor]:
            return [torch.stack([draw(shape, g) for g in generators]) for shape in SHAPES]

        self.initial = stacked(lambda shape, g: torch.randn(shape, generator=g))
        self.curvature = stacked(lambda shape, g: 0.5 + 1.5 * torch.rand(shape, generator=g))
        self.target = stacked(lambda shape, g: torch.randn(shape, generator=g))
        # (K, STEPS, *shape): one fresh draw per step
        self.noise = stacked(lambda shape, g: 0.1 * torch.randn((STEPS, *shape), generator=g))

    def gradients(self, params: list[Tensor], replicas: Tensor | int, step: int) -> list[Tensor]:
        """Gradients of ``params``, which hold ``replicas`` (an index, or one replica's slice)."""
        return [
            self.curvature[i][replicas] * (param - self.target[i][replicas])
            + self.noise[i][replicas, step]
            for i, param in enumerate(params)
        ]


class SoloRun:
    """One replica trained alone by torch, as the single-run engine trains it."""

    def __init__(self, name: str, schedule: str, problem: Problem, replica: int) -> None:
        self.params = [nn.Parameter(initial[replica].clone()) for initial in problem.initial]
        self.optimizer = OPTIMIZERS[name](self.params, LRS[replica], WEIGHT_DECAYS[replica])
        self.scheduler = SCHEDULES[schedule](self.optimizer, STEPS, STEPS_PER_EPOCH)
        self.problem, self.replica = problem, replica

    def step(self, step: int) -> None:
        grads = self.problem.gradients([p.detach() for p in self.params], self.replica, step)
        for param, grad in zip(self.params, grads, strict=True):
            param.grad = grad
        self.optimizer.step()
        self.scheduler.step()


def _train_and_compare(
    name: str, schedule: str, keep_at: int | None = None, kept: tuple[int, ...] = ()
) -> None:
    """Train the stack and the solo runs side by side, comparing after every step; at step
    ``keep_at`` compact the stack to replicas ``kept``."""
    problem = Problem()
    solos = [SoloRun(name, schedule, problem, r) for r in range(REPLICAS)]
    tables = [
        schedule_table(name, schedule, LRS[r], STEPS, STEPS_PER_EPOCH) for r in range(REPLICAS)
    ]
    assert all(
        column.shape == (STEPS + 1,) and column.dtype == np.float64 for t in tables for column in t
    )
    lr_table = torch.from_numpy(np.stack([lr for lr, _ in tables]))
    momentum_table = torch.from_numpy(np.stack([momentum for _, momentum in tables]))
    optimizer = ReplicaOptimizer(
        name,
        [initial.clone() for initial in problem.initial],
        torch.tensor(WEIGHT_DECAYS, dtype=torch.float64),
    )
    replicas = torch.arange(REPLICAS)  # the original replica of each row of the stack
    for step in range(STEPS):
        if step == keep_at:
            index = torch.tensor(kept)
            optimizer.keep(index, [param[index] for param in optimizer.params])
            replicas = replicas[index]
        for r in replicas.tolist():
            assert lr_table[r, step].item() == solos[r].optimizer.param_groups[0]["lr"]
            assert momentum_table[r, step].item() == _momentum_read_by(solos[r].optimizer)
        grads = problem.gradients(optimizer.params, replicas, step)
        grads_before = [grad.clone() for grad in grads]
        optimizer.step(grads, lr_table[replicas, step], momentum_table[replicas, step])
        assert all(map(torch.equal, grads, grads_before)), "step() must not touch the grads"
        for row, r in enumerate(replicas.tolist()):
            solos[r].step(step)
            if step == STEPS - 1:  # the tables end with what the optimizer holds after the run
                assert lr_table[r, STEPS].item() == solos[r].optimizer.param_groups[0]["lr"]
            for stacked, solo in zip(optimizer.params, solos[r].params, strict=True):
                torch.testing.assert_close(
                    stacked[row],
                    solo.detach(),
                    rtol=1e-5,
                    atol=1e-7,
                    msg=lambda m, r=r, step=step: f"replica {r}, step {step}: {m}",
                )


@pytest.mark.parametrize(("name", "schedule"), COMBINATIONS)
def test_replicas_follow_torch_per_replica(name: str, schedule: str) -> None:
    _train_and_compare(name, schedule)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_kept_replicas_continue_as_their_solo_runs(name: str) -> None:
    schedule = "cosine" if name == "adagrad" else "one_cycle"  # one_cycle also cycles momentum
    _train_and_compare(name, schedule, keep_at=20, kept=(2, 0))


def test_one_cycle_on_adagrad_raises_as_torch_does() -> None:
    probe = nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match="momentum or beta1"):
        SCHEDULES["one_cycle"](OPTIMIZERS["adagrad"]([probe], 0.01, 0.0), STEPS, STEPS_PER_EPOCH)
    with pytest.raises(ValueError, match="'one_cycle' cannot drive optimizer 'adagrad'"):
        schedule_table("adagrad", "one_cycle", 0.01, STEPS, STEPS_PER_EPOCH)


@pytest.mark.parametrize(
    ("name", "torch_optimizer"), [("sgd", torch.optim.SGD), ("rmsprop", torch.optim.RMSprop)]
)
def test_zero_momentum_replica_matches_plain_torch(name: str, torch_optimizer: type) -> None:
    """In one stack, a replica with momentum 0 steps as torch without a momentum buffer."""
    momenta = (0.0, 0.5, 0.9)
    problem = Problem()
    solos = [
        [nn.Parameter(initial[r].clone()) for initial in problem.initial] for r in range(REPLICAS)
    ]
    solo_optimizers = [
        torch_optimizer(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        for params, lr, momentum, weight_decay in zip(
            solos, LRS, momenta, WEIGHT_DECAYS, strict=True
        )
    ]
    optimizer = ReplicaOptimizer(
        name,
        [initial.clone() for initial in problem.initial],
        torch.tensor(WEIGHT_DECAYS, dtype=torch.float64),
    )
    replicas = torch.arange(REPLICAS)
    lr = torch.tensor(LRS, dtype=torch.float64)
    momentum = torch.tensor(momenta, dtype=torch.float64)
    for step in range(STEPS):
        optimizer.step(problem.gradients(optimizer.params, replicas, step), lr, momentum)
        for r, (params, solo_optimizer) in enumerate(zip(solos, solo_optimizers, strict=True)):
            solo_grads = problem.gradients([p.detach() for p in params], r, step)
            for param, grad in zip(params, solo_grads, strict=True):
                param.grad = grad
            solo_optimizer.step()
            for stacked, solo in zip(optimizer.params, params, strict=True):
                torch.testing.assert_close(stacked[r], solo.detach(), rtol=1e-5, atol=1e-7)


def test_keep_refuses_params_not_indexed_like_the_state() -> None:
    problem = Problem()
    optimizer = ReplicaOptimizer("adam", problem.initial, torch.zeros(REPLICAS))
    index = torch.tensor([0, 2])
    with pytest.raises(ValueError, match="expected old"):
        optimizer.keep(index, [param[:1] for param in optimizer.params])
