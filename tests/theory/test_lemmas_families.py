"""Lemmas L1–L5 on the synthetic families (spec §5: T2, T2*, T3, T4, T5, T6a, T6b).

Right-hand sides come from the lemma objects of :mod:`theory.lemmas` (looked up at call time so
that mutation contexts apply); pass rules from ``tests/theory/stats.py``.  Every simulated epoch is
run by the optimizer core (:func:`theory.simulator.trajectory`: ``hybridopt.HybridOptimizer`` with
``RandomReshuffling``, optionally with prescribed permutations); there is no second implementation
of HybridRR in the tests.

Rounding allowance.  Deterministic checks use the spec rule LHS ≤ RHS(1+1e−9)+1e−12 plus, where
the LHS is a difference of float64 quantities, the forward-error bound of that difference
(8·eps·Σ|terms|): e.g. L1(b) at Family-B points with |y_l| ≈ 20 subtracts values ≈ θ cosh 20 ≈ 1e8,
whose rounding (≈ 1e−8) exceeds the spec's 1e−12 for tiny h.  The allowance is a bound on the
evaluation error only; it never absorbs a violation of the inequality itself.
"""
from __future__ import annotations


import numpy as np
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridopt.theory import lemmas as LM
from hybridopt.theory.constants import L as L_block
from hybridopt.theory.constants import ell as ell_block
from hybridopt.theory.families import DT, make_family
from hybridopt.theory.simulator import trajectory
from hybridopt.theory.symbols import SYMBOLS

try:
    from stats import det_le, mc_eq, mc_le
except ImportError:  # pragma: no cover - package-style import
    from tests.theory.stats import det_le, mc_eq, mc_le

EPS = np.finfo(np.float64).eps
try:
    from strategies import BOXED, FAMS, domain_points, instances
except ImportError:  # pragma: no cover - package-style import
    from tests.theory.strategies import BOXED, FAMS, domain_points, instances



def derived(F, case="ii"):
    """ℓ_a, L_a (a ∈ {x, y, xy}), L_X, L_Y from theory.constants at the family constants (spec §1.4)."""
    c = F.constants()
    subs = {SYMBOLS[k]: c[k] for k in ("L_x0", "L_x1", "L_y0", "L_y1", "L_xy0", "L_xy1", "G")}
    out = {f"ell_{a}": float(sp.sympify(ell_block(a)).subs(subs)) for a in ("x", "y", "xy")}
    out.update({f"L_{a}": float(sp.sympify(L_block(a, case)).subs(subs)) for a in ("x", "y", "xy")})
    out["L_X"], out["L_Y"] = out["L_x"] + out["L_xy"], out["L_y"] + out["L_xy"]
    return out


def vals(F, **kw):
    """Symbol values for lemma evaluation: family constants plus local quantities."""
    c = {k: v for k, v in F.constants().items() if k != "case"}
    c.update(kw)
    return c


def domain_point(F, rng, R):
    """R points of the cylinder (shared strategy: :func:`strategies.domain_points`)."""
    return domain_points(F, rng, R)


def steps(F, rng):
    """Spec §5: η_x = 10^U[−3,0]/(6nL_X), η_y = 10^U[−3,0]/(4nL_Y), also ≤ the y-cap (Lemmas 4.3/4.4)."""
    d = derived(F)
    eta_x = 10 ** rng.uniform(-3, 0) / (6 * F.n * d["L_X"])
    eta_y = min(10 ** rng.uniform(-3, 0) / (4 * F.n * d["L_Y"]), F.step_cap_y())
    return eta_x, eta_y


def nrm(v):
    return torch.sqrt((v * v).sum(-1)).numpy()


# ------------------------------------------------------------------------------------ T2 (L1)


