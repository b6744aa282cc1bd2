"""Validated hyperparameters of one HybridRR run (spec §2: η_x, η_y, μ, q)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from .estimators import ESTIMATORS
from .laws import LAWS
from .types import FO_OPTIMIZERS, SCHEDULES
from .zo_rules import ZO_RULES


def _choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; choose one of: {', '.join(valid)}")


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _nonneg(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _int(name: str, value: Any, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")


@dataclass(frozen=True)
class HybridConfig:
    """Hyperparameters of the hybrid optimizer.

    ``lr_x`` (η_x) and ``lr_y`` (η_y) are the two learning rates of the ZO and FO blocks;
    ``mu`` the smoothing radius; ``q`` the number of directions per step.  The theorem's
    method is ``estimator='paired'`` (or ``'central'``: the same estimator from two forwards),
    ``direction='gaussian'``, ``zo_rule='sgd'``, ``fo_optimizer='sgd'``, no weight decay and a
    constant schedule.  ``zo_rule='momentum'`` is ZO-SGD with momentum ``zo_momentum`` on the ZO
    block (:mod:`hybridopt.zo_rules`).  ``grad_accum`` splits each mini-batch into that
    many micro-batches evaluated with the *same* directions (memory, not maths: the estimate
    equals the one on the whole batch).  ``fo_at`` = ``'unperturbed'`` takes ∇_y f at (x, y),
    as analysed; the forward estimator then reuses that forward for f(x, y) (one perturbed
    forward per direction instead of two; outside the theorem, which analyses the central one).
    ``direction_dtype``: the dtype the scaled directions μ·u and c·u are formed in: 'auto' is
    float32 (float64 for float64 tensors), 'float32' always float32 (u itself is float32 either
    way, :mod:`hybridopt.counter`; 'float32' halves a float64 block's scratch).
    """

    lr_x: float = 1e-6
    lr_y: float = 1e-4
    mu: float = 1e-3
    q: int = 1
    estimator: str = "paired"
    direction: str = "gaussian"
    direction_dtype: str = "auto"
    zo_rule: str = "sgd"
    zo_momentum: float = 0.9
    fo_optimizer: str = "sgd"
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    weight_decay_x: float = 0.0
    weight_decay_y: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    total_steps: int | None = None
    grad_accum: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))
        _positive("lr_x", self.lr_x)
        _positive("lr_y", self.lr_y)
        _positive("mu", self.mu)
        _int("q", self.q, 1)
        _choice("estimator", self.estimator, tuple(ESTIMATORS))
        _choice("direction", self.direction, tuple(LAWS))
        _choice("direction_dtype", self.direction_dtype, ("auto", "float32"))
        _choice("zo_rule", self.zo_rule, tuple(ZO_RULES))
        if not 0 <= self.zo_momentum < 1:
            raise ValueError(f"zo_momentum must be in [0, 1), got {self.zo_momentum!r}")
        _choice("fo_optimizer", self.fo_optimizer, FO_OPTIMIZERS)
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        _positive("adam_eps", self.adam_eps)
        _nonneg("weight_decay_x", self.weight_decay_x)
        _nonneg("weight_decay_y", self.weight_decay_y)
        _choice("schedule", self.schedule, SCHEDULES)
        _int("warmup_steps", self.warmup_steps, 0)
        if self.total_steps is not None:
            _int("total_steps", self.total_steps, 1)
        if self.schedule != "constant" and self.total_steps is None:
            raise ValueError(f"schedule={self.schedule!r} needs total_steps")
        _int("grad_accum", self.grad_accum, 1)
        _int("seed", self.seed, 0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "HybridConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown optimizer option(s): {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**d)


def lr_multiplier(cfg: HybridConfig, step: int) -> float:
    """Schedule factor at ``step`` (0-based): linear warm-up, then constant/linear/cosine decay."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, cfg.total_steps - cfg.warmup_steps)
    frac = min(1.0, (step - cfg.warmup_steps) / span)
    if cfg.schedule == "linear":
        return 1.0 - frac
    return 0.5 * (1.0 + math.cos(math.pi * frac))
