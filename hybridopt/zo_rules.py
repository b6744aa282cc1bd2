"""ZO update rules and the pending update they apply (spec §2: x ← x − η_x ĝ).

The estimate of step t is ĝ = Σ_r γ_r u_r with γ_r = g_r / q (the projected gradients of the
estimator; the u_r are regenerated, never stored).  A rule turns it into a change of x:

========  ==============================================================  =========
rule      update (λ: weight decay, on matrices only)                      state
========  ==============================================================  =========
sgd       x ← (1 − ηλ) x − η ĝ                          (the theorem's)   none
momentum  m ← β m + ĝ ;  x ← (1 − ηλ) x − η m           (ZO-SGD-MMT)      m, like x
========  ==============================================================  =========

:class:`ZOUpdate` is one step's update, applied **tensor by tensor and chunk by chunk, exactly
once**: by the next step's probe sweep as it reaches each tensor (the update is *folded* into
that sweep: one pass over the ZO block's memory per step), by a flush, or at once.  It is the
same arithmetic on every path — ĝ restricted to a chunk is formed as Σ_r (u_r · c_r) (one
product and one sum per term, each rounded once) and added into x in one rounding — so
folded, eager, resumed and replayed runs hold bit-identical weights.

A new rule is one :class:`ZORule` subclass registered in :data:`ZO_RULES`.  Its state is part of
the optimizer's ``state_dict`` and is rebuilt exactly by :func:`hybridopt.optimizer.replay_zo_log`
(which replays the rule from its initial state).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from .directions import Directions
from .sweep import SweepContext


def _broadcast(c: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return c.reshape(c.shape + (1,) * (like.dim() - c.dim()))


class ZORule:
    """How ĝ (restricted to a chunk: ``g``) changes a chunk ``p`` of x, in place, and its state."""

    name = ""
    theorem = False
    #: True when the update of one direction is x ← decay·x + c·u (drawn straight into x)
    fused_sgd = False

    def __init__(self, config) -> None:
        self.config = config

    def coefficients(self, gamma: torch.Tensor, lr: float) -> torch.Tensor:
        """What multiplies u_r in the chunk sum: the sum is then ``g`` of :meth:`apply_`."""
        return gamma

    def init_state(self, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return []

    def apply_(self, p: torch.Tensor, g: torch.Tensor, state: list[torch.Tensor], a: int, b: int,
               j: int, lr: float, decay: float) -> None:
        raise NotImplementedError

    def updated(self, p_rows: torch.Tensor, g_rows: torch.Tensor, state: list[torch.Tensor],
                index: torch.Tensor, j: int, lr: float, decay: float) -> torch.Tensor:
        """The rows ``index`` of x after the update, out of place (x and the state untouched)."""
        raise NotImplementedError


class SGD(ZORule):
    """x ← (1 − ηλ) x − η ĝ: the coefficients already carry −η, so the chunk sum is the change."""

    name, theorem = "sgd", True
    fused_sgd = True

    def coefficients(self, gamma, lr):
        return gamma * (-lr)

    def apply_(self, p, g, state, a, b, j, lr, decay):
        if decay != 1.0:
            p.mul_(decay)
        p.add_(g)

    def updated(self, p_rows, g_rows, state, index, j, lr, decay):
        if decay != 1.0:
            p_rows = p_rows * decay
        return torch.add(p_rows, g_rows).to(p_rows.dtype)


class Momentum(ZORule):
    """m ← β m + ĝ ; x ← (1 − ηλ) x − η m, with β = ``config.zo_momentum``.  The buffer m has the
    shape of x (float32 for float32 and lower-precision x): the price of the rule in memory."""

    name = "momentum"

    def init_state(self, params):
        return [torch.zeros(p.shape, dtype=torch.float64 if p.dtype == torch.float64 else torch.float32,
                            device=p.device) for p in params]

    def apply_(self, p, g, state, a, b, j, lr, decay):
        m = state[j] if p.dim() == 0 else state[j][a:b]
        m.mul_(self.config.zo_momentum).add_(g)
        if decay != 1.0:
            p.mul_(decay)
        p.add_(m * (-lr))

    def updated(self, p_rows, g_rows, state, index, j, lr, decay):
        m = state[j][index] * self.config.zo_momentum + g_rows
        if decay != 1.0:
            p_rows = p_rows * decay
        return torch.add(p_rows, m * (-lr)).to(p_rows.dtype)


#: name -> rule class
ZO_RULES: dict[str, type[ZORule]] = {r.name: r for r in (SGD, Momentum)}


def make_rule(config) -> ZORule:
    try:
        return ZO_RULES[config.zo_rule](config)
    except KeyError:
        raise ValueError(f"unknown ZO rule {config.zo_rule!r}; valid: {', '.join(ZO_RULES)}") from None


class ZOUpdate:
    """One step's ZO update over the ZO tensors, applied chunk by chunk, each chunk once.

    ``gamma`` (shape (q, *replicate_shape)) are the estimate's coefficients γ_r = g_r/q, ``lr``
    and ``decay`` the step's η_x and 1 − η_x λ_x (λ_x only on matrices: ndim − len(replicates) ≥ 2).
    """

    def __init__(self, rule: ZORule, state: list[torch.Tensor], params: Sequence[torch.Tensor],
                 directions: Directions, gamma: torch.Tensor, lr: float, decay: float) -> None:
        self.rule, self.state, self.params, self.directions = rule, state, list(params), directions
        self.gamma, self.lr, self.decay = gamma, float(lr), float(decay)
        self.coeffs = rule.coefficients(gamma, self.lr)
        self.context: SweepContext = directions.context
        self._r = len(directions.replicate_shape)
        self._left: dict[int, set[int]] = {j: set(range(len(directions.plan(j)))) for j in range(len(self.params))}
        self._single: dict[int, float | torch.Tensor | None] = {}

    # -- bookkeeping ----------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return not any(self._left.values())

    def pending(self, j: int, k: int | None = None) -> bool:
        """True when (chunk ``k`` of) tensor ``j`` has not been updated yet."""
        left = self._left[j]
        return bool(left) if k is None else k in left

    def untouched(self, j: int) -> bool:
        return len(self._left[j]) == len(self.directions.plan(j))

    def _decay(self, p: torch.Tensor) -> float:
        return self.decay if p.dim() - self._r >= 2 else 1.0

    # -- the estimate on a chunk ---------------------------------------------------------------
    def _g_into(self, j: int, a: int, b: int, g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """g = Σ_r u_r[a:b] · c_r (g and u: leases shaped like the chunk)."""
        d = self.directions
        for r in range(self.coeffs.shape[0]):
            c = _broadcast(self.coeffs[r].to(g.dtype), g)   # c_r·u_r drawn at once (Directions.fill)
            if r == 0:
                d.chunk(0, j, a, b, g, factor=c)
            else:
                g.add_(d.chunk(r, j, a, b, u, factor=c))
        return g

    def _one_direction(self, j: int) -> float | torch.Tensor | None:
        """The coefficient c of x ← decay·x + c·u on tensor ``j`` (c_0 rounded to the tensor's
        dtype; on the CPU as a number, elsewhere a 0-dim tensor, so no device sync) when its update
        is one unreplicated SGD direction drawn in that dtype; else None.  Worked out once per
        tensor: it is asked for every chunk."""
        if j not in self._single:
            p = self.params[j]
            one = (self.rule.fused_sgd and self.coeffs.shape[0] == 1 and not self._r and p.dim() > 0
                   and self._g_dtype(j) == p.dtype)
            c = self.coeffs[0].to(p.dtype) if one else None
            self._single[j] = float(c) if one and c.is_cpu else c
        return self._single[j]

    def _g_dtype(self, j: int) -> torch.dtype:
        return torch.promote_types(self.directions.draw_dtype(j), self.coeffs.dtype)

    # -- applying ------------------------------------------------------------------------------
    @torch.no_grad()
    def apply_chunk(self, j: int, k: int) -> None:
        """Update chunk ``k`` of tensor ``j`` in place (no-op if it is done)."""
        if k not in self._left[j]:
            return
        p, ctx = self.params[j], self.context
        a, b = self.directions.plan(j)[k]
        shape = (b - a,) + tuple(p.shape[1:]) if p.dim() else ()
        if self._r:  # replicate-batched tensors are one chunk
            shape = tuple(p.shape)
        part = p if (p.dim() == 0 or self._r) else p[a:b]
        with ctx.phase("update"):
            c = self._one_direction(j)
            if c is not None:
                # x ← decay·x + c·u, c·u drawn straight into x: one pass over the chunk with the
                # kernel, bit-identical to g = c·u; x += g (the path below)
                decay = self._decay(p)
                if decay != 1.0:
                    part.mul_(decay)
                self.directions.axpy(0, j, a, b, part, c)
            else:
                with ctx.arena.lease("update-g", shape, self._g_dtype(j), p.device) as g, \
                        ctx.arena.lease("update-u", shape if self.coeffs.shape[0] > 1 else (0,),
                                        self._g_dtype(j), p.device) as u:
                    g = self._g_into(j, a, b, g, u)
                    self.rule.apply_(part, g, self.state, a, b, j, self.lr, self._decay(p))
        ctx.counters.written += part.numel()
        self._left[j].discard(k)

    def apply_tensor(self, j: int, count_sweep: bool = False) -> None:
        """Update every remaining chunk of tensor ``j``."""
        if count_sweep and self._left[j]:
            self.context.counters.swept += self.params[j].numel()
        for k in sorted(self._left[j]):
            self.apply_chunk(j, k)

    def finish(self, count_sweep: bool = True) -> None:
        """Apply everything still pending (a flush; each tensor it touches is one more sweep)."""
        for j in range(len(self.params)):
            self.apply_tensor(j, count_sweep=count_sweep)

    @torch.no_grad()
    def rows(self, j: int, index: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` of tensor ``j`` as they are after this update, without writing x: for an
        embedding lookup that runs before the sweep reaches the tensor's in-place update."""
        p = self.params[j]
        if not self._left[j]:
            return p.detach()[index]
        if not self.untouched(j):  # half-updated (an interrupted sweep): finish it first
            self.apply_tensor(j)
            return p.detach()[index]
        d = self.directions
        g = None
        for r in range(self.coeffs.shape[0]):
            term = torch.mul(d.rows(r, j, index).to(self._g_dtype(j)), self.coeffs[r].to(self._g_dtype(j)))
            g = term if g is None else g.add_(term)
        return self.rule.updated(p.detach()[index], g, self.state, index, j, self.lr, self._decay(p))


def apply_now(update: ZOUpdate) -> None:
    """Apply a whole update at once (eager updates, replays)."""
    update.finish(count_sweep=True)


def numel(params: Sequence[torch.Tensor]) -> int:
    return sum(math.prod(p.shape) for p in params)


def state_dict(rule: ZORule, state: list[torch.Tensor]) -> dict[str, Any]:
    return {"rule": rule.name, "state": [s.detach().cpu().clone() for s in state]}
