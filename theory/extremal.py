r"""Extremal micro-instances E1–E5 (spec §4, last table): closed-form values and gradients in float64.

They give the tests falsification power: on each, one inequality of §3 is tight (ratio :math:`r^\star`), so an
inflated constant fails a sharpness check and a deflated one fails the inequality itself (mutations M1–M8).

=====  ===========================================  =====================================  =========================
id     function                                     constants                              tight
=====  ===========================================  =====================================  =========================
E1     :math:`e^{y_1}` (x unused)                   :math:`L_{y,0}=0, L_{y,1}=1`           L1(a) (h along +e_1)
E2     :math:`\frac a2\|x\|^2+\frac b2\|y\|^2+cx^\top My`  :math:`L_{x,0}=a,L_{y,0}=b,L_{xy,0}=|c|`  L1(b),(c) (top pair of M)
E3     :math:`\frac\ell2\|x\|^2`                    :math:`\ell`                           L2(a) (equality)
E4     :math:`\frac\ell2w_1|w_1|` at 0             :math:`\ell`                           L2(b) :math:`\sqrt{2/(\pi m)}`, L3(b) ½ (m=1)
E5     :math:`\langle a,x\rangle+\langle b,y\rangle`  :math:`\ell=0`, :math:`G=\|(a,b)\|`   L3(b) ½, L3(c) ¼, L4(a) 1
E6     :math:`e^{\langle c_x,x\rangle+\langle c_y,y\rangle}`  :math:`L_{a,1}=\|c_a\|\|c_b\|/\|c\|`  L1(b), L1(c)_x (h → 0)
=====  ===========================================  =====================================  =========================

E4 with ``g != 0`` (:math:`g w_1+\frac\ell2w_1|w_1|`, "tilted") makes L3(b) tight at the point (ratio 0.905 at
m = 1, ℓμ = g/2) so that the factor 2 of :math:`2(m+2)\|\nabla\varphi\|^2` (and of V(μ)) is caught, and is the
equality case of the Rademacher R2(b) and R3(b) at m = 1.  :func:`rademacher_directions` enumerates
:math:`\{\pm1\}^m`, so Rademacher expectations are exact sums (theory/RADEMACHER.md).

All functions accept batched inputs (leading axes) and return numpy float64. Only numpy and the standard library
are used. :func:`two_point_estimate` is the ZO estimator of spec §2 in numpy (for the tests of L2(c) and L3).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["E1", "E2", "E3", "E4", "E5", "E6", "two_point_estimate", "rademacher_directions", "HGS_KEYS"]

HGS_KEYS = ("L_x0", "L_x1", "L_y0", "L_y1", "L_xy0", "L_xy1")
_erf = np.vectorize(math.erf, otypes=[np.float64])


def _zeros_hgs() -> dict[str, float]:
    return {k: 0.0 for k in HGS_KEYS}


def two_point_estimate(phi, x, mu: float, u):
    r"""Central two-point estimator :math:`\hat g_q=\frac1q\sum_j\frac{\varphi(x+\mu u_j)-\varphi(x-\mu u_j)}{2\mu}u_j`.

    Args:
      phi: vectorised function ``(..., m) -> (...)``.
      x: point, shape ``(m,)``.
      mu: smoothing radius.
      u: directions, shape ``(N, q, m)`` (or ``(N, m)`` for q = 1).
    Returns:
      ``(N, m)`` array of estimates.
    """
    u = np.asarray(u, dtype=np.float64)
    if u.ndim == 2:
        u = u[:, None, :]
    d = (phi(x + mu * u) - phi(x - mu * u)) / (2.0 * mu)
    return np.mean(d[..., None] * u, axis=1)


def rademacher_directions(m: int) -> np.ndarray:
    """All 2^m sign vectors of {−1, +1}^m, shape (2^m, m): an expectation over a Rademacher u is their mean."""
    if not 1 <= m <= 16:
        raise ValueError(f"enumeration of {{-1,+1}}^m is for 1 <= m <= 16, got m={m}")
    bits = (np.arange(2 ** m)[:, None] >> np.arange(m)) & 1
    return (1.0 - 2.0 * bits).astype(np.float64)


class E1:
    r"""E1: :math:`f(x,y)=e^{y_1}` on :math:`\mathbb R^{d_x}\times\mathbb R^{d_y}` (x unused).

    HGS with :math:`L_{y,0}=0`, :math:`L_{y,1}=1` (all others 0): :math:`\|\nabla^2_{yy}f\|=e^{y_1}=\|\nabla f\|`.
    L1(a) holds with equality for :math:`h=(0,h_1e_1)`, :math:`h_1>0`; the L1(b), (c) ratios tend to 1 as h → 0.
    """

    name = "E1"

    def __init__(self, d_x: int = 1, d_y: int = 1):
        self.d_x, self.d_y = int(d_x), int(d_y)

    def value(self, x, y):
        return np.exp(np.asarray(y, dtype=np.float64)[..., 0])

    def grad(self, x, y):
        """``(grad_x, grad_y)``."""
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        gy = np.zeros_like(y)
        gy[..., 0] = np.exp(y[..., 0])
        return np.zeros_like(x), gy

    def constants(self) -> dict[str, float]:
        c = _zeros_hgs()
        c.update(L_y1=1.0, n=1, d_x=self.d_x, d_y=self.d_y)
        return c


class E2:
    r"""E2: :math:`f=\frac a2\|x\|^2+\frac b2\|y\|^2+c\,x^\top My` with :math:`\|M\|=1`, :math:`a,b\ge0`.

    Constants :math:`L_{x,0}=a`, :math:`L_{y,0}=b`, :math:`L_{xy,0}=|c|`, :math:`L_{\cdot,1}=0`. L1(b) and both L1(c)
    bounds are equalities for :math:`h=(\alpha u_1,\beta v_1)` (top singular pair of M) with
    :math:`c\,\alpha\beta\ge0` (see :meth:`sharp_direction`).
    """

    name = "E2"

    def __init__(self, a: float, b: float, c: float, M):
        M = np.asarray(M, dtype=np.float64)
        U, sv, Vt = np.linalg.svd(M)
        self.M = M / sv[0]
        self.a, self.b, self.c = float(a), float(b), float(c)
        self.u1, self.v1 = U[:, 0], Vt[0]
        self.d_x, self.d_y = M.shape

    @classmethod
    def random(cls, rng: np.random.Generator, d_x: int, d_y: int, a: float, b: float, c: float) -> "E2":
        return cls(a, b, c, rng.standard_normal((d_x, d_y)))

    def value(self, x, y):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        return (0.5 * self.a * np.sum(x * x, -1) + 0.5 * self.b * np.sum(y * y, -1)
                + self.c * np.einsum("...i,ij,...j->...", x, self.M, y))

    def grad(self, x, y):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        return self.a * x + self.c * y @ self.M.T, self.b * y + self.c * x @ self.M

    def hessian_blocks(self):
        """``(H_xx, H_yy, H_xy)`` (constant)."""
        return self.a * np.eye(self.d_x), self.b * np.eye(self.d_y), self.c * self.M

    def sharp_direction(self, alpha: float, beta: float):
        r"""``(h_x, h_y) = (±|alpha| u_1, |beta| v_1)`` with the sign making :math:`c\,h_x^\top Mh_y\ge0`."""
        sgn = 1.0 if self.c >= 0 else -1.0
        return sgn * abs(alpha) * self.u1, abs(beta) * self.v1

    def constants(self) -> dict[str, float]:
        c = _zeros_hgs()
        c.update(L_x0=self.a, L_y0=self.b, L_xy0=abs(self.c), n=1, d_x=self.d_x, d_y=self.d_y)
        return c


class E3:
    r"""E3: :math:`\varphi(x)=\frac\ell2\|x\|^2` on :math:`\mathbb R^m`; :math:`\varphi_\mu=\varphi+\frac{\ell\mu^2m}2`
    (L2(a) equality), :math:`\nabla\varphi_\mu=\nabla\varphi=\ell x`, and L3(a)'s left side is 0."""

    name = "E3"

    def __init__(self, ell: float, m: int):
        self.ell, self.m = float(ell), int(m)

    def phi(self, x):
        return 0.5 * self.ell * np.sum(np.asarray(x, dtype=np.float64) ** 2, -1)

    def grad(self, x):
        return self.ell * np.asarray(x, dtype=np.float64)

    def smoothed_value(self, x, mu: float):
        return self.phi(x) + 0.5 * self.ell * mu**2 * self.m

    def smoothed_grad(self, x, mu: float):
        return self.grad(x)

    def constants(self) -> dict[str, float]:
        return {"ell": self.ell, "m": self.m}