def _segment_data(F, rng, R=16):
    """z, h per spec §5 (split angle ϑ ~ U[0, π/2], ρ = 10^U[−4, 0.7]); for C the segment stays in the ball."""
    if F.name == "C":
        x, y = domain_point(F, rng, R)
        y = y * 0.5
    elif F.name in BOXED:
        sz = 10 ** rng.uniform(-2, 1, (R, 1))
        x = torch.tensor(rng.standard_normal((R, F.d_x)) * sz, dtype=DT)
        y = torch.tensor(rng.standard_normal((R, F.d_y)) * sz, dtype=DT).clamp(-20, 20)
    else:
        x, y = domain_point(F, rng, R)
    th = rng.uniform(0, np.pi / 2, R)
    rho = 10 ** rng.uniform(-4, 0.7, R)
    hx = rng.standard_normal((R, F.d_x))
    hy = rng.standard_normal((R, F.d_y))
    hx *= (rho * np.cos(th) / np.linalg.norm(hx, axis=-1))[:, None]
    hy *= (rho * np.sin(th) / np.linalg.norm(hy, axis=-1))[:, None]
    if F.name == "C":  # ‖y‖ ≤ R_C/2 and ‖h_y‖ ≤ R_C/2 keep [y, y + h_y] in the ball
        hy *= np.minimum(1.0, 0.5 * F.R_C / np.maximum(np.linalg.norm(hy, axis=-1), 1e-300))[:, None]
    if F.name in BOXED:  # keep |y + s h_y| ≤ 25 (float64 range of cosh is no issue, this only bounds rounding)
        hy = np.clip(hy, -5, 5)
    return x, y, torch.tensor(hx, dtype=DT), torch.tensor(hy, dtype=DT)


@given(inst=instances(), data=st.data())
def test_T2_L1_on_families(inst, data):
    """T2: L1(a) on 11 grid + 5 random s, L1(b), L1(c) x/y, L1(d) for θ ∈ {1/4, 1} (h rescaled so Λ₁ ≤ θ)."""
    F, seed = inst
    rng = np.random.default_rng(seed)
    i = data.draw(st.integers(0, F.n - 1))
    x, y, hx, hy = _segment_data(F, rng)
    gx0, gy0 = F.grad_i(i, x, y)
    g0 = np.sqrt(nrm(gx0) ** 2 + nrm(gy0) ** 2)
    base = vals(F, g0=g0, hx=nrm(hx), hy=nrm(hy))
    # (a) along the segment
    s_all = np.concatenate([np.linspace(0, 1, 11), rng.uniform(0, 1, 5)])
    S = torch.tensor(s_all, dtype=DT)[:, None, None]
    g_s = np.sqrt(sum(nrm(v) ** 2 for v in F.grad_i(i, x + S * hx, y + S * hy)))  # (16, R)
    rhs_a = LM.L1a.lambdify()(**base, s=s_all[:, None] * np.ones_like(g0))
    chk = det_le(g_s, rhs_a, atol=1e-12 + 8 * EPS * g_s, what="L1a")
    assert chk, chk
    # (b)
    f0, f1 = F.f_i(i, x, y).numpy(), F.f_i(i, x + hx, y + hy).numpy()
    lin = ((gx0 * hx).sum(-1) + (gy0 * hy).sum(-1)).numpy()
    lhs_b = np.abs(f1 - f0 - lin)
    err_b = 8 * EPS * (np.abs(f1) + np.abs(f0) + np.abs(lin))
    chk = det_le(lhs_b, LM.L1b.lambdify()(**base), atol=1e-12 + err_b, what="L1b")
    assert chk, chk
    # (c)
    gx1, gy1 = F.grad_i(i, x + hx, y + hy)
    for lemma, d, a0, a1 in ((LM.L1c_x, gx1 - gx0, gx0, gx1), (LM.L1c_y, gy1 - gy0, gy0, gy1)):
        err = 8 * EPS * (nrm(a0) + nrm(a1))
        chk = det_le(nrm(d), lemma.lambdify()(**base), atol=1e-12 + err, what=lemma.name)
        assert chk, chk
    # (d) radius condition
    c = F.constants()
    lam1 = (c["L_x1"] + c["L_xy1"]) * nrm(hx) + (c["L_xy1"] + c["L_y1"]) * nrm(hy)
    for theta in (0.25, 1.0):
        fac = np.minimum(1.0, theta / np.maximum(lam1, 1e-300))
        hxs, hys = hx * torch.tensor(fac)[:, None], hy * torch.tensor(fac)[:, None]
        v = vals(F, g0=g0, hx=nrm(hxs), hy=nrm(hys), theta=np.full_like(g0, theta))
        rhs_d = LM.L1d.lambdify()(**v)
        gbar = np.asarray([LM.L1d.evaluate_lhs({k: (vv[r] if np.ndim(vv) else vv) for k, vv in v.items()})
                           for r in range(len(g0))])
        chk = det_le(gbar, rhs_d, what="L1d (gbar)")
        assert chk, chk
        S = torch.linspace(0, 1, 11, dtype=DT)[:, None, None]
        sup_g = np.sqrt(sum(nrm(w) ** 2 for w in F.grad_i(i, x + S * hxs, y + S * hys))).max(0)
        chk = det_le(sup_g, rhs_d, atol=1e-12 + 8 * EPS * sup_g, what="L1d (sup g)")
        assert chk, chk


