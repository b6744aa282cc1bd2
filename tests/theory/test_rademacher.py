"""The Rademacher analogues R2–R6 of theory/RADEMACHER.md (u uniform on {−1,+1}^m, ‖u‖² = m exactly).

Expectations over u are exact sums over the 2^m sign vectors (``extremal.rademacher_directions``) for m ≤ 10, so
R2 and R3 are checked deterministically; on the families (d_x up to 30) R3(b) is a Monte Carlo "≤".  Sharp
instances: E4 tilted at m = 1 (R2(b), R3(b) are equalities), E5 (R3(b) is an equality), E3 (R2(a) is one).
"""
from __future__ import annotations

import math

import numpy as np
import sympy as sp
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stats import det_ge, det_le, mc_eq, mc_le, sharp
from strategies import domain_points, instances
from test_descent_and_theorem import domain_point, step_sizes, t6c_measure
from hybridopt.theory import bound, constants, lemmas
from hybridopt.theory.extremal import E3, E4, E5, E6, rademacher_directions, two_point_estimate
from hybridopt.theory.families import DT
from hybridopt.theory.symbols import SYMBOLS

S = SYMBOLS
floats = lambda lo, hi: st.floats(lo, hi, allow_nan=False, allow_infinity=False)  # noqa: E731
log_floats = lambda lo, hi: floats(lo, hi).map(lambda e: 10.0**e)  # noqa: E731
N_MC = 100_000


def _norm(v):
    return float(np.linalg.norm(v))


def exact_moments(phi, x, mu):
    """E ĝ_1 and E‖ĝ_1‖² over all 2^m Rademacher directions (exact)."""
    U = rademacher_directions(x.size)
    g = two_point_estimate(phi, x, mu, U)
    return g.mean(0), float(np.mean(np.sum(g * g, axis=1)))


def check_R2b_R3b(inst, x, mu, ell, grad) -> dict:
    """R2(b) and R3(b) at x, exactly: dict name -> (Check <=, lhs, rhs)."""
    m = x.size
    mean, second = exact_moments(inst.phi, x, mu)
    vals = dict(ell=ell, m=m, mu=mu, gnorm=_norm(grad))
    lb = _norm(mean - grad)
    rb, r3 = lemmas.R2b.evaluate(vals), lemmas.R3b.evaluate(vals)
    scale = 1e-13 * (1 + float(np.max(np.abs(inst.phi(x + mu * rademacher_directions(m))))) / mu) * m
    return {"R2b": (det_le(lb, rb, atol=1e-12 + scale, what="R2b"), lb, rb),
            "R3b": (det_le(second, r3, rel=1e-9, atol=1e-12 + scale * (second ** 0.5 + 1), what="R3b"), second, r3)}


def check_R2b_R3b_E4(ell=1.0, g=1.0, mu=0.5) -> dict:
    """Tilted E4 at x = 0, m = 1: ĝ = (g + ell mu/2) u u, so E ĝ − ∇φ(0) = (ell mu/2) e_1 and
    E‖ĝ‖² = (g + ell mu/2)²: R2(b) and R3(b) hold with equality (M15 halves the bias constant)."""
    e = E4(ell, 1, g=g)
    return {k: v[0] for k, v in check_R2b_R3b(e, np.zeros(1), mu, ell, e.grad(np.zeros(1))).items()}


def check_R3b_E5(m=3, seed=0):
    """E5 (φ = <a, x>, ell = 0): E‖ĝ_1‖² = m‖a‖² exactly, R3(b)'s right-hand side (M16 halves it)."""
    a = np.random.default_rng(seed).standard_normal(m)
    e = E5(a, np.zeros(1))
    return check_R2b_R3b(e, np.random.default_rng(seed + 1).standard_normal(m), 0.1, 0.0, a)["R3b"][0]


@given(which=st.sampled_from(["E3", "E4", "E5", "E6"]), m=st.integers(1, 10), mu=log_floats(-3, 0.3),
       scale=log_floats(-2, 0.5), g=floats(-2, 2), seed=st.integers(0, 2**31))
