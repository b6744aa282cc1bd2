"""Synthetic families A–D with certified constants (spec §4; D: ``theory/FAMILIES.md``), in torch float64.

Every family is a finite sum f = (1/n) Σ_i f_i over z = (x, y) with x ∈ R^{d_x} (ZO block) and
y ∈ R^{d_y} (FO block), and implements the simulator's :class:`theory.objective.Objective` protocol
(``loss``, ``constants``, ``start``, ``f``/``grad``, ``gbar``, ``domain_ratio``).  All four are *ridge functions
in x* built on ψ(s) = log cosh s
(ψ ≥ 0, ψ' = tanh, ψ'' = sech² ∈ (0, 1]), so f ≥ 0 (f_lb = 0, Δ̄ = f(z₀)) and the Gaussian
smoothing f_{i,μ}(x, y) = E f_i(x + μu, y) reduces to 1-D expectations E ψ(c + μ‖p‖Z), computed
by quadrature (:func:`gaussian_expectation`).

Conventions (all methods)
-------------------------
* Inputs may be numpy arrays, lists or torch tensors; they are converted with
  ``torch.as_tensor(..., dtype=float64)``.  **Outputs are always torch float64 tensors**
  (``constants()`` returns python floats).
* Points are vectorised over leading replicate dimensions: x of shape (*R, d_x), y of shape
  (*R, d_y); x and y broadcast against each other.  Per-component values have shape (*R),
  block gradients (*R, d_x) / (*R, d_y), Hessian blocks (*R, d_x, d_x), (*R, d_x, d_y),
  (*R, d_y, d_y).
* Component indices i are 0-based (i ∈ {0, …, n−1}).
* Cost of f_i, ∇f_i: O(m·d_x) per replicate; d_x × d_x matrices only in ``hessian_blocks``.

Constants (``constants()``) are certified by Lemmas 4.1–4.4 (and Lemma D of FAMILIES.md): spectral norms by
float64 SVD times (1 + 1e−9).  Every family is used in the A3(ii) form (``case = 'ii'``, G_+ = G):
A on 𝒴 = R^{d_y} (global bound, S1), B on the box of Lemma 4.3, C on the ball of Lemma 4.4, D on its box.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

__all__ = ["Family", "FamilyA", "FamilyB", "FamilyC", "FamilyD", "make_family", "FAMILIES",
           "gaussian_expectation", "psi", "dpsi", "ddpsi", "CERT"]

DT = torch.float64
#: Safety factor applied to float64 spectral norms (spec §4, "Certifying spectral norms").
CERT = 1.0 + 1e-9
_LOG2 = math.log(2.0)

# --------------------------------------------------------------------------- ψ = log cosh


def psi(s: torch.Tensor) -> torch.Tensor:
    """ψ(s) = log cosh s, computed stably as logaddexp(s, −s) − log 2."""
    return torch.logaddexp(s, -s) - _LOG2


def dpsi(s: torch.Tensor) -> torch.Tensor:
    """ψ'(s) = tanh s."""
    return torch.tanh(s)


def ddpsi(s: torch.Tensor) -> torch.Tensor:
    """ψ''(s) = sech² s = 1 − tanh² s."""
    t = torch.tanh(s)
    return 1.0 - t * t


# --------------------------------------------------------------------- 1-D Gaussian quadrature

_GH_T, _GH_W = np.polynomial.hermite.hermgauss(80)
_GH_Z = torch.tensor(_GH_T * math.sqrt(2.0), dtype=DT)
_GH_WN = torch.tensor(_GH_W / math.sqrt(math.pi), dtype=DT)
_GL_T, _GL_W = np.polynomial.legendre.leggauss(8)
#: Largest smoothing scale μ‖p‖ for which 80-node Gauss–Hermite is used (error ≲ 1e−15 for ψ, tanh).
GH_MAX_SCALE = 0.7


def _composite_nodes(smax: float) -> tuple[torch.Tensor, torch.Tensor]:
    """8-point Gauss–Legendre panels of width ≤ 0.5/smax on z ∈ [−13, 13], Gaussian weights folded in."""
    panels = int(math.ceil(26.0 * max(smax, 1.0) / 0.5))
    h = 26.0 / panels
    a = -13.0 + h * np.arange(panels)
    z = (a[:, None] + 0.5 * h * (_GL_T[None, :] + 1.0)).ravel()
    w = (0.5 * h * np.tile(_GL_W, panels)) * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return torch.tensor(z, dtype=DT), torch.tensor(w, dtype=DT)


def gaussian_expectation(fn, c: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """E fn(c + scale·Z), Z ~ N(0, 1), elementwise over broadcast(c, scale).

    80-node Gauss–Hermite (spec §4) when max scale ≤ 0.7.  For larger scales Gauss–Hermite loses
    accuracy on ψ and tanh (complex poles at ±iπ/2 come within π/(2·scale) of the real axis in
    the z variable: measured error 3e−7 at scale 2, 2e−2 at scale 8), so a composite 8-point
    Gauss–Legendre rule with panels of width 0.5/scale on [−13, 13] is used instead (error
    ≲ 1e−14 for scale ≤ 20 against a 30-digit mpmath reference; see FAMILIES.md).
    """
    c, scale = torch.broadcast_tensors(torch.as_tensor(c, dtype=DT), torch.as_tensor(scale, dtype=DT))
    smax = float(scale.abs().max()) if scale.numel() else 0.0
    if smax <= GH_MAX_SCALE:
        z, w = _GH_Z, _GH_WN
    else:
        z, w = _composite_nodes(smax)
    return (fn(c[..., None] + scale[..., None] * z) * w).sum(-1)


# ----------------------------------------------------------------------------------- helpers


def _t(a) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a if a.dtype == DT else a.to(DT)
    return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=DT)


def _specnorm(M: torch.Tensor) -> torch.Tensor:
    """Spectral norms of the trailing 2-D matrices (float64 SVD)."""
    return torch.linalg.matrix_norm(M, ord=2)


