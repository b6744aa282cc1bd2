"""ZO directions u and the out-of-place perturbation x + s*u (spec §2, the estimator ĝ).

Design (exact restore by construction).  The ZO block is never modified to evaluate a
probe: :class:`Perturbation` hands out ``p + s*u`` *out of place*, one tensor at a time,
while the loss is evaluated.  The stored weights are therefore bit-identical before and
after every probe, in fp32 and in bf16/fp16 alike, and only one tensor-sized temporary is
alive at a time (inference-level memory).  The only write to the ZO block is the update
``x <- x - eta * g * u`` (see :mod:`hybridopt.updates`).

Directions (``u`` with E[u u^T] = I, so ĝ is unbiased for the smoothed gradient, L2(c)):

* ``gaussian``   u ~ N(0, I_d)                       (the theorem's, default)
* ``rademacher`` u uniform on {-1, +1}^d
* ``sphere``     u = sqrt(d) * v/||v||, v ~ N(0, I_d)  (uniform on the sphere of radius sqrt(d))

Directions are drawn in float32 (float64 for float64 tensors) and the perturbed tensor is
rounded once to the tensor's dtype.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .rng import GeneratorPool, tensor_seed
from .types import DIRECTIONS

_POOL = GeneratorPool()


def _draw_dtype(dtype: torch.dtype, policy: str = "auto") -> torch.dtype:
    return torch.float64 if dtype == torch.float64 and policy == "auto" else torch.float32


class Workspace:
    """Reusable flat scratch buffers keyed by (slot, dtype, device), grown on demand.

    Tensor-sized temporaries are the main cost of a ZO sweep after the random numbers
    themselves: a fresh large allocation is page-faulted in on every use.  The perturbation of
    one module and the update of one tensor each borrow a slice instead.  Not re-entrant: a
    slot's slice is valid until the next request for the same slot.
    """

    def __init__(self) -> None:
        self._bufs: dict[tuple, torch.Tensor] = {}

    def get(self, slot: int, shape: torch.Size, dtype: torch.dtype, device: torch.device,
            offset: int = 0) -> torch.Tensor:
        n = offset + math.prod(shape)
        key = (slot, dtype, torch.device(device))
        buf = self._bufs.get(key)
        if buf is None or buf.numel() < n:
            buf = torch.empty(n, dtype=dtype, device=device)
            self._bufs[key] = buf
        return buf[offset:n].view(shape)

    def clear(self) -> None:
        self._bufs.clear()


#: The process-wide workspace of ZO sweeps (one sweep runs at a time).
WORKSPACE = Workspace()


def draw_direction(kind: str, seed: int, shape: torch.Size, dtype: torch.dtype,
                   device: torch.device, out: torch.Tensor | None = None) -> torch.Tensor:
    """Raw (un-normalised) direction tensor of dtype ``dtype`` (float32 or float64), a pure
    function of ``seed``; written into ``out`` when given."""
    gen = _POOL.get(device, seed)
    if out is None:
        out = torch.empty(shape, dtype=dtype, device=device)
    if kind == "rademacher":
        return out.bernoulli_(0.5, generator=gen).mul_(2).sub_(1)
    if kind not in DIRECTIONS:
        raise ValueError(f"unknown direction {kind!r}; valid: {', '.join(DIRECTIONS)}")
    return out.normal_(generator=gen)


class Directions:
    """The q directions of one optimizer step over a fixed list of ZO tensors.

    ``u(probe, j)`` regenerates direction ``probe`` restricted to tensor ``j``.  With
    ``replicate_shape`` non-empty, leading dimensions index independent replicates, and the
    sphere normalisation is taken per replicate.
    """

    def __init__(self, kind: str, seed: int, params: Sequence[torch.Tensor], q: int = 1,
                 replicate_shape: tuple[int, ...] = (), cache: bool = False, dtype: str = "auto") -> None:
        if kind not in DIRECTIONS:
            raise ValueError(f"unknown direction {kind!r}; valid: {', '.join(DIRECTIONS)}")
        self.kind, self.seed, self.q = kind, int(seed), int(q)
        self.replicate_shape = tuple(replicate_shape)
        self.dtype_policy = dtype
        self._params = list(params)
        self._scale: dict[int, torch.Tensor] = {}
        # cache=True keeps each u for the step (memory = q x the ZO block): for small blocks
        # (synthetic objectives) it trades memory for 2 of the 3 generation sweeps.
        self._cache: dict[tuple[int, int], torch.Tensor] | None = {} if cache else None

    def _raw(self, probe: int, j: int, out: torch.Tensor | None = None) -> torch.Tensor:
        p = self._params[j]
        return draw_direction(self.kind, tensor_seed(self.seed, probe, j), p.shape, self.draw_dtype(j),
                              p.device, out)

    def _sphere_scale(self, probe: int) -> torch.Tensor:
        # sqrt(d)/||v|| over the whole ZO block: one generation sweep, no parameter reads.
        if probe not in self._scale:
            r = len(self.replicate_shape)
            sq, d = None, 0
            for j, p in enumerate(self._params):
                v = self._raw(probe, j)
                s = v.pow(2).flatten(r).sum(-1)
                sq = s if sq is None else sq + s
                d += math.prod(p.shape[r:])
            self._scale[probe] = (d / sq).sqrt()
        return self._scale[probe]

    def u(self, probe: int, j: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Direction ``probe`` on tensor ``j`` (float32/float64, the tensor's shape), written
        into ``out`` if given, else a fresh tensor (callers may modify it in place)."""
        if self._cache is not None:
            cached = self._cached(probe, j)
            return cached.clone() if out is None else out.copy_(cached)
        return self._direction(probe, j, out)

    def _cached(self, probe: int, j: int) -> torch.Tensor:
        key = (probe, j)
        if key not in self._cache:
            self._cache[key] = self._direction(probe, j)
        return self._cache[key]

    def u_readonly(self, probe: int, j: int) -> torch.Tensor:
        """Like :meth:`u`, but the caller promises not to modify the result: with the cache on,
        the cached tensor itself is returned (saves one copy of the block per probe)."""
        if self._cache is not None:
            return self._cached(probe, j)
        return self._direction(probe, j)

    def draw_dtype(self, j: int) -> torch.dtype:
        return _draw_dtype(self._params[j].dtype, self.dtype_policy)

    def _direction(self, probe: int, j: int, out: torch.Tensor | None = None) -> torch.Tensor:
        u = self._raw(probe, j, out)
        if self.kind == "sphere":
            s = self._sphere_scale(probe)
            u.mul_(s.reshape(s.shape + (1,) * (u.dim() - s.dim())))
        return u


