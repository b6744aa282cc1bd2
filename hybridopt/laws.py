"""The direction-law registry: the distributions of the ZO directions u (spec §2, ĝ).

Every law has E[u uᵀ] = I, so ĝ = (1/q) Σ_r [f(x+μu_r) − f(x−μu_r)]/(2μ) u_r estimates ∇ₓf; only
the Gaussian law is the theorem's (L2(c): ĝ is unbiased for the gradient of the Gaussian
smoothing f_μ).  A law turns the counter-based words of :mod:`hybridopt.counter` (word(c) =
splitmix64(key + c·γ)) into the elements of a direction, each element a pure function of (key, e),
and may rescale the whole direction afterwards (the sphere law).

=============  =====================================================  ==========  ===========
law            u (element e)                                          theorem's   kernel
=============  =====================================================  ==========  ===========
gaussian       N(0, 1) by Box–Muller: elements 2c, 2c+1 from the top  yes         0.35 ns/el
               and bottom 24 bits of word(c) (|u| ≤ √(48 ln 2) ≈ 5.77)
rademacher     −1 iff bit e mod 64 of word(⌊e/64⌋) is set, else +1     no          0.16 ns/el
sphere         √d · v/‖v‖ with v Gaussian (uniform on the sphere of   no          Gaussian +
               radius √d); needs one extra draw for ‖v‖                            a norm draw
=============  =====================================================  ==========  ===========

(kernel: ``python -m hybridopt.benchmarks.perf.draws --threads 2`` on 2 cores, AVX-512, where a plain
in-place pass takes 0.14 and torch's ``normal_`` 3.40 ns/el.)  The Gaussian's float32 Box–Muller is
spelled out operation by operation in :func:`box_muller` (−2 ln u1 by a minimax polynomial of the
atanh form on [√2/2, √2), sin/cos by minimax polynomials on an octant, mirrored): the compiled
kernel performs the same IEEE operations, so both give the same bits.  Against float64
Box–Muller of the same words, radius and angle over all their 2²⁴ values each: error at most
1.6e-7 relative, about one float32 rounding (``tests/core/test_laws.py`` checks ≤ 2e-7
exhaustively, and |error| ≤ 4e-7·max(1, |u|) on elements of a drawn direction).

A new law is one :class:`DirectionLaw` subclass registered in :data:`LAWS` with its torch
``reference`` (and, for speed on CPU, a case in ``kernels/counter.cpp`` named by ``kernel``); the
tests are parametrised over :data:`LAWS`, so it gets every test.  An unknown name fails loudly
(:func:`get_law`).
"""
from __future__ import annotations

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

    def pair(self, w, plus, minus, key, start, mu) -> bool:
        """``plus``/``minus`` ← w ± μu in one pass; False (nothing written) where the compiled
        kernel does not serve the tensors (:func:`counter.pair`)."""
        return counter.pair(self.kernel, w, plus, minus, key, start, mu)

    def axpy(self, p, key, start, factor) -> bool:
        """``p`` ← p + factor·u in one pass; False (``p`` untouched) where the compiled kernel does
        not serve it (:func:`counter.axpy`)."""
        return counter.axpy(self.kernel, p, key, start, factor)


# float32 constants of the Box–Muller transform (hex: exactly the kernel's literals).  The
# polynomials are minimax fits (relative error): Q(s²) of −4 atanh(s)/s on |s| ≤ 3 − 2√2 (8e-10),
# (sin t − t)/t³ (4e-9) and (cos t − 1)/t² (4e-8) on [0, π/4], in powers of s², t².
_F = float.fromhex
_M2LN2, _PH = _F("-0x1.62e430p+0"), _F("0x1.921fb6p-22")     # −2 ln 2; (π/4)·2⁻²¹
_LOG = [_F(h) for h in ("-0x1.31e0dep-1", "-0x1.995ed0p-1", "-0x1.55557ap+0", "-0x1p+2")]
_SIN = [_F(h) for h in ("-0x1.9943e2p-13", "0x1.11073ap-7", "-0x1.555546p-3")]
_COS = [_F(h) for h in ("-0x1.644d62p-10", "0x1.553e80p-5", "-0x1.ffffb2p-2")]


def _horner(coeffs: list[float], x: torch.Tensor) -> torch.Tensor:
    """c0·xⁿ⁻¹ + … + cₙ₋₁ by Horner's rule: one float32 product and one sum per step."""
    p = torch.full_like(x, coeffs[0])
    for c in coeffs[1:]:
        p = p * x + c
    return p


def _exact(op, *xs: torch.Tensor) -> torch.Tensor:
    """``op`` correctly rounded to float32, on every backend: computed in float64, then rounded
    (exact for ÷ and √: float64 has more than 2·24 + 2 bits; torch's float32 ``sqrt`` on CPU is not
    always correctly rounded, the kernel's is)."""
    return op(*(x.double() for x in xs)).to(torch.float32)


def box_muller(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z0, z1) of int64 words ``w``: r = √(−2 ln u1) with u1 = (a+1)·2⁻²⁴ ∈ (0, 1] (a: the top 24
    bits), θ = 2π·b·2⁻²⁴ (b: the bottom 24) = octant·π/4 ± t; z0 = r cos θ, z1 = r sin θ.
    Each line is one float32 operation per element, in the kernel's order (selections are exact)."""
    a, b = _srl(w, 40), w & 0xFFFFFF
    bits = (a + 1).to(torch.float32).view(torch.int32)            # (a+1) exact in float32
    mant = bits & 0x7FFFFF
    big = mant > 0x3504F3                                         # 1.mant > √2: m ∈ [√2/2, √2)
    m = (mant | torch.where(big, 0x3F000000, 0x3F800000).to(torch.int32)).view(torch.float32)
    e = (bits >> 23) - 151 + big.to(torch.int32)                  # (a+1) = m·2^(e+24)
    s = _exact(torch.div, m - 1.0, m + 1.0)                       # ln m = 2 atanh(s)
    q = _horner(_LOG, s * s)
    r = _exact(torch.sqrt, e.to(torch.float32) * _M2LN2 + s * q)  # −2 ln u1 = e(−2 ln 2) + s·Q(s²)
    o, i = b >> 21, b & 0x1FFFFF                                  # octant; t from the other 21 bits,
    odd = (o & 1).bool()                                          # mirrored in odd octants
    t = torch.where(odd, 0x200000 - i, i).to(torch.float32) * _PH
    t2 = t * t
    sn = t + (t * t2) * _horner(_SIN, t2)
    cs = t2 * _horner(_COS, t2) + 1.0
    # (cos θ, sin θ) by octant 0..7: (c,s) (s,c) (−s,c) (−c,s) (−c,−s) (−s,−c) (s,−c) (c,−s)
    swap = (((o + 1) >> 1) & 1).bool()
    x, y = torch.where(swap, sn, cs), torch.where(swap, cs, sn)
    x = torch.where((((o + 2) >> 2) & 1).bool(), -x, x)
    y = torch.where((o >> 2).bool(), -y, y)
    return r * x, r * y


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
