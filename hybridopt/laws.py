"""The direction-law registry: the distributions of the ZO directions u (spec §2, ĝ).

Every law has E[u uᵀ] = I, so ĝ = (1/q) Σ_r [f(x+μu_r) − f(x−μu_r)]/(2μ) u_r estimates ∇ₓf; only
the Gaussian law is the theorem's (L2(c): ĝ is unbiased for the gradient of the Gaussian
smoothing f_μ).  A law turns the counter-based words of :mod:`hybridopt.counter` (word(c) =
splitmix64(key + c·γ)) into the elements of a direction, each element a pure function of (key, e),
and may rescale the whole direction afterwards (the sphere law).

=============  =====================================================  ==========  ===========
law            u (element e)                                          theorem's   kernel
=============  =====================================================  ==========  ===========
gaussian       N(0, 1) by Box–Muller: elements 2c, 2c+1 from the top  yes         0.58 ns/el
               and bottom 24 bits of word(c) (|u| ≤ √(48 ln 2) ≈ 5.77)
rademacher     −1 iff bit e mod 64 of word(⌊e/64⌋) is set, else +1     no          0.30 ns/el
sphere         √d · v/‖v‖ with v Gaussian (uniform on the sphere of   no          Gaussian +
               radius √d); needs one extra draw for ‖v‖                            a norm draw
=============  =====================================================  ==========  ===========

(kernel: ``python -m hybridopt.benchmarks.perf.draws`` on 2 cores, AVX-512; torch's ``normal_``: 3.93.)  The Gaussian's float32 Box–Muller is spelled
out operation by operation in :func:`gaussian_reference` (ln by the atanh series on [√2/2, √2),
sin/cos by Taylor polynomials on a quadrant): the compiled kernel performs the same IEEE
operations, so both give the same bits, and the values agree with float64 Box–Muller of the same
words to ≈ 1e-6 relative (``tests/core/test_counter.py``).

A new law is one :class:`DirectionLaw` subclass registered in :data:`LAWS` with its torch
``reference`` (and, for speed on CPU, a case in ``kernels/counter.cpp`` named by ``kernel``); the
tests are parametrised over :data:`LAWS`, so it gets every test.  An unknown name fails loudly
(:func:`get_law`).
"""
from __future__ import annotations

import functools

import torch

from . import counter
from .counter import _srl, words


class DirectionLaw:
    """One distribution of directions, element by element: ``reference(key, e)`` (torch, any device)
    is the definition; ``kernel`` names the compiled kernel's case for it (None: reference only)."""

    name: str = ""
    #: True for the law the convergence theorem is stated for
    theorem: bool = False
    #: True when the whole direction is rescaled after drawing (:meth:`Directions.scale`)
    normalised: bool = False
    #: the law's number in ``kernels/counter.cpp`` (None: the torch reference everywhere)
    kernel: int | None = None

    def reference(self, key: int, e: torch.Tensor) -> torch.Tensor:
        """u at the int64 tensor of element indices ``e`` (float32, ``e``'s shape)."""
        raise NotImplementedError

    def fill(self, out: torch.Tensor, key: int, start: int, factor=None) -> torch.Tensor:
        """``out`` (flat) ← factor·u[start : start + out.numel()] (:func:`hybridopt.counter.fill`)."""
        return counter.fill(self.kernel, self.reference, out, key, start, factor)

    def fill_rows(self, out: torch.Tensor, key: int, starts: list[int]) -> torch.Tensor:
        return counter.fill_rows(self.kernel, self.reference, out, key, starts)

    def pair(self, w, plus, minus, key, start, mu) -> None:
        """``plus``/``minus`` ← w ± μu (tensors the kernel serves: :func:`counter.kernel_serves`)."""
        counter.pair(self.kernel, w, plus, minus, key, start, mu)

    def axpy(self, p, key, start, factor) -> None:
        """``p`` ← p + factor·u (float32 CPU tensors the kernel serves: :func:`counter.kernel_serves`)."""
        counter.axpy(self.kernel, p, key, start, factor)


# float32 constants of the Box–Muller transform (hex: exactly the kernel's literals)
_F = float.fromhex
_SQRT2, _LN2, _PH = _F("0x1.6a09e6p+0"), _F("0x1.62e430p-1"), _F("0x1.921fb6p-22")
_LOG = [_F(h) for h in ("0x1.745d18p-4", "0x1.c71c72p-4", "0x1.24924ap-3", "0x1.99999ap-3", "0x1.555556p-2")]
_SIN = [_F(h) for h in ("-0x1.ae7f3ep-41", "0x1.612462p-33", "-0x1.ae6456p-26", "0x1.71de3ap-19",
                        "-0x1.a01a02p-13", "0x1.111112p-7", "-0x1.555556p-3")]