def _mv(M: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(…, a, b) @ (…, b) -> (…, a) with broadcasting (one GEMM when M is a single matrix)."""
    if M.dim() == 2:
        return v @ M.T
    return (M @ v.unsqueeze(-1)).squeeze(-1)


def _mtv(M: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(…, a, b)ᵀ @ (…, a) -> (…, b) with broadcasting (one GEMM when M is a single matrix)."""
    if M.dim() == 2:
        return v @ M
    return (v.unsqueeze(-2) @ M).squeeze(-2)


def _rmv(W: torch.Tensor, idx, v: torch.Tensor) -> torch.Tensor:
    """``W[idx] @ v`` for a stack W (n, a, b), broadcasting idx against v's leading dims -> (…, a).

    Speed (same value up to summation order): when the components are few compared with the
    rows of v, one GEMM against all n·a rows followed by a gather beats copying W[idx] (the
    copy is |lead|·a·b elements, the GEMM rows·n·a·b flops).
    """
    if not isinstance(idx, torch.Tensor):
        return _mv(W[idx], v)
    n, a, b = W.shape
    vl = v.shape[:-1]
    lead = vl if idx.shape == vl else torch.broadcast_shapes(idx.shape, vl)
    rows, out_rows = math.prod(vl), math.prod(lead)
    if rows * n > 16 * max(out_rows, 1):
        return _mv(W[idx], v)
    full = (v.reshape(-1, b) @ W.reshape(n * a, b).T).reshape(*vl, n, a)
    full = full.expand(*lead, n, a)
    ix = idx.expand(lead).reshape(*lead, 1, 1).expand(*lead, 1, a)
    return torch.gather(full, -2, ix).squeeze(-2)


def _rmtv(W: torch.Tensor, idx, t: torch.Tensor) -> torch.Tensor:
    """``W[idx]ᵀ @ t`` for a stack W (n, a, b) and t (…, a) -> (…, b), without copying W[idx]
    over replicate dimensions (einsum over the component axis when idx is arange(n))."""
    if not isinstance(idx, torch.Tensor):
        return _mtv(W[idx], t)
    n = W.shape[0]
    if idx.dim() == 1 and idx.numel() == n and t.dim() >= 2 and t.shape[-2] == n \
            and bool((idx == torch.arange(n)).all()):
        return torch.einsum("...na,nab->...nb", t, W)
    return _mtv(W[idx], t)


def _idx(i, n: int):
    if isinstance(i, torch.Tensor):
        i = i.to(torch.long)
        if i.numel() and (int(i.min()) < 0 or int(i.max()) >= n):
            raise IndexError(f"component index out of range [0, {n})")
        return i
    i = int(i)
    if not 0 <= i < n:
        raise IndexError(f"component index {i} out of range [0, {n})")
    return i


class Family:
    """Common machinery.  Subclasses implement ``_f``, ``_grad``, ``_hess``, ``_smoothed``.

    The private kernels take ``idx`` (an int, or a LongTensor broadcastable against the
    leading dimensions of x and y) and return values for every broadcast position.
    """

    name: str = "?"
    n: int
    d_x: int
    d_y: int
    m: int

    # ---- private kernels (overridden) -----------------------------------------------------
    def _f(self, idx, x, y):  # pragma: no cover - abstract
        raise NotImplementedError

    def _grad(self, idx, x, y):  # pragma: no cover - abstract
        raise NotImplementedError

    def _hess(self, i: int, x, y):  # pragma: no cover - abstract
        raise NotImplementedError

    def _smoothed(self, i: int, x, y, mu: float, grad: bool):  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- shape handling --------------------------------------------------------------------
    def _xy(self, x, y) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = _t(x), _t(y)
        if x.shape[-1:] != (self.d_x,) or y.shape[-1:] != (self.d_y,):
            raise ValueError(f"family {self.name}: expected x (..., {self.d_x}) and y (..., {self.d_y}), "
                             f"got {tuple(x.shape)} and {tuple(y.shape)}")
        lead = torch.broadcast_shapes(x.shape[:-1], y.shape[:-1])
        return x.expand(*lead, self.d_x), y.expand(*lead, self.d_y)

    # ---- public per-component API ------------------------------------------------------------
    def f_i(self, i, x, y) -> torch.Tensor:
        """f_i(x, y), shape (*R)."""
        x, y = self._xy(x, y)
        return self._f(_idx(i, self.n), x, y)

    def grad_i(self, i, x, y) -> tuple[torch.Tensor, torch.Tensor]:
        """(∇_x f_i, ∇_y f_i) in closed form (spec §4 "Derivatives")."""
        x, y = self._xy(x, y)
        return self._grad(_idx(i, self.n), x, y)

    def hessian_blocks(self, i, x, y) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(∇²_xx f_i, ∇²_xy f_i, ∇²_yy f_i) in closed form; (∇²_xy)_{ab} = ∂²f_i/∂x_a∂y_b."""
        x, y = self._xy(x, y)
        return self._hess(int(_idx(int(i), self.n)), x, y)

    def f(self, x, y) -> torch.Tensor:
        """f(x, y) = (1/n) Σ_i f_i(x, y), shape (*R)."""
        x, y = self._xy(x, y)
        idx = torch.arange(self.n)
        return self._f(idx, x.unsqueeze(-2), y.unsqueeze(-2)).mean(-1)

    def grad(self, x, y) -> tuple[torch.Tensor, torch.Tensor]:
        """(∇_x f, ∇_y f), the averages of the component gradients."""
        x, y = self._xy(x, y)
        idx = torch.arange(self.n)
        gx, gy = self._grad(idx, x.unsqueeze(-2), y.unsqueeze(-2))
        return gx.mean(-2), gy.mean(-2)

    def smoothed_f_i(self, i, x, y, mu: float) -> torch.Tensor:
        """f_{i,μ}(x, y) = E_u f_i(x + μu, y), u ~ N(0, I_{d_x}), by 1-D quadrature (ridge structure)."""
        x, y = self._xy(x, y)
        return self._smoothed(int(_idx(int(i), self.n)), x, y, float(mu), grad=False)

    def smoothed_grad_x_i(self, i, x, y, mu: float) -> torch.Tensor:
        """∇_x f_{i,μ}(x, y) = E_u ∇_x f_i(x + μu, y), by 1-D quadrature (ridge structure)."""
        x, y = self._xy(x, y)
        return self._smoothed(int(_idx(int(i), self.n)), x, y, float(mu), grad=True)

    # ---- domain, constants, monitor ----------------------------------------------------------
    def constants(self) -> dict:
        """Certified constants: keys L_x0, L_x1, L_y0, L_y1, L_xy0, L_xy1, G, n, d_x, d_y, case."""
        return dict(self._constants)

    def in_domain(self, y) -> bool:
        """Whether every y (…, d_y) lies in the invariant set 𝒴 of A3(ii)."""
        return True

    def step_cap_y(self) -> float:
        """Extra cap on η_y needed for the invariance of 𝒴 (Lemmas 4.3/4.4); inf if none."""
        return math.inf

    def gbar(self, y) -> torch.Tensor:
        """A3 monitor Ḡ(y) ≥ max_i sup_x ‖∇f_i(x, y)‖, shape (*R)."""
        raise NotImplementedError  # pragma: no cover - overridden

    def delta(self, x0, y0) -> torch.Tensor:
        """Δ̄ = f(z₀) − f_lb with f_lb = 0 (spec §1.1, §4)."""
        return self.f(x0, y0)

    def default_start(self, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError  # pragma: no cover - overridden

    # ---- the Objective protocol (theory.objective) ------------------------------------------
    f_lb = 0.0

    def loss(self, idx, x, y) -> torch.Tensor:
        """f_i(x, y) for a LongTensor of component indices broadcast against the leading dimensions of x and y
        (the :class:`theory.objective.Objective` protocol; no index validation: the simulator's own indices)."""
        return self._f(idx, _t(x), _t(y))

    def start(self, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """z₀ (the protocol's name for :meth:`default_start`)."""
        return self.default_start(seed)

    def domain_ratio(self, y) -> torch.Tensor | None:
        """Position of y in the invariant set 𝒴 (≤ 1 inside), shape (*R); None when 𝒴 = R^{d_y}."""
        return None

    # ---- optimizer-core interface ------------------------------------------------------------
    def batch_loss(self, xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
        """Mean of f_i over the component indices in ``batch`` at (xs[0], ys[0]).

        ``batch``: LongTensor (b,) shared by all replicates, or (*R, b) per replicate.
        Returns shape (*R) (0-dim without replicates).  Differentiable in y (autograd).
        """
        (x,), (y,) = xs, ys
        if x.dtype != DT:
            x = x.to(DT)
        if y.dtype != DT:
            y = y.to(DT)
        idx = _idx(torch.as_tensor(batch), self.n)
        if idx.dim() == 0:
            idx = idx.reshape(1)
        return self._f(idx, x.unsqueeze(-2), y.unsqueeze(-2)).mean(-1)

    def as_problem(self, x0, y0, replicates: int | None = None):
        """A :class:`hybridopt.problem.TensorProblem` over fresh float64 copies of (x0, y0)
        (:func:`theory.objective.as_problem`).

        With ``replicates=R`` the start is broadcast to (R, d_x), (R, d_y) and
        ``replicate_shape=(R,)``; otherwise ``replicate_shape=()``.
        """
        from hybridopt.theory.objective import as_problem

        return as_problem(self, x0, y0, replicates)

    def __repr__(self) -> str:
        return f"Family{self.name}(n={self.n}, d_x={self.d_x}, d_y={self.d_y}, m={self.m})"


# ------------------------------------------------------------------------------ Family A


class FamilyA(Family):
    """Family A (spec §4): f_i = (1/m) Σ_k ψ((P_i x + Q_i y − r_i)_k) + β Σ_l (1 − cos(y_l − o_il)).

    Lemma 4.1 (global): L_x0 = max‖P_i‖²/m, L_xy0 = max‖P_i‖‖Q_i‖/m, L_y0 = max‖Q_i‖²/m + β,
    L_·1 = 0, G = max‖[P_i Q_i]‖/√m + β√d_y (0 ⪯ D ⪯ I, ‖ψ'(s)‖ ≤ √m, ‖sin‖ ≤ √d_y).
    A3(ii) with 𝒴 = R^{d_y}; no extra step cap.
    """

    name = "A"

    def __init__(self, seed: int = 0, n: int = 8, d_x: int = 40, d_y: int = 4, m: int = 4,
                 sigma_x: float = 0.5, sigma_y: float = 2.0, beta: float = 0.5) -> None:
        if min(n, d_x, d_y, m) < 1:
            raise ValueError("n, d_x, d_y, m must be >= 1")
        if beta < 0:
            raise ValueError("beta must be >= 0")
        self.n, self.d_x, self.d_y, self.m = int(n), int(d_x), int(d_y), int(m)
        self.sigma_x, self.sigma_y, self.beta = float(sigma_x), float(sigma_y), float(beta)
        g = np.random.default_rng(np.random.SeedSequence([0xA, int(seed)]))
        self.P = torch.tensor(g.standard_normal((n, m, d_x)) * (sigma_x / math.sqrt(d_x)), dtype=DT)
        self.Q = torch.tensor(g.standard_normal((n, m, d_y)) * (sigma_y / math.sqrt(d_y)), dtype=DT)
        self.r = torch.tensor(g.standard_normal((n, m)), dtype=DT)
        self.o = torch.tensor(g.uniform(-math.pi, math.pi, (n, d_y)), dtype=DT)
        self.P_rownorm = self.P.norm(dim=-1)  # ‖P_ik‖, the ridge scales
        nP, nQ = _specnorm(self.P), _specnorm(self.Q)
        nPQ = _specnorm(torch.cat([self.P, self.Q], dim=-1))
        c = lambda v: float(v) * CERT  # noqa: E731
        self._constants = dict(
            L_x0=c((nP ** 2).max() / m), L_x1=0.0,
            L_y0=c((nQ ** 2).max() / m + self.beta), L_y1=0.0,
            L_xy0=c((nP * nQ).max() / m), L_xy1=0.0,
            G=c(nPQ.max() / math.sqrt(m) + self.beta * math.sqrt(d_y)),
            n=self.n, d_x=self.d_x, d_y=self.d_y, case="ii")

    def _s(self, idx, x, y):
        return _rmv(self.P, idx, x) + _mv(self.Q[idx], y) - self.r[idx]

    def _f(self, idx, x, y):
        s = self._s(idx, x, y)
        return psi(s).mean(-1) + self.beta * (1.0 - torch.cos(y - self.o[idx])).sum(-1)

    def _grad(self, idx, x, y):
        t = dpsi(self._s(idx, x, y)) / self.m
        gx = _rmtv(self.P, idx, t)
        gy = _mtv(self.Q[idx], t) + self.beta * torch.sin(y - self.o[idx])
        return gx, gy

    def _hess(self, i, x, y):
        D = ddpsi(self._s(i, x, y)) / self.m  # (*R, m)
        P, Q = self.P[i], self.Q[i]
        PD = P.transpose(-1, -2) * D.unsqueeze(-2)  # (*R, d_x, m)
        Hxx = PD @ P
        Hxy = PD @ Q
        Hyy = (Q.transpose(-1, -2) * D.unsqueeze(-2)) @ Q + torch.diag_embed(self.beta * torch.cos(y - self.o[i]))
        return Hxx, Hxy, Hyy

    def _smoothed(self, i, x, y, mu, grad):
        s = self._s(i, x, y)
        scale = mu * self.P_rownorm[i]
        if grad:
            return _mtv(self.P[i], gaussian_expectation(dpsi, s, scale) / self.m)
        return (gaussian_expectation(psi, s, scale).mean(-1)
                + self.beta * (1.0 - torch.cos(y - self.o[i])).sum(-1))

    def gbar(self, y) -> torch.Tensor:
        """Ḡ_A ≡ G (global bound, sufficient condition S1)."""
        y = _t(y)
        return torch.full(y.shape[:-1], self._constants["G"], dtype=DT)

    def default_start(self, seed: int = 0):
        """x₀ with ‖P_i x₀‖ ~ 2σ_x·√m-ish entries far from the targets, y₀ ~ U[−π, π]^{d_y}."""
        g = np.random.default_rng(np.random.SeedSequence([0xA0, int(seed)]))
        x0 = torch.tensor(g.standard_normal(self.d_x) * 3.0, dtype=DT)
        y0 = torch.tensor(g.uniform(-math.pi, math.pi, self.d_y), dtype=DT)
        return x0, y0


# ------------------------------------------------------------------------------ Family B


class FamilyB(Family):
    """Family B (spec §4): f_i = (1/m) Σ_k ψ((P_i x − r_i)_k) + κ ψ(⟨a_i,x⟩ + ⟨b_i,y⟩ − s_i)
    + θ Σ_l (cosh(y_l − o_il) − 1).

    Lemma 4.2 (HGS, global): L_x0 = max(‖P_i‖²/m + κ‖a_i‖²), L_xy0 = κ max‖a_i‖‖b_i‖,
    L_y0 = θ + κ max(‖b_i‖² + ‖b_i‖), L_y1 = 1, other L_·1 = 0.
    Lemma 4.3: box [−R_B, R_B]^{d_y}, R_B = o_max + asinh(κ b_max/θ) + δ, invariant for every
    x-sequence when η_y (θ sinh(R_B + o_max) + κ b_max) ≤ δ; on the cylinder ‖∇f_i‖ ≤ G_B =
    max_i[‖P_i‖/√m + κ(‖a_i‖ + ‖b_i‖)] + θ √d_y sinh(R_B + o_max).
    """

    name = "B"

    def __init__(self, seed: int = 0, n: int = 8, d_x: int = 40, d_y: int = 4, m: int = 4,
                 sigma_x: float = 0.5, kappa: float = 0.5, theta: float = 0.2, delta: float = 0.5) -> None:
        if min(n, d_x, d_y, m) < 1:
            raise ValueError("n, d_x, d_y, m must be >= 1")
        if kappa < 0 or theta <= 0 or delta <= 0:
            raise ValueError("need kappa >= 0, theta > 0, delta > 0")
        self.n, self.d_x, self.d_y, self.m = int(n), int(d_x), int(d_y), int(m)
        self.sigma_x, self.kappa, self.theta, self.delta_box = float(sigma_x), float(kappa), float(theta), float(delta)
        g = np.random.default_rng(np.random.SeedSequence([0xB, int(seed)]))
        self.P = torch.tensor(g.standard_normal((n, m, d_x)) * (sigma_x / math.sqrt(d_x)), dtype=DT)
        self.r = torch.tensor(g.standard_normal((n, m)), dtype=DT)
        self.a = torch.tensor(g.standard_normal((n, d_x)) / math.sqrt(d_x), dtype=DT)
        self.b = torch.tensor(g.standard_normal((n, d_y)) / math.sqrt(d_y), dtype=DT)
        self.s = torch.tensor(g.standard_normal(n), dtype=DT)
        self.o = torch.tensor(g.uniform(-0.5, 0.5, (n, d_y)), dtype=DT)
        self.P_rownorm = self.P.norm(dim=-1)
        self.a_norm, self.b_norm = self.a.norm(dim=-1), self.b.norm(dim=-1)
        self._a3 = self.a.unsqueeze(-2)  # (n, 1, d_x): a_i as a one-row ridge stack
        nP = _specnorm(self.P)
        kap, th = self.kappa, self.theta
        self.o_max = float(self.o.abs().max())
        self.b_max = float(self.b.abs().max())
        self.R_B = self.o_max + math.asinh(kap * self.b_max / th) + self.delta_box
        self._sinh_edge = math.sinh(self.R_B + self.o_max)
        self._gx_part = (nP / math.sqrt(m) + kap * (self.a_norm + self.b_norm))  # per-i x-uniform part
        c = lambda v: float(v) * CERT  # noqa: E731
        self._constants = dict(
            L_x0=c((nP ** 2 / m + kap * self.a_norm ** 2).max()), L_x1=0.0,
            L_y0=c(th + kap * (self.b_norm ** 2 + self.b_norm).max()), L_y1=1.0,
            L_xy0=c(kap * (self.a_norm * self.b_norm).max()), L_xy1=0.0,
            G=c(self._gx_part.max() + th * math.sqrt(d_y) * self._sinh_edge),
            n=self.n, d_x=self.d_x, d_y=self.d_y, case="ii")

    def _wv(self, idx, x, y):
        w = _rmv(self.P, idx, x) - self.r[idx]
        v = _rmv(self._a3, idx, x)[..., 0] + (self.b[idx] * y).sum(-1) - self.s[idx]
        return w, v

    def _f(self, idx, x, y):
        w, v = self._wv(idx, x, y)
        return (psi(w).mean(-1) + self.kappa * psi(v)
                + self.theta * (torch.cosh(y - self.o[idx]) - 1.0).sum(-1))

    def _grad(self, idx, x, y):
        w, v = self._wv(idx, x, y)
        tv = (self.kappa * dpsi(v)).unsqueeze(-1)
        gx = _rmtv(self.P, idx, dpsi(w) / self.m) + tv * self.a[idx]
        gy = tv * self.b[idx] + self.theta * torch.sinh(y - self.o[idx])
        return gx, gy

    def _hess(self, i, x, y):
        w, v = self._wv(i, x, y)
        D = ddpsi(w) / self.m
        kv = (self.kappa * ddpsi(v))[..., None, None]
        P, a, b = self.P[i], self.a[i], self.b[i]
        Hxx = (P.transpose(-1, -2) * D.unsqueeze(-2)) @ P + kv * torch.outer(a, a)
        Hxy = kv * torch.outer(a, b)
        Hyy = kv * torch.outer(b, b) + torch.diag_embed(self.theta * torch.cosh(y - self.o[i]))
        return Hxx, Hxy, Hyy

    def _smoothed(self, i, x, y, mu, grad):
        w, v = self._wv(i, x, y)
        sw, sv = mu * self.P_rownorm[i], mu * self.a_norm[i]
        if grad:
            return (_mtv(self.P[i], gaussian_expectation(dpsi, w, sw) / self.m)
                    + (self.kappa * gaussian_expectation(dpsi, v, sv)).unsqueeze(-1) * self.a[i])
        return (gaussian_expectation(psi, w, sw).mean(-1) + self.kappa * gaussian_expectation(psi, v, sv)
                + self.theta * (torch.cosh(y - self.o[i]) - 1.0).sum(-1))

    def in_domain(self, y) -> bool:
        """y ∈ [−R_B, R_B]^{d_y} (Lemma 4.3)."""
        return bool((_t(y).abs() <= self.R_B).all())

    def domain_ratio(self, y) -> torch.Tensor:
        """‖y‖∞ / R_B (≤ 1 in the box of Lemma 4.3)."""
        return _t(y).abs().amax(-1) / self.R_B

    def step_cap_y(self) -> float:
        """δ / (θ sinh(R_B + o_max) + κ b_max), the step cap of Lemma 4.3."""
        return self.delta_box / (self.theta * self._sinh_edge + self.kappa * self.b_max)

    def gbar(self, y) -> torch.Tensor:
        """Ḡ_B(y) = max_i [‖P_i‖/√m + κ(‖a_i‖ + ‖b_i‖) + θ‖sinh(y − o_i)‖] (spec §4, monitor)."""
        y = _t(y)
        sh = torch.sinh(y.unsqueeze(-2) - self.o).norm(dim=-1)  # (*R, n)
        return (self._gx_part * CERT + self.theta * sh).max(-1).values

    def default_start(self, seed: int = 0):
        """x₀ ~ N(0, 9 I), y₀ uniform in the box [−R_B/2, R_B/2]^{d_y}."""
        g = np.random.default_rng(np.random.SeedSequence([0xB0, int(seed)]))
        x0 = torch.tensor(g.standard_normal(self.d_x) * 3.0, dtype=DT)
        y0 = torch.tensor(g.uniform(-0.5, 0.5, self.d_y) * self.R_B, dtype=DT)
        return x0, y0


# ------------------------------------------------------------------------------ Family C


class FamilyC(Family):
    """Family C (spec §4, LoRA-like W + BA): f_i = (1/m) Σ_k ψ(α_ikᵀ(W + BA)γ_ik − τ_ik) + (λ/4)‖y‖⁴.

    x = vec(W) (row-major, W ∈ R^{p1×p2}); y = (vec B, vec A), B ∈ R^{p1×r}, A ∈ R^{r×p2}.
    Lemma 4.4: with c_C = max‖α_ik‖‖γ_ik‖ and R_C = 2√(2c_C/λ), the ball ‖y‖ ≤ R_C is invariant
    for every x-sequence if η_y ≤ 1/(18 c_C); on the cylinder over it ℓ_x = c_C², ℓ_xy = c_C² R_C,
    ℓ_y = c_C² R_C² + c_C + 3λR_C², all L_·1 = 0, G_C = c_C(1 + R_C) + λR_C³.
    Family C is not HGS globally; its constants hold only on the cylinder (A3(ii)).
    """

    name = "C"

    def __init__(self, seed: int = 0, n: int = 8, p1: int = 32, p2: int = 32, r: int = 2, m: int = 4,
                 lam: float = 1.0, d_x: int | None = None, d_y: int | None = None) -> None:
        if min(n, p1, p2, r, m) < 1:
            raise ValueError("n, p1, p2, r, m must be >= 1")
        if lam <= 0:
            raise ValueError("lam must be > 0")
        if d_x is not None and int(d_x) != p1 * p2:
            raise ValueError(f"family C has d_x = p1*p2 = {p1 * p2}; got d_x={d_x}")
        if d_y is not None and int(d_y) != r * (p1 + p2):
            raise ValueError(f"family C has d_y = r*(p1+p2) = {r * (p1 + p2)}; got d_y={d_y}")
        self.n, self.m, self.p1, self.p2, self.r, self.lam = int(n), int(m), int(p1), int(p2), int(r), float(lam)
        self.d_x, self.d_y = p1 * p2, r * (p1 + p2)
        g = np.random.default_rng(np.random.SeedSequence([0xC, int(seed)]))
        self.alpha = torch.tensor(g.standard_normal((n, m, p1)) / math.sqrt(p1), dtype=DT)
        self.gamma = torch.tensor(g.standard_normal((n, m, p2)) / math.sqrt(p2), dtype=DT)
        self.tau = torch.tensor(g.standard_normal((n, m)), dtype=DT)
        self.ag_norm = self.alpha.norm(dim=-1) * self.gamma.norm(dim=-1)  # ‖p_ik‖ = ‖α_ik‖‖γ_ik‖
        self.c_C = float(self.ag_norm.max()) * CERT
        cC, lam_ = self.c_C, self.lam
        self.R_C = 2.0 * math.sqrt(2.0 * cC / lam_)
        R = self.R_C
        self._constants = dict(
            L_x0=cC ** 2, L_x1=0.0,
            L_y0=cC ** 2 * R ** 2 + cC + 3.0 * lam_ * R ** 2, L_y1=0.0,
            L_xy0=cC ** 2 * R, L_xy1=0.0,
            G=cC * (1.0 + R) + lam_ * R ** 3,
            n=self.n, d_x=self.d_x, d_y=self.d_y, case="ii")

    def _split(self, x, y):
        W = x.reshape(*x.shape[:-1], self.p1, self.p2)
        B = y[..., : self.p1 * self.r].reshape(*y.shape[:-1], self.p1, self.r)
        A = y[..., self.p1 * self.r:].reshape(*y.shape[:-1], self.r, self.p2)
        return W, B, A

    def _e(self, idx, x, y):
        W, B, A = self._split(x, y)
        M = W + B @ A
        if not isinstance(idx, torch.Tensor):  # single component: e_k = α_kᵀ M γ_k as one contraction
            return torch.einsum("kp,...pq,kq->...k", self.alpha[idx], M, self.gamma[idx]) - self.tau[idx]
        return ((self.alpha[idx] @ M) * self.gamma[idx]).sum(-1) - self.tau[idx]

    def _f(self, idx, x, y):
        e = self._e(idx, x, y)
        yy = (y * y).sum(-1)
        if yy.dim() < e.dim() - 1:
            yy = yy.expand(e.shape[:-1])
        return psi(e).mean(-1) + 0.25 * self.lam * yy * yy

    def _grad(self, idx, x, y):
        W, B, A = self._split(x, y)
        e = ((self.alpha[idx] @ (W + B @ A)) * self.gamma[idx]).sum(-1) - self.tau[idx]
        t = dpsi(e) / self.m
        GW = self.alpha[idx].transpose(-1, -2) @ (t.unsqueeze(-1) * self.gamma[idx])  # (*, p1, p2)
        gB = GW @ A.transpose(-1, -2)
        gA = B.transpose(-1, -2) @ GW
        gx = GW.reshape(*GW.shape[:-2], self.d_x)
        gy = torch.cat([gB.reshape(*gB.shape[:-2], -1), gA.reshape(*gA.shape[:-2], -1)], -1)
        gy = gy + self.lam * (y * y).sum(-1, keepdim=True) * y
        return gx, gy

    def _hess(self, i, x, y):
        W, B, A = self._split(x, y)
        al, ga = self.alpha[i], self.gamma[i]  # (m, p1), (m, p2)
        e = ((al @ (W + B @ A)) * ga).sum(-1) - self.tau[i]  # (*R, m)
        D, t = ddpsi(e) / self.m, dpsi(e) / self.m
        lead = e.shape[:-1]
        px = (al[:, :, None] * ga[:, None, :]).reshape(self.m, self.d_x)  # (m, d_x), p_k = vec(α γᵀ)
        dB = al[:, :, None] * (A.unsqueeze(-3) @ ga[:, :, None]).squeeze(-1).unsqueeze(-2)  # (*R, m, p1, r)
        dA = (B.unsqueeze(-3).transpose(-1, -2) @ al[:, :, None]) * ga[:, None, :]  # (*R, m, r, p2)
        py = torch.cat([dB.reshape(*lead, self.m, -1), dA.reshape(*lead, self.m, -1)], -1)  # (*R, m, d_y)
        Hxx = (px.T * D.unsqueeze(-2)) @ px
        Hxy = (px.T * D.unsqueeze(-2)) @ py
        Hyy = (py.transpose(-1, -2) * D.unsqueeze(-2)) @ py
        # ∂²e/∂B_ab ∂A_cd = α_a δ_bc γ_d (bilinear part), weighted by ψ'(e)/m and summed over k.
        Ir = torch.eye(self.r, dtype=DT)
        cross = torch.einsum("...k,ka,bc,kd->...abcd", t, al, Ir, ga).reshape(*lead, self.p1 * self.r, self.r * self.p2)
        nB = self.p1 * self.r
        Hyy = Hyy.clone()
        Hyy[..., :nB, nB:] += cross
        Hyy[..., nB:, :nB] += cross.transpose(-1, -2)
        yy = (y * y).sum(-1)[..., None, None]
        Hyy = Hyy + self.lam * (yy * torch.eye(self.d_y, dtype=DT) + 2.0 * y.unsqueeze(-1) * y.unsqueeze(-2))
        return Hxx, Hxy, Hyy

    def _smoothed(self, i, x, y, mu, grad):
        e = self._e(i, x, y)
        scale = mu * self.ag_norm[i]
        if grad:
            t = gaussian_expectation(dpsi, e, scale) / self.m
            GW = self.alpha[i].T @ (t.unsqueeze(-1) * self.gamma[i])
            return GW.reshape(*GW.shape[:-2], self.d_x)
        yy = (y * y).sum(-1)
        return gaussian_expectation(psi, e, scale).mean(-1) + 0.25 * self.lam * yy * yy

    def in_domain(self, y) -> bool:
        """‖y‖ ≤ R_C (Lemma 4.4)."""
        return bool((_t(y).norm(dim=-1) <= self.R_C).all())

    def domain_ratio(self, y) -> torch.Tensor:
        """‖y‖ / R_C (≤ 1 in the ball of Lemma 4.4)."""
        return _t(y).norm(dim=-1) / self.R_C

    def step_cap_y(self) -> float:
        """1/(18 c_C), the step cap of Lemma 4.4."""
        return 1.0 / (18.0 * self.c_C)

    def gbar(self, y) -> torch.Tensor:
        """Ḡ_C(y) = c_C(1 + ‖y‖) + λ‖y‖³ (spec §4, monitor)."""
        r = _t(y).norm(dim=-1)
        return self.c_C * (1.0 + r) + self.lam * r ** 3

    def default_start(self, seed: int = 0):
        """W₀ ~ N(0, 4/(p1 p2))-ish entries, y₀ Gaussian rescaled to ‖y₀‖ = R_C/2."""
        g = np.random.default_rng(np.random.SeedSequence([0xC0, int(seed)]))
        x0 = torch.tensor(g.standard_normal(self.d_x) * 2.0, dtype=DT)
        y0 = g.standard_normal(self.d_y)
        y0 = torch.tensor(y0 / np.linalg.norm(y0) * 0.5 * self.R_C, dtype=DT)
        return x0, y0


# ------------------------------------------------------------------------------ Family D

#: max |w''| of w(v) = 1 + β tanh v, per unit β: max_v 2 sech²v |tanh v| = 4/(3√3) (at tanh² v = 1/3).
_W2_MAX = 4.0 / (3.0 * math.sqrt(3.0))


class FamilyD(Family):
    """Family D ("gated cosh adapter", FAMILIES.md): HGS with L_x1, L_xy1 and L_y1 > 0 (the generalized
    smoothness of the *ZO* block), certified on an invariant box, ZO-dominant by default.

    f_i = (1/m) Σ_k ψ((P_i x − r_i)_k) + θ w(v_i) E_i(y),   v_i = ⟨a_i, x⟩ − s_i,   w(v) = 1 + β tanh v,
    E_i(y) = Σ_l (cosh(y_l − o_il) − 1),  0 ≤ β < 1,  θ > 0.

    Lemma D (global HGS, with w_min = 1 − β, w_max = 1 + β, ‖∇_y f_i‖ = θ w(v)‖sinh(y − o_i)‖ ≥ θ w_min‖sinh‖,
    E_i ≤ ‖sinh‖₁ ≤ √d_y ‖sinh‖₂, |w'| ≤ β, |w''| ≤ 4β/(3√3)):
    L_x0 = max‖P_i‖²/m, L_x1 = max 4β‖a_i‖²√d_y/(3√3 w_min); L_xy0 = 0, L_xy1 = max β‖a_i‖/w_min;
    L_y0 = θ w_max, L_y1 = 1.  Invariant box [−R_D, R_D]^{d_y}, R_D = o_max + δ: every y-step moves each y_l
    towards o_il without overshoot when η_y θ w_max cosh(R_D + o_max) ≤ 1 (implied by (S)), for every x-sequence.
    On the cylinder ‖∇f_i‖ ≤ G_D = max_i[‖P_i‖/√m + θβ‖a_i‖ d_y (cosh(R_D + o_max) − 1)]
    + θ w_max √d_y sinh(R_D + o_max).  Not globally L-smooth (θ w cosh in y, E_i(y) a aᵀ in x).
    """

    name = "D"

    def __init__(self, seed: int = 0, n: int = 4, d_x: int = 16, d_y: int = 2, m: int = 4, sigma_x: float = 1.0,
                 a_scale: float = 1.0, theta: float = 0.2, beta: float = 0.5, delta: float = 0.5,
                 start_scale: float = 3.0) -> None:
        if min(n, d_x, d_y, m) < 1:
            raise ValueError("n, d_x, d_y, m must be >= 1")
        if not (0.0 <= beta < 1.0) or theta <= 0 or delta <= 0:
            raise ValueError("need 0 <= beta < 1, theta > 0, delta > 0")
        self.n, self.d_x, self.d_y, self.m = int(n), int(d_x), int(d_y), int(m)
        self.sigma_x, self.a_scale, self.theta, self.beta = float(sigma_x), float(a_scale), float(theta), float(beta)
        self.delta_box, self.start_scale = float(delta), float(start_scale)
        g = np.random.default_rng(np.random.SeedSequence([0xD, int(seed)]))
        self.P = torch.tensor(g.standard_normal((n, m, d_x)) * (sigma_x / math.sqrt(d_x)), dtype=DT)
        self.r = torch.tensor(g.standard_normal((n, m)), dtype=DT)
        self.a = torch.tensor(g.standard_normal((n, d_x)) * (a_scale / math.sqrt(d_x)), dtype=DT)
        self.s = torch.tensor(g.standard_normal(n), dtype=DT)
        self.o = torch.tensor(g.uniform(-0.5, 0.5, (n, d_y)), dtype=DT)
        self.P_rownorm = self.P.norm(dim=-1)
        self.a_norm = self.a.norm(dim=-1)
        self._Pa = torch.cat([self.P, self.a.unsqueeze(-2)], -2)  # (n, m+1, d_x): all m+1 ridges, one product
        nP = _specnorm(self.P)
        b, th = self.beta, self.theta
        w_min, w_max = 1.0 - b, 1.0 + b
        self.w_max = w_max
        self.o_max = float(self.o.abs().max())
        self.R_D = self.o_max + self.delta_box
        edge = self.R_D + self.o_max
        self._cosh_edge, self._sinh_edge = math.cosh(edge), math.sinh(edge)
        self._gx_part = nP / math.sqrt(m)  # per-i x-uniform part of ‖∇_x f_i‖ from the ψ ridges
        c = lambda v: float(v) * CERT  # noqa: E731
        self._constants = dict(
            L_x0=c((nP ** 2).max() / m), L_x1=c((_W2_MAX * b * self.a_norm ** 2).max() * math.sqrt(d_y) / w_min),
            L_y0=c(th * w_max), L_y1=1.0,
            L_xy0=0.0, L_xy1=c((b * self.a_norm).max() / w_min),
            G=c((self._gx_part + th * b * self.a_norm * d_y * (self._cosh_edge - 1.0)).max()
                + th * w_max * math.sqrt(d_y) * self._sinh_edge),
            n=self.n, d_x=self.d_x, d_y=self.d_y, case="ii")

    def _wv(self, idx, x):
        z = _rmv(self._Pa, idx, x)
        return z[..., : self.m] - self.r[idx], z[..., self.m] - self.s[idx]

    def _E(self, idx, y):
        return (torch.cosh(y - self.o[idx]) - 1.0).sum(-1)

    def _f(self, idx, x, y):
        w, v = self._wv(idx, x)
        return psi(w).mean(-1) + self.theta * (1.0 + self.beta * torch.tanh(v)) * self._E(idx, y)

    def _grad(self, idx, x, y):
        w, v = self._wv(idx, x)
        t = y - self.o[idx]
        E = (torch.cosh(t) - 1.0).sum(-1)
        gx = _rmtv(self.P, idx, dpsi(w) / self.m) + (self.theta * self.beta * ddpsi(v) * E).unsqueeze(-1) * self.a[idx]
        gy = (self.theta * (1.0 + self.beta * torch.tanh(v))).unsqueeze(-1) * torch.sinh(t)
        return gx, gy

    def _hess(self, i, x, y):
        w, v = self._wv(i, x)
        t = y - self.o[i]
        E = (torch.cosh(t) - 1.0).sum(-1)
        D = ddpsi(w) / self.m
        P, a = self.P[i], self.a[i]
        tv = torch.tanh(v)
        sech2 = 1.0 - tv * tv
        w1, w2 = self.beta * sech2, -2.0 * self.beta * sech2 * tv
        th = self.theta
        Hxx = (P.transpose(-1, -2) * D.unsqueeze(-2)) @ P + (th * w2 * E)[..., None, None] * torch.outer(a, a)
        Hxy = (th * w1)[..., None, None] * a[:, None] * torch.sinh(t).unsqueeze(-2)
        Hyy = torch.diag_embed((th * (1.0 + self.beta * tv)).unsqueeze(-1) * torch.cosh(t))
        return Hxx, Hxy, Hyy

    def _smoothed(self, i, x, y, mu, grad):
        w, v = self._wv(i, x)
        sw, sv = mu * self.P_rownorm[i], mu * self.a_norm[i]
        E = self._E(i, y)
        if grad:
            return (_mtv(self.P[i], gaussian_expectation(dpsi, w, sw) / self.m)
                    + (self.theta * self.beta * gaussian_expectation(ddpsi, v, sv) * E).unsqueeze(-1) * self.a[i])
        return (gaussian_expectation(psi, w, sw).mean(-1)
                + self.theta * (1.0 + self.beta * gaussian_expectation(torch.tanh, v, sv)) * E)

    def in_domain(self, y) -> bool:
        """y ∈ [−R_D, R_D]^{d_y} (Lemma D)."""
        return bool((_t(y).abs() <= self.R_D).all())

    def domain_ratio(self, y) -> torch.Tensor:
        """‖y‖∞ / R_D (≤ 1 in the box of Lemma D)."""
        return _t(y).abs().amax(-1) / self.R_D

    def step_cap_y(self) -> float:
        """1 / (θ w_max cosh(R_D + o_max)): no y-step overshoots o_il (Lemma D)."""
        return 1.0 / (self.theta * self.w_max * self._cosh_edge)

    def gbar(self, y) -> torch.Tensor:
        """Ḡ_D(y) = max_i [‖P_i‖/√m + θβ‖a_i‖ E_i(y) + θ w_max ‖sinh(y − o_i)‖] ≥ sup_x ‖∇f_i(x, y)‖."""
        t = _t(y).unsqueeze(-2) - self.o  # (*R, n, d_y)
        E = (torch.cosh(t) - 1.0).sum(-1)
        sh = torch.sinh(t).norm(dim=-1)
        th = self.theta
        return ((self._gx_part + th * self.beta * self.a_norm * E) * CERT + th * self.w_max * sh).max(-1).values

    def default_start(self, seed: int = 0):
        """x₀ ~ N(0, start_scale² I) (the ψ ridges far from their targets: ‖∇ₓf‖ large), y₀ uniform in the box
        [−R_D/2, R_D/2]^{d_y}."""
        g = np.random.default_rng(np.random.SeedSequence([0xD0, int(seed)]))
        x0 = torch.tensor(g.standard_normal(self.d_x) * self.start_scale, dtype=DT)
        y0 = torch.tensor(g.uniform(-0.5, 0.5, self.d_y) * self.R_D, dtype=DT)
        return x0, y0


FAMILIES = {"A": FamilyA, "B": FamilyB, "C": FamilyC, "D": FamilyD}


def make_family(name: str, seed: int = 0, **dims) -> Family:
    """Build family ``name`` ∈ {'A', 'B', 'C', 'D'} with data drawn from ``seed``.

    ``dims``: n, d_x, d_y, m and family parameters (A: sigma_x, sigma_y, beta; B: sigma_x,
    kappa, theta, delta; C: p1, p2, r, lam, where d_x = p1·p2 and d_y = r(p1 + p2); D: sigma_x, a_scale,
    theta, beta, delta, start_scale).
    """
    key = str(name).upper()
    if key not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; valid names: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[key](seed=seed, **dims)
