"""ZO directions u and the evaluation points x ± μu (spec §2, the estimator ĝ).

**Definition of a direction.**  Direction r of step t restricted to ZO tensor j is the tensor's
flat elements cut into *blocks* of B elements (B = :meth:`SweepContext.block_elements`, a
property of the device type); block b is filled by the direction law (:mod:`hybridopt.laws`)
from a ``torch.Generator`` seeded with ``block_seed(step_seed, r, j, b)``.  So any element
range — a row chunk, an embedding row — can be drawn on its own, blocks are drawn on several
threads at once, and the values do not depend on how a consumer chunks the tensor: the probe
sweep, the update sweep, a replay and every data-parallel rank regenerate identical numbers.
Draws are float32 (float64 for float64 tensors unless ``dtype='float32'``).

**Exact restore by construction.**  The ZO block is never modified to evaluate a probe: an
evaluation point hands out ``p ± μu`` *out of place*, tensor by tensor (or chunk by chunk)
while the loss is evaluated, so the stored weights are bit-identical before and after every
probe, in fp32 and bf16/fp16 alike.  The only writes to the ZO block are the updates
(:mod:`hybridopt.zo_rules`).  ``p ± μu`` is computed as ``p + (±(μ·u))``: one product, one
sum, each rounded once, elementwise — so every path (whole tensor, chunk, gathered rows, the
+ and − halves of a paired probe) gives the same bits for the same element.  The product μ·u
(and an update's coefficient·u) is formed by the draw itself (:meth:`Directions.fill` with
``factor``): bit for bit the product after the draw, without a pass of its own on the calling
thread (Rademacher folds it into its sign table: s·(±1) = ±s exactly).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .laws import get_law
from .rng import BlockSeeds
from .sweep import SweepContext

#: cut blocks (see :meth:`Directions._draw_blocks`) kept per direction set, oldest dropped first
_CUT_BLOCKS_KEPT = 8

#: the default context of objects built without one (tests, replays): single-threaded draws
_DEFAULT_CONTEXT: SweepContext | None = None


def default_context() -> SweepContext:
    global _DEFAULT_CONTEXT
    if _DEFAULT_CONTEXT is None:
        _DEFAULT_CONTEXT = SweepContext(threads=1)
    return _DEFAULT_CONTEXT


def _draw_dtype(dtype: torch.dtype, policy: str = "auto") -> torch.dtype:
    return torch.float64 if dtype == torch.float64 and policy == "auto" else torch.float32


class Directions:
    """The q directions of one optimizer step over a fixed list of ZO tensors.

    With ``replicate_shape`` non-empty, leading dimensions of every tensor index independent
    replicates (their elements fall in different blocks, so their directions are independent)
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
        self._block_seeds: dict[tuple[int, int], BlockSeeds] = {}
        self._cut: dict[tuple[int, int, int], torch.Tensor] = {}

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
        (:meth:`~hybridopt.laws.DirectionLaw.fill_blocks`)."""
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

    def _raw(self, probe: int, j: int, start: int, stop: int, flat: torch.Tensor, factor=None) -> None:
        if stop > start:
            B = self.context.block_elements(self._params[j].device)
            self._draw_blocks(probe, j, [(b, start, stop, flat) for b in range(start // B, (stop - 1) // B + 1)],
                              factor=factor)

    def _seeds(self, probe: int, j: int) -> BlockSeeds:
        key = (probe, j)
        seeds = self._block_seeds.get(key)
        if seeds is None:
            seeds = self._block_seeds[key] = BlockSeeds(self.seed, probe, j)
        return seeds

    def _draw_blocks(self, probe: int, j: int, tasks: list[tuple[int, int, int, torch.Tensor]],
                     rows: bool = False, factor=None) -> None:
        """Draw block b's part inside [start, stop) into ``dest[lo - start : hi - start]`` for
        each task ``(b, start, stop, dest)``, the tasks spread over the context's draw threads.

        A block cut by the end of a range (a row chunk rarely ends on a block boundary) is drawn
        whole and kept until a later range has used its rest, so consecutive chunks draw every
        element once: a sweep draws exactly the ZO block, not one extra block per chunk."""
        p, ctx, law = self._params[j], self.context, self.law
        B, numel = ctx.block_elements(p.device), p.numel()
        seed_of = self._seeds(probe, j)
        drawn = [0] * max(1, ctx.threads)

        def whole(task) -> bool:   # the task wants its block entire
            b, start, stop, _ = task
            return start <= b * B and min((b + 1) * B, numel) <= stop

        def work(worker: int, part: list) -> None:
            i = 0
            while i < len(part):
                b, start, stop, dest = part[i]
                bs, be = b * B, min((b + 1) * B, numel)
                if whole(part[i]):
                    # a run of whole consecutive blocks into one destination: one fill_blocks call
                    k = i + 1
                    while (k < len(part) and part[k][3] is dest and part[k][1] == start
                           and part[k][0] == part[k - 1][0] + 1 and whole(part[k])):
                        k += 1
                    seeds = [seed_of(t[0]) for t in part[i:k]]
                    end = min((part[k - 1][0] + 1) * B, numel)
                    law.fill_blocks(dest[bs - start:end - start], B,
                                    lambda r: ctx.generator(worker, p.device, seeds[r]), ctx.tables, factor)
                    drawn[worker] += end - bs
                    i = k
                    continue
                # a block cut by the range: drawn whole once, its rest kept for the next range
                lo, hi = max(bs, start), min(be, stop)
                key = (probe, j, b)
                block = self._cut.pop(key, None)
                if block is None or block.dtype != dest.dtype:
                    block = torch.empty(be - bs, dtype=dest.dtype, device=dest.device)
                    law.fill(block, ctx.generator(worker, p.device, seed_of(b)), ctx.tables)
                    drawn[worker] += be - bs
                if hi < be:                       # the range ends inside the block
                    self._cut[key] = block        # (one dict operation: safe across draw threads)
                part_dest = dest[lo - start:hi - start]
                part_dest.copy_(block[lo - bs:hi - bs])   # the kept block stays unscaled
                if factor is not None:
                    part_dest.mul_(factor)
                i += 1

        with ctx.phase("draw"):
            if law.threaded_blocks:
                ctx.map_workers(work, tasks, p.device)
            else:
                work(0, tasks)
        # a few cut blocks at most: a consumer that stops half-way through a tensor leaves one behind
        while len(self._cut) > _CUT_BLOCKS_KEPT:
            self._cut.pop(next(iter(self._cut)))
        if rows:
            ctx.counters.rows_drawn += sum(drawn)
        else:
            ctx.counters.drawn += sum(drawn)

    def chunk(self, probe: int, j: int, a: int, b: int, out: torch.Tensor, factor=None) -> torch.Tensor:
        """Rows [a, b) of direction ``probe`` on tensor ``j`` (times ``factor``), written into ``out``."""
        p = self._params[j]
        row = math.prod(p.shape[1:]) if p.dim() else 1
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
        ``index.shape + p.shape[1:]``.  Only the blocks holding those rows are drawn."""
        p = self._params[j]
        if self._cache is not None:
            return self._cached(probe, j)[index]
        H = math.prod(p.shape[1:])
        B, numel = self.context.block_elements(p.device), p.numel()
        flat_index = index.reshape(-1).to(p.device)
        first = (flat_index * H) // B
        last = ((flat_index + 1) * H - 1) // B
        need = torch.unique(torch.cat([first, last]))
        # The needed blocks are drawn into consecutive slots in id order; a row crossing from
        # block b into b+1 (both needed) is then contiguous, so every row is one slice of `drawn`.
        sizes = torch.clamp(numel - need * B, max=B)
        offsets = torch.cumsum(sizes, 0) - sizes
        drawn = torch.empty(int(sizes.sum()), dtype=self.draw_dtype(j), device=p.device)
        self._draw_blocks(probe, j, [(b, b * B, b * B + n, drawn[o:o + n]) for b, n, o in
                                     zip(need.tolist(), sizes.tolist(), offsets.tolist())], rows=True)
        if self.law.normalised:
            drawn.mul_(self.scale(probe)[0].to(drawn.dtype))  # embeddings are never replicate-batched
        elem = flat_index * H
        slot = torch.searchsorted(need, first)
        starts = offsets[slot] + (elem - first * B)
        out = drawn.unfold(0, H, 1)[starts]
        return out.view(tuple(index.shape) + tuple(p.shape[1:]))

    # -- the sphere law's normalisation -----------------------------------------------------------
    def _replicates(self) -> int:
        return math.prod(self.replicate_shape) if self.replicate_shape else 1

    def scale(self, probe: int) -> torch.Tensor:
        """√d/‖v‖ per replicate (shape ``(R,)``, R = 1 without replicates): one extra draw."""
        if probe not in self._scale:
            R, sq, d = self._replicates(), None, 0
            for j, p in enumerate(self._params):
                for a, b in self.plan(j):
                    row = math.prod(p.shape[1:]) if p.dim() else 1
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
