r"""Theorem L6 (spec §3): (A) the fixed-step bound :math:`\mathcal B(T)` and (B) the ε-schedule with T_req(ε).

All module-level expressions are sympy expressions of :data:`theory.symbols.SYMBOLS` for the A3 case ``'ii'``
(:math:`G_+=G`); :func:`theorem_exprs` gives either case.

**(A)** Under A1–A3 and (S),

.. math::

   \frac1T\sum_{t<T}\mathbb E\|\nabla f(z_t)\|^2\le\mathcal B(T)
   :=\frac{\frac{4\Delta}{nT}+\frac4n\mathcal E(\eta_x,\eta_y,\mu)}{\min(\eta_x,\eta_y)},

   \mathcal E=n^3G^2\big[2L_x^2\eta_x^3+L_{xy}^2\eta_x\eta_y(\eta_x+\eta_y)+\tfrac12L_y^2\eta_y^3\big]
   +\tfrac{n^2V(\mu)}{q}\big[3L_x^2\eta_x^3+\tfrac32L_{xy}^2\eta_x^2\eta_y\big]
   +\tfrac32n\eta_x\ell_x^2\mu^2d_x+\tfrac32nL_X\eta_x^2\tfrac{V(\mu)}q .

**(B)** With :math:`\eta_x=\eta(\varepsilon)=\min\{\kappa_0,\kappa_1\varepsilon,\kappa_2\varepsilon^2\}`,
:math:`\eta_y=\omega\eta`, :math:`\mu=\mu(\varepsilon)` and
:math:`T\ge T_{\rm req}=\lceil 20\Delta/(c_\omega n\eta\varepsilon^2)\rceil\le\lceil C\Delta\varepsilon^{-4}\rceil`,
the average squared gradient norm is :math:`\le\varepsilon^2`.

Numerics: :func:`evaluate_theorem` (vectorised in ε, lambdified once per case and cached) and
:func:`evaluate_bound` (vectorised in T).
"""
from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
import sympy as sp

from hybridopt.theory.constants import DISPLAY, L, L_X, L_Y, V, check_case, ell
from hybridopt.theory.symbols import SYMBOLS, latex as _latex

