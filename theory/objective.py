r"""The objective protocol of the simulator: what a user's own two-block finite sum must provide so that
``hybridopt simulate --objective module:factory`` (and :mod:`theory.simulator`) can check Theorem L6 on it.

An objective is :math:`f(x,y)=\frac1n\sum_{i<n}f_i(x,y)` with a zeroth-order block :math:`x\in\mathbb R^{d_x}`
and a first-order block :math:`y\in\mathbb R^{d_y}`, plus constants that *you* certify (spec §1: HGS and A3).

Required (see :class:`Objective`)::

    name: str                      # shown in reports
    n: int; d_x: int; d_y: int
    loss(i, x, y) -> Tensor        # f_i(x, y); i a LongTensor of component indices (0-based) broadcast against
                                   # the leading (replicate) dimensions of x (..., d_x) and y (..., d_y);
                                   # float64, differentiable in y (autograd)
    constants() -> dict[str, float]  # L_x0, L_x1, L_y0, L_y1, L_xy0, L_xy1, G: the keys are the theory's
                                   # symbol names (theory.symbols); valid on the cylinder R^{d_x} x Y of A3(ii)
    start(seed) -> (x0, y0)        # the initial point z0 (float64 tensors of shapes (d_x,), (d_y,))

Optional (used when present)::

    f_lb: float                    # a certified lower bound f_lb <= inf f (default 0): Delta = f(z0) - f_lb
    f(x, y), grad(x, y)            # closed forms of f and (grad_x f, grad_y f) at (..., d) points (default:
                                   # the mean of loss over i and autograd)
    gbar(y) -> Tensor (...)        # an x-uniform bound >= max_i sup_x ||grad f_i(x, y)||: the A3 monitor
                                   # (checked against G after every inner step)
    domain_ratio(y) -> Tensor (...)  # position of y in the invariant set Y of A3(ii) (<= 1 inside)

A factory ``module:factory`` is called as ``factory(seed=data_seed, **params)`` and returns the objective.  The
shipped example is :mod:`theory.logistic` (``hybridopt simulate --objective hybridopt.theory.logistic:make``).

The constants are *trusted*: the simulator checks the theorem's conclusion, not your certificate.  What it does
check: the keys and values are finite and non-negative, ``G >= ||grad f(z0)||``, and (if given) the monitor.
"""
from __future__ import annotations

import importlib
import math
from typing import Protocol, runtime_checkable

import torch

__all__ = ["Objective", "CONSTANT_KEYS", "load", "as_problem", "value_and_grad", "check_constants",
           "component_grad_norms"]

DT = torch.float64
#: the certified constants an objective must report (theory.symbols names).
CONSTANT_KEYS = ("L_x0", "L_x1", "L_y0", "L_y1", "L_xy0", "L_xy1", "G")