class E4:
    r"""E4: :math:`\varphi(w)=g\,w_1+\frac\ell2w_1|w_1|` on :math:`\mathbb R^m` (:math:`C^{1,1}`, gradient
    :math:`(g+\ell|w_1|)e_1` is :math:`\ell`-Lipschitz); the spec's E4 is g = 0.

    Closed forms with :math:`a=x_1`, :math:`\sigma=\mu`, :math:`\phi_N` the normal density:
    :math:`\varphi_\mu(x)=\frac\ell2\big[(a^2+\sigma^2)\,\mathrm{erf}(a/(\sigma\sqrt2))+2a\sigma\phi_N(a/\sigma)\big]`
    and :math:`\nabla\varphi_\mu(x)=\ell\big[a\,\mathrm{erf}(a/(\sigma\sqrt2))+2\sigma\phi_N(a/\sigma)\big]e_1`.
    (plus :math:`g\,a` and :math:`g\,e_1`).  At :math:`x=0` and g = 0: L2(b) ratio :math:`\sqrt{2/(\pi m)}`,
    :math:`\mathbb E\|\hat g_1\|^2=\frac{\ell^2\mu^2}4(3m+12)` (L3(b) ratio ½ at m = 1); for any g see
    :meth:`second_moment_at_zero`.
    """

    name = "E4"

    def __init__(self, ell: float, m: int, g: float = 0.0):
        self.ell, self.m, self.g = float(ell), int(m), float(g)

    def phi(self, w):
        w1 = np.asarray(w, dtype=np.float64)[..., 0]
        return self.g * w1 + 0.5 * self.ell * w1 * np.abs(w1)

    def grad(self, w):
        w = np.asarray(w, dtype=np.float64)
        g = np.zeros_like(w)
        g[..., 0] = self.g + self.ell * np.abs(w[..., 0])
        return g

    @staticmethod
    def _pdf(t):
        return np.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)

    def smoothed_value(self, x, mu: float):
        a = np.asarray(x, dtype=np.float64)[..., 0]
        return self.g * a + 0.5 * self.ell * ((a * a + mu * mu) * _erf(a / (mu * math.sqrt(2)))
                                              + 2 * a * mu * self._pdf(a / mu))

    def smoothed_grad(self, x, mu: float):
        x = np.asarray(x, dtype=np.float64)
        a = x[..., 0]
        g = np.zeros_like(x)
        g[..., 0] = self.g + self.ell * (a * _erf(a / (mu * math.sqrt(2))) + 2 * mu * self._pdf(a / mu))
        return g

    def second_moment_at_zero(self, mu: float) -> float:
        r""":math:`\mathbb E\|\hat g_1(0)\|^2=g^2(m+2)+g\ell\mu\sqrt{2/\pi}(2m+6)+\frac{\ell^2\mu^2}{4}(3m+12)`
        (Gaussian u: :math:`\hat g_1=(gu_1+\frac{\ell\mu}2u_1|u_1|)u`, with :math:`\mathbb E[u_1^2\|u\|^2]=m+2`,
        :math:`\mathbb E[|u_1|^3\|u\|^2]=\sqrt{2/\pi}(2m+6)`, :math:`\mathbb E[u_1^4\|u\|^2]=3m+12`)."""
        g, lm = self.g, self.ell * mu
        return g * g * (self.m + 2) + g * lm * math.sqrt(2 / math.pi) * (2 * self.m + 6) + 0.25 * lm**2 * (3 * self.m + 12)

    def constants(self) -> dict[str, float]:
        return {"ell": self.ell, "m": self.m}