# ---------------------------------------------------------------------------------- T2* (L1*)


def check_L1c_x_family_D(seed: int = 0, h: float = 0.3) -> tuple:
    """L1(c)_x on Family D with h = (0, h_y): the x-gradient moves through the gate θ w'(v) E(y) a while
    Λ^x_0 = L_xy0 ‖h_y‖ = 0, so the whole bound is Λ^x_1 ḡ (the term M9 drops).  Returns (Check, lhs, rhs)."""
    F = make_family("D", seed, n=2, d_x=6, d_y=2, m=2)
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.standard_normal(F.d_x), dtype=DT)
    y = F.o[0].clone()
    hy = torch.full((F.d_y,), h, dtype=DT)
    gx0, gy0 = F.grad_i(0, x, y)
    gx1, _ = F.grad_i(0, x, y + hy)
    lhs = float((gx1 - gx0).norm())
    c = vals(F, g0=float(torch.sqrt(gx0.pow(2).sum() + gy0.pow(2).sum())), hx=0.0, hy=float(hy.norm()))
    rhs = LM.L1c_x.evaluate(c)
    return det_le(lhs, rhs, what="L1c_x family D"), lhs, rhs


@given(seed=st.integers(0, 1000), h=st.floats(0.05, 1.0))
def test_T2_L1c_x_family_D_hgs_part(seed, h):
    """Family D (L_x1, L_xy1 > 0) on a pure y-step: L1(c)_x holds, with a positive left side and L_xy0 = 0 — so
    the generalized-smoothness term Λ^x_1 ḡ is what carries the bound."""
    chk, lhs, rhs = check_L1c_x_family_D(seed, h)
    assert chk, chk
    assert lhs > 0 and make_family("D", seed, n=2, d_x=6, d_y=2, m=2).constants()["L_xy0"] == 0.0