_COS = [_F(h) for h in ("0x1.ae7f3ep-45", "-0x1.93974ap-37", "0x1.1eed8ep-29", "-0x1.27e4fcp-22",
                        "0x1.a01a02p-16", "-0x1.6c16c2p-10", "0x1.555556p-5", "-0x1p-1")]


def _exact(op, *xs: torch.Tensor) -> torch.Tensor:
    """``op`` correctly rounded to float32, on every backend: computed in float64, then rounded
    (exact for ÷ and √: float64 has more than 2·24 + 2 bits; torch's float32 ``sqrt`` on CPU is not
    always correctly rounded, the kernel's is)."""
    return op(*(x.double() for x in xs)).to(torch.float32)


def box_muller(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z0, z1) of int64 words ``w``: r = √(−2 ln u1) with u1 = (a+1)·2⁻²⁴ ∈ (0, 1] (a: the top 24
    bits), θ = 2π·b·2⁻²⁴ (b: the bottom 24) = quadrant·π/2 + φ; z0 = r cos θ, z1 = r sin θ.
    Each line is one float32 operation per element, in the kernel's order."""
    a, b = _srl(w, 40), w & 0xFFFFFF
    bits = (a + 1).to(torch.float32).view(torch.int32)            # (a+1) exact in float32
    mant = bits & 0x7FFFFF
    big = (mant | 0x3F800000).view(torch.float32) > _SQRT2        # m ∈ [1, 2) → [√2/2, √2)
    m = (mant | torch.where(big, 0x3F000000, 0x3F800000).to(torch.int32)).view(torch.float32)
    e = (bits >> 23) - 151 + big.to(torch.int32)
    s = _exact(torch.div, m - 1.0, m + 1.0)
    s2 = s * s
    p = torch.full_like(s, _LOG[0])
    for c in _LOG[1:] + [1.0]:
        p = p * s2 + c
    lg = e.to(torch.float32) * _LN2 + (s + s) * p                 # ln u1 = e ln 2 + 2 atanh(s)
    r = _exact(torch.sqrt, lg * -2.0)
    q = b >> 22
    t = (b & 0x3FFFFF).to(torch.float32) * _PH
    t2 = t * t
    sn = torch.full_like(t, _SIN[0])
    for c in _SIN[1:]:
        sn = sn * t2 + c
    sn = t + (t * t2) * sn
    cs = torch.full_like(t, _COS[0])
    for c in _COS[1:]:
        cs = cs * t2 + c
    cs = t2 * cs + 1.0
    odd, neg = (q & 1).bool(), (q & 2).bool()
    c0, s0 = torch.where(odd, -sn, cs), torch.where(odd, cs, sn)
    c0, s0 = torch.where(neg, -c0, c0), torch.where(neg, -s0, s0)
    return r * c0, r * s0


def gaussian_reference(key: int, e: torch.Tensor) -> torch.Tensor:
    z0, z1 = box_muller(words(key, e >> 1))
    return torch.where((e & 1).bool(), z1, z0)


class Gaussian(DirectionLaw):
    name, theorem, kernel = "gaussian", True, 0

    def reference(self, key, e):
        return gaussian_reference(key, e)


class Rademacher(DirectionLaw):
    name, kernel = "rademacher", 1

    def reference(self, key, e):
        bit = (words(key, e >> 6) >> (e & 63)) & 1   # the arithmetic shift keeps bit e mod 64 at 0
        return 1.0 - 2.0 * bit.to(torch.float32)


class Sphere(Gaussian):
    """Gaussian elements; :class:`~hybridopt.directions.Directions` rescales the whole direction."""

    name, theorem, normalised = "sphere", False, True


#: name -> law; the order is the order of documentation tables
LAWS: dict[str, DirectionLaw] = {law.name: law for law in (Gaussian(), Rademacher(), Sphere())}


def get_law(name: str) -> DirectionLaw:
    """The registered law ``name``; an unknown name fails with the valid ones listed."""
    try:
        return LAWS[name]
    except KeyError:
        raise ValueError(f"unknown direction law {name!r}; valid: {', '.join(LAWS)}") from None
