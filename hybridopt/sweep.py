"""The sweep context: everything a ZO sweep needs besides the maths, owned by one optimizer.

A *sweep* is one pass of the ZO machinery over the ZO block: a probe evaluation (which also
applies the pending update of the previous step, see :mod:`hybridopt.zo_rules`), or a flush.
The context holds, instead of module globals:

* the **chunk limit**: tensors above it are probed/updated in row chunks, so no temporary is
  as large as a big matrix (memory, not maths);
* an **arena** of scratch memory handed out as named *leases* in stack order: a lease is
  released before any lease taken after it, so two live leases never overlap (asserted);
* **counters** (elements drawn, written, swept) and optional **phase timers** for benchmarks.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

#: row-chunking threshold (elements) for probes and updates of one tensor
CHUNK_ELEMENTS = 1 << 22

class Lease:
    """A named slice of arena memory, valid until :meth:`release`."""

    __slots__ = ("name", "tensor", "_arena", "_key", "_start", "_stop", "released")

    def __init__(self, name, tensor, arena, key, start, stop):
        self.name, self.tensor, self._arena, self._key = name, tensor, arena, key
        self._start, self._stop, self.released = start, stop, False

    def release(self) -> None:
        self._arena._release(self)

    def __enter__(self) -> torch.Tensor:
        return self.tensor

    def __exit__(self, *exc) -> None:
        self.release()


class Arena:
    """Scratch memory per (dtype, device) with stack-ordered leases.

    Reusing one buffer matters: a fresh tensor-sized allocation is page-faulted in on every
    use (the main cost of a sweep after the random numbers themselves).  Leases are taken and
    released last-in first-out, so nested modules (a module and its children) get disjoint
    slices and no slice is handed out twice while alive; a release out of order fails.
    """

    def __init__(self) -> None:
        self._bufs: dict[tuple, torch.Tensor] = {}
        self._stacks: dict[tuple, list[Lease]] = {}
        self._high: dict[tuple, int] = {}

    def lease(self, name: str, shape, dtype: torch.dtype, device) -> Lease:
        key = (dtype, torch.device(device))
        stack = self._stacks.setdefault(key, [])
        start = stack[-1]._stop if stack else 0
        n = math.prod(shape)
        stop = start + n
        buf = self._bufs.get(key)
        if buf is None or buf.numel() < stop:
            if stack:  # live leases keep views of the old buffer; the new one serves from here on
                buf = torch.empty(max(stop, 2 * buf.numel() if buf is not None else 0), dtype=dtype, device=device)
            else:
                buf = torch.empty(max(stop, self._high.get(key, 0)), dtype=dtype, device=device)
            self._bufs[key] = buf
        self._high[key] = max(self._high.get(key, 0), stop)
        lease = Lease(name, buf[start:stop].view(shape), self, key, start, stop)
        stack.append(lease)
        return lease

    def _release(self, lease: Lease) -> None:
        stack = self._stacks[lease._key]
        if lease.released:
            return
        if not stack or stack[-1] is not lease:
            live = ", ".join(x.name for x in stack)
            raise AssertionError(f"arena lease {lease.name!r} released out of order (live: {live})")
        stack.pop()
        lease.released = True

    def live(self) -> list[str]:
        return [x.name for s in self._stacks.values() for x in s]

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self._bufs.values())

    def clear(self) -> None:
        if self.live():
            raise AssertionError(f"arena cleared with live leases: {', '.join(self.live())}")
        self._bufs.clear()
        self._high.clear()


@dataclass
class Counters:
    """Elements of directions drawn, of ZO weights written, and of ZO weights read or written
    whole tensor by whole tensor (``swept``), since the last :meth:`take`; embedding lookups,
    which draw and read only some rows, are counted apart (``rows_drawn``, ``rows_read``)."""

    drawn: int = 0
    written: int = 0
    swept: int = 0
    rows_drawn: int = 0
    rows_read: int = 0

    def take(self) -> tuple[int, int, int, int, int]:
        out = (self.drawn, self.written, self.swept, self.rows_drawn, self.rows_read)
        self.drawn = self.written = self.swept = self.rows_drawn = self.rows_read = 0
        return out

    def save(self) -> tuple[int, ...]:
        return (self.drawn, self.written, self.swept, self.rows_drawn, self.rows_read)

    def restore(self, saved: tuple[int, ...]) -> None:
        self.drawn, self.written, self.swept, self.rows_drawn, self.rows_read = saved


@dataclass
class PhaseTimer:
    """Wall time per phase of the ZO machinery, summed until :meth:`reset`: ``draw`` (generating
    directions, μ·u and an update's coefficient·u included: they are drawn scaled), ``perturb``
    (forming p ± μu), ``update`` (applying a ZO update, its
    regeneration of u included; draw time inside it is counted in both).  With ``sync`` (GPU)
    the device is synchronised around each phase; ``around(name)`` (a context-manager factory,
    e.g. ``torch.profiler.record_function``) labels each phase for a profiler."""

    sync: Callable[[], None] | None = None
    around: Callable[[str], Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    #: the same, excluding the phases nested inside (their sum is the machinery's total time)
    exclusive: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    _stack: list[float] = field(default_factory=list)

    def reset(self) -> None:
        self.seconds.clear()
        self.exclusive.clear()
        self.calls.clear()

    @property
    def total(self) -> float:
        return sum(self.exclusive.values())


_UNTIMED = contextlib.nullcontext()


class SweepContext:
    """Owned by one :class:`~hybridopt.optimizer.HybridOptimizer` (and used by its problem)."""

    def __init__(self, chunk_elements: int = CHUNK_ELEMENTS) -> None:
        if chunk_elements < 1:
            raise ValueError(f"chunk_elements must be >= 1, got {chunk_elements}")
        self.chunk_elements = int(chunk_elements)
        self.arena = Arena()
        self.counters = Counters()
        self.timer: PhaseTimer | None = None
        self._plans: dict[tuple, list[tuple[int, int]]] = {}

    # -- accounting -----------------------------------------------------------------------------
    def phase(self, name: str) -> contextlib.AbstractContextManager:
        """A context timing phase ``name`` when a timer is on; otherwise one shared no-op context
        (entered for every chunk of every sweep, so it must cost next to nothing)."""
        return _UNTIMED if self.timer is None else self._timed(name, self.timer)

    @contextlib.contextmanager
    def _timed(self, name: str, timer: PhaseTimer) -> Iterator[None]:
        if timer.sync is not None:
            timer.sync()
        t0 = time.perf_counter()
        timer._stack.append(0.0)          # time of the phases nested in this one
        try:
            with (timer.around(f"zo.{name}") if timer.around is not None else contextlib.nullcontext()):
                yield
        finally:
            if timer.sync is not None:
                timer.sync()
            dt = time.perf_counter() - t0
            nested = timer._stack.pop()
            if timer._stack:
                timer._stack[-1] += dt
            timer.seconds[name] = timer.seconds.get(name, 0.0) + dt
            timer.exclusive[name] = timer.exclusive.get(name, 0.0) + dt - nested
            timer.calls[name] = timer.calls.get(name, 0) + 1

    def row_chunks(self, shape: torch.Size) -> list[tuple[int, int]]:
        """Row ranges [a, b) along dim 0 covering a tensor of ``shape``: one range when the
        tensor has at most :attr:`chunk_elements` elements, else ranges of at most that many
        elements (at least one row each)."""
        key = (tuple(shape), self.chunk_elements)
        plan = self._plans.get(key)
        if plan is None:      # asked for every chunk of every sweep: computed once per shape
            n = math.prod(shape)
            rows = shape[0] if len(shape) else 1
            if n <= self.chunk_elements or len(shape) == 0 or rows == 1:
                plan = [(0, rows)]
            else:
                k = max(1, self.chunk_elements // (n // rows))
                bounds = list(range(0, rows, k)) + [rows]
                plan = list(zip(bounds[:-1], bounds[1:]))
            self._plans[key] = plan
        return plan
