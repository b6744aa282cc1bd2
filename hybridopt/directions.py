"""ZO directions u and the out-of-place perturbation x + s*u (spec §2, the estimator ĝ).

Design (exact restore by construction).  The ZO block is never modified to evaluate a
probe: :class:`Perturbation` hands out ``p + s*u`` *out of place*, one tensor (or one row
chunk of a large tensor) at a time, while the loss is evaluated.  The stored weights are
therefore bit-identical before and after every probe, in fp32 and in bf16/fp16 alike, and
only chunk-sized temporaries are alive (inference-level memory).  The only write to the ZO
block is the update ``x <- x - eta * g * u`` (see :mod:`hybridopt.updates`).

Directions (``u`` with E[u u^T] = I, so ĝ is unbiased for the smoothed gradient, L2(c)):

* ``gaussian``   u ~ N(0, I_d)                       (the theorem's, default)
* ``rademacher`` u uniform on {-1, +1}^d: element i is -1 iff bit i mod 8 of byte floor(i/8)
  of the tensor's stream (ceil(d/64) random 64-bit words, as bytes) is set; 64 signs per
  random word, written by one table lookup per byte (~8x cheaper than a Gaussian on CPU)
* ``sphere``     u = sqrt(d) * v/||v||, v ~ N(0, I_d)  (uniform on the sphere of radius sqrt(d))

Chunk plan.  A tensor larger than :data:`CHUNK_ELEMENTS` is drawn in row chunks (dim 0),
each a multiple of 64 elements, sequentially from the tensor's one generator.  On CPU the
concatenated chunks equal a single whole-tensor draw (tested), and every consumer (whole
draw, perturbed forward, update, replay) walks the same plan, so a direction is one
well-defined function of its seed everywhere.

Directions are drawn in float32 (float64 for float64 tensors) and the perturbed tensor is
rounded once to the tensor's dtype.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from .rng import GeneratorPool, tensor_seed
from .types import DIRECTIONS

_POOL = GeneratorPool()

#: Tensors with more elements than this are drawn, perturbed and updated in row chunks.
CHUNK_ELEMENTS = 1 << 22
#: The workspace slot of chunked draws.  Probes (one module at a time), embedding-row gathers and
#: the update sweep never overlap, so one chunk-sized buffer serves them all.
CHUNK_SLOT = 7
_WORD = 64  # elements per random 64-bit word of the Rademacher stream; chunk sizes are multiples


def _draw_dtype(dtype: torch.dtype, policy: str = "auto") -> torch.dtype:
    return torch.float64 if dtype == torch.float64 and policy == "auto" else torch.float32


def row_chunks(shape: torch.Size, limit: int | None = None) -> list[tuple[int, int]]:
    """Row ranges [a, b) along dim 0 covering a tensor of ``shape``: one range when the tensor
    has at most ``limit`` (default :data:`CHUNK_ELEMENTS`) elements, else ranges of at most
    ~``limit`` elements whose sizes are multiples of 64 elements (all but the last, which has at
    least 64)."""
    limit = CHUNK_ELEMENTS if limit is None else limit
    n = math.prod(shape)
    rows = shape[0] if len(shape) else 1
    if n <= limit or len(shape) == 0 or rows == 1:
        return [(0, rows)]
    row = n // rows
    step = _WORD // math.gcd(row, _WORD)
    k = max(step, (limit // row) // step * step)
    bounds = list(range(0, rows, k)) + [rows]
    if len(bounds) > 2 and (bounds[-1] - bounds[-2]) * row < _WORD:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:]))


def chunk_of(t: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """Rows [a, b) of ``t`` as yielded by a chunk plan (a 0-dim tensor is its own only chunk)."""
    return t[a:b] if t.dim() else t


_TABLES: dict[torch.device, torch.Tensor] = {}


def _sign_table(device: torch.device) -> torch.Tensor:
    """256 x 8 float32: row b holds the signs of byte b's bits, least significant first."""
    if device not in _TABLES:
        bits = torch.arange(256).unsqueeze(1).bitwise_right_shift(torch.arange(8)).bitwise_and(1)
        _TABLES[device] = (1 - 2 * bits).float().to(device)
    return _TABLES[device]


