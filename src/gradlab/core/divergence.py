"""When a run has diverged: the one rule, read at every probe step and at every epoch's end.

A run diverges at the first step whose training loss is NaN or infinite or above
``factor`` times its first loss, or whose other numbers checked with it (the gradient norm at a
probe step, the epoch's mean train and validation loss) are not finite. A diverged run is a
result (status ``diverged``, the step recorded), never an error.
"""

import math
from dataclasses import dataclass


def first_bad(losses: list[float], first_loss: float, factor: float) -> int | None:
    """Index of the first loss that is NaN/Inf or above ``factor`` times the first loss."""
    limit = factor * abs(first_loss)
    return next((i for i, v in enumerate(losses) if not math.isfinite(v) or v > limit), None)


@dataclass
class DivergenceMonitor:
    """One run's divergence check, fed the losses of the steps not checked yet.

    Attributes:
        factor: A loss above ``factor`` times the first loss has diverged.
        first_loss: The loss of step 0, from the first check on.
        step: The step the run diverged at; None while it has not.
    """

    factor: float
    first_loss: float | None = None
    step: int | None = None

    def check(self, losses: list[float], since: int, finite: bool = True) -> bool:
        """Check the losses of steps ``since``, ``since + 1``, …; ``finite`` is False when a
        number computed at the last of them is not finite. True if the run diverged there."""
        if self.first_loss is None:  # step 0 is the first checked
            self.first_loss = losses[0]
        bad = first_bad(losses, self.first_loss, self.factor)
        if bad is None and not finite:
            bad = len(losses) - 1
        if bad is not None:
            self.step = since + bad
        return bad is not None