@example(which="E4", m=1, mu=0.5, scale=0.0, g=1.0, seed=0)
@example(which="E5", m=4, mu=0.1, scale=1.0, g=0.0, seed=1)
def test_R2b_R3b_exact_enumeration(which, m, mu, scale, g, seed):
    """R2(b), R3(b) by exact enumeration of {−1,+1}^m on E3–E6 (E6 as a function of x with ell its Hessian bound
    on the probe ball), with the equality cases: E4 tilted at x = 0, m = 1 (both), E5 (R3(b))."""
    rng = np.random.default_rng(seed)
    x = scale * rng.standard_normal(m)
    if which == "E3":
        inst, ell = E3(1.3, m), 1.3
    elif which == "E4":
        inst, ell = E4(1.0, m, g=g), 1.0
    elif which == "E5":
        inst, ell = E5(rng.standard_normal(m), np.zeros(1)), 0.0
    else:
        c = rng.standard_normal(m) / math.sqrt(m)
        inst = E6(c, np.zeros(1))
        # on the ball of radius mu sqrt(m) around x the Hessian f c c^T has norm <= |c|^2 f(x) e^{|c| mu sqrt(m)}
        ell = float(c @ c) * float(inst.phi(x)) * math.exp(_norm(c) * mu * math.sqrt(m))
    grad = {"E5": lambda: inst.a, "E6": lambda: inst.grad(x, np.zeros(1))[0]}.get(which, lambda: inst.grad(x))()
    res = check_R2b_R3b(inst, x, mu, ell, grad)
    for name, (chk, _, _) in res.items():
        assert chk, (name, chk)
    if which == "E4" and m == 1 and np.all(x == 0):
        for name, (_, lhs, rhs) in res.items():
            assert det_ge(lhs, rhs, rel=1e-12, what=name + " sharp"), (name, lhs, rhs)
    if which == "E5":
        _, lhs, rhs = res["R3b"]
        assert det_ge(lhs, rhs, rel=1e-12, what="R3b E5 sharp"), (lhs, rhs)


@given(m=st.integers(1, 10), mu=log_floats(-3, 0.3), ell=log_floats(-1, 1), seed=st.integers(0, 2**31))
def test_R2a_exact_enumeration(m, mu, ell, seed):
    """R2(a): |E φ(x+μu) − φ(x)| ≤ ½ℓμ²m, equality on E3 (‖u‖² = m exactly)."""
    x = np.random.default_rng(seed).standard_normal(m)
    U = rademacher_directions(m)
    for inst, tight in ((E3(ell, m), True), (E4(ell, m, g=0.3), False)):
        lhs = abs(float(np.mean(inst.phi(x + mu * U)) - inst.phi(x)))
        rhs = lemmas.R2a.evaluate(dict(ell=ell, m=m, mu=mu))
        assert det_le(lhs, rhs, atol=1e-12 + 1e-14 * abs(float(inst.phi(x)))), (lhs, rhs)
        if tight:
            assert det_ge(lhs, rhs, rel=1e-9, atol=1e-12), (lhs, rhs)