@given(inst=instances(max_dx=30), run=st.integers(0, 2**31 - 1))
@settings(max_examples=6)
def test_T2star_L1star_along_y_legs(inst, run):
    """T2*: (C0)–(C4) of L1* on the y-sets 𝖸_t of simulated epochs (case ii, G_+ = G), x arbitrary."""
    F, _ = inst
    rng = np.random.default_rng(run)
    d = derived(F)
    G = F.constants()["G"]
    eta_x, eta_y = steps(F, rng)
    x0, y0 = F.default_start(run % 97)
    out = trajectory(F, x0, y0, eta_x, eta_y, 10 ** rng.uniform(-4, 0), 1, T=2, replicates=2, seed=run)
    for t in range(2):
        Y = out["y"][t].reshape(-1, F.d_y)  # all (k, r) pairs of epoch t; 𝖸_t per replicate below
        ks = np.repeat(np.arange(F.n + 1), 2)
        rs = np.tile(np.arange(2), F.n + 1)
        # pairs (y, y') of the same replicate
        pa, pb = np.meshgrid(np.arange(len(ks)), np.arange(len(ks)), indexing="ij")
        same = (rs[pa] == rs[pb]) & (pa != pb)
        ia, ib = pa[same], pb[same]
        y, yp = Y[ia], Y[ib]
        # (C0) last claim: ‖y_{t,k} − y_{t,j}‖ ≤ |k − j| η_y G
        chk = det_le(nrm(yp - y), np.abs(ks[ia] - ks[ib]) * eta_y * G, what="C0 drift")
        assert chk, chk
        P = len(ia)
        scale = 10 ** rng.uniform(-2, 6, (P, 1))
        x = torch.tensor(rng.standard_normal((P, F.d_x)) * scale, dtype=DT)
        xp = x + torch.tensor(rng.standard_normal((P, F.d_x)) * 10 ** rng.uniform(-3, 1, (P, 1)), dtype=DT)
        dx, dy = nrm(xp - x), nrm(yp - y)
        for i in range(F.n):
            gx, gy = F.grad_i(i, x, y)
            # (C0) ‖∇f_i(ξ, y)‖ ≤ G at ξ = x, x' and on the y-segment (21 points) ≤ G_+ = G
            sg = torch.linspace(0, 1, 21, dtype=DT)[:, None, None]
            a, b = F.grad_i(i, x, y + sg * (yp - y))  # (21, P, ·)
            chk = det_le(np.sqrt(nrm(a) ** 2 + nrm(b) ** 2), G, what="C0 segment")
            assert chk, chk
            gxp, gyp = F.grad_i(i, xp, y)
            # (C1) x-Lipschitz of both blocks along x-lines
            assert det_le(nrm(gxp - gx), d["ell_x"] * dx, atol=1e-12 + 8 * EPS * (nrm(gx) + nrm(gxp)), what="C1x")
            assert det_le(nrm(gyp - gy), d["ell_xy"] * dx, atol=1e-12 + 8 * EPS * (nrm(gy) + nrm(gyp)), what="C1y")
            # (C2)
            f0, f1 = F.f_i(i, x, y).numpy(), F.f_i(i, xp, y).numpy()
            lin = (gx * (xp - x)).sum(-1).numpy()
            err = 8 * EPS * (np.abs(f0) + np.abs(f1) + np.abs(lin))
            assert det_le(f1, f0 + lin + 0.5 * d["ell_x"] * dx ** 2, atol=1e-12 + err, what="C2")
            # (C3), (C4) along the y-leg at fixed x
            gx2, gy2 = F.grad_i(i, x, yp)
            assert det_le(nrm(gx2 - gx), d["L_xy"] * dy, atol=1e-12 + 8 * EPS * (nrm(gx) + nrm(gx2)), what="C3x")
            assert det_le(nrm(gy2 - gy), d["L_y"] * dy, atol=1e-12 + 8 * EPS * (nrm(gy) + nrm(gy2)), what="C3y")
            f2 = F.f_i(i, x, yp).numpy()
            lin = (gy * (yp - y)).sum(-1).numpy()
            err = 8 * EPS * (np.abs(f0) + np.abs(f2) + np.abs(lin))
            assert det_le(f2, f0 + lin + 0.5 * d["L_y"] * dy ** 2, atol=1e-12 + err, what="C4")


# ------------------------------------------------------------------------------------ T3 (L2)


@given(inst=instances(), data=st.data())
def test_T3_L2ab_by_quadrature(inst, data):
    """T3: |f_{i,μ} − f_i| ≤ ℓ_xμ²d_x/2, ‖∇_x f_{i,μ} − ∇_x f_i‖ ≤ ℓ_xμ√d_x (exact quadrature),
    and L2(d)/(U2): ‖∇_x f_{i,μ}‖ ≤ G on the cylinder; μ = 10^U[−4, 0.3]."""
    F, seed = inst
    rng = np.random.default_rng(seed)
    i = data.draw(st.integers(0, F.n - 1))
    x, y = domain_point(F, rng, 1)
    x, y = x[0], y[0]
    d = derived(F)
    G = F.constants()["G"]
    for mu in 10 ** rng.uniform(-4, 0.3, 4):
        v = dict(ell=d["ell_x"], mu=mu, m=F.d_x)
        fm, f0 = float(F.smoothed_f_i(i, x, y, mu)), float(F.f_i(i, x, y))
        chk = det_le(abs(fm - f0), LM.L2a.evaluate(v), atol=1e-12 + 8 * EPS * (abs(fm) + abs(f0)), what="L2a")
        assert chk, chk
        gm, g = F.smoothed_grad_x_i(i, x, y, mu), F.grad_i(i, x, y)[0]
        chk = det_le(float((gm - g).norm()), LM.L2b.evaluate(v), atol=1e-12 + 8 * EPS * float(g.norm()), what="L2b")
        assert chk, chk
        assert det_le(float(gm.norm()), G, what="L2d/U2")


def _ghat(F, i, x, y, mu, U):
    """One-direction central estimates for directions U (N, d_x): returns (N, d_x)."""
    fp = F.f_i(i, x + mu * U, y)
    fm = F.f_i(i, x - mu * U, y)
    return ((fp - fm) / (2 * mu)).unsqueeze(-1) * U


