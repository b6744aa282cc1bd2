r"""Theorem L6 (spec §3) and its Rademacher analogue R6 (``theory/RADEMACHER.md``): (A) the fixed-step bound
:math:`\mathcal B(T)` and (B) the ε-schedule with T_req(ε).  **The one source** of the step-size rule (S), of
η(ε), μ(ε) and of T_req: the simulator, the plots and the tests call :func:`schedule`, :func:`step_caps`,
:func:`satisfies_S` and :func:`evaluate_theorem` and never re-encode a formula.

All module-level expressions are sympy expressions of :data:`theory.symbols.SYMBOLS` for the A3 case ``'ii'``
(:math:`G_+=G`) and Gaussian directions; :func:`theorem_exprs` gives either case and either law
(``law='gaussian'`` or ``'rademacher'``).

**(A)** Under A1–A3 and (S) (:math:`\eta_x\le\frac1{6nL_X}`, :math:`\eta_y\le\frac1{4nL_Y}`),

.. math::

   \frac1T\sum_{t<T}\mathbb E\|\nabla f(z_t)\|^2\le\mathcal B(T)
   :=\frac{\frac{4\Delta}{nT}+\frac4n\mathcal E(\eta_x,\eta_y,\mu)}{\min(\eta_x,\eta_y)},

   \mathcal E=n^3\big[2L_x^2\eta_x^3G_\nu^2+L_{xy}^2\eta_x\eta_y^2G^2+L_{xy}^2\eta_x^2\eta_yG_\nu^2
   +\tfrac12L_y^2\eta_y^3G^2\big]+\tfrac{n^2V}{q}\big[3L_x^2\eta_x^3+\tfrac32L_{xy}^2\eta_x^2\eta_y\big]
   +\tfrac32n\eta_x\beta^2+\tfrac32nL_X\eta_x^2\tfrac{V}q,

with the law's :math:`(\beta,G_\nu,V)` of :func:`theory.constants.law_terms` (Gaussian: :math:`\beta^2=\ell_x^2\mu^2d_x`,
:math:`G_\nu=G`, :math:`V=V(\mu)`, which is spec §3's :math:`\mathcal E`).

**(B)** With :math:`\eta_x=\eta(\varepsilon)=\min\{\kappa_0,\kappa_1\varepsilon,\kappa_2\varepsilon^2\}`,
:math:`\eta_y=\omega\eta`, :math:`\mu=\mu(\varepsilon)` and
:math:`T\ge T_{\rm req}=\lceil 20\Delta/(c_\omega n\eta\varepsilon^2)\rceil\le\lceil C\Delta\varepsilon^{-4}\rceil`,
the average squared gradient norm is :math:`\le\varepsilon^2`.  The five terms of the proof (each
:math:`\le c_\omega\varepsilon^2/5`) are :math:`6\beta^2`, :math:`6L_X\eta V/q`, :math:`4n^2G^2A_\omega\eta^2`,
:math:`4n\bar VB_\omega\eta^2/q` and :math:`4\Delta/(n\eta T)`, where :math:`\bar V\ge V(\mu(\varepsilon))` and
:math:`\bar\gamma^2\ge G_\nu^2/G^2` (Gaussian :math:`\bar V=4(d_x+2)G^2`, :math:`\bar\gamma^2=1`; Rademacher
:math:`\bar V=2d_xG^2`, :math:`\bar\gamma^2=2`), :math:`A_\omega=2\bar\gamma^2L_x^2+\omega(\omega+\bar\gamma^2)L_{xy}^2
+\frac{\omega^3}2L_y^2`, :math:`B_\omega=3L_x^2+\frac32\omega L_{xy}^2`, so

.. math::

   \mu(\varepsilon)\le\frac{\varepsilon}{\kappa_\beta}\sqrt{\frac{c_\omega}{30}}\ (\beta=\kappa_\beta\mu),\quad
   \kappa_1=\min\Big(\frac1{nG}\sqrt{\frac{c_\omega}{20A_\omega}},\sqrt{\frac{c_\omega q}{20n\bar VB_\omega}}\Big),\quad
   \kappa_2=\frac{c_\omega q}{30L_X\bar V},\quad
   C=\frac{20}{c_\omega n}\Big[G^2\big(\tfrac1{\kappa_{0,a}}+\tfrac1{\kappa_{0,b}}\big)
   +G\big(\tfrac1{\kappa_{1,a}}+\tfrac1{\kappa_{1,b}}\big)+\tfrac1{\kappa_2}\Big],

which for Gaussian directions are exactly spec §3's formulas.

Numerics: :func:`evaluate_theorem` (vectorised in ε, lambdified once per case/law/coefficient table and cached),
:func:`evaluate_bound` (vectorised in T, checks (S)), :func:`schedule` (the simulator's parameters at one ε).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import numpy as np
import sympy as sp

from hybridopt.theory.constants import COEFFS, DISPLAY, L, L_X, L_Y, V, check_case, check_law, ell, law_terms
from hybridopt.theory.symbols import SYMBOLS, latex as _latex

__all__ = [
    "calE_expr", "bound_expr", "theorem_exprs", "calE", "bound_T", "bound_T_x", "bound_T_y", "bound_T_inf",
    "c_w", "A_w", "B_w", "mu_eps", "kappa0", "kappa1", "kappa2", "eta_eps", "T_req", "C", "eps4",
    "Theorem", "THEOREM", "THEOREM_R", "evaluate_theorem", "evaluate_bound", "schedule", "step_caps",
    "satisfies_S", "T_req_for", "terms", "REQUIRED_KEYS", "BOUND_KEYS", "rebuild",
]

_S = SYMBOLS
n, d_x, q, G, Delta = _S["n"], _S["d_x"], _S["q"], _S["G"], _S["Delta"]
eta_x, eta_y, mu, omega, eps, T = _S["eta_x"], _S["eta_y"], _S["mu"], _S["omega"], _S["eps"], _S["T"]
#: placeholder for c_omega = min(1, omega) in the lambdified branches (Min is evaluated in numpy).
_cw = sp.Symbol("c_w", positive=True)
#: display symbol for calE inside the rendered B(T).
_CALE = sp.Symbol("calE", positive=True)
from hybridopt.theory.symbols import LATEX_NAMES as _LN  # noqa: E402

_LN[_CALE] = r"\mathcal E(\eta_x,\eta_y,\mu)"

#: constants :func:`evaluate_theorem` needs (no defaults: pass ``allow_defaults=True`` to fill q = ω = 1).
REQUIRED_KEYS = ("L_x0", "L_x1", "L_y0", "L_y1", "L_xy0", "L_xy1", "G", "n", "d_x", "q", "omega", "Delta")
#: constants :func:`evaluate_bound` needs (ω does not enter L6(A)).
BOUND_KEYS = ("L_x0", "L_x1", "L_y0", "L_y1", "L_xy0", "L_xy1", "G", "n", "d_x", "q", "Delta")
_CAP_KEYS = ("L_x0", "L_x1", "L_y0", "L_y1", "L_xy0", "L_xy1", "G", "n")
_LAW_NAME = {"gaussian": "Gaussian directions u ~ N(0, I)", "rademacher": "Rademacher directions u ~ U{-1,+1}^d"}


def _derived(case: str, display: bool):
    if display:
        D = DISPLAY
        return D["L_x"], D["L_y"], D["L_xy"], D["L_X"], D["L_Y"], D["ell_x"]
    return L("x", case), L("y", case), L("xy", case), L_X(case), L_Y(case), ell("x")


def _law(law: str, mu_, display: bool) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    """(G_nu, V, beta^2) of a law, as definitions or as display symbols."""
    if display:
        D = DISPLAY
        if law == "gaussian":
            return G, D["V"], (COEFFS["L2b_factor"] * D["ell_x"]) ** 2 * mu_**2 * d_x
        return D["G_nu"], D["V_R"], D["beta"] ** 2
    t = law_terms(law, mu_)
    return t["G_nu"], t["V"], t["beta"] ** 2


def calE_expr(case: str = "ii", eta_x=eta_x, eta_y=eta_y, mu=mu, display: bool = False,
              law: str = "gaussian") -> sp.Expr:
    r""":math:`\mathcal E(\eta_x,\eta_y,\mu)`, the per-epoch error of L5 (spec §3, L5 and §7 ``calE``) or of R5
    (``law='rademacher'``).

    ``display=True`` writes it with the display symbols :math:`L_x,\ell_x,V(\mu),G_\nu,\dots` (rendering only)."""
    Lx, Ly, Lxy, LX, _, _ = _derived(check_case(case), display)
    Gn, Vm, b2 = _law(check_law(law), mu, display)
    if Gn == G:   # Gaussian: spec §3's factored form
        drift = n**3 * G**2 * (2 * Lx**2 * eta_x**3 + Lxy**2 * eta_x * eta_y * (eta_x + eta_y) + Ly**2 * eta_y**3 / 2)
    else:
        drift = n**3 * (2 * Lx**2 * eta_x**3 * Gn**2 + Lxy**2 * eta_x * eta_y**2 * G**2
                        + Lxy**2 * eta_x**2 * eta_y * Gn**2 + Ly**2 * eta_y**3 * G**2 / 2)
    return (drift + n**2 * Vm / q * (3 * Lx**2 * eta_x**3 + sp.Rational(3, 2) * Lxy**2 * eta_x**2 * eta_y)
            + sp.Rational(3, 2) * n * eta_x * b2 + sp.Rational(3, 2) * n * LX * eta_x**2 * Vm / q)


def bound_expr(case: str = "ii", block: str | None = None, T=T, display: bool = False,
               law: str = "gaussian") -> sp.Expr:
    r""":math:`\mathcal B(T)` of L6(A); ``block='x'``/``'y'`` gives the per-block form (divide by
    :math:`\eta_x`/:math:`\eta_y`), ``T=sympy.oo`` the floor :math:`\mathcal B(\infty)=4\mathcal E/(n\min\eta)`."""
    num = 4 * Delta / (n * T) + 4 * (_CALE if display else calE_expr(case, law=law)) / n
    den = {None: sp.Min(eta_x, eta_y), "x": eta_x, "y": eta_y}[block]
    return num / den


def _law_bars(law: str, lx: sp.Expr) -> dict[str, sp.Expr]:
    r"""The law's inputs to L6(B): ``kbeta`` (β = kbeta·μ), ``mu_b`` (second branch of μ(ε), or None), ``Vbar``
    (≥ V(μ(ε)) for 0 < ε ≤ G) and ``g2`` (:math:`\bar\gamma^2\ge G_\nu^2/G^2`); ``lx`` is :math:`\ell_x` (its
    definition, or its display symbol)."""
    if law == "gaussian":
        mu_b = 2 * G / (lx * sp.sqrt(d_x * (d_x + 4)))
        # V(mu) at the second branch of mu: the bound on V(mu(eps)) (= 4 (d_x+2) G^2 with the spec's constants)
        Vbar = sp.factor(sp.expand(V(2 * G / (ell("x") * sp.sqrt(d_x * (d_x + 4))))))
        return {"kbeta": COEFFS["L2b_factor"] * lx * sp.sqrt(d_x), "mu_b": mu_b, "Vbar": Vbar, "g2": sp.Integer(1)}
    # beta(mu(eps)) <= eps sqrt(c/30) <= G/sqrt(30) for eps <= G, so G_nu^2 <= (1 + 30^{-1/2})^2 G^2 <= 2 G^2
    return {"kbeta": COEFFS["L3a_factor"] * lx * d_x, "mu_b": None,
            "Vbar": 2 * COEFFS["R3b_dim"] * d_x * G**2, "g2": sp.Integer(2)}


def _branches(case: str, display: bool = False, law: str = "gaussian") -> dict[str, sp.Expr]:
    """ε-independent pieces of L6(B), written with a placeholder ``c_w`` for min(1, ω)."""
    check_case(case)
    Lx, Ly, Lxy, LX, LY, lx = _derived(case, display)
    bars = _law_bars(check_law(law), lx)
    g2, Vbar = bars["g2"], bars["Vbar"]
    A = 2 * g2 * Lx**2 + omega * (omega + g2) * Lxy**2 + omega**3 * Ly**2 / 2
    B = 3 * Lx**2 + sp.Rational(3, 2) * omega * Lxy**2
    out = {"A_w": A, "B_w": B, "L_X": LX, "L_Y": LY, "ell_x": lx, "Vbar": Vbar}
    if display:
        A, B = DISPLAY["A_omega"], DISPLAY["B_omega"]
    k0a, k0b = 1 / (COEFFS["kappa0_x"] * n * LX), 1 / (COEFFS["kappa0_y"] * n * omega * LY)
    k1a = sp.sqrt(_cw / (20 * A)) / (n * G)
    k1b = sp.sqrt(_cw * q / (20 * n * Vbar * B))
    k2 = COEFFS["kappa2_scale"] * _cw * q / (30 * LX * Vbar)
    out.update({
        "mu_a": COEFFS["mu_scale"] * sp.sqrt(_cw / 30) / bars["kbeta"],            # times eps
        "mu_b": COEFFS["mu_scale"] * bars["mu_b"] if bars["mu_b"] is not None else sp.oo,
        "kappa0_a": k0a, "kappa0_b": k0b, "kappa1_a": k1a, "kappa1_b": k1b, "kappa2": k2,
        # term (v): 4Δ/(nηT) <= c ε²/5  <=>  T >= 20 Δ/(c n η ε²) (the 20: COEFFS['T_req_factor'])
        "Treq_coef": COEFFS["T_req_factor"] * Delta / (_cw * n),             # T_req = ceil(coef / (eta eps^2))
        "C": COEFFS["T_req_factor"] / (_cw * n) * (G**2 * (1 / k0a + 1 / k0b) + G * (1 / k1a + 1 / k1b) + 1 / k2),
    })
    return out


def theorem_exprs(case: str = "ii", display: bool = False, law: str = "gaussian") -> dict[str, sp.Expr]:
    r"""All L6 (or R6) expressions for one A3 case and direction law: ``calE, bound_T, bound_T_x, bound_T_y,
    bound_T_inf, c_w, A_w, B_w, mu_eps, kappa0, kappa1, kappa2, eta_eps, T_req, C, eps4, Vbar``.

    ``display=True`` gives the same formulas in terms of the display symbols (:math:`L_X`, :math:`c_\omega`,
    :math:`\kappa_j`, ...) for rendering; those are not evaluable from a constants dict."""
    b = _branches(case, display, law)
    # unevaluated Min: sympy's argument comparisons cost seconds here and decide nothing (the arguments are
    # symbolic); a substitution of numbers evaluates them
    Min = lambda *a: sp.Min(*a, evaluate=False)  # noqa: E731
    cw = DISPLAY["c_omega"] if display else sp.Min(1, omega)
    sub = lambda e: e.subs(_cw, cw)  # noqa: E731
    k0 = Min(b["kappa0_a"], b["kappa0_b"])
    k1 = Min(sub(b["kappa1_a"]), sub(b["kappa1_b"]))
    k2 = sub(b["kappa2"])
    if display:
        K0, K1, K2 = DISPLAY["kappa_0"], DISPLAY["kappa_1"], DISPLAY["kappa_2"]
    else:
        K0, K1, K2 = k0, k1, k2
    eta = Min(K0, K1 * eps, K2 * eps**2)
    mu_e = sub(b["mu_a"]) * eps if b["mu_b"] == sp.oo else Min(sub(b["mu_a"]) * eps, b["mu_b"])
    return {
        "calE": calE_expr(case, display=display, law=law),
        "bound_T": bound_expr(case, display=display, law=law),
        "bound_T_x": bound_expr(case, "x", display=display, law=law),
        "bound_T_y": bound_expr(case, "y", display=display, law=law),
        "bound_T_inf": bound_expr(case, None, sp.oo, display=display, law=law),
        "c_w": sp.Min(1, omega), "A_w": b["A_w"], "B_w": b["B_w"], "Vbar": b["Vbar"],
        "mu_eps": mu_e,
        "kappa0": k0, "kappa1": k1, "kappa2": k2, "eta_eps": eta,
        "T_req": sp.ceiling(b["Treq_coef"].subs(_cw, cw) / (eta * eps**2)),
        "C": sub(b["C"]),
        "eps4": Min(sp.sqrt(K0 / K2), K1 / K2),
    }


def rebuild() -> None:
    """Rebuild the module-level (case 'ii', Gaussian) expressions from the current coefficients, if they changed
    since the last build (the numeric caches are keyed by the coefficient table, so they need no reset)."""
    global _II, _II_KEY, calE, bound_T, bound_T_x, bound_T_y, bound_T_inf, c_w, A_w, B_w, mu_eps
    global kappa0, kappa1, kappa2, eta_eps, T_req, C, eps4
    if _II_KEY == _coeff_key():
        return
    _II, _II_KEY = theorem_exprs("ii"), _coeff_key()
    calE, bound_T, bound_T_x, bound_T_y, bound_T_inf = (
        _II["calE"], _II["bound_T"], _II["bound_T_x"], _II["bound_T_y"], _II["bound_T_inf"])
    c_w, A_w, B_w, mu_eps = _II["c_w"], _II["A_w"], _II["B_w"], _II["mu_eps"]
    kappa0, kappa1, kappa2, eta_eps, T_req, C, eps4 = (
        _II["kappa0"], _II["kappa1"], _II["kappa2"], _II["eta_eps"], _II["T_req"], _II["C"], _II["eps4"])


def _coeff_key() -> tuple:
    return tuple((k, str(v)) for k, v in sorted(COEFFS.items()))


_II: dict = {}
_II_KEY: tuple | None = None
calE = bound_T = bound_T_x = bound_T_y = bound_T_inf = c_w = A_w = B_w = mu_eps = None  # set by rebuild()
kappa0 = kappa1 = kappa2 = eta_eps = T_req = C = eps4 = None
rebuild()

# ----------------------------------------------------------------------------------------------- numerics
_CONST_NAMES = ("L_x0", "L_x1", "L_y0", "L_y1", "L_xy0", "L_xy1", "G", "n", "d_x", "q", "omega", "Delta")


@functools.lru_cache(maxsize=None)
def _branch_fn(case: str, law: str, _coeffs: tuple):
    b = _branches(case, law=law)
    keys = tuple(b)
    args = [_S[k] for k in _CONST_NAMES] + [_cw]
    f = sp.lambdify(args, [b[k] for k in keys], modules="numpy", cse=True)
    return keys, f


def _const_arrays(constants: Mapping[str, float], needed=REQUIRED_KEYS, allow_defaults: bool = False,
                  who: str = "evaluate_theorem") -> tuple[list[np.ndarray], list[str]]:
    vals = {k: constants[k] for k in _CONST_NAMES if k in constants}
    defaulted = []
    if allow_defaults:
        for k in ("q", "omega"):
            if k not in vals:
                vals[k] = 1.0
                defaulted.append(k)
    missing = [k for k in needed if k not in vals]
    if missing:
        hint = ("; q and omega are required: pass allow_defaults=True to use q = omega = 1"
                if {"q", "omega"} & set(missing) else "")
        raise KeyError(f"{who}: missing constants {missing} (need {list(needed)}{hint})")
    for k in _CONST_NAMES:   # constants the caller's quantity does not depend on (e.g. omega in L6(A))
        vals.setdefault(k, 1.0)
    return [np.asarray(vals[k], dtype=np.float64) for k in _CONST_NAMES], defaulted


def _scalar(x):
    x = np.asarray(x)
    return x[()] if x.ndim == 0 else x


def _get(args, name):
    return args[_CONST_NAMES.index(name)]


def evaluate_theorem(constants: Mapping[str, float], eps, case: str = "ii", law: str = "gaussian",
                     allow_defaults: bool = False) -> dict:
    r"""Evaluate L6(B) (``law='gaussian'``) or R6(B) (``law='rademacher'``) numerically (float64, vectorised over
    ``eps``).

    Args:
      constants: ``dict[str, float]`` with the six HGS constants, ``G``, ``n``, ``d_x``, ``q``, ``omega`` and
        ``Delta``; extra keys (``d_y``, ...) are ignored.
      eps: target accuracy ε (float or array).
      case: A3 case, ``'ii'`` (:math:`G_+=G`, default) or ``'i'``.
      law: direction law of the ZO estimator.
      allow_defaults: fill a missing ``q``/``omega`` with 1 instead of raising; the result then lists them
        under ``defaulted``.

    Returns:
      dict of floats (arrays if ``eps`` is an array): ``mu, eta, eta_x, eta_y, T_req, C, C_bound`` (=
      ``ceil(C Δ/ε⁴)``), ``eps4, kappa0, kappa1, kappa2, c_w, A_w, B_w, Vbar, L_X, L_Y, ell_x``, ``regime`` (−2, −3
      or −4: the active branch κ0, κ1ε, κ2ε² of η; ties go to the higher order), ``trivial`` (ε > G: any T ≥ 1
      works, the formula values are still returned), ``law`` and ``defaulted`` (list). Division by a zero constant
      gives ``inf`` (spec: 1/0 := +∞).
    """
    keys, f = _branch_fn(check_case(case), check_law(law), _coeff_key())
    args, defaulted = _const_arrays(constants, allow_defaults=allow_defaults)
    omega_v = _get(args, "omega")
    cw = np.minimum(1.0, omega_v)
    e = np.asarray(eps, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        b = dict(zip(keys, f(*args, cw)))
        k0 = np.minimum(b["kappa0_a"], b["kappa0_b"])
        k1 = np.minimum(b["kappa1_a"], b["kappa1_b"])
        k2 = b["kappa2"]
        branches = np.stack(np.broadcast_arrays(k2 * e**2, k1 * e, k0 + 0 * e))
        idx = np.argmin(branches, axis=0)
        eta = np.take_along_axis(branches, idx[None], axis=0)[0]
        regime = np.array([-4, -3, -2])[idx]
        mu_v = np.minimum(b["mu_a"] * e, b["mu_b"])
        treq = np.ceil(b["Treq_coef"] / (eta * e**2))
        eps4_v = np.fmin(np.sqrt(k0 / k2), k1 / k2)
        c_bound = np.ceil(b["C"] * _get(args, "Delta") / e**4)
    out = dict(mu=mu_v, eta=eta, eta_x=eta, eta_y=omega_v * eta, T_req=treq, C=b["C"], C_bound=c_bound,
               eps4=eps4_v, kappa0=k0, kappa1=k1, kappa2=k2, c_w=cw, A_w=b["A_w"], B_w=b["B_w"], Vbar=b["Vbar"],
               L_X=b["L_X"], L_Y=b["L_Y"], ell_x=b["ell_x"], regime=regime, trivial=e > _get(args, "G"))
    res: dict = {"law": law, "defaulted": defaulted}
    for k, v in out.items():
        if np.ndim(v):
            res[k] = np.asarray(v)
        else:
            res[k] = int(v) if k == "regime" else bool(v) if k == "trivial" else float(v)
    return res


def T_req_for(constants: Mapping[str, float], eta, eps):
    r""":math:`\lceil 20\Delta/(c_\omega n\eta\varepsilon^2)\rceil` for any step η (the theorem's T_req when
    η = η(ε); for a scaled step it is the formula of the schedule run, a guarantee only under (S) and η ≤ η(ε)).
    Vectorised over ``eta`` and ``eps`` (float for scalars)."""
    args, _ = _const_arrays(constants, needed=("n", "omega", "Delta"), who="T_req_for")
    cw = min(1.0, float(_get(args, "omega")))
    with np.errstate(divide="ignore"):
        out = np.ceil(float(COEFFS["T_req_factor"]) * float(_get(args, "Delta"))
                      / (cw * float(_get(args, "n")) * np.asarray(eta, float) * np.asarray(eps, float) ** 2))
    return float(out) if out.ndim == 0 else out


def step_caps(constants: Mapping[str, float], case: str = "ii") -> tuple[float, float]:
    r"""The caps of the step-size rule (S) (spec §1.4): :math:`(1/(6nL_X),\ 1/(4nL_Y))` (``inf`` for a zero
    constant)."""
    keys, f = _branch_fn(check_case(case), "gaussian", _coeff_key())
    args, _ = _const_arrays(constants, needed=_CAP_KEYS, who="step_caps")
    b = dict(zip(keys, f(*args, 1.0)))
    nn = float(_get(args, "n"))
    with np.errstate(divide="ignore"):
        return (float(1 / (float(COEFFS["S_x"]) * nn * np.float64(b["L_X"]))),
                float(1 / (float(COEFFS["S_y"]) * nn * np.float64(b["L_Y"]))))


def satisfies_S(constants: Mapping[str, float], eta_x: float, eta_y: float, case: str = "ii",
                rtol: float = 1e-12) -> bool:
    r"""Step-size rule (S): :math:`\eta_x\le1/(6nL_X)` and :math:`\eta_y\le1/(4nL_Y)` (spec §1.4), up to a
    relative rounding tolerance ``rtol`` (a step set *at* the cap passes)."""
    cx, cy = step_caps(constants, case)
    return bool(eta_x <= cx * (1 + rtol) and eta_y <= cy * (1 + rtol))


@functools.lru_cache(maxsize=None)
def _bound_fn(case: str, law: str, _coeffs: tuple):
    args = [_S[k] for k in _CONST_NAMES] + [eta_x, eta_y, mu]
    return sp.lambdify(args, calE_expr(case, law=law), modules="numpy", cse=True)


def evaluate_bound(constants: Mapping[str, float], T, eta_x: float, eta_y: float, mu: float,
                   case: str = "ii", law: str = "gaussian", require_S: bool = True) -> dict:
    r"""Evaluate L6(A) (or R6(A)) numerically: ``calE``, ``B`` (= :math:`\mathcal B(T)`), ``B_x``, ``B_y``,
    ``B_inf`` and ``S`` (whether (S) holds, with the caps ``cap_x``, ``cap_y``).

    ``T`` may be an array (a grid of epochs). ``constants`` need the keys of :data:`BOUND_KEYS` (``q`` included).
    L6(A) holds only under (S): with ``require_S=True`` (default) steps that violate (S) raise ``ValueError``;
    ``require_S=False`` returns the formula's values anyway (``S`` is then False).
    """
    args, _ = _const_arrays(constants, needed=BOUND_KEYS, who="evaluate_bound")
    cx, cy = step_caps(constants, case)
    ok = bool(eta_x <= cx * (1 + 1e-12) and eta_y <= cy * (1 + 1e-12))
    if require_S and not ok:
        raise ValueError(f"evaluate_bound: the step sizes violate (S): eta_x = {eta_x:.6g} vs 1/(6 n L_X) = "
                         f"{cx:.6g}, eta_y = {eta_y:.6g} vs 1/(4 n L_Y) = {cy:.6g}; L6(A) does not apply "
                         "(pass require_S=False for the formula's values)")
    fn = _bound_fn(check_case(case), check_law(law), _coeff_key())
    e = float(fn(*args, np.float64(eta_x), np.float64(eta_y), np.float64(mu)))
    Tn = np.asarray(T, dtype=np.float64)
    nn, D = float(_get(args, "n")), float(_get(args, "Delta"))
    num = 4 * D / (nn * Tn) + 4 * e / nn
    out = dict(calE=e, B=num / min(eta_x, eta_y), B_x=num / eta_x, B_y=num / eta_y,
               B_inf=4 * e / (nn * min(eta_x, eta_y)))
    res = {k: _scalar(v) if np.ndim(v) else float(v) for k, v in out.items()}
    res.update(S=ok, cap_x=cx, cap_y=cy)
    return res


_ETA = sp.Symbol("eta", positive=True)


def term_exprs(case: str = "ii", law: str = "gaussian") -> dict[str, sp.Expr]:
    r"""Terms (i)–(iv) of the proof of L6(B) as functions of (constants, η, μ) with η_x = η, η_y = ωη: their sum is
    :math:`4\mathcal E/(n\eta)` (checked in ``test_symbolic.py``); (v) = 4Δ/(nηT) is added by :func:`terms`."""
    Lx, Ly, Lxy, LX, _, _ = _derived(check_case(case), False)
    t = law_terms(check_law(law), mu)
    Gn, Vm, b2, e = t["G_nu"], t["V"], t["beta"] ** 2, _ETA
    return {"i": 6 * b2, "ii": 6 * LX * e * Vm / q,
            "iii": 4 * n**2 * e**2 * (2 * Lx**2 * Gn**2 + omega**2 * Lxy**2 * G**2 + omega * Lxy**2 * Gn**2
                                      + omega**3 * Ly**2 * G**2 / 2),
            "iv": 4 * n * Vm * e**2 * (3 * Lx**2 + sp.Rational(3, 2) * omega * Lxy**2) / q}


@functools.lru_cache(maxsize=None)
def _terms_fn(case: str, law: str, _coeffs: tuple):
    ex = term_exprs(case, law)
    keys = tuple(ex)
    return keys, sp.lambdify([_S[k] for k in _CONST_NAMES] + [_ETA, mu], [ex[k] for k in keys], modules="numpy")


def terms(constants: Mapping[str, float], eps: float, case: str = "ii", law: str = "gaussian") -> dict:
    r"""The five terms of the proof of L6(B) (R6(B)) at the schedule η(ε), μ(ε), T_req(ε), each of which the
    theorem bounds by :math:`c_\omegaarepsilon^2/5` (``cap``): (i) 6β², (ii) 6L_XηV/q, (iii) 4n²η²(…G_ν², G²),
    (iv) 4nVB_ωη²/q, (v) 4Δ/(nηT_req); plus ``eta``, ``mu``, ``T_req`` and ``S`` (η(ε), ωη(ε) satisfy (S))."""
    th = evaluate_theorem(constants, eps, case, law)
    keys, f = _terms_fn(check_case(case), check_law(law), _coeff_key())
    args, _ = _const_arrays(constants)
    vals = dict(zip(keys, (float(v) for v in f(*args, th["eta"], th["mu"]))))
    vals["v"] = 4 * float(constants["Delta"]) / (float(constants["n"]) * th["eta"] * th["T_req"])
    return dict(vals, cap=th["c_w"] * eps**2 / 5, eta=th["eta"], mu=th["mu"], T_req=th["T_req"],
                regime=th["regime"], S=satisfies_S(constants, th["eta_x"], th["eta_y"], case))


def schedule(constants: Mapping[str, float], eps: float, s: float = 1.0, case: str = "ii",
             law: str = "gaussian") -> dict:
    r"""The parameters of one run at ε: η_x = s·η(ε), η_y = ω η_x, μ = μ(ε) of L6(B) (R6(B) for Rademacher).

    s = 1 is the theorem's schedule (certified mode).  s > 1 (the simulator's scaling mode) multiplies every
    branch of η(ε) = min{κ₀, κ₁ε, κ₂ε²}, so the regimes (and ε₄) are the theorem's and η ∝ ε² on ε ≤ ε₄.
    Returns ``eta_x, eta_y, mu, T_req`` (T_req of the step run, :func:`T_req_for`; a guarantee only for s ≤ 1),
    ``T_req_certified`` (s = 1), ``regime, eps4, kappa0, kappa1, kappa2, C``, ``S_factor`` = η_x/κ₀ and ``S``
    (whether (η_x, η_y) satisfy (S)).
    """
    th = evaluate_theorem(constants, eps, case, law)
    eta = float(s * th["eta"])
    eta_y_ = float(constants["omega"]) * eta
    return dict(eta_x=eta, eta_y=eta_y_, mu=float(th["mu"]), T_req=int(T_req_for(constants, eta, eps)),
                T_req_certified=int(th["T_req"]), regime=int(th["regime"]), eps4=float(th["eps4"]),
                kappa0=float(th["kappa0"]), kappa1=float(th["kappa1"]), kappa2=float(th["kappa2"]),
                C=float(th["C"]), S_factor=eta / float(th["kappa0"]),
                S=satisfies_S(constants, eta, eta_y_, case), law=law)


# ------------------------------------------------------------------------------------------------ theorem
class Theorem:
    r"""Theorem L6 of spec §3 (``law='gaussian'``) or its Rademacher analogue R6 (``theory/RADEMACHER.md``) for one
    A3 case (``'ii'`` default; ``Theorem('i')`` for A3(i)).

    Attributes: ``name`` (``'L6'`` or ``'R6'``), ``spec``, ``case``, ``law`` and ``exprs`` (the dict of
    :func:`theorem_exprs`). ``evaluate(constants, eps=None)`` is :func:`evaluate_theorem` (ε taken from
    ``constants['eps']`` if not given); ``latex()`` renders (A) and (B), including
    :math:`T\ge\lceil C\Delta\varepsilon^{-4}\rceil`; ``text()`` is the plain-text version printed by
    ``hybridopt theory``.
    """

    def __init__(self, case: str = "ii", law: str = "gaussian"):
        self.case, self.law = check_case(case), check_law(law)
        self.name = "L6" if law == "gaussian" else "R6"
        self.spec = ("spec §3 L6 (A) fixed-step bound, (B) epsilon-schedule; Remark 3.7" if law == "gaussian" else
                     "theory/RADEMACHER.md R6 (A) fixed-step bound, (B) epsilon-schedule")

    @property
    def exprs(self) -> dict:
        """:func:`theorem_exprs` of this case and law (built when first read, for the current coefficients)."""
        return theorem_exprs(self.case, law=self.law)

    @property
    def display(self) -> dict:
        return theorem_exprs(self.case, display=True, law=self.law)

    def evaluate(self, constants: Mapping[str, float], eps=None) -> dict:
        if eps is None:
            if "eps" not in constants:
                raise KeyError("Theorem.evaluate: pass eps or put 'eps' in constants")
            eps = constants["eps"]
        return evaluate_theorem(constants, eps, self.case, self.law)

    def _law_lines(self, latex: bool) -> list[str]:
        if self.law == "gaussian":
            return []
        if latex:
            return [r"% Rademacher: G_\nu=G+\beta(\mu),\ \beta(\mu)=\tfrac12\ell_x\mu d_x,\ V_R(\mu)=d_x G_\nu^2"]
        return ["    Rademacher: G_nu = G + beta(mu), beta(mu) = ell_x*mu*d_x/2, V_R(mu) = d_x*G_nu**2"]

    def latex(self) -> str:
        x = self.display
        L = _latex
        gp = r"G_+=G" if self.case == "ii" else r"G_+=(2e^{1/4}-1)G"
        return "\n".join([
            rf"% Theorem {self.name} ({self.spec.split(' (')[0]}), {_LAW_NAME[self.law]}, A3 case ({self.case}), ${gp}$",
            r"% (A) fixed step sizes under (S): $\eta_x\le\frac{1}{6nL_X}$, $\eta_y\le\frac{1}{4nL_Y}$",
            *self._law_lines(True),
            r"\frac1T\sum_{t<T}\mathbb E\|\nabla f(z_t)\|^2\le\mathcal B(T)=" + L(x["bound_T"]),
            r"\mathcal E(\eta_x,\eta_y,\mu)=" + L(x["calE"]),
            r"% (B) epsilon-stationarity, $\eta_x=\eta(\varepsilon)$, $\eta_y=\omega\eta(\varepsilon)$, "
            r"$0<\varepsilon\le G$",
            r"c_\omega=" + L(x["c_w"]) + r",\quad A_\omega=" + L(x["A_w"]) + r",\quad B_\omega=" + L(x["B_w"]),
            r"\mu(\varepsilon)=" + L(x["mu_eps"]),
            r"\kappa_0=" + L(x["kappa0"]) + r",\quad\kappa_1=" + L(x["kappa1"]) + r",\quad\kappa_2=" + L(x["kappa2"]),
            r"\eta(\varepsilon)=\min\{\kappa_0,\kappa_1\varepsilon,\kappa_2\varepsilon^2\}",
            r"T\ge T_{\rm req}(\varepsilon)=" + L(x["T_req"]),
            r"T_{\rm req}(\varepsilon)\le\left\lceil C\,\Delta\,\varepsilon^{-4}\right\rceil,\qquad C=" + L(x["C"]),
            r"\Longrightarrow\ \frac1T\sum_{t<T}\mathbb E\|\nabla f(z_t)\|^2\le\varepsilon^2,\qquad"
            r"\varepsilon^{-4}\text{ regime: }\varepsilon\le\varepsilon_4=" + L(x["eps4"]),
        ])

    def text(self) -> str:
        x = self.display
        s = sp.sstr
        gp = "G_plus = G" if self.case == "ii" else "G_plus = (2*exp(1/4) - 1)*G"
        src = "spec §3" if self.law == "gaussian" else "theory/RADEMACHER.md"
        return "\n".join([
            f"Theorem {self.name} (this package's formalization; {src}), {_LAW_NAME[self.law]}, A3 case "
            f"({self.case}): {gp}",
            "Assumptions: A1 (f_i in C^2, f* > -inf, Delta = f(z0) - f*), A2 (HGS: ||H_aa f_i|| <= L_a0 + L_a1"
            " ||grad f_i||, a in {x, y, xy}), A3 (||grad f_i|| <= G on the x-lines through the y-iterates).",
            "Derived: ell_a = L_a0 + L_a1*G, L_a = L_a0 + L_a1*G_plus, L_X = L_x + L_xy, L_Y = L_y + L_xy,",
            "         V(mu) = 2*(d_x+2)*G**2 + ell_x**2*mu**2/2*d_x*(d_x+2)*(d_x+4)",
            *self._law_lines(False),
            "(A) under (S) eta_x <= 1/(6 n L_X), eta_y <= 1/(4 n L_Y):",
            "    (1/T) sum_t E||grad f(z_t)||^2 <= B(T) = " + s(x["bound_T"]),
            "    calE = " + s(x["calE"]),
            "(B) for 0 < eps <= G, eta_x = eta(eps), eta_y = omega*eta(eps):",
            "    c_w = " + s(x["c_w"]) + ",  A_w = " + s(x["A_w"]) + ",  B_w = " + s(x["B_w"]),
            "    mu(eps)  = " + s(x["mu_eps"]),
            "    kappa0 = " + s(x["kappa0"]),
            "    kappa1 = " + s(x["kappa1"]),
            "    kappa2 = " + s(x["kappa2"]),
            "    eta(eps) = min(kappa0, kappa1*eps, kappa2*eps**2)",
            "    T_req(eps) = " + s(x["T_req"]),
            "    T_req(eps) <= ceil(C*Delta/eps**4),  C = " + s(x["C"]),
            "    eps^-4 regime iff eps <= eps4 = " + s(x["eps4"]),
            "  => (1/T) sum_{t<T} E||grad f(z_t)||^2 <= eps**2 for every T >= T_req(eps).",
        ])

    def __repr__(self):
        return f"Theorem(case={self.case!r}, law={self.law!r})"


#: Theorem L6 for case 'ii' (Gaussian directions) and its Rademacher analogue R6.
THEOREM = Theorem("ii")
THEOREM_R = Theorem("ii", "rademacher")