@given(m=st.integers(1, 6), mu=log_floats(-2, 0.3), seed=st.integers(0, 2**31))
def test_R2c_expectation_is_a_coordinatewise_smoothing(m, mu, seed):
    """E ĝ_j = E_{u_{−j}} E_{t~U[−1,1]} ∂_jφ(x + μ(u with u_j ← t)): the exact E ĝ of theory/RADEMACHER.md (R2(c));
    not the gradient of one smoothing (coordinate j uses its own).  On E6 (φ = e^{<c,x>}) both sides in closed
    form: ∂_jφ(w) = c_j e^{<c,w>} and E_t e^{μ c_j t} = sinh(μ c_j)/(μ c_j)."""
    rng = np.random.default_rng(seed)
    c, x = rng.standard_normal(m), 0.3 * rng.standard_normal(m)
    e = E6(c, np.zeros(1))
    mean, _ = exact_moments(e.phi, x, mu)
    U = rademacher_directions(m)
    want = np.empty(m)
    for j in range(m):
        rest = np.exp(mu * (U @ c - U[:, j] * c[j]))      # e^{μ<c, u_{−j}>}, each u_{−j} twice: a plain mean
        sj = math.sinh(mu * c[j]) / (mu * c[j]) if c[j] != 0 else 1.0
        want[j] = c[j] * float(e.phi(x)) * float(rest.mean()) * sj
    assert np.allclose(mean, want, rtol=1e-11, atol=1e-13)
    # and it is not the gradient ∇φ(x) = c φ(x) unless μ -> 0
    if np.abs(mu * c).max() > 0.5:            # sinh(t)/t - 1 >= 0.04 in that coordinate
        assert not np.allclose(mean, c * float(e.phi(x)), rtol=1e-3)


def _r3a_values(c: dict, mu, d_x, g0) -> dict:
    v = {k: c[k] for k in ("L_x0", "L_x1", "L_y0", "L_y1", "L_xy0", "L_xy1")}
    v.update(mu=mu, d_x=d_x, g0=g0)
    return v


def _family_point(inst, data, R):
    """A family, a component i, a radius μ = 10^U[−3,0] and R points of its cylinder (C: y in half the ball)."""
    F, seed = inst
    rng = np.random.default_rng(seed)
    i = data.draw(st.integers(0, F.n - 1))
    mu = 10 ** data.draw(floats(-3, 0))
    x, y = domain_points(F, rng, R)
    return F, seed, i, mu, x, (y * 0.5 if F.name == "C" else y)


@given(inst=instances(max_dx=10), data=st.data())
@settings(max_examples=12)
def test_R3a_pointwise_hgs_on_families(inst, data):
    """R3(a) on Families A–D at 4 points and every u ∈ {−1,+1}^{d_x} (d_x ≤ 10; C: its d_x): the central difference
    differs from <∇_x f_i(z), u> by at most ½μd_x(L_x0 + L_x1 ḡ) with ḡ from L1 at the deterministic radius μ√d_x
    and g0 = ‖∇f_i(z)‖ (no gradient bound on the x-line is used)."""
    if inst[0].d_x > 12:
        return
    F, _, i, mu, x, y = _family_point(inst, data, 4)
    U = torch.tensor(rademacher_directions(F.d_x), dtype=DT)
    gx, gy = F.grad_i(i, x, y)
    g0 = torch.sqrt(gx.pow(2).sum(-1) + gy.pow(2).sum(-1)).numpy()
    fp = F.f_i(i, x[:, None, :] + mu * U, y[:, None, :])
    fm = F.f_i(i, x[:, None, :] - mu * U, y[:, None, :])
    lhs = ((fp - fm) / (2 * mu) - (U * gx[:, None, :]).sum(-1)).abs().numpy()     # (4, 2^d)
    rhs = lemmas.R3a.lambdify()(**_r3a_values(F.constants(), mu, F.d_x, g0[:, None]))
    rounding = 8 * np.finfo(float).eps * (fp.abs() + fm.abs()).numpy() / (2 * mu)
    chk = det_le(lhs, rhs, atol=1e-12 + rounding, what="R3a")
    assert chk, chk


@given(cx=st.lists(floats(-1.5, 1.5), min_size=1, max_size=6), mu=log_floats(-3, 0), seed=st.integers(0, 2**31))
@example(cx=[1.0], mu=0.5, seed=0)
def test_R3a_pointwise_E6(cx, mu, seed):
    """R3(a) on E6, where every L_.0 = 0: the bound is ½μd_x L_x1 ḡ, with ḡ growing like e^{Λ_1}; for m = 1 the
    ratio tends to 1 as μ -> 0."""
    e = E6(cx, [0.5])
    if e.nx == 0:
        return
    rng = np.random.default_rng(seed)
    x = 0.3 * rng.standard_normal(e.d_x)
    U = rademacher_directions(e.d_x)
    gx, gy = e.grad(x, np.zeros(1))
    lhs = np.abs((e.phi(x + mu * U) - e.phi(x - mu * U)) / (2 * mu) - U @ gx)
    g0 = math.hypot(_norm(gx), _norm(gy))
    rhs = lemmas.R3a.evaluate(_r3a_values(e.constants(), mu, e.d_x, g0))
    assert det_le(lhs, rhs, atol=1e-12 + 1e-14 * float(np.max(e.phi(x + mu * U))) / mu), (lhs.max(), rhs)


