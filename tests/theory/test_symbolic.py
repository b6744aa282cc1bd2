"""T0 of spec §5: the symbolic checks S1–S8 of spec §7, run on the package's own expressions, plus the contract of
``theory.symbols`` / ``theory.constants`` / ``theory.lemmas`` (names, evaluate, lambdify)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp

from hybridopt.theory import bound, constants, lemmas
from hybridopt.theory.constants import E1, DISPLAY, L_X, L_Y, V, G_plus, ell
from hybridopt.theory.symbols import SYMBOLS

S = SYMBOLS
m, n, q, G = S["m"], S["n"], S["q"], S["G"]
eta, eta_x, eta_y, mu, omega, eps, Delta = (S["eta_x"], S["eta_x"], S["eta_y"], S["mu"], S["omega"], S["eps"],
                                            S["Delta"])
p = sp.Symbol("p", nonnegative=True)   # slack parameter: x = cap / (1 + p) ranges over (0, cap]
tvar = sp.Symbol("t")


def _terms_nonneg(expr) -> bool:
    return all(t.is_nonnegative for t in sp.Add.make_args(sp.expand(expr)))


def _nonneg(expr) -> bool:
    """Sign proof for expressions in nonnegative symbols: the factored form is recognised as >= 0, or, over a
    positive common denominator, every term of the expanded numerator is >= 0. Positive integer symbols N are
    shifted to 1 + N' (N' >= 0) first, so that e.g. n(3n - 1) is handled."""
    ints = {s_: sp.Symbol(s_.name + "_", nonnegative=True) + 1 for s_ in expr.free_symbols
            if s_.is_integer and s_.is_positive}
    expr = sp.sympify(expr).subs(ints)
    if sp.factor(expr).is_nonnegative:
        return True
    num, den = sp.fraction(sp.together(expr))
    if not (den.is_positive or _terms_nonneg(den) and sp.factor(den).is_positive):
        return False
    return _terms_nonneg(num)


# ------------------------------------------------------------------------------------------------ contract
def test_symbols_contract():
    expected = ("n d_x d_y q L_x0 L_x1 L_y0 L_y1 L_xy0 L_xy1 G Delta eta_x eta_y mu omega eps T m ell "
                "g0 hx hy s theta unorm gnorm gmu_norm k").split()
    assert set(expected) <= set(SYMBOLS)
    for k in expected:
        assert SYMBOLS[k].name == k
    assert S["n"].is_integer and S["n"].is_positive and S["k"].is_nonnegative and S["G"].is_positive
    assert S["L_x1"].is_nonnegative


def test_constants_definitions():
    assert sp.simplify(G_plus("i") - (2 * sp.exp(sp.Rational(1, 4)) - 1) * G) == 0
    assert G_plus("ii") == G
    assert ell("xy") == S["L_xy0"] + S["L_xy1"] * G
    assert sp.expand(L_X - (constants.L("x") + constants.L("xy"))) == 0
    assert sp.expand(L_Y("i") - (constants.L("y", "i") + constants.L("xy", "i"))) == 0
    assert sp.expand(sp.sympify(L_X).subs(S["L_x1"], 0) - S["L_x0"] - S["L_xy0"] - S["L_xy1"] * G) == 0
    assert sp.expand(V() - (2 * (S["d_x"] + 2) * G**2 + ell("x") ** 2 * mu**2 / 2 * S["d_x"] * (S["d_x"] + 2)
                            * (S["d_x"] + 4))) == 0
    # ell_a <= L_a, equality in case ii
    for a in ("x", "y", "xy"):
        assert _nonneg(constants.L(a, "i") - ell(a))
        assert sp.expand(constants.L(a, "ii") - ell(a)) == 0
    with pytest.raises(ValueError):
        G_plus("iii")


def test_lemma_objects_contract():
    vals = {k: 0.7 for k in SYMBOLS}
    for name in lemmas.NAMES:
        obj = getattr(lemmas, name)
        assert obj.name == name and obj.spec.startswith(("spec §3", "theory/RADEMACHER.md"))
        assert obj.spec in obj.description
        assert isinstance(obj.rhs, sp.Expr) and isinstance(obj.latex(), str) and r"\le" in obj.latex()
        assert isinstance(obj.lhs, (str, sp.Expr))
        r = obj.evaluate(vals)
        assert np.isfinite(r)
        sub = float(obj.rhs.subs({SYMBOLS[k]: sp.Float(0.7) for k in obj.symbols}).evalf(30))
        assert math.isclose(r, sub, rel_tol=1e-10), name
        f = obj.lambdify()
        arr = f(**{k: np.full(3, 0.7) for k in obj.symbols})
        assert np.shape(arr) == (3,) or np.ndim(arr) == 0
        assert np.allclose(arr, r, rtol=1e-12)
        with pytest.raises(KeyError, match=obj.symbols[0]):
            obj.evaluate({k: 1.0 for k in obj.symbols[1:]})
    case_i = lemmas.lemma_set("i")
    assert case_i["L5"].rhs != lemmas.L5.rhs and case_i["L1a"].rhs == lemmas.L1a.rhs


def test_E1_function_numerics():
    a = np.array([0.0, 1e-12, -1e-12, 1e-3, 1.0, -2.0, 30.0])
    out = constants.E1_numpy(a)
    ref = np.array([1.0] + [math.expm1(v) / v for v in a[1:]])
    assert np.allclose(out, ref, rtol=1e-14)
    assert E1(0) == 1 and E1(sp.Integer(0)) == 1
    assert math.isclose(float(E1(sp.Rational(1, 4)).evalf()), 4 * (math.exp(0.25) - 1), rel_tol=1e-14)
    # L1a with Lambda_1 = 0 is g0 + s Lambda_0 (the spec's "for Lambda_1 = 0 read g0 + s Lambda_0")
    v = dict(g0=2.0, hx=1.0, hy=0.5, s=0.3, L_x0=1.0, L_y0=2.0, L_xy0=0.5, L_x1=0.0, L_y1=0.0, L_xy1=0.0)
    assert math.isclose(lemmas.L1a.evaluate(v), 2.0 + 0.3 * (1.0 + 0.5 + 0.25 + 1.0), rel_tol=1e-14)


# ------------------------------------------------------------------------------------------------ S1 - S8
def _chi2_moment(dof, k):
    """E[chi2_dof^k] from the mgf (1 - 2t)^(-dof/2)."""
    return sp.diff((1 - 2 * tvar) ** (-sp.Rational(1, 2) * dof), tvar, k).subs(tvar, 0)


def test_S1_gaussian_moments():
    assert sp.factor(_chi2_moment(m, 1) - m) == 0
    assert sp.factor(_chi2_moment(m, 2) - m * (m + 2)) == 0
    assert sp.factor(_chi2_moment(m, 3) - m * (m + 2) * (m + 4)) == 0
    e2, e4, e6 = (_chi2_moment(1, k) for k in (1, 2, 3))          # E u1^2, E u1^4, E u1^6
    assert (e2, e4, e6) == (1, 3, 15)
    # u1 independent of the other m-1 coordinates: E[u1^2 |u|^2] = E u1^4 + (m-1) E u1^2, etc.
    assert sp.expand(e4 + (m - 1) * e2 - (m + 2)) == 0
    assert sp.expand(e6 + (m - 1) * e4 - (3 * m + 12)) == 0
    # the constants of L3(b) are the Gaussian moments: 2 E[<g,u>^2|u|^2]/|g|^2 and E|u|^6 (times ell^2 mu^2/4 *2)
    gn, ell_, mu_ = S["gnorm"], S["ell"], S["mu"]
    rhs_b = 2 * (m + 2) * gn**2 + 2 * (ell_**2 * mu_**2 / 4) * _chi2_moment(m, 3)
    assert sp.expand(lemmas.L3b.rhs - rhs_b) == 0
    # E4 closed form used by the tests: E||g1(0)||^2 = ell^2 mu^2 (3m+12)/4
    rng = np.random.default_rng(0)
    u = rng.standard_normal((200_000, 3))
    est = np.mean(u[:, 0] ** 4 * np.sum(u * u, 1))
    assert abs(est - 21) < 0.6


def test_S2_L3c_polynomial():
    lhs = 4 * (m + 2) * m + sp.Rational(1, 2) * m * (m + 2) * (m + 4)
    assert sp.expand(lhs - sp.Rational(1, 2) * m * (m + 2) * (m + 12)) == 0
    # and L3(c) is L3(b) + L2(b)^2 route with the package's own objects:
    gmu, ell_, mu_ = S["gmu_norm"], S["ell"], S["mu"]
    via = (lemmas.L3b.rhs.subs(S["gnorm"] ** 2, 2 * gmu**2 + 2 * (lemmas.L2b.rhs) ** 2))
    assert sp.expand(via - lemmas.L3c.rhs) == 0


def test_S3_index_sums():
    k = sp.Symbol("kk", integer=True, nonnegative=True)
    s1 = sp.summation(k, (k, 0, n - 1))
    s2 = sp.summation(k**2, (k, 0, n - 1))
    assert sp.factor(s1 - n * (n - 1) / 2) == 0 and _nonneg(n**2 / 2 - s1)
    assert sp.factor(s2 - n * (n - 1) * (2 * n - 1) / 6) == 0
    assert sp.factor(n**3 / 3 - s2 - n * (3 * n - 1) / 6) == 0 and _nonneg(n * (3 * n - 1) / 6)
    # L4(c) = sum_k of L4(b) bounded with these sums
    kk = S["k"]
    c = sp.Poly(sp.expand(lemmas.L4b.rhs), kk).all_coeffs()          # c2 k^2 + c1 k (+ 0)
    assert len(c) == 3 and c[2] == 0
    assert sp.expand(c[0] * n**3 / 3 + c[1] * n**2 / 2 - lemmas.L4c_x.rhs) == 0
    cy = sp.Poly(sp.expand(lemmas.L4a.rhs**2), kk).all_coeffs()
    assert sp.expand(cy[0] * n**3 / 3 - lemmas.L4c_y.rhs) == 0


def test_S4_assembly_identity():
    Lx, Ly, Lxy = constants.L("x"), constants.L("y"), constants.L("xy")
    Vm, lx, dx = V(), ell("x"), S["d_x"]
    EX = (sp.Rational(8, 3) * Lx**2 * eta_x**2 * G**2 * n**4 + 4 * Lx**2 * eta_x**2 * Vm * n**3 / q
          + sp.Rational(4, 3) * Lxy**2 * eta_y**2 * G**2 * n**4 + 2 * n**2 * lx**2 * mu**2 * dx)
    EY = (sp.Rational(4, 3) * Lxy**2 * eta_x**2 * G**2 * n**4 + 2 * Lxy**2 * eta_x**2 * Vm * n**3 / q
          + sp.Rational(2, 3) * Ly**2 * eta_y**2 * G**2 * n**4)
    total = 3 * eta_x / (4 * n) * EX + 3 * eta_y / (4 * n) * EY + sp.Rational(3, 2) * L_X * eta_x**2 * n * Vm / q
    for case in ("ii", "i"):
        Lx, Ly, Lxy = constants.L("x", case), constants.L("y", case), constants.L("xy", case)
        EXc = EX.subs({constants.L("x"): Lx}) if case == "i" else EX
        if case == "i":   # rebuild with the case-i block constants
            EXc = (sp.Rational(8, 3) * Lx**2 * eta_x**2 * G**2 * n**4 + 4 * Lx**2 * eta_x**2 * Vm * n**3 / q
                   + sp.Rational(4, 3) * Lxy**2 * eta_y**2 * G**2 * n**4 + 2 * n**2 * lx**2 * mu**2 * dx)
            EYc = (sp.Rational(4, 3) * Lxy**2 * eta_x**2 * G**2 * n**4 + 2 * Lxy**2 * eta_x**2 * Vm * n**3 / q
                   + sp.Rational(2, 3) * Ly**2 * eta_y**2 * G**2 * n**4)
            tot = (3 * eta_x / (4 * n) * EXc + 3 * eta_y / (4 * n) * EYc
                   + sp.Rational(3, 2) * L_X("i") * eta_x**2 * n * Vm / q)
        else:
            tot = total
        assert sp.expand(tot - lemmas.lemma_set(case)["L5"].rhs) == 0


def test_S5_absorption():
    LXs, LYs = DISPLAY["L_X"], DISPLAY["L_Y"]
    ex = 1 / (6 * n * LXs * (1 + p))       # any eta_x in (0, 1/(6 n L_X)]
    ey = 1 / (4 * n * LYs * (1 + p))       # any eta_y in (0, 1/(4 n L_Y)]
    assert _nonneg(n * ex / 4 - sp.Rational(3, 2) * LXs * ex**2 * n**2)
    assert _nonneg(n * ey / 4 - LYs * ey**2 * n**2)
    assert _nonneg(3 * ex / (4 * n) - ex / (2 * n) - sp.Rational(3, 2) * LXs * ex**2)
    assert _nonneg(3 * ey / (4 * n) - ey / (2 * n) - LYs * ey**2)
    # (S) implies the radius condition n eta_y (ell_xy + ell_y) <= 1/4, in both cases
    # (L_Y >= ell_y + ell_xy, so eta_y <= 1/(4 n L_Y) gives n eta_y (ell_xy + ell_y) <= 1/4)
    for case in ("i", "ii"):
        assert _nonneg(L_Y(case) - ell("xy") - ell("y"))


def test_S6_theorem_terms():
    ex = bound.theorem_exprs("ii")
    D = DISPLAY
    e = sp.Symbol("eta", positive=True)
    calE = bound.calE_expr("ii", eta_x=e, eta_y=omega * e)
    Lx, Ly, Lxy = constants.L("x"), constants.L("y"), constants.L("xy")
    A = 2 * Lx**2 + omega * (1 + omega) * Lxy**2 + omega**3 * Ly**2 / 2
    B = 3 * Lx**2 + sp.Rational(3, 2) * omega * Lxy**2
    assert sp.expand(A - ex["A_w"]) == 0 and sp.expand(B - ex["B_w"]) == 0
    dx, lx = S["d_x"], ell("x")
    terms = [6 * lx**2 * mu**2 * dx, 6 * L_X * e * V() / q, 4 * n**2 * G**2 * A * e**2, 4 * n * V() * B * e**2 / q]
    assert sp.expand(4 * calE / (n * e) - sum(terms)) == 0
    # each branch makes its term <= c eps^2 / 5 (display constants, x = cap/(1+p) for every cap)
    c, Ad, Bd, LXd, l = D["c_omega"], D["A_omega"], D["B_omega"], D["L_X"], D["ell_x"]
    lx_pos = sp.Symbol("lx", positive=True)
    mu1 = eps / lx_pos * sp.sqrt(c / (30 * dx)) / (1 + p)
    assert _nonneg(c * eps**2 / 5 - 6 * lx_pos**2 * mu1**2 * dx)
    mu2 = 2 * G / (lx_pos * sp.sqrt(dx * (dx + 4))) / (1 + p)
    Vmu2 = 2 * (dx + 2) * G**2 + lx_pos**2 * mu2**2 / 2 * dx * (dx + 2) * (dx + 4)
    assert _nonneg(4 * (dx + 2) * G**2 - Vmu2)                       # V(mu) <= 4 (d_x + 2) G^2
    Vb = 4 * (dx + 2) * G**2
    k2 = c * q * eps**2 / (120 * LXd * (dx + 2) * G**2) / (1 + p)
    assert _nonneg(c * eps**2 / 5 - 6 * LXd * k2 * Vb / q)
    k1a = eps / (n * G) * sp.sqrt(c / (20 * Ad)) / (1 + p)
    assert _nonneg(c * eps**2 / 5 - 4 * n**2 * G**2 * Ad * k1a**2)
    k1b = eps / G * sp.sqrt(c * q / (80 * n * (dx + 2) * Bd)) / (1 + p)
    assert _nonneg(c * eps**2 / 5 - 4 * n * Vb * Bd * k1b**2 / q)
    Tq = 20 * Delta * (1 + p) / (c * n * e * eps**2)                    # any T >= 20 Delta/(c n eta eps^2)
    assert _nonneg(c * eps**2 / 5 - 4 * Delta / (n * e * Tq))
    # (B) divided form of (A): c |grad f|^2 <= |grad_x f|^2 + omega |grad_y f|^2 with c = min(1, omega)
    gx2, gy2 = sp.symbols("gx2 gy2", nonnegative=True)
    for w in (sp.Rational(1, 3), 1, 3):
        assert (gx2 + w * gy2 - min(1, w) * (gx2 + gy2)).is_nonnegative


def test_S7_Treq_le_C_eps4():
    D = DISPLAY
    c, A, B, LX, LY = D["c_omega"], D["A_omega"], D["B_omega"], D["L_X"], D["L_Y"]
    dx = S["d_x"]
    ex = bound.theorem_exprs("ii", display=True)
    Cd = ex["C"]
    inv_eta = [6 * n * LX, 4 * n * omega * LY, n * G / eps * sp.sqrt(20 * A / c),
               G / eps * sp.sqrt(80 * n * (dx + 2) * B / (c * q)), 120 * LX * (dx + 2) * G**2 / (c * q * eps**2)]
    for ie in inv_eta:   # 1/eta = max of these; show each candidate is <= C Delta / eps^4 for eps = G/(1+p)
        diff = (Cd * Delta / eps**4 - 20 * Delta * ie / (c * n * eps**2)).subs(eps, G / (1 + p))
        assert _nonneg(diff), ie
    # the explicit expression of C (spec box) is the package's C
    C_spec = G**2 / c * (120 * LX + 80 * omega * LY + 2400 * LX * (dx + 2) / (c * n * q)
                         + 20 * sp.sqrt(20 * A / c) + 20 * sp.sqrt(80 * (dx + 2) * B / (c * q * n)))
    assert sp.simplify(C_spec - Cd) == 0


def test_S8_E1_facts():
    a = sp.Symbol("a", positive=True)
    e14 = sp.exp(sp.Rational(1, 4))
    assert sp.simplify(e14 + E1(sp.Rational(1, 4)).rewrite(sp.exp) * sp.Rational(1, 4) - (2 * e14 - 1)) == 0
    assert sp.simplify(constants.G_PLUS_FACTOR_I - (2 * e14 - 1)) == 0
    # series (E2): E1(a) = sum a^j/(j+1)!, coefficients > 0 -> increasing; e^a - E1(a) has coefficients
    # 1/j! - 1/(j+1)! = j/(j+1)! >= 0 -> E1(a) <= e^a
    j = sp.Symbol("j", integer=True, nonnegative=True)
    assert sp.simplify(1 / sp.factorial(j) - 1 / sp.factorial(j + 1) - j / sp.factorial(j + 1)) == 0
    ser = sp.series(E1(a).rewrite(sp.exp), a, 0, 8).removeO()
    assert all(sp.Poly(ser, a).coeffs()[i] > 0 for i in range(8))
    # derivative numerator a e^a - e^a + 1 is 0 at 0 and has derivative a e^a >= 0
    num = a * sp.exp(a) - sp.exp(a) + 1
    assert num.subs(a, 0) == 0 and sp.simplify(sp.diff(num, a) - a * sp.exp(a)) == 0
    assert sp.simplify(sp.diff(E1(a), a) - num / a**2) == 0
    # (e^a - 1)/a <= e - 1 on (0, 1]: increasing and E1(1) = e - 1
    assert sp.simplify(E1(sp.Integer(1)).rewrite(sp.exp) - (sp.E - 1)) == 0
    grid = np.linspace(1e-6, 1, 1001)
    vals = constants.E1_numpy(grid)
    assert np.all(np.diff(vals) > 0) and np.all(vals <= np.exp(grid)) and vals[-1] <= math.e - 1 + 1e-15
    # L1(d) special values: theta = 1/4 gives e^{1/4} g0 + 4(e^{1/4}-1) Lambda_0; theta = 1 gives (e - 1)
    for th, coef in ((sp.Rational(1, 4), 4 * (e14 - 1)), (sp.Integer(1), sp.E - 1)):
        r = lemmas.L1d.rhs.subs(S["theta"], th)
        lam0 = lemmas.helpers()["Lam0"]
        assert sp.simplify((r - sp.exp(th) * S["g0"] - coef * lam0).rewrite(sp.exp)) == 0