@given(inst=instances(max_dx=30), data=st.data())
@settings(max_examples=4)
def test_T3_L2c_unbiased_mc(inst, data):
    """T3 L2(c): E ĝ_q = ∇_x f_{i,μ}, MC "=" on K = 3 random unit projections (4·10⁵ directions)."""
    F, seed = inst
    rng = np.random.default_rng(seed + 7)
    i = data.draw(st.integers(0, F.n - 1))
    q = data.draw(st.sampled_from([1, 2, 4, 8]))
    x, y = domain_point(F, rng, 1)
    x, y = x[0], y[0]
    mu = 10 ** rng.uniform(-4, 0.3)
    N = 400_000 // q
    gen = torch.Generator().manual_seed(seed)
    Vp = torch.tensor(rng.standard_normal((F.d_x, 3)), dtype=DT)
    Vp = Vp / Vp.norm(dim=0, keepdim=True)
    proj = []
    for _ in range(q):  # average of q independent single-direction estimates
        U = torch.randn(N, F.d_x, generator=gen, dtype=DT)
        proj.append(_ghat(F, i, x, y, mu, U) @ Vp)
    samples = torch.stack(proj).mean(0).numpy()
    target = (F.smoothed_grad_x_i(i, x, y, mu) @ Vp).numpy()
    chk = mc_eq(samples, target, what="L2c")
    assert chk, chk


# ------------------------------------------------------------------------------------ T4 (L3)


@given(inst=instances(max_dx=30), data=st.data())
@settings(max_examples=6)
def test_T4_L3_on_families(inst, data):
    """T4: L3(a) deterministic on 1000 directions; L3(b), (c) MC "≤" with N = 2·10⁵ (B = 50 batches)."""
    F, seed = inst
    rng = np.random.default_rng(seed + 3)
    i = data.draw(st.integers(0, F.n - 1))
    x, y = domain_point(F, rng, 1)
    x, y = x[0], y[0]
    mu = 10 ** rng.uniform(-4, 0.3)
    d = derived(F)
    gen = torch.Generator().manual_seed(seed)
    g = F.grad_i(i, x, y)[0]
    # (a)
    U = torch.randn(1000, F.d_x, generator=gen, dtype=DT)
    fp, fm = F.f_i(i, x + mu * U, y), F.f_i(i, x - mu * U, y)
    dq = (fp - fm) / (2 * mu)
    lin = U @ g
    lhs = (dq - lin).abs().numpy()
    err = 8 * EPS * ((fp.abs() + fm.abs()) / (2 * mu) + (U.abs() @ g.abs())).numpy()
    rhs = LM.L3a.lambdify()(ell=d["ell_x"], mu=mu, unorm=nrm(U))
    chk = det_le(lhs, rhs, atol=1e-12 + err, what="L3a")
    assert chk, chk
    # (b), (c)
    U = torch.randn(200_000, F.d_x, generator=gen, dtype=DT)
    sq = (_ghat(F, i, x, y, mu, U) ** 2).sum(-1).numpy()
    v = dict(ell=d["ell_x"], mu=mu, m=F.d_x, gnorm=float(g.norm()),
             gmu_norm=float(F.smoothed_grad_x_i(i, x, y, mu).norm()))
    for lemma in (LM.L3b, LM.L3c):
        chk = mc_le(sq, lemma.evaluate(v), what=lemma.name)
        assert chk, chk


# ------------------------------------------------------------------------------------ T5 (L4)


@given(inst=instances(max_dx=30), run=st.integers(0, 2**31 - 1))
@settings(max_examples=5)
def test_T5_L4_drift(inst, run):
    """T5: L4(a) per replicate and k (exact); L4(b) MC "≤" over 4000 epochs from one z_t with fixed π_t."""
    F, _ = inst
    rng = np.random.default_rng(run)
    eta_x, eta_y = steps(F, rng)
    mu = 10 ** rng.uniform(-4, 0.3)
    q = int(rng.choice([1, 2, 4, 8]))
    x0, y0 = domain_point(F, rng, 1)
    perm = torch.tensor(rng.permutation(F.n))
    out = trajectory(F, x0[0], y0[0], eta_x, eta_y, mu, q, T=1, replicates=4000, seed=run,
                     perms=perm.expand(1, 4000, F.n))
    X, Y = out["x"][0], out["y"][0]  # (n+1, R, d)
    G = F.constants()["G"]
    for k in range(1, F.n + 1):
        dy = nrm(Y[k] - Y[0])
        chk = det_le(dy, LM.L4a.evaluate(dict(k=k, eta_y=eta_y, G=G)), atol=1e-12 + 8 * EPS * nrm(Y[0]), what="L4a")
        assert chk, chk
        sq = nrm(X[k] - X[0]) ** 2
        chk = mc_le(sq, LM.L4b.evaluate(vals(F, k=k, eta_x=eta_x, q=q, mu=mu)), what=f"L4b k={k}")
        assert chk, chk