__all__ = [
    "calE_expr", "bound_expr", "theorem_exprs", "calE", "bound_T", "bound_T_x", "bound_T_y", "bound_T_inf",
    "c_w", "A_w", "B_w", "mu_eps", "kappa0", "kappa1", "kappa2", "eta_eps", "T_req", "C", "eps4",
    "Theorem", "THEOREM", "evaluate_theorem", "evaluate_bound", "REQUIRED_KEYS",
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

#: constants that :func:`evaluate_theorem` needs (``q`` and ``omega`` default to 1).
REQUIRED_KEYS = ("L_x0", "L_x1", "L_y0", "L_y1", "L_xy0", "L_xy1", "G", "n", "d_x", "Delta")


def _derived(case: str, display: bool):
    if display:
        D = DISPLAY
        return D["L_x"], D["L_y"], D["L_xy"], D["L_X"], D["L_Y"], D["ell_x"], (lambda mu: D["V"])
    return L("x", case), L("y", case), L("xy", case), L_X(case), L_Y(case), ell("x"), V


def calE_expr(case: str = "ii", eta_x=eta_x, eta_y=eta_y, mu=mu, display: bool = False) -> sp.Expr:
    r""":math:`\mathcal E(\eta_x,\eta_y,\mu)`, the per-epoch error of L5 (spec §3, L5 and §7 ``calE``).

    ``display=True`` writes it with the display symbols :math:`L_x,\ell_x,V(\mu),\dots` (for rendering only)."""
    Lx, Ly, Lxy, LX, _, lx, Vf = _derived(check_case(case), display)
    Vm = Vf(mu)
    return (n**3 * G**2 * (2 * Lx**2 * eta_x**3 + Lxy**2 * eta_x * eta_y * (eta_x + eta_y)
                           + Ly**2 * eta_y**3 / 2)
            + n**2 * Vm / q * (3 * Lx**2 * eta_x**3 + sp.Rational(3, 2) * Lxy**2 * eta_x**2 * eta_y)
            + sp.Rational(3, 2) * n * eta_x * lx**2 * mu**2 * d_x
            + sp.Rational(3, 2) * n * LX * eta_x**2 * Vm / q)


def bound_expr(case: str = "ii", block: str | None = None, T=T, display: bool = False) -> sp.Expr:
    r""":math:`\mathcal B(T)` of L6(A); ``block='x'``/``'y'`` gives the per-block form (divide by
    :math:`\eta_x`/:math:`\eta_y`), ``T=sympy.oo`` the floor :math:`\mathcal B(\infty)=4\mathcal E/(n\min\eta)`."""
    num = 4 * Delta / (n * T) + 4 * (_CALE if display else calE_expr(case)) / n
    den = {None: sp.Min(eta_x, eta_y), "x": eta_x, "y": eta_y}[block]
    return num / den


def _branches(case: str, display: bool = False) -> dict[str, sp.Expr]:
    """ε-independent pieces of L6(B), written with a placeholder ``c_w`` for min(1, ω)."""
    check_case(case)
    Lx, Ly, Lxy, LX, LY, lx, _ = _derived(case, display)
    A = 2 * Lx**2 + omega * (1 + omega) * Lxy**2 + omega**3 * Ly**2 / 2
    B = 3 * Lx**2 + sp.Rational(3, 2) * omega * Lxy**2
    out = {"A_w": A, "B_w": B, "L_X": LX, "L_Y": LY, "ell_x": lx}
    if display:
        A, B = DISPLAY["A_omega"], DISPLAY["B_omega"]
    out.update({
        "mu_a": sp.sqrt(_cw / (30 * d_x)) / lx,            # times eps
        "mu_b": 2 * G / (lx * sp.sqrt(d_x * (d_x + 4))),
        "kappa0_a": 1 / (6 * n * LX), "kappa0_b": 1 / (4 * n * omega * LY),
        "kappa1_a": sp.sqrt(_cw / (20 * A)) / (n * G),
        "kappa1_b": sp.sqrt(_cw * q / (80 * n * (d_x + 2) * B)) / G,
        "kappa2": _cw * q / (120 * LX * (d_x + 2) * G**2),
        "Treq_coef": 20 * Delta / (_cw * n),                # T_req = ceil(coef / (eta eps^2))
        "C": G**2 / _cw * (120 * LX + 80 * omega * LY + 2400 * LX * (d_x + 2) / (_cw * n * q)
                           + 20 * sp.sqrt(20 * A / _cw) + 20 * sp.sqrt(80 * (d_x + 2) * B / (_cw * q * n))),
    })
    return out


def theorem_exprs(case: str = "ii", display: bool = False) -> dict[str, sp.Expr]:
    r"""All L6 expressions for one A3 case: ``calE, bound_T, bound_T_x, bound_T_y, bound_T_inf, c_w, A_w, B_w,
    mu_eps, kappa0, kappa1, kappa2, eta_eps, T_req, C, eps4`` (spec §3 L6 and §7).

    ``display=True`` gives the same formulas in terms of the display symbols (:math:`L_X`, :math:`c_\omega`,
    :math:`\kappa_j`, ...) for rendering; those are not evaluable from a constants dict."""
    b = _branches(case, display)
    cw = DISPLAY["c_omega"] if display else sp.Min(1, omega)
    sub = lambda e: e.subs(_cw, cw)  # noqa: E731
    k0 = sp.Min(b["kappa0_a"], b["kappa0_b"])
    k1 = sp.Min(sub(b["kappa1_a"]), sub(b["kappa1_b"]))
    k2 = sub(b["kappa2"])
    if display:
        K0, K1, K2 = DISPLAY["kappa_0"], DISPLAY["kappa_1"], DISPLAY["kappa_2"]
    else:
        K0, K1, K2 = k0, k1, k2
    eta = sp.Min(K0, K1 * eps, K2 * eps**2)
    return {
        "calE": calE_expr(case, display=display), "bound_T": bound_expr(case, display=display),
        "bound_T_x": bound_expr(case, "x", display=display), "bound_T_y": bound_expr(case, "y", display=display),
        "bound_T_inf": bound_expr(case, None, sp.oo, display=display),
        "c_w": sp.Min(1, omega), "A_w": b["A_w"], "B_w": b["B_w"],
        "mu_eps": sp.Min(sub(b["mu_a"]) * eps, b["mu_b"]),
        "kappa0": k0, "kappa1": k1, "kappa2": k2, "eta_eps": eta,
        "T_req": sp.ceiling(20 * Delta / (cw * n * eta * eps**2)),
        "C": sub(b["C"]),
        "eps4": sp.Min(sp.sqrt(K0 / K2), K1 / K2),
    }


_II = theorem_exprs("ii")
calE, bound_T, bound_T_x, bound_T_y, bound_T_inf = (
    _II["calE"], _II["bound_T"], _II["bound_T_x"], _II["bound_T_y"], _II["bound_T_inf"])
c_w, A_w, B_w, mu_eps = _II["c_w"], _II["A_w"], _II["B_w"], _II["mu_eps"]
kappa0, kappa1, kappa2, eta_eps, T_req, C, eps4 = (
    _II["kappa0"], _II["kappa1"], _II["kappa2"], _II["eta_eps"], _II["T_req"], _II["C"], _II["eps4"])

# ----------------------------------------------------------------------------------------------- numerics
_CONST_NAMES = ("L_x0", "L_x1", "L_y0", "L_y1", "L_xy0", "L_xy1", "G", "n", "d_x", "q", "omega", "Delta")


@functools.lru_cache(maxsize=None)
def _branch_fn(case: str):
    b = _branches(case)
    keys = tuple(b)
    args = [_S[k] for k in _CONST_NAMES] + [_cw]
    f = sp.lambdify(args, [b[k] for k in keys], modules="numpy", cse=True)
    return keys, f


def _const_arrays(constants: Mapping[str, float]) -> list[np.ndarray]:
    missing = [k for k in REQUIRED_KEYS if k not in constants]
    if missing:
        raise KeyError(f"evaluate_theorem: missing constants {missing} (need {list(REQUIRED_KEYS)}; "
                       "'q' and 'omega' default to 1)")
    vals = dict(q=1.0, omega=1.0)
    vals.update({k: constants[k] for k in _CONST_NAMES if k in constants})
    return [np.asarray(vals[k], dtype=np.float64) for k in _CONST_NAMES]


def _scalar(x):
    x = np.asarray(x)
    return x[()] if x.ndim == 0 else x


def evaluate_theorem(constants: Mapping[str, float], eps, case: str = "ii") -> dict:
    r"""Evaluate L6(B) numerically (float64, vectorised over ``eps``).

    Args:
      constants: ``dict[str, float]`` with the six HGS constants, ``G``, ``n``, ``d_x``, ``Delta`` and optionally
        ``q`` and ``omega`` (default 1); extra keys (``d_y``, ...) are ignored.
      eps: target accuracy ε (float or array).
      case: A3 case, ``'ii'`` (:math:`G_+=G`, default) or ``'i'``.

    Returns:
      dict of floats (arrays if ``eps`` is an array): ``mu, eta, eta_x, eta_y, T_req, C, C_bound`` (=
      ``ceil(C Δ/ε⁴)``), ``eps4, kappa0, kappa1, kappa2, c_w, A_w, B_w, L_X, L_Y, ell_x``, ``regime`` (−2, −3 or −4:
      the active branch κ0, κ1ε, κ2ε² of η; ties go to the higher order) and ``trivial`` (ε > G: any T ≥ 1 works,
      the formula values are still returned). Division by a zero constant gives ``inf`` (spec: 1/0 := +∞).
    """
    keys, f = _branch_fn(check_case(case))
    args = _const_arrays(constants)
    omega_v = args[_CONST_NAMES.index("omega")]
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
        c_bound = np.ceil(b["C"] * args[_CONST_NAMES.index("Delta")] / e**4)
    out = dict(mu=mu_v, eta=eta, eta_x=eta, eta_y=omega_v * eta, T_req=treq, C=b["C"], C_bound=c_bound,
               eps4=eps4_v, kappa0=k0, kappa1=k1, kappa2=k2, c_w=cw, A_w=b["A_w"], B_w=b["B_w"],
               L_X=b["L_X"], L_Y=b["L_Y"], ell_x=b["ell_x"], regime=regime,
               trivial=e > args[_CONST_NAMES.index("G")])
    res = {}
    for k, v in out.items():
        if np.ndim(v):
            res[k] = np.asarray(v)
        else:
            res[k] = int(v) if k == "regime" else bool(v) if k == "trivial" else float(v)
    return res


@functools.lru_cache(maxsize=None)
def _bound_fn(case: str):
    ex = {"calE": calE_expr(case)}
    args = [_S[k] for k in _CONST_NAMES] + [eta_x, eta_y, mu]
    return sp.lambdify(args, ex["calE"], modules="numpy", cse=True)


def evaluate_bound(constants: Mapping[str, float], T, eta_x: float, eta_y: float, mu: float,
                   case: str = "ii") -> dict:
    r"""Evaluate L6(A) numerically: ``calE``, ``B`` (= :math:`\mathcal B(T)`), ``B_x``, ``B_y`` and ``B_inf``.

    ``T`` may be an array (a grid of epochs). ``constants`` as in :func:`evaluate_theorem` (``q`` defaults to 1).
    The step sizes are *not* checked against (S); use :func:`theory.bound.satisfies_S` for that.
    """
    args = _const_arrays(constants)
    e = float(_bound_fn(check_case(case))(*args, np.float64(eta_x), np.float64(eta_y), np.float64(mu)))
    Tn = np.asarray(T, dtype=np.float64)
    nn, D = float(args[_CONST_NAMES.index("n")]), float(args[_CONST_NAMES.index("Delta")])
    num = 4 * D / (nn * Tn) + 4 * e / nn
    out = dict(calE=e, B=num / min(eta_x, eta_y), B_x=num / eta_x, B_y=num / eta_y,
               B_inf=4 * e / (nn * min(eta_x, eta_y)))
    return {k: _scalar(v) if np.ndim(v) else float(v) for k, v in out.items()}


def satisfies_S(constants: Mapping[str, float], eta_x: float, eta_y: float, case: str = "ii") -> bool:
    r"""Step-size rule (S): :math:`\eta_x\le1/(6nL_X)` and :math:`\eta_y\le1/(4nL_Y)` (spec §1.4)."""
    r = evaluate_theorem(constants, 1.0, case)
    nn = float(constants["n"])
    with np.errstate(divide="ignore"):
        return bool(eta_x <= 1 / (6 * nn * np.float64(r["L_X"])) and eta_y <= 1 / (4 * nn * np.float64(r["L_Y"])))


# ------------------------------------------------------------------------------------------------ theorem
class Theorem:
    r"""Theorem L6 of spec §3 for one A3 case (``'ii'`` default; ``Theorem('i')`` for A3(i)).

    Attributes: ``name='L6'``, ``spec``, ``case`` and ``exprs`` (the dict of :func:`theorem_exprs`).
    ``evaluate(constants, eps=None)`` is :func:`evaluate_theorem` (ε taken from ``constants['eps']`` if not given);
    ``latex()`` renders (A) and (B), including :math:`T\ge\lceil C\Delta\varepsilon^{-4}\rceil`; ``text()`` is the
    plain-text version printed by ``hybridopt theory``.
    """

    name = "L6"
    spec = "spec §3 L6 (A) fixed-step bound, (B) epsilon-schedule; Remark 3.7"

    def __init__(self, case: str = "ii"):
        self.case = check_case(case)
        self.exprs = theorem_exprs(case)
        self.display = theorem_exprs(case, display=True)

    def evaluate(self, constants: Mapping[str, float], eps=None) -> dict:
        if eps is None:
            if "eps" not in constants:
                raise KeyError("Theorem.evaluate: pass eps or put 'eps' in constants")
            eps = constants["eps"]
        return evaluate_theorem(constants, eps, self.case)

    def latex(self) -> str:
        x = self.display
        L = _latex
        gp = r"G_+=G" if self.case == "ii" else r"G_+=(2e^{1/4}-1)G"
        return "\n".join([
            r"% Theorem L6 (spec §3), A3 case (" + self.case + "), $" + gp + "$",
            r"% (A) fixed step sizes under (S): $\eta_x\le\frac{1}{6nL_X}$, $\eta_y\le\frac{1}{4nL_Y}$",
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
        return "\n".join([
            f"Theorem L6 (this package's formalization; spec §3), A3 case ({self.case}): {gp}",
            "Assumptions: A1 (f_i in C^2, f* > -inf, Delta = f(z0) - f*), A2 (HGS: ||H_aa f_i|| <= L_a0 + L_a1"
            " ||grad f_i||, a in {x, y, xy}), A3 (||grad f_i|| <= G on the x-lines through the y-iterates).",
            "Derived: ell_a = L_a0 + L_a1*G, L_a = L_a0 + L_a1*G_plus, L_X = L_x + L_xy, L_Y = L_y + L_xy,",
            "         V(mu) = 2*(d_x+2)*G**2 + ell_x**2*mu**2/2*d_x*(d_x+2)*(d_x+4)",
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
        return f"Theorem(case={self.case!r})"


#: Theorem L6 for case 'ii'.
THEOREM = Theorem("ii")
