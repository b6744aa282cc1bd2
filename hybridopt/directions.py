"""ZO directions u and the evaluation points x ± μu (spec §2, the estimator ĝ).

**Definition of a direction.**  Direction r of step t restricted to ZO tensor j is the tensor's
flat elements drawn by the direction law from the counter-based words of
:mod:`hybridopt.counter` with the key ``direction_key(step_seed, r, j)``: element e is a pure
function of (key, e).  So any element range — a row chunk, an embedding row — is drawn on its
own, and the values do not depend on how a consumer chunks the tensor: the probe sweep, the
update sweep, a replay and every data-parallel rank regenerate identical numbers.  Draws are
float32 (float32 u exactly converted for float64 tensors, unless ``dtype='float32'``).

**Exact restore by construction.**  The ZO block is never modified to evaluate a probe: an
evaluation point hands out ``p ± μu`` *out of place*, tensor by tensor (or chunk by chunk)
while the loss is evaluated, so the stored weights are bit-identical before and after every
probe, in fp32 and bf16/fp16 alike.  The only writes to the ZO block are the updates
(:mod:`hybridopt.zo_rules`).  ``p ± μu`` is computed as ``p + (±(μ·u))``: one product, one
sum, each rounded once, elementwise — so every path (whole tensor, chunk, gathered rows, the
+ and − halves of a paired probe) gives the same bits for the same element.  The product μ·u
(and an update's coefficient·u) is formed by the draw itself (:meth:`Directions.fill` with
``factor``): bit for bit the product after the draw, without a pass of its own.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .laws import get_law
from .rng import direction_key
from .sweep import SweepContext

#: the default context of objects built without one (tests, replays)
_DEFAULT_CONTEXT: SweepContext | None = None


def default_context() -> SweepContext:
    global _DEFAULT_CONTEXT
    if _DEFAULT_CONTEXT is None:
        _DEFAULT_CONTEXT = SweepContext()
    return _DEFAULT_CONTEXT


def _draw_dtype(dtype: torch.dtype, policy: str = "auto") -> torch.dtype:
    return torch.float64 if dtype == torch.float64 and policy == "auto" else torch.float32


class Directions:
    """The q directions of one optimizer step over a fixed list of ZO tensors.

    With ``replicate_shape`` non-empty, leading dimensions of every tensor index independent
    replicates (their elements are different elements of the direction, so independent)
    and the sphere normalisation is taken per replicate.  ``cache=True`` keeps each drawn
    direction for the object's lifetime (memory = q × the ZO block: small problems only); the
    values are identical either way.
    """

    def __init__(self, kind: str, seed: int, params: Sequence[torch.Tensor], q: int = 1,
                 replicate_shape: tuple[int, ...] = (), cache: bool = False, dtype: str = "auto",
                 context: SweepContext | None = None) -> None:
        self.law = get_law(kind)
        self.kind, self.seed, self.q = kind, int(seed), int(q)
        self.replicate_shape = tuple(replicate_shape)
        self.dtype_policy = dtype
        self.context = context if context is not None else default_context()
        self._params = list(params)
        self._scale: dict[int, torch.Tensor] = {}
        self._cache: dict[tuple[int, int], torch.Tensor] | None = {} if cache else None
        self._keys: dict[tuple[int, int], int] = {}

    @property
    def cached(self) -> bool:
        return self._cache is not None

    def draw_dtype(self, j: int) -> torch.dtype:
        return _draw_dtype(self._params[j].dtype, self.dtype_policy)

    def plan(self, j: int) -> list[tuple[int, int]]:
        """Row chunks of tensor ``j`` (one chunk for replicate-batched tensors)."""
        p = self._params[j]
        if self.replicate_shape:
            return [(0, p.shape[0] if p.dim() else 1)]
        return self.context.row_chunks(p.shape)

    # -- drawing --------------------------------------------------------------------------------
    def fill(self, probe: int, j: int, start: int, stop: int, out: torch.Tensor, scaled: bool = True,
             factor: float | torch.Tensor | None = None) -> torch.Tensor:
        """Write flat elements [start, stop) of direction ``probe`` on tensor ``j`` into ``out``
        (contiguous, ``stop - start`` elements, :meth:`draw_dtype`).  With ``factor`` (μ for a probe,
        an update's coefficient: a number, or a tensor broadcastable to ``out``, e.g. one coefficient
        per replicate), write ``factor·u``, each product rounded once, exactly as ``out.mul_(factor)``
        after the draw; a single factor is folded into the draw itself
        (:meth:`~hybridopt.laws.DirectionLaw.fill`)."""
        if torch.is_tensor(factor) and factor.numel() == 1:
            factor = factor.reshape(())
        # the draw takes the factor when it is one number and u is the raw draw (not cached, not rescaled)
        fold = (factor is not None and (not torch.is_tensor(factor) or factor.dim() == 0)
                and self._cache is None and not (scaled and self.law.normalised))
        flat = out.view(-1)
        if self._cache is not None:
            flat.copy_(self._cached(probe, j).view(-1)[start:stop])
        else:
            self._raw(probe, j, start, stop, flat, factor if fold else None)
            if scaled and self.law.normalised:     # u = (√d/‖v‖)·v first, then the factor
                self._apply_scale(probe, j, start, stop, flat)
        if factor is not None and not fold:
            out.mul_(factor)
        return out

    def key(self, probe: int, j: int) -> int:
        """The counter key of direction ``probe`` on tensor ``j``."""
        k = self._keys.get((probe, j))
        if k is None:
            k = self._keys[(probe, j)] = direction_key(self.seed, probe, j)
        return k

    def _raw(self, probe: int, j: int, start: int, stop: int, flat: torch.Tensor, factor=None) -> None:
        if stop > start:
            with self.context.phase("draw"):
                self.law.fill(flat, self.key(probe, j), start, factor)
            self.context.counters.drawn += stop - start

    def _row(self, j: int) -> int:
        """Elements per row (dim-0 slice) of tensor ``j``."""
        p = self._params[j]
        return math.prod(p.shape[1:]) if p.dim() else 1

    def _fused(self, j: int) -> bool:
        """True when u may be drawn straight into an operation (not cached, not rescaled)."""
        return self._cache is None and not self.law.normalised

    @torch.no_grad()
    def pair(self, probe: int, j: int, a: int, b: int, w: torch.Tensor, plus: torch.Tensor,
             minus: torch.Tensor, mu: float, su: torch.Tensor | None = None) -> None:
        """Rows [a, b) of a paired probe's points: ``plus`` ← w + μu, ``minus`` ← w − μu (``w`` those
        rows of tensor ``j``; each element as :func:`perturbed` forms it: μu rounded once, one sum).
        One pass when the compiled kernel serves the tensors, else μu drawn into ``su`` (default
        ``minus``, which then needs the draw's dtype) and two sums."""
        row = self._row(j)
        if self._fused(j):
            with self.context.phase("perturb"):
                done = self.law.pair(w, plus, minus, self.key(probe, j), a * row, mu)
            if done:
                self.context.counters.drawn += (b - a) * row
                return
        su = minus if su is None else su
        self.chunk(probe, j, a, b, su, factor=mu)
        with self.context.phase("perturb"):
            torch.add(w, su, out=plus)
            torch.sub(w, su, out=minus)

    @torch.no_grad()
    def axpy(self, probe: int, j: int, a: int, b: int, part: torch.Tensor, factor) -> None:
        """Rows [a, b) of tensor ``j`` (``part``, in place, the draw's dtype) ← part + factor·u_probe
        (the product rounded once, then the sum): an SGD update along one direction, one pass
        with the compiled kernel, else factor·u drawn into scratch and added."""
        row = self._row(j)
        if self._fused(j):
            with self.context.phase("draw"):
                done = self.law.axpy(part, self.key(probe, j), a * row, factor)
            if done:
                self.context.counters.drawn += (b - a) * row
                return
        with self.context.arena.lease("axpy-u", part.shape, self.draw_dtype(j), part.device) as g:
            part.add_(self.chunk(probe, j, a, b, g, factor=factor))

    def chunk(self, probe: int, j: int, a: int, b: int, out: torch.Tensor, factor=None) -> torch.Tensor:
        """Rows [a, b) of direction ``probe`` on tensor ``j`` (times ``factor``), written into ``out``."""
        row = self._row(j)
        return self.fill(probe, j, a * row, b * row, out, factor=factor)

    def u(self, probe: int, j: int, out: torch.Tensor | None = None, factor=None) -> torch.Tensor:
        """Direction ``probe`` on tensor ``j`` (the tensor's shape; times ``factor``), written into
        ``out`` if given, else a fresh tensor (callers may modify it)."""
        p = self._params[j]
        if out is None:
            out = torch.empty(p.shape, dtype=self.draw_dtype(j), device=p.device)
        return self.fill(probe, j, 0, p.numel(), out, factor=factor)

    def _cached(self, probe: int, j: int) -> torch.Tensor:
        key = (probe, j)
        if key not in self._cache:
            p = self._params[j]
            u = torch.empty(p.shape, dtype=self.draw_dtype(j), device=p.device)
            self._raw(probe, j, 0, p.numel(), u.view(-1))
            if self.law.normalised:
                self._apply_scale(probe, j, 0, p.numel(), u.view(-1))
            self._cache[key] = u
        return self._cache[key]

    def readonly(self, probe: int, j: int) -> torch.Tensor | None:
        """The cached direction itself (not to be modified), or None without a cache."""
        return self._cached(probe, j) if self._cache is not None else None

    @torch.no_grad()
    def rows(self, probe: int, j: int, index: torch.Tensor) -> torch.Tensor:
        """``u[index]`` for a tensor of row indices (an embedding lookup of the direction), shape
        ``index.shape + p.shape[1:]``.  Only the looked-up rows are drawn, each once."""
        p = self._params[j]
        if self._cache is not None:
            return self._cached(probe, j)[index]
        H = math.prod(p.shape[1:])
        need, inverse = torch.unique(index.reshape(-1).to(p.device), return_inverse=True)
        drawn = torch.empty((need.numel(), H), dtype=torch.float32, device=p.device)
        with self.context.phase("draw"):
            self.law.fill_rows(drawn, self.key(probe, j), [r * H for r in need.tolist()])
        self.context.counters.rows_drawn += drawn.numel()
        drawn = drawn.to(self.draw_dtype(j))
        if self.law.normalised:
            drawn.mul_(self.scale(probe)[0].to(drawn.dtype))  # embeddings are never replicate-batched
        return drawn[inverse].view(tuple(index.shape) + tuple(p.shape[1:]))

    # -- the sphere law's normalisation -----------------------------------------------------------
    def _replicates(self) -> int:
        return math.prod(self.replicate_shape) if self.replicate_shape else 1

    def scale(self, probe: int) -> torch.Tensor:
        """√d/‖v‖ per replicate (shape ``(R,)``, R = 1 without replicates): one extra draw."""
        if probe not in self._scale:
            R, sq, d = self._replicates(), None, 0
            for j, p in enumerate(self._params):
                for a, b in self.plan(j):
                    row = self._row(j)
                    lease = self.context.arena.lease("sphere-norm", ((b - a) * row,), self.draw_dtype(j), p.device)
                    with lease as v:
                        self._raw(probe, j, a * row, b * row, v)
                        s = v.double().pow(2).view(R, -1).sum(-1)
                    sq = s if sq is None else sq + s
                d += p.numel() // R
            self._scale[probe] = (d / sq).sqrt()
        return self._scale[probe]

    def _apply_scale(self, probe: int, j: int, start: int, stop: int, flat: torch.Tensor) -> None:
        scale = self.scale(probe).to(flat.dtype)
        per = self._params[j].numel() // self._replicates()
        for r in range(start // per, (stop - 1) // per + 1):  # one replicate's run at a time
            lo, hi = max(start, r * per), min(stop, (r + 1) * per)
            flat[lo - start:hi - start].mul_(scale[r])


def perturbed(p_part: torch.Tensor, su: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``p_part + su`` rounded once into ``p_part``'s dtype (``su`` = ±μ·u already formed)."""
    if out is None:
        return torch.add(p_part, su).to(p_part.dtype)
    return torch.add(p_part, su, out=out)


class Perturbation:
    """The evaluation point x + scale·u_probe, handed out tensor by tensor (never in place).

    For the problems: :meth:`apply` gives ``p + scale·u_j`` as a new tensor (the reference
    path; :class:`~hybridopt.problem.ModuleProblem` forms the same values in arena memory).
    """

    def __init__(self, directions: Directions, probe: int, scale: float) -> None:
        self.directions, self.probe, self.scale = directions, probe, float(scale)
        self.scales = (self.scale,)
        self.applied: set[int] = set()

    @torch.no_grad()
    def apply(self, j: int, p: torch.Tensor) -> torch.Tensor:
        self.applied.add(j)
        u = self.directions.readonly(self.probe, j)
        u = self.directions.u(self.probe, j) if u is None else u
        return perturbed(p.detach(), u * self.scale)


class Pair(Perturbation):
    """The two evaluation points x + μu and x − μu of one probe, sharing each draw of u."""

    def __init__(self, directions: Directions, probe: int, mu: float) -> None:
        super().__init__(directions, probe, mu)
        self.scales = (self.scale, -self.scale)

    @torch.no_grad()
    def apply_pair(self, j: int, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(p + μu_j, p − μu_j)`` from one draw of u_j, as new tensors."""
        self.applied.add(j)
        u = self.directions.readonly(self.probe, j)
        mu_u = (self.directions.u(self.probe, j) if u is None else u) * self.scale
        return perturbed(p.detach(), mu_u), perturbed(p.detach(), -mu_u)