@runtime_checkable
class Objective(Protocol):
    """A two-block finite sum with certified constants (the module docstring lists the optional members)."""

    name: str
    n: int
    d_x: int
    d_y: int

    def loss(self, i: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """f_i(x, y), broadcast over the leading dimensions of i, x and y."""
        ...

    def constants(self) -> dict:
        """Certified constants keyed by the theory's symbol names (:data:`CONSTANT_KEYS`)."""
        ...

    def start(self, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The initial point z₀ = (x₀, y₀)."""
        ...


def load(spec: str, seed: int = 0, **params) -> Objective:
    """``'package.module:factory'`` -> ``factory(seed=seed, **params)``, checked against :class:`Objective`."""
    if ":" not in spec:
        raise ValueError(f"objective {spec!r}: expected 'module:factory' (e.g. hybridopt.theory.logistic:make)")
    mod, _, name = spec.partition(":")
    factory = getattr(importlib.import_module(mod), name, None)
    if not callable(factory):
        raise ValueError(f"objective {spec!r}: {mod} has no callable {name!r}")
    obj = factory(seed=seed, **params)
    missing = [a for a in ("name", "n", "d_x", "d_y", "loss", "constants", "start") if not hasattr(obj, a)]
    if missing:
        raise TypeError(f"objective {spec!r}: {type(obj).__name__} lacks {missing} (see theory/objective.py)")
    return obj


def check_constants(obj: Objective) -> dict[str, float]:
    """The objective's constants as floats, validated (keys of :data:`CONSTANT_KEYS`, finite, ≥ 0, G > 0)."""
    c = dict(obj.constants())
    missing = [k for k in CONSTANT_KEYS if k not in c]
    if missing:
        raise KeyError(f"objective {getattr(obj, 'name', obj)!r}: constants() lacks {missing}; required keys are "
                       f"the theory's symbol names {list(CONSTANT_KEYS)}")
    out = {k: float(c[k]) for k in CONSTANT_KEYS}
    bad = [k for k, v in out.items() if not math.isfinite(v) or v < 0]
    if bad or out["G"] <= 0:
        raise ValueError(f"objective {obj.name!r}: constants must be finite and >= 0 (G > 0); got "
                         f"{ {k: out[k] for k in bad or ['G']} }")
    out.update(n=int(obj.n), d_x=int(obj.d_x), d_y=int(obj.d_y))
    return out


def _as_t(v) -> torch.Tensor:
    return v.to(DT) if isinstance(v, torch.Tensor) else torch.as_tensor(v, dtype=DT)


def value_and_grad(obj: Objective, x, y) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(f, ∇ₓf, ∇ᵧf) at points x (..., d_x), y (..., d_y): the objective's closed forms when it has ``f`` and
    ``grad``, else the mean of ``loss`` over the n components and autograd (replicates are independent rows)."""
    x, y = _as_t(x).detach(), _as_t(y).detach()
    if hasattr(obj, "f") and hasattr(obj, "grad"):
        with torch.no_grad():
            gx, gy = obj.grad(x, y)
            return obj.f(x, y), gx, gy
    x = x.clone().requires_grad_(True)
    y = y.clone().requires_grad_(True)
    with torch.enable_grad():
        i = torch.arange(obj.n)
        fv = obj.loss(i, x.unsqueeze(-2), y.unsqueeze(-2)).mean(-1)
        gx, gy = torch.autograd.grad(fv.sum(), (x, y))
    return fv.detach(), gx, gy


def component_grad_norms(obj: Objective, x, y) -> torch.Tensor:
    """max_i ‖∇f_i(x, y)‖ at points (..., d) by autograd (the pointwise part of A3, for objectives without
    a monitor)."""
    x = _as_t(x).detach().unsqueeze(-2).expand(*x.shape[:-1], obj.n, obj.d_x).clone().requires_grad_(True)
    y = _as_t(y).detach().unsqueeze(-2).expand(*y.shape[:-1], obj.n, obj.d_y).clone().requires_grad_(True)
    with torch.enable_grad():
        fv = obj.loss(torch.arange(obj.n), x, y)
        gx, gy = torch.autograd.grad(fv.sum(), (x, y))
    return torch.sqrt(gx.pow(2).sum(-1) + gy.pow(2).sum(-1)).amax(-1)


def as_problem(obj: Objective, x0, y0, replicates: int | None = None):
    """A :class:`hybridopt.TensorProblem` over fresh float64 copies of (x0, y0), batches of component indices
    averaged by ``obj.loss`` (the core is imported only here).  With ``replicates=R`` the start is broadcast to
    (R, d_x), (R, d_y) and ``replicate_shape=(R,)``."""
    from hybridopt import TensorProblem

    x0, y0 = _as_t(x0), _as_t(y0)
    if replicates is None:
        x, y, shape = x0.reshape(obj.d_x).clone(), y0.reshape(obj.d_y).clone(), ()
    else:
        R = int(replicates)
        x, y, shape = x0.expand(R, obj.d_x).clone(), y0.expand(R, obj.d_y).clone(), (R,)

    def fn(xs, ys, batch):
        (xx,), (yy,) = xs, ys
        idx = torch.as_tensor(batch)
        if idx.dim() == 0:
            idx = idx.reshape(1)
        return obj.loss(idx, xx.to(DT).unsqueeze(-2), yy.to(DT).unsqueeze(-2)).mean(-1)

    return TensorProblem(fn=fn, zo_params=[x], fo_params=[y], n=obj.n, replicate_shape=shape)