class E5:
    r"""E5: :math:`f_i(x,y)=\langle a,x\rangle+\langle b,y\rangle` for every :math:`i\in[n]` (and
    :math:`\varphi(x)=\langle a,x\rangle` for L2/L3).

    All HGS constants 0, :math:`\ell=0`, :math:`G=\|(a,b)\|`. Exact facts: :math:`\hat g_1=\langle a,u\rangle u`,
    :math:`\mathbb E\|\hat g_1\|^2=(m+2)\|a\|^2` (L3(b) ratio ½, L3(c) ratio ¼); with :math:`a=0` the y-drift is
    :math:`k\eta_y\|b\|` (L4(a) equality); with :math:`b=0`,
    :math:`\mathbb E\|x_{t,k}-x_t\|^2=\eta_x^2(k^2+k(d_x+1)/q)\|a\|^2` (see :meth:`drift_x_second_moment`).
    """

    name = "E5"

    def __init__(self, a, b, n: int = 1):
        self.a = np.atleast_1d(np.asarray(a, dtype=np.float64))
        self.b = np.atleast_1d(np.asarray(b, dtype=np.float64))
        self.n = int(n)
        self.d_x, self.d_y = self.a.size, self.b.size

    def value(self, x, y):
        return np.asarray(x, dtype=np.float64) @ self.a + np.asarray(y, dtype=np.float64) @ self.b

    def grad(self, x, y):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        return np.broadcast_to(self.a, x.shape).copy(), np.broadcast_to(self.b, y.shape).copy()

    def phi(self, x):
        return np.asarray(x, dtype=np.float64) @ self.a

    def smoothed_grad(self, x, mu: float):
        return np.broadcast_to(self.a, np.shape(x)).copy()

    @property
    def G(self) -> float:
        return float(np.sqrt(self.a @ self.a + self.b @ self.b))

    def drift_x_second_moment(self, k: int, eta_x: float, q: int) -> float:
        r""":math:`\mathbb E\|x_{t,k}-x_t\|^2=\eta_x^2\big(k^2\|a\|^2+\frac kq(d_x+1)\|a\|^2\big)` (exact, any b)."""
        return eta_x**2 * (k * k + k * (self.d_x + 1) / q) * float(self.a @ self.a)

    def constants(self) -> dict[str, float]:
        c = _zeros_hgs()
        c.update(G=self.G, n=self.n, d_x=self.d_x, d_y=self.d_y, ell=0.0, m=self.d_x)
        return c