class Perturbation:
    """Evaluation point x + scale * u_probe, handed out tensor by tensor (never in place)."""

    def __init__(self, directions: Directions, probe: int, scale: float) -> None:
        self.directions, self.probe, self.scale = directions, probe, float(scale)
        self.applied: set[int] = set()

    @torch.no_grad()
    def apply(self, j: int, p: torch.Tensor, workspace: Workspace | None = None, offset: int = 0,
              slots: tuple[int, int] = (0, 1)) -> torch.Tensor:
        """Return ``p + scale*u_j`` (computed in the wider dtype, rounded once to ``p``'s
        dtype); ``p`` is not touched.

        Without ``workspace`` the result is a new tensor.  With one, it lives in the workspace
        (``slots[0]`` for the draw, ``slots[1]`` when ``p`` has another dtype, at ``offset``)
        and is valid until those slots are used again: what a module needs for one forward.
        Both paths run the same ``torch.add(p, u, alpha=scale)`` kernel, so they agree bit for bit.
        """
        self.applied.add(j)
        if workspace is None:
            u = self.directions.u_readonly(self.probe, j)  # read only: out-of-place
            return torch.add(p.detach(), u, alpha=self.scale).to(p.dtype)
        u = self.directions.u(self.probe, j, out=workspace.get(slots[0], p.shape, self.directions.draw_dtype(j),
                                                              p.device, offset))
        out = u if p.dtype == u.dtype else workspace.get(slots[1], p.shape, p.dtype, p.device, offset)
        return torch.add(p.detach(), u, alpha=self.scale, out=out)