@given(inst=instances(max_dx=30), data=st.data())
@settings(max_examples=4)
def test_R3b_on_families_mc(inst, data):
    """R3(b) at points of the families' cylinders (ℓ = ℓ_x, ‖∇φ‖ = ‖∇_x f_i‖): Monte Carlo "≤" with N = 10⁵
    Rademacher directions (exact enumeration would need 2^{d_x})."""
    F, seed, i, mu, x, y = _family_point(inst, data, 1)
    gen = torch.Generator().manual_seed(seed % 2**31)
    U = (torch.randint(0, 2, (N_MC, F.d_x), generator=gen) * 2 - 1).to(DT)
    d = (F.f_i(i, x + mu * U, y) - F.f_i(i, x - mu * U, y)) / (2 * mu)
    sq = (d * d * F.d_x).numpy()
    c = F.constants()
    gx, _ = F.grad_i(i, x[0], y[0])
    rhs = lemmas.R3b.evaluate(dict(ell=c["L_x0"] + c["L_x1"] * c["G"], m=F.d_x, mu=mu, gnorm=float(gx.norm())))
    chk = mc_le(sq, rhs, what="R3b family")
    assert chk, chk


def test_R4b_drift_E5():
    """R4(b) on E5 (b = 0) with Rademacher directions: E‖x_k − x_0‖² = η²(k² + k(d−1)/q)‖a‖² exactly (MC "="), ≤ the
    bound 2η²(k²G_ν² + kV_R/q) (MC "≤"), and the exact ratio is ≥ ½·k/(k + 1) (sharpness)."""
    rng = np.random.default_rng(3)
    d_x, q, n, eta = 3, 2, 16, 0.05
    a = rng.standard_normal(d_x)
    e = E5(a, np.zeros(1))
    N = 20_000
    x = np.zeros((N, d_x))
    for _ in range(n):
        U = rng.choice([-1.0, 1.0], size=(N, q, d_x))
        # the central two-point estimate of the linear phi is exactly <a, u> u, whatever x and mu
        x = x - eta * np.mean((U @ a)[..., None] * U, axis=1)
    dx2 = np.sum(x * x, axis=1)
    A2 = float(a @ a)
    exact = eta**2 * (n * n + n * (d_x - 1) / q) * A2
    rhs = lemmas.R4b.evaluate(dict(e.constants(), k=n, eta_x=eta, mu=0.1, q=q, L_x0=0.0, L_x1=0.0))
    assert mc_eq(dx2, exact, what="R4b exact")
    assert mc_le(dx2, rhs, what="R4b")
    assert sharp(dx2, rhs, exact / rhs, what="R4b sharp")
    assert exact / rhs >= 0.5 * n / (n + 1)


