"""The one training loop: draw a reshuffled mini-batch, take a hybrid step, record, call back."""
from __future__ import annotations

from typing import Callable

from .optimizer import HybridOptimizer, StepStats
from .sampling import RandomReshuffling
from .trace import Trace


def train(optimizer: HybridOptimizer, sampler: RandomReshuffling, steps: int,
          callback: Callable[[StepStats, int, Trace], bool | None] | None = None,
          trace: Trace | None = None) -> Trace:
    """Run ``steps`` optimizer steps (continuing from the optimizer's and sampler's state).

    ``callback(stats, epoch, trace)`` runs after every step (evaluation, logging,
    checkpoints); returning ``True`` stops the loop.  Passing the ``trace`` of an earlier
    call continues it.  On return the last ZO update has been applied (flushed), so the
    problem's tensors hold the trained weights.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if sampler.n != optimizer.problem.n:
        raise ValueError(f"sampler has n={sampler.n} but the problem has n={optimizer.problem.n}")
    trace = trace if trace is not None else Trace()
    try:
        for _ in range(steps):
            batch = sampler.next_batch()
            stats = optimizer.step(batch)
            trace.record(stats, sampler.batch_epoch)
            if callback is not None and callback(stats, sampler.batch_epoch, trace):
                break
    finally:
        optimizer.flush()
    return trace