# ----------------------------------------------------------------------------- T6a/T6b (L5 steps)


@given(inst=instances(max_dx=30), run=st.integers(0, 2**31 - 1))
@settings(max_examples=6)
def test_T6_pathwise_epoch_inequalities(inst, run):
    """T6a: the two-leg inequality (★) of L5 per replicate.  T6b: ‖𝖤_x‖² ≤ 2n Σ_k(‖δ^x_k‖² + ‖b_k‖²),
    ‖δ^x_k‖ ≤ L_x‖Δx_k‖ + L_xy‖Δy_k‖, ‖b_k‖ ≤ ℓ_xμ√d_x (b_k by quadrature); ‖𝖤_y‖² ≤ n Σ‖δ^y_k‖²,
    ‖δ^y_k‖ ≤ L_xy‖Δx_k‖ + L_y‖Δy_k‖."""
    F, _ = inst
    rng = np.random.default_rng(run)
    d = derived(F)
    eta_x, eta_y = steps(F, rng)
    mu = 10 ** rng.uniform(-4, 0.3)
    q = int(rng.choice([1, 2, 4, 8]))
    x0, y0 = F.default_start(run % 101)
    R = 6
    out = trajectory(F, x0, y0, eta_x, eta_y, mu, q, T=2, replicates=R, seed=run)
    for t in range(2):
        X, Y, idx = out["x"][t], out["y"][t], out["idx"][t]
        xt, yt, x1, y1 = X[0], Y[0], X[F.n], Y[F.n]
        Dx, Dy = x1 - xt, y1 - yt
        gxf, gyf = F.grad(xt, yt)
        f0, f1 = F.f(xt, yt).numpy(), F.f(x1, y1).numpy()
        lin = ((gxf * Dx).sum(-1) + (gyf * Dy).sum(-1)).numpy()
        rhs = f0 + lin + 0.5 * d["L_X"] * nrm(Dx) ** 2 + 0.5 * d["L_Y"] * nrm(Dy) ** 2
        err = 8 * EPS * (np.abs(f0) + np.abs(f1) + np.abs(lin))
        chk = det_le(f1, rhs, atol=1e-12 + err, what="(★)")
        assert chk, chk
        Ex = torch.zeros(R, F.d_x, dtype=DT)
        Ey = torch.zeros(R, F.d_y, dtype=DT)
        sx = np.zeros(R)
        sy = np.zeros(R)
        for k in range(F.n):
            i_k = idx[k]  # (R,)
            gk_x, gk_y = F._grad(i_k, X[k], Y[k])
            g0_x, g0_y = F._grad(i_k, xt, yt)
            dlx, dly = gk_x - g0_x, gk_y - g0_y
            b = torch.stack([F.smoothed_grad_x_i(int(i_k[r]), X[k, r], Y[k, r], mu) for r in range(R)]) - gk_x
            Ex += dlx + b
            Ey += dly
            sx += nrm(dlx) ** 2 + nrm(b) ** 2
            sy += nrm(dly) ** 2
            ax, ay = nrm(X[k] - xt), nrm(Y[k] - yt)
            tol_x = 1e-12 + 8 * EPS * (nrm(gk_x) + nrm(g0_x))
            tol_y = 1e-12 + 8 * EPS * (nrm(gk_y) + nrm(g0_y))
            assert det_le(nrm(dlx), d["L_x"] * ax + d["L_xy"] * ay, atol=tol_x, what="delta_x")
            assert det_le(nrm(dly), d["L_xy"] * ax + d["L_y"] * ay, atol=tol_y, what="delta_y")
            assert det_le(nrm(b), LM.L2b.evaluate(dict(ell=d["ell_x"], mu=mu, m=F.d_x)),
                          atol=1e-12 + 8 * EPS * nrm(gk_x), what="b_k")
        assert det_le(nrm(Ex) ** 2, 2 * F.n * sx, what="E_x")
        assert det_le(nrm(Ey) ** 2, F.n * sy, what="E_y")