def test_R_assembly_identity():
    """R5's 𝓔 is the assembly of theory/RADEMACHER.md step 6 with (G_ν, V_R, β²) = (G + β, d_x G_ν², (ℓ_xμd_x/2)²), and
    4𝓔/(nη) is the sum of terms (i)–(iv) for both laws (the decomposition of :func:`theory.bound.term_exprs`)."""
    eta_x, eta_y, mu, q, n, G, dx = (S[k] for k in ("eta_x", "eta_y", "mu", "q", "n", "G", "d_x"))
    Lx, Ly, Lxy = constants.L("x"), constants.L("y"), constants.L("xy")
    LX = constants.L_X("ii")
    beta = constants.ell("x") * mu * dx / 2
    Gn = G + beta
    VR = dx * Gn**2
    EX = (sp.Rational(8, 3) * Lx**2 * eta_x**2 * Gn**2 * n**4 + 4 * Lx**2 * eta_x**2 * VR * n**3 / q
          + sp.Rational(4, 3) * Lxy**2 * eta_y**2 * G**2 * n**4 + 2 * n**2 * beta**2)
    EY = (sp.Rational(4, 3) * Lxy**2 * eta_x**2 * Gn**2 * n**4 + 2 * Lxy**2 * eta_x**2 * VR * n**3 / q
          + sp.Rational(2, 3) * Ly**2 * eta_y**2 * G**2 * n**4)
    total = 3 * eta_x / (4 * n) * EX + 3 * eta_y / (4 * n) * EY + sp.Rational(3, 2) * LX * eta_x**2 * n * VR / q
    assert sp.expand(total - lemmas.R5.rhs) == 0
    e = sp.Symbol("eta", positive=True)
    for law in ("gaussian", "rademacher"):
        calE = bound.calE_expr("ii", eta_x=e, eta_y=S["omega"] * e, law=law)
        tx = bound.term_exprs("ii", law)
        assert sp.expand(4 * calE / (n * e) - sum(tx.values()).subs(bound._ETA, e)) == 0, law


def _nonneg(expr) -> bool:
    from test_symbolic import _nonneg as nn

    return nn(expr)


def test_R6_theorem_terms():
    """R6(B): β(μ(ε)) = ε√(c/30) makes term (i) = cε²/5; for ε ≤ G, c ≤ 1 it gives G_ν² ≤ 2G² and V_R ≤ 2d_xG²
    (the bars of the proof); each branch of η(ε) makes its term ≤ cε²/5; T_req ≤ ⌈CΔ/ε⁴⌉."""
    p, pc = sp.symbols("p pc", nonnegative=True)
    G, dx, q, n, D = S["G"], S["d_x"], S["q"], S["n"], S["Delta"]
    ex = bound.theorem_exprs("ii", law="rademacher")
    c = 1 / (1 + pc)                                    # any c in (0, 1]
    eps = G / (1 + p)                                   # any eps in (0, G]
    lx = sp.Symbol("lx", positive=True)
    mu_e = 2 * eps * sp.sqrt(c / 30) / (lx * dx)        # the package's mu(eps) with c_omega = c, ell_x = lx
    subs = {S["omega"]: 1}
    assert sp.simplify(ex["mu_eps"].subs(subs).subs(S["L_x0"], lx - S["L_x1"] * G).subs(S["eps"], eps)
                       - mu_e.subs(pc, 0)) == 0
    beta = lx * mu_e * dx / 2
    assert sp.simplify(6 * beta**2 - c * eps**2 / 5) == 0                   # term (i) = c eps^2 / 5
    # beta <= G/sqrt(30) (eps <= G, c <= 1) and 1/sqrt(30) < sqrt(2) - 1, so G_nu^2 = (G + beta)^2 <= 2 G^2
    assert _nonneg(sp.Rational(1, 30) - (beta / G) ** 2)
    assert (sp.sqrt(2) - 1 - 1 / sp.sqrt(30)).is_positive
    assert sp.expand(ex["Vbar"] - 2 * dx * G**2) == 0
    # kappa_2 and kappa_1 in display form satisfy their terms
    Dd = constants.DISPLAY
    cd, A, B, LX = Dd["c_omega"], Dd["A_omega"], Dd["B_omega"], Dd["L_X"]
    Vb = 2 * dx * G**2
    k2 = cd * q * S["eps"] ** 2 / (60 * LX * dx * G**2) / (1 + p)
    assert _nonneg(cd * S["eps"] ** 2 / 5 - 6 * LX * k2 * Vb / q)
    k1b = S["eps"] / G * sp.sqrt(cd * q / (40 * n * dx * B)) / (1 + p)
    assert _nonneg(cd * S["eps"] ** 2 / 5 - 4 * n * Vb * B * k1b**2 / q)
    disp = bound.theorem_exprs("ii", display=True, law="rademacher")
    inv_eta = [6 * n * LX, 4 * n * S["omega"] * Dd["L_Y"], n * G / S["eps"] * sp.sqrt(20 * A / cd),
               G / S["eps"] * sp.sqrt(40 * n * dx * B / (cd * q)), 60 * LX * dx * G**2 / (cd * q * S["eps"] ** 2)]
    for ie in inv_eta:
        diff = (disp["C"] * D / S["eps"] ** 4 - 20 * D * ie / (cd * n * S["eps"] ** 2)).subs(S["eps"], G / (1 + p))
        assert _nonneg(diff), ie