def _random_bytes(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """The Rademacher stream of ``n`` elements: ceil(n/64) random 64-bit words (the full int64
    range: ~2x cheaper per bit than 32-bit words on CPU), as bytes."""
    words = torch.empty(-(-n // _WORD), dtype=torch.int64, device=device)
    return words.random_(-2 ** 63, None, generator=gen).view(torch.uint8)


def _rademacher_(out: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Fill float32 ``out`` (contiguous) with signs: element i is -1 iff bit i mod 8 of byte
    floor(i/8) of the stream is set; one table lookup writes the 8 signs of a byte."""
    n, dev = out.numel(), out.device
    table, stream, flat = _sign_table(dev), _random_bytes(n, gen, dev), out.view(-1)
    full = n // 8 * 8
    torch.index_select(table, 0, stream[: full // 8].to(torch.int32), out=flat[:full].view(-1, 8))
    if full < n:
        flat[full:] = table[stream[full // 8].long()][: n - full]
    return out


def _fill(kind: str, out: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if kind == "rademacher":
        if out.dtype == torch.float32 and out.is_contiguous():
            return _rademacher_(out, gen)
        return out.copy_(_rademacher_(torch.empty(out.shape, device=out.device), gen))
    if kind not in DIRECTIONS:
        raise ValueError(f"unknown direction {kind!r}; valid: {', '.join(DIRECTIONS)}")
    return out.normal_(generator=gen)


def draw_direction(kind: str, seed: int, shape: torch.Size, dtype: torch.dtype,
                   device: torch.device, out: torch.Tensor | None = None) -> torch.Tensor:
    """Raw (un-normalised) direction tensor of dtype ``dtype`` (float32 or float64), a pure
    function of ``seed``, drawn along the chunk plan; written into ``out`` when given."""
    if out is None:
        out = torch.empty(shape, dtype=dtype, device=device)
    plan = row_chunks(out.shape)
    gen = _POOL.get(device, seed) if len(plan) == 1 else _fresh(device, seed)
    for a, b in plan:
        _fill(kind, out[a:b] if len(plan) > 1 else out, gen)
    return out


def _fresh(device: torch.device, seed: int) -> torch.Generator:
    # A chunked draw spans several calls, between which other draws may run: own generator.
    return torch.Generator(device=device).manual_seed(seed)


class Workspace:
    """Reusable flat scratch buffers keyed by (slot, dtype, device), grown on demand.

    Tensor-sized temporaries are the main cost of a ZO sweep after the random numbers
    themselves: a fresh large allocation is page-faulted in on every use.  The perturbation of
    one module (or one row chunk) and the update of one chunk each borrow a slice instead.
    Not re-entrant: a slot's slice is valid until the next request for the same slot.
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
                for _, _, v in self._raw_chunks(probe, j, WORKSPACE, slot=5):
                    s = v.pow(2).flatten(r).sum(-1)
                    sq = s if sq is None else sq + s
                d += math.prod(p.shape[r:])
            self._scale[probe] = (d / sq).sqrt()
        return self._scale[probe]

    def plan(self, j: int) -> list[tuple[int, int]]:
        """Row chunks of tensor ``j`` (one chunk for replicate-batched tensors)."""
        return [(0, self._params[j].shape[0] if self._params[j].dim() else 1)] if self.replicate_shape \
            else row_chunks(self._params[j].shape)

    def _raw_chunks(self, probe: int, j: int, workspace: "Workspace",
                    slot: int) -> Iterator[tuple[int, int, torch.Tensor]]:
        p, plan = self._params[j], self.plan(j)
        if len(plan) == 1:
            yield 0, plan[0][1], self._raw(probe, j, workspace.get(slot, p.shape, self.draw_dtype(j), p.device))
            return
        gen = _fresh(p.device, tensor_seed(self.seed, probe, j))
        for a, b in plan:
            out = workspace.get(slot, (b - a,) + p.shape[1:], self.draw_dtype(j), p.device)
            yield a, b, _fill(self.kind, out, gen)

    def chunks(self, probe: int, j: int, workspace: "Workspace",
               slot: int = CHUNK_SLOT) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Direction ``probe`` on tensor ``j`` chunk by chunk: ``(a, b, u[a:b])`` along the plan.
        ``u[a:b]`` is read-only and lives in ``workspace`` slot ``slot`` until the next chunk."""
        if self._cache is not None:
            u = self._cached(probe, j)
            for a, b in self.plan(j):
                yield a, b, u[a:b]
            return
        scale = self._sphere_scale(probe) if self.kind == "sphere" else None
        for a, b, u in self._raw_chunks(probe, j, workspace, slot):
            if scale is not None:
                u.mul_(scale.reshape(scale.shape + (1,) * (u.dim() - scale.dim())))
            yield a, b, u

    @torch.no_grad()
    def rows(self, probe: int, j: int, index: torch.Tensor) -> torch.Tensor:
        """``u[index]`` for a tensor of row indices (an embedding lookup of the direction),
        shape ``index.shape + p.shape[1:]``.  Rademacher: only the tensor's random words are
        drawn and the selected rows unpacked; otherwise the chunks are drawn and gathered."""
        p = self._params[j]
        row = math.prod(p.shape[1:])
        flat_index = index.reshape(-1)
        if self.kind == "rademacher" and self._cache is None and not self.replicate_shape:
            stream = self._stream(probe, j)
            e = flat_index.unsqueeze(1) * row + torch.arange(row, device=p.device)  # element ids
            bit = stream[e >> 3].to(torch.int32).bitwise_right_shift((e & 7).to(torch.int32)).bitwise_and_(1)
            out = (1 - 2 * bit).to(self.draw_dtype(j))
        else:
            out = torch.zeros((flat_index.numel(), row), dtype=self.draw_dtype(j), device=p.device)
            for a, b, u in self.chunks(probe, j, WORKSPACE, slot=CHUNK_SLOT):
                hit = ((flat_index >= a) & (flat_index < b)).unsqueeze(1)  # no boolean indexing: no sync
                out = torch.where(hit, u.reshape(b - a, row)[(flat_index - a).clamp(0, b - a - 1)], out)
        return out.view(tuple(index.shape) + tuple(p.shape[1:]))

    def _stream(self, probe: int, j: int) -> torch.Tensor:
        # The Rademacher stream of tensor j: its chunks' bytes concatenated (= one whole draw).
        p, plan = self._params[j], self.plan(j)
        gen = _fresh(p.device, tensor_seed(self.seed, probe, j))
        row = math.prod(p.shape[1:])
        return torch.cat([_random_bytes((b - a) * row, gen, p.device) for a, b in plan])

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

    @torch.no_grad()
    def chunks(self, j: int, p: torch.Tensor,
               workspace: Workspace = WORKSPACE) -> Iterator[tuple[int, int, torch.Tensor]]:
        """``(a, b, p[a:b] + scale*u[a:b])`` along the chunk plan of tensor ``j`` (each valid
        until the next chunk; workspace slots ``CHUNK_SLOT`` and 8, apart from the slots 0-3 that
        hold the module's other perturbed tensors).  Same kernel and rounding as :meth:`apply`."""
        self.applied.add(j)
        writable = self.directions._cache is None
        for a, b, u in self.directions.chunks(self.probe, j, workspace, slot=CHUNK_SLOT):
            part = chunk_of(p.detach(), a, b)
            out = u if writable and u.dtype == p.dtype else workspace.get(8, u.shape, p.dtype, p.device)
            yield a, b, torch.add(part, u, alpha=self.scale, out=out)

    @torch.no_grad()
    def rows(self, j: int, p: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``(p + scale*u)[index]`` without forming ``p + scale*u``: ``p[index] + scale*u[index]``,
        rounded once to ``p``'s dtype (elementwise the same operation as :meth:`apply`)."""
        self.applied.add(j)
        base = p.detach()[index]
        return torch.add(base, self.directions.rows(self.probe, j, index), alpha=self.scale).to(p.dtype)
