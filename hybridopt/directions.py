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


def _draw_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def draw_direction(kind: str, seed: int, shape: torch.Size, dtype: torch.dtype,
                   device: torch.device) -> torch.Tensor:
    """Raw (un-normalised) direction tensor, a pure function of ``seed``."""
    gen = _POOL.get(device, seed)
    dt = _draw_dtype(dtype)
    if kind == "rademacher":
        u = torch.empty(shape, dtype=dt, device=device).bernoulli_(0.5, generator=gen)
        return u.mul_(2).sub_(1)
    if kind not in DIRECTIONS:
        raise ValueError(f"unknown direction {kind!r}; valid: {', '.join(DIRECTIONS)}")
    return torch.randn(shape, dtype=dt, device=device, generator=gen)


class Directions:
    """The q directions of one optimizer step over a fixed list of ZO tensors.

    ``u(probe, j)`` regenerates direction ``probe`` restricted to tensor ``j``.  With
    ``replicate_shape`` non-empty, leading dimensions index independent replicates, and the
    sphere normalisation is taken per replicate.
    """

    def __init__(self, kind: str, seed: int, params: Sequence[torch.Tensor], q: int = 1,
                 replicate_shape: tuple[int, ...] = (), cache: bool = False) -> None:
        if kind not in DIRECTIONS:
            raise ValueError(f"unknown direction {kind!r}; valid: {', '.join(DIRECTIONS)}")
        self.kind, self.seed, self.q = kind, int(seed), int(q)
        self.replicate_shape = tuple(replicate_shape)
        self._params = list(params)
        self._scale: dict[int, torch.Tensor] = {}
        # cache=True keeps each u for the step (memory = q x the ZO block): for small blocks
        # (synthetic objectives) it trades memory for 2 of the 3 generation sweeps.
        self._cache: dict[tuple[int, int], torch.Tensor] | None = {} if cache else None

    def _raw(self, probe: int, j: int) -> torch.Tensor:
        p = self._params[j]
        return draw_direction(self.kind, tensor_seed(self.seed, probe, j), p.shape, p.dtype, p.device)

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

    def u(self, probe: int, j: int) -> torch.Tensor:
        """Direction ``probe`` on tensor ``j`` (float32/float64, the tensor's shape).  A fresh
        tensor each call (callers may modify it in place)."""
        if self._cache is not None:
            return self._cached(probe, j).clone()
        return self._direction(probe, j)

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

    def _direction(self, probe: int, j: int) -> torch.Tensor:
        u = self._raw(probe, j)
        if self.kind == "sphere":
            s = self._sphere_scale(probe)
            u = u * s.reshape(s.shape + (1,) * (u.dim() - s.dim()))
        return u


class Perturbation:
    """Evaluation point x + scale * u_probe, handed out tensor by tensor (never in place)."""

    def __init__(self, directions: Directions, probe: int, scale: float) -> None:
        self.directions, self.probe, self.scale = directions, probe, float(scale)
        self.applied: set[int] = set()

    def apply(self, j: int, p: torch.Tensor) -> torch.Tensor:
        """Return ``p + scale*u_j`` as a new tensor of ``p``'s dtype; ``p`` is not touched."""
        self.applied.add(j)
        u = self.directions.u_readonly(self.probe, j)  # read only below (out-of-place ops)
        with torch.no_grad():
            return (p.detach().to(u.dtype) + self.scale * u).to(p.dtype)