def test_rademacher_beats_gaussian_where_stated():
    """The comparisons of theory/RADEMACHER.md, as inequalities between the package's expressions: V_R(μ) < V(μ)
    for every μ (at d_x ≥ 1), κ₂^R / κ₂ = 2(d_x+2)/d_x ≥ 2, κ₁ (second branch) larger by √(2(d_x+2)/d_x); the bias
    bound loses for d_x > 4 (½ℓμd_x vs ℓμ√d_x) and μ_R(ε) is smaller by 2/√d_x; A_ω^R ≥ A_ω (κ₁'s first branch
    loses up to √2)."""
    dx = S["d_x"]
    Vg, VR = constants.V(), constants.V_R()
    t, G = constants.ell("x") * S["mu"], S["G"]          # V - V_R = 4G^2 + d_x[(G - d_x t/2)^2 + (3d_x + 4) t^2]
    assert sp.expand(Vg - VR - 4 * G**2 - dx * ((G - dx * t / 2) ** 2 + (3 * dx + 4) * t**2)) == 0
    g, r = bound.theorem_exprs("ii"), bound.theorem_exprs("ii", law="rademacher")
    b = {law: bound._branches("ii", law=law) for law in ("gaussian", "rademacher")}
    assert sp.simplify(b["rademacher"]["kappa2"] / b["gaussian"]["kappa2"] - 2 * (dx + 2) / dx) == 0
    assert sp.simplify((b["rademacher"]["kappa1_b"] / b["gaussian"]["kappa1_b"]) ** 2 - 2 * (dx + 2) / dx) == 0
    assert sp.simplify(b["rademacher"]["mu_a"] / b["gaussian"]["mu_a"] - 2 / sp.sqrt(dx)) == 0
    assert _nonneg(r["A_w"] - g["A_w"]) and sp.simplify(r["B_w"] - g["B_w"]) == 0


@given(inst=instances(max_dx=20, max_n=4), run=st.integers(0, 2**31 - 1), ex=floats(-3, 0), ey=floats(-3, 0),
       lmu=floats(-4, 0), q=st.sampled_from([1, 2, 4]), data=st.data())
@settings(max_examples=3)
def test_R5_one_epoch_descent(inst, run, ex, ey, lmu, q, data):
    """T6c for R5: the mean over N_rep = 4000 epochs, run by the core with Rademacher directions, of
    f(z_{t+1}) − f(z_t) + (nη_x/4)‖∇ₓf(z_t)‖² + (nη_y/4)‖∇ᵧf(z_t)‖² is ≤ 𝓔_R (MC "≤")."""
    F, _ = inst
    rng = np.random.default_rng(run)
    perm = torch.tensor(data.draw(st.permutations(range(F.n))), dtype=torch.long)
    eta_x, eta_y = step_sizes(F, ex, ey)
    x, y = domain_point(F, rng)
    samples, rhs, rounding = t6c_measure(F, x, y, eta_x, eta_y, 10.0 ** lmu, q, perm, run, law="rademacher")
    assert np.all(np.isfinite(samples))
    chk = mc_le(samples, rhs + rounding, what="T6c R5")
    assert chk, chk
