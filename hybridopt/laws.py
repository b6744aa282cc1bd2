"""The direction-law registry: the distributions of the ZO directions u (spec §2, ĝ).

Every law has E[u uᵀ] = I, so ĝ = (1/q) Σ_r [f(x+μu_r) − f(x−μu_r)]/(2μ) u_r estimates ∇ₓf; only
the Gaussian law is the theorem's (L2(c): ĝ is unbiased for the gradient of the Gaussian
smoothing f_μ).  A law fills one *block* of a direction (see :mod:`hybridopt.directions`: a
direction is drawn block by block, each block from its own counter-seeded generator) and may
rescale the whole direction afterwards (the sphere law).

=============  =====================================================  ==========  =========
law            u                                                      theorem's   cost/elem
=============  =====================================================  ==========  =========
gaussian       N(0, I_d) (torch's Box–Muller ``normal_``)             yes         high
rademacher     uniform on {−1, +1}^d: element i is −1 iff bit i mod 8  no          ≈ 1/40
               of byte ⌊i/8⌋ of the block's random 64-bit words
sphere         √d · v/‖v‖ with v Gaussian (uniform on the sphere of   no          high (+1
               radius √d); needs one extra draw for ‖v‖                            norm draw)
=============  =====================================================  ==========  =========

A new law is one :class:`DirectionLaw` subclass registered in :data:`LAWS`; the tests are
parametrised over :data:`LAWS`, so it gets every test.  An unknown name fails loudly
(:func:`get_law`).
"""
from __future__ import annotations

from typing import Callable

import torch


class DirectionLaw:
    """One distribution of directions.  ``fill`` writes one block of i.i.d. coordinates
    (``out`` flat, float32 or float64, contiguous) from ``gen``."""

    name: str = ""
    #: True for the law the convergence theorem is stated for
    theorem: bool = False
    #: True when the whole direction is rescaled after drawing (:meth:`Directions.scale`)
    normalised: bool = False
    #: True when blocks are best spread over the context's draw threads (a serial kernel per block);
    #: False when one :meth:`fill_blocks` call per run is already parallel inside torch
    threaded_blocks: bool = True

    def fill(self, out: torch.Tensor, gen: torch.Generator, tables: "SignTables") -> torch.Tensor:
        raise NotImplementedError

    def fill_blocks(self, out: torch.Tensor, block: int, generator: Callable[[int], torch.Generator],
                    tables: "SignTables", scale: float | torch.Tensor | None = None) -> torch.Tensor:
        """Fill a run of consecutive blocks: ``out`` (flat) holds k blocks of ``block`` elements, the
        last possibly shorter; ``generator(i)`` is the run's i-th block's generator, freshly seeded.
        With ``scale`` (a number or a one-element tensor), write ``scale·u``: the product rounded
        once per element, as ``out.mul_(scale)`` after the draw would.  Must equal :meth:`fill` block
        by block (a law may override it only to save work, never to change a value)."""
        for i, a in enumerate(range(0, out.numel(), block)):
            self.fill(out[a:a + block], generator(i), tables)
        if scale is not None:
            out.mul_(scale)
        return out


class Gaussian(DirectionLaw):
    name, theorem = "gaussian", True

    def fill(self, out, gen, tables):
        return out.normal_(generator=gen)


class Rademacher(DirectionLaw):
    """Signs from random 64-bit words: 64 signs per word, written 8 at a time by a table lookup."""

    name = "rademacher"
    #: the run's sign expansion is one intra-op-parallel index_select: draw threads only compete with it
    #: (measured: 1.72 ns/elem on one draw thread, 2.48 on two; benchmarks/perf/draws.py)
    threaded_blocks = False

    def fill(self, out, gen, tables):
        words = torch.empty(-(-out.numel() // 64), dtype=torch.int64, device=out.device)
        words.random_(-2 ** 63, None, generator=gen)  # full range: 64 bits/word
        return self._signs(out, words, tables)

    def fill_blocks(self, out, block, generator, tables, scale=None):
        """Each block's words drawn from its own generator into one buffer, then one sign expansion for
        the whole run: the same values as block-by-block :meth:`fill` (a block of B elements is B/8 bytes
        of its words, so block i's bytes start at byte i·B/8 of the run), with the expansion's per-call
        cost (a kernel launch, an index conversion, a table lookup) paid once per run, not per block.
        ``scale·u`` is looked up in the table scaled by ``scale``: s·(±1) = ±s is exact, so this is
        bit for bit the product after the draw, without its pass over the run."""
        n = out.numel()
        if block % 64 or n <= block:
            return super().fill_blocks(out, block, generator, tables, scale)
        per = block // 64
        k = -(-n // block)
        words = torch.empty((k - 1) * per + -(-(n - (k - 1) * block) // 64), dtype=torch.int64, device=out.device)
        for i in range(k):
            words[i * per:(i + 1) * per].random_(-2 ** 63, None, generator=generator(i))
        return self._signs(out, words, tables, scale)

    @staticmethod
    def _signs(out, words, tables, scale=None):
        """Element i of ``out`` = the sign of bit i mod 8 of byte ⌊i/8⌋ of ``words`` (times ``scale``)."""
        n = out.numel()
        stream = words.view(torch.uint8)
        table = tables.get(out.device, out.dtype)
        if scale is not None:
            table = table * (scale.to(table.dtype) if torch.is_tensor(scale) else scale)
        full = n // 8 * 8
        torch.index_select(table, 0, stream[: full // 8].to(torch.int32), out=out[:full].view(-1, 8))
        if full < n:
            out[full:] = table[stream[full // 8].long()][: n - full]
        return out


class Sphere(Gaussian):
    """Gaussian blocks; :class:`~hybridopt.directions.Directions` rescales the whole direction."""

    name, theorem, normalised = "sphere", False, True


class SignTables:
    """Per (device, dtype): the 256 × 8 table whose row b holds the signs of byte b's bits,
    least significant first (owned by a sweep context, not a module global)."""

    def __init__(self) -> None:
        self._tables: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def get(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (torch.device(device), dtype)
        if key not in self._tables:
            bits = torch.arange(256).unsqueeze(1).bitwise_right_shift(torch.arange(8)).bitwise_and(1)
            self._tables[key] = (1 - 2 * bits).to(dtype).to(device)
        return self._tables[key]


#: name -> law; the order is the order of documentation tables
LAWS: dict[str, DirectionLaw] = {law.name: law for law in (Gaussian(), Rademacher(), Sphere())}


def get_law(name: str) -> DirectionLaw:
    """The registered law ``name``; an unknown name fails with the valid ones listed."""
    try:
        return LAWS[name]
    except KeyError:
        raise ValueError(f"unknown direction law {name!r}; valid: {', '.join(LAWS)}") from None
