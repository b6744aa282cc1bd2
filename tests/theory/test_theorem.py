"""T8 of spec §5 (L6(B) parameter choices, exact arithmetic) plus the numeric/LaTeX/CLI/README contract of the
theorem layer (``theory.bound``, ``theory.cli``)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import example, given, strategies as st

from stats import det_le
from hybridopt.theory import bound, cli
from hybridopt.theory.symbols import SYMBOLS

HGS = ("L_x0", "L_x1", "L_y0", "L_y1", "L_xy0", "L_xy1")
PREC = 60


def _num(x) -> sp.Float:
    return sp.N(x, PREC)


def _le(a, b) -> bool:
    """Exact comparison ``a <= b`` of algebraic/transcendental numbers: structural equality, else the sign of
    the difference at 60 digits (differences below 1e-45 relative are ties, which pass)."""
    d = sp.sympify(b) - sp.sympify(a)
    if d == 0:
        return True
    dv = _num(d)
    scale = max(abs(_num(a)), abs(_num(b)), sp.Float(1e-300))
    return bool(dv >= -scale * sp.Float("1e-45"))


def _min(*xs):
    vals = [_num(x) for x in xs]
    return xs[int(np.argmin([float(v) if abs(v) < 1e300 else math.inf for v in vals]))] if all(
        v.is_finite for v in vals) else xs[min(range(len(xs)), key=lambda i: vals[i])]


def exact_L6B(c: dict, eps, case: str = "ii") -> dict:
    """L6(B) from the spec's formulas in exact sympy arithmetic (independent of theory.bound's code)."""
    R = {k: sp.Rational(v) for k, v in c.items()}
    G, n, dx, q, w, D = R["G"], R["n"], R["d_x"], R["q"], R["omega"], R["Delta"]
    e = sp.Rational(eps)
    Gp = G if case == "ii" else (2 * sp.exp(sp.Rational(1, 4)) - 1) * G
    ell = {a: R[f"L_{a}0"] + R[f"L_{a}1"] * G for a in ("x", "y", "xy")}
    La = {a: R[f"L_{a}0"] + R[f"L_{a}1"] * Gp for a in ("x", "y", "xy")}
    LX, LY = La["x"] + La["xy"], La["y"] + La["xy"]
    cw = min(sp.Integer(1), w)
    A = 2 * La["x"] ** 2 + w * (1 + w) * La["xy"] ** 2 + w**3 * La["y"] ** 2 / 2
    B = 3 * La["x"] ** 2 + sp.Rational(3, 2) * w * La["xy"] ** 2
    mu = _min(e / ell["x"] * sp.sqrt(cw / (30 * dx)), 2 * G / (ell["x"] * sp.sqrt(dx * (dx + 4))))
    k0 = _min(1 / (6 * n * LX), 1 / (4 * n * w * LY))
    k1 = _min(sp.sqrt(cw / (20 * A)) / (n * G), sp.sqrt(cw * q / (80 * n * (dx + 2) * B)) / G)
    k2 = cw * q / (120 * LX * (dx + 2) * G**2)
    eta = _min(k0, k1 * e, k2 * e**2)
    T = sp.ceiling(_num(20 * D / (cw * n * eta * e**2)))
    V = 2 * (dx + 2) * G**2 + ell["x"] ** 2 * mu**2 / 2 * dx * (dx + 2) * (dx + 4)
    C = G**2 / cw * (120 * LX + 80 * w * LY + 2400 * LX * (dx + 2) / (cw * n * q) + 20 * sp.sqrt(20 * A / cw)
                     + 20 * sp.sqrt(80 * (dx + 2) * B / (cw * q * n)))
    terms = [6 * ell["x"] ** 2 * mu**2 * dx, 6 * LX * eta * V / q, 4 * n**2 * G**2 * A * eta**2,
             4 * n * V * B * eta**2 / q, 4 * D / (n * eta * T)]
    return dict(eta=eta, mu=mu, T=T, C=C, terms=terms, cw=cw, LX=LX, LY=LY, n=n, w=w, e=e, D=D, G=G,
                k0=k0, k1=k1, k2=k2)


const_st = st.fixed_dictionaries({
    **{k: st.floats(-3, 3).map(lambda u: 10.0**u) for k in HGS + ("G", "Delta")},
    "n": st.integers(1, 50), "d_x": st.integers(1, 5000), "q": st.integers(1, 10),
    "omega": st.floats(-2, 2).map(lambda u: 10.0**u)})


@given(c=const_st, log_eps=st.floats(-3, 0), case=st.sampled_from(["i", "ii"]))
@example(c={**{k: 1.0 for k in HGS + ("G", "Delta")}, "n": 1, "d_x": 1, "q": 1, "omega": 1.0}, log_eps=0.0,
         case="ii")
@example(c={**{k: 1e-3 for k in HGS}, "G": 1e3, "Delta": 1e3, "n": 50, "d_x": 5000, "q": 10, "omega": 100.0},
         log_eps=-3.0, case="i")
def test_T8_parameter_choices_exact(c, log_eps, case):
    eps = c["G"] * 10.0**log_eps
    x = exact_L6B(c, eps, case)
    # (1) eta(eps) satisfies (S)
    assert _le(x["eta"], 1 / (6 * x["n"] * x["LX"])) and _le(x["w"] * x["eta"], 1 / (4 * x["n"] * x["LY"]))
    # (2) each of the five terms <= c eps^2 / 5, their sum <= c eps^2
    cap = x["cw"] * x["e"] ** 2 / 5
    for i, t in enumerate(x["terms"]):
        assert _le(t, cap), (i, float(_num(t)), float(_num(cap)))
    assert _le(sum(x["terms"]), 5 * cap)
    # (3) T_req <= ceil(C Delta / eps^4) for eps <= G
    assert _le(x["T"], sp.ceiling(_num(x["C"] * x["D"] / x["e"] ** 4)))
    # the package's float64 evaluation agrees with the exact one
    r = bound.evaluate_theorem(c, eps, case)
    for key, ref in (("eta_x", x["eta"]), ("mu", x["mu"]), ("C", x["C"]), ("kappa0", x["k0"]),
                     ("kappa1", x["k1"]), ("kappa2", x["k2"])):
        assert math.isclose(r[key], float(_num(ref)), rel_tol=1e-9), key
    assert abs(r["T_req"] - int(x["T"])) <= max(1.0, 1e-9 * r["T_req"])
    assert r["eta_y"] == pytest.approx(c["omega"] * r["eta_x"], rel=1e-12)
    # regime -4 exactly when eps <= eps4 (Remark 3.7)
    e4 = r["eps4"]
    if abs(eps - e4) > 1e-9 * e4:
        assert (r["regime"] == -4) == (eps <= e4)


def test_evaluate_theorem_vectorised_and_regimes():
    c = dict(L_x0=1, L_x1=0.5, L_y0=2, L_y1=1, L_xy0=0.3, L_xy1=0.1, G=1.2, n=4, d_x=20, Delta=0.5, q=2, omega=0.5)
    grid = np.logspace(-4, 4, 200)
    r = bound.evaluate_theorem(c, grid)
    assert r["T_req"].shape == grid.shape and set(np.unique(r["regime"])) <= {-2, -3, -4}
    assert np.all(r["regime"][grid <= r["eps4"] * (1 - 1e-12)] == -4)
    assert np.all(np.diff(r["eta_x"]) >= 0) and np.all(np.diff(r["T_req"]) <= 0)
    assert np.all(r["trivial"] == (grid > c["G"]))
    s = bound.evaluate_theorem(c, 0.05)
    assert isinstance(s["T_req"], float) and isinstance(s["regime"], int)
    i = int(np.argmin(np.abs(grid - 0.05)))
    assert math.isclose(bound.evaluate_theorem(c, grid[i])["T_req"], r["T_req"][i])
    # sympy expressions give the same numbers
    subs = {SYMBOLS[k]: sp.Float(v) for k, v in c.items()}
    subs[SYMBOLS["eps"]] = sp.Float(0.05)
    for key, ref in (("eta_eps", s["eta_x"]), ("mu_eps", s["mu"]), ("C", s["C"])):
        assert math.isclose(float(getattr(bound, key).subs(subs)), ref, rel_tol=1e-9), key
    with pytest.raises(KeyError, match="Delta"):
        bound.evaluate_theorem({k: v for k, v in c.items() if k != "Delta"}, 0.1)
    # case i is more conservative (G_plus >= G)
    assert bound.evaluate_theorem(c, 0.05, "i")["T_req"] >= s["T_req"]


def test_evaluate_bound_matches_lemma_objects():
    from hybridopt.theory import lemmas

    c = dict(L_x0=1, L_x1=0.5, L_y0=2, L_y1=1, L_xy0=0.3, L_xy1=0.1, G=1.2, n=4, d_x=20, Delta=0.5, q=2)
    r = bound.evaluate_bound(c, np.array([1, 10, 100]), 1e-3, 2e-3, 1e-2)
    vals = dict(c, eta_x=1e-3, eta_y=2e-3, mu=1e-2, T=10)
    assert math.isclose(r["B"][1], lemmas.L6A.evaluate(vals), rel_tol=1e-12)
    assert math.isclose(r["B_y"][1], lemmas.L6A_y.evaluate(vals), rel_tol=1e-12)
    assert math.isclose(r["calE"], lemmas.L5.evaluate(vals), rel_tol=1e-12)
    assert det_le(r["B_inf"], r["B"][-1])
    assert bound.satisfies_S(c, 1e-3, 2e-3) and not bound.satisfies_S(c, 1.0, 2e-3)


def test_theorem_latex_and_text():
    th = bound.Theorem()
    tex = th.latex()
    assert r"\varepsilon^{-4}" in tex and r"\mathcal B(T)" in tex and r"\kappa_2" in tex
    assert "C = " in th.text() and "T_req" in th.text()
    assert "2e^{1/4}-1" in bound.Theorem("i").latex()
    r = th.evaluate(dict(L_x0=1, L_x1=0, L_y0=1, L_y1=0, L_xy0=0, L_xy1=0, G=1, n=2, d_x=3, Delta=1, eps=0.5))
    assert r["T_req"] >= 1


def test_cli_outputs(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert "T_req" in out and "kappa2" in out and "L_X" in out
    assert cli.main(["--latex"]) == 0
    out = capsys.readouterr().out
    assert all(f"% {n} (" in out for n in ("L1a", "L3c", "L5", "L6A_y")) and r"\varepsilon^{-4}" in out


def test_cli_family():
    families = pytest.importorskip("hybridopt.theory.families")
    if not hasattr(families, "make_family"):
        pytest.skip("theory.families.make_family not available yet")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(["--family", "A", "--seed", "0", "--dx", "4", "--eps", "0.2"])
    assert rc == 0
    out = buf.getvalue()
    assert "T_req" in out and "eps4" in out and "Delta" in out


def test_readme_generated_sections_are_current():
    text = cli.README.read_text()
    assert "own formalization" in text
    i, j = text.index(cli.BEGIN) + len(cli.BEGIN), text.index(cli.END)
    assert text[i:j].strip() == cli.render_markdown().strip(), "run: python -m hybridopt.theory.cli --update-readme"


def test_tested_by_entries_exist():
    from pathlib import Path

    from hybridopt.theory import lemmas

    root = Path(__file__).resolve().parents[2]
    for name in lemmas.NAMES:
        for ref in getattr(lemmas, name).tested_by:
            path, func = ref.split("::")
            func = func.split("[")[0]
            assert f"def {func}(" in (root / path).read_text(), ref