class E6:
    r"""E6: :math:`f(x,y)=e^{\langle c_x,x\rangle+\langle c_y,y\rangle}` (E1 is :math:`c=e_{y_1}`): the extremal
    instance of the :math:`L_{\cdot,1}` terms of every block.

    :math:`\nabla f=f\,c`, :math:`\nabla^2_{ab}f=f\,c_ac_b^\top`, so HGS holds with
    :math:`L_{x,1}=\|c_x\|^2/\|c\|`, :math:`L_{xy,1}=\|c_x\|\|c_y\|/\|c\|`, :math:`L_{y,1}=\|c_y\|^2/\|c\|`
    (equalities) and all :math:`L_{\cdot,0}=0`.  Along :math:`h=(\alpha c_x/\|c_x\|,\beta c_y/\|c_y\|)`,
    :math:`\alpha,\beta\ge0`, the L1(b) and L1(c)_x ratios tend to 1 as h → 0; with
    :math:`\|c_x\|\alpha=\|c_y\|\beta` the cross term :math:`2L_{xy,1}\|h_x\|\|h_y\|` of :math:`q_1` carries half
    of L1(b)'s right-hand side, and with :math:`h_x=0` the term :math:`\Lambda^x_1\bar g` is all of L1(c)_x's.
    """

    name = "E6"

    def __init__(self, c_x, c_y):
        self.c_x = np.atleast_1d(np.asarray(c_x, dtype=np.float64))
        self.c_y = np.atleast_1d(np.asarray(c_y, dtype=np.float64))
        self.d_x, self.d_y = self.c_x.size, self.c_y.size
        self.nx, self.ny = float(np.linalg.norm(self.c_x)), float(np.linalg.norm(self.c_y))
        self.nc = math.hypot(self.nx, self.ny)
        if self.nc == 0:
            raise ValueError("E6 needs c != 0")

    def value(self, x, y):
        return np.exp(np.asarray(x, dtype=np.float64) @ self.c_x + np.asarray(y, dtype=np.float64) @ self.c_y)

    def grad(self, x, y):
        v = self.value(x, y)[..., None]
        return v * self.c_x, v * self.c_y

    def phi(self, x, y=None):
        """x ↦ f(x, y) (y = 0 by default), the ZO block's function."""
        return self.value(x, np.zeros(self.d_y) if y is None else y)

    def sharp_direction(self, alpha: float, beta: float):
        """``(h_x, h_y) = (alpha c_x/||c_x||, beta c_y/||c_y||)`` (zero blocks where c_a = 0)."""
        hx = alpha * self.c_x / self.nx if self.nx else np.zeros(self.d_x)
        hy = beta * self.c_y / self.ny if self.ny else np.zeros(self.d_y)
        return hx, hy

    def constants(self) -> dict[str, float]:
        c = _zeros_hgs()
        c.update(L_x1=self.nx**2 / self.nc, L_xy1=self.nx * self.ny / self.nc, L_y1=self.ny**2 / self.nc,
                 n=1, d_x=self.d_x, d_y=self.d_y)
        return c
