r"""Derived constants of spec §1.4 and §7 (sympy), plus the function :math:`E_1`.

For :math:`a\in\{x,y,xy\}`:

.. math::

   \ell_a = L_{a,0}+L_{a,1}G,\qquad L_a = L_{a,0}+L_{a,1}G_+,\qquad L_X=L_x+L_{xy},\qquad L_Y=L_y+L_{xy},

   V(\mu)=2(d_x+2)G^2+\tfrac{\ell_x^2\mu^2}{2}d_x(d_x+2)(d_x+4),

with :math:`G_+=(2e^{1/4}-1)G` under A3(i) (case ``'i'``) and :math:`G_+=G` under A3(ii) (case ``'ii'``, the
default everywhere in ``theory``).

Direction laws (``law``): ``'gaussian'`` (spec §2) and ``'rademacher'`` (u uniform on :math:`\{\pm1\}^{d_x}`,
``theory/RADEMACHER.md``).  Each law enters L4–L6 through three quantities of the estimator at an iterate
(:func:`law_terms`): the bias bound :math:`\beta(\mu)\ge\|\mathbb E\hat g-\nabla_xf_i\|`, the bound
:math:`G_\nu\ge\|\mathbb E\hat g\|` and the second-moment bound :math:`V(\mu)\ge\mathbb E\|\hat g_1\|^2`:

.. math::

   \text{Gaussian: }\beta=\ell_x\mu\sqrt{d_x},\ G_\nu=G,\ V=2(d_x+2)G^2+\tfrac{\ell_x^2\mu^2}2d_x(d_x+2)(d_x+4);
   \qquad
   \text{Rademacher: }\beta=\tfrac12\ell_x\mu d_x,\ G_\nu=G+\beta,\ V_R=d_x(G+\beta)^2 .

**Coefficients.**  Every numerical constant of the statements lives once in :data:`COEFFS` (read when an
expression is built), so that a mutation test (``theory.lemmas.mutated``) changes exactly one constant everywhere
it is used: :math:`V(\mu)` is built from the coefficients of L3(b), the Gaussian bias from L2(b), the Rademacher
bias from L3(a) at :math:`\|u\|^2=d_x`.

``L_X`` and ``L_Y`` are *case expressions*: they behave as the case-``'ii'`` sympy expression (``L_X.subs``,
``sympy.sympify(L_X)``, arithmetic) and ``L_X('i')`` returns the case-``'i'`` expression.
"""
from __future__ import annotations

import numpy as np
import sympy as sp

from hybridopt.theory.symbols import SYMBOLS

__all__ = ["E1", "E1_numpy", "G_PLUS_FACTOR_I", "G_plus", "ell", "L", "L_X", "L_Y", "V", "V_R", "law_terms",
           "CASES", "LAWS", "check_case", "check_law", "COEFFS", "DEFAULT_COEFFS"]

CASES = ("i", "ii")
#: direction laws of the ZO estimator with a theorem in this package (spec §2; theory/RADEMACHER.md).
LAWS = ("gaussian", "rademacher")
_S = SYMBOLS
R = sp.Rational

#: The numerical constants of the statements (spec §3, theory/RADEMACHER.md). Changing one changes exactly that
#: constant in every expression built afterwards (lemmas, bound, V); ``theory.lemmas.mutated`` does so temporarily.
DEFAULT_COEFFS: dict[str, sp.Expr] = {
    "L1_growth": sp.Integer(1),      # factor on Lambda_1 inside e^(.) and E_1(.) of L1(a) and gbar (M1: 0)
    "L1b_factor": R(1, 2),           # (1/2)(q0 + q1 gbar) in L1(b) (M2: 1/4)
    "L1c_x_growth": sp.Integer(1),   # Lambda^x_1 gbar in L1(c)_x (M9: 0)
    "L1c_y_growth": sp.Integer(1),   # Lambda^y_1 gbar in L1(c)_y
    "q0_cross": sp.Integer(2),       # 2 L_xy0 |h_x||h_y| in q0 (M8: 0)
    "q1_cross": sp.Integer(2),       # 2 L_xy1 |h_x||h_y| in q1 (M10: 0)
    "L2a_factor": R(1, 2),           # ell mu^2 m / 2 in L2(a) (M3: 1/4)
    "L2b_factor": sp.Integer(1),     # ell mu sqrt(m) in L2(b): the Gaussian bias beta in L5
    "L3a_factor": R(1, 2),           # ell mu |u|^2 / 2 in L3(a): at |u|^2 = m the Rademacher bias beta (M15: 1/4)
    "L3b_grad": sp.Integer(2),       # 2 (m+2) |grad phi|^2 in L3(b), and 2 (d_x+2) G^2 in V(mu) (M4: 1/2, M12: 1)
    "L3b_mu": R(1, 2),               # (1/2) m(m+2)(m+4) ell^2 mu^2 in L3(b) and V(mu) (M5: 1/8)
    "L3c_a": sp.Integer(4),          # a(m) = 4 (m+2)
    "L3c_b": R(1, 2),                # b(m) = (1/2) m (m+2)(m+12)
    "R2a_factor": R(1, 2),           # ell mu^2 m / 2 in R2(a) (Rademacher value bias)
    "R3b_dim": sp.Integer(1),        # m (|grad phi| + beta)^2 in R3(b) and V_R (M16: 1/2)
    "L4a_factor": sp.Integer(1),     # k eta_y G in L4(a) (M7: 1/2)
    "L4b_factor": sp.Integer(2),     # 2 eta_x^2 (...) in L4(b)
    "L4b_kpow": sp.Integer(2),       # k^2 G^2 in L4(b) (M6: 1)
    "S_x": sp.Integer(6),            # (S): eta_x <= 1/(6 n L_X)
    "S_y": sp.Integer(4),            # (S): eta_y <= 1/(4 n L_Y)
    "kappa0_x": sp.Integer(6),       # kappa_0 = min(1/(6 n L_X), ...) in eta(eps) (M11: 3, breaks (S))
    "kappa0_y": sp.Integer(4),       # kappa_0 = min(..., 1/(4 n omega L_Y))
    "kappa2_scale": sp.Integer(1),   # kappa_2 -> scale * kappa_2 in eta(eps) (M13: 100)
    "T_req_factor": sp.Integer(20),  # T_req = ceil(20 Delta / (c n eta eps^2)), term (v) (M14: 1/5, simulation)
    "mu_scale": sp.Integer(1),       # mu(eps) -> scale * mu(eps) in L6(B)/R6(B) (M17: 1000, simulation)
}
COEFFS: dict[str, sp.Expr] = dict(DEFAULT_COEFFS)
#: :math:`2e^{1/4}-1\approx1.56805`, the factor of :math:`G_+` under A3(i) (L1*, proof step 5).
G_PLUS_FACTOR_I = 2 * sp.exp(sp.Rational(1, 4)) - 1


def check_law(law: str) -> str:
    """Validate a direction law (``'gaussian'`` or ``'rademacher'``)."""
    if law not in LAWS:
        raise ValueError(f"direction law must be one of {LAWS}, got {law!r}")
    return law


def check_case(case: str) -> str:
    """Validate an A3 case flag (``'i'`` or ``'ii'``)."""
    if case not in CASES:
        raise ValueError(f"A3 case must be 'i' or 'ii', got {case!r}")
    return case


class E1(sp.Function):
    r""":math:`E_1(a)=(e^a-1)/a` for :math:`a\neq0` and :math:`E_1(0)=1` (spec §0, appendix (E2)).

    Kept unevaluated so that the value at 0 is exact; ``.rewrite(sp.exp)`` gives the closed form and
    :func:`E1_numpy` is the vectorised float64 implementation used by ``lambdify``.
    """

    nargs = 1

    @classmethod
    def eval(cls, a):
        if a.is_zero:
            return sp.Integer(1)
        return None

    def fdiff(self, argindex=1):
        a = self.args[0]
        return (a * sp.exp(a) - sp.exp(a) + 1) / a**2

    def _eval_rewrite_as_exp(self, a, **kwargs):
        return (sp.exp(a) - 1) / a

    def _eval_is_positive(self):
        if self.args[0].is_real:
            return True
        return None

    def _eval_evalf(self, prec):
        a = self.args[0]._eval_evalf(prec)
        if a is None:
            return None
        if a == 0:
            return sp.Float(1, prec)
        return ((sp.exp(a) - 1) / a)._eval_evalf(prec)

    def _latex(self, printer):
        return r"E_1\left(%s\right)" % printer._print(self.args[0])


def E1_numpy(a):
    """float64 ``E_1`` with ``expm1`` for accuracy near 0 and the value 1 at 0 (vectorised)."""
    a = np.asarray(a, dtype=np.float64)
    out = np.ones_like(a)
    nz = a != 0
    with np.errstate(over="ignore", invalid="ignore"):
        np.divide(np.expm1(a), a, out=out, where=nz)
    return out if out.ndim else out[()]


#: ``lambdify`` module mapping shared by the theory modules.
NUMPY_MODULES = [{"E1": E1_numpy}, "numpy"]


def G_plus(case: str = "ii") -> sp.Expr:
    r""":math:`G_+`: :math:`(2e^{1/4}-1)G` in case ``'i'`` (A3(i)), :math:`G` in case ``'ii'`` (A3(ii)). Spec §1.3."""
    return G_PLUS_FACTOR_I * _S["G"] if check_case(case) == "i" else _S["G"]


def _check_block(a: str) -> str:
    if a not in ("x", "y", "xy"):
        raise ValueError(f"block must be 'x', 'y' or 'xy', got {a!r}")
    return a


def ell(a: str) -> sp.Expr:
    r""":math:`\ell_a=L_{a,0}+L_{a,1}G` (Hessian-block bound on the x-lines, L1*(C1)-(C2)). Spec §1.4."""
    _check_block(a)
    return _S[f"L_{a}0"] + _S[f"L_{a}1"] * _S["G"]


def L(a: str, case: str = "ii") -> sp.Expr:
    r""":math:`L_a=L_{a,0}+L_{a,1}G_+` (Hessian-block bound on the y-segments, L1*(C3)-(C4)). Spec §1.4."""
    _check_block(a)
    return _S[f"L_{a}0"] + _S[f"L_{a}1"] * G_plus(case)


class _CaseExpr:
    """A case-dependent expression: acts as its case-'ii' sympy expression, ``obj('i')`` gives case 'i'."""

    def __init__(self, name: str, builder, doc: str):
        self._name, self._builder = name, builder
        self.__doc__ = doc

    def __call__(self, case: str = "ii") -> sp.Expr:
        return self._builder(check_case(case))

    def _sympy_(self):
        return self._builder("ii")

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self._builder("ii"), attr)

    def __repr__(self):
        return f"{self._name} = {self._builder('ii')}  (case 'ii'; call {self._name}('i') for A3(i))"

    def __str__(self):
        return str(self._builder("ii"))

    def __eq__(self, other):
        return sp.sympify(self) == other

    def __hash__(self):
        return hash(self._builder("ii"))


def _binop(name):
    def op(self, other):
        return getattr(self._builder("ii"), name)(other)
    return op


for _op in ("add", "sub", "mul", "truediv", "pow"):
    setattr(_CaseExpr, f"__{_op}__", _binop(f"__{_op}__"))
    setattr(_CaseExpr, f"__r{_op}__", _binop(f"__r{_op}__"))
_CaseExpr.__neg__ = lambda self: -self._builder("ii")

L_X = _CaseExpr("L_X", lambda c: L("x", c) + L("xy", c), r":math:`L_X=L_x+L_{xy}` (step-size rule (S)). Spec §1.4.")
L_Y = _CaseExpr("L_Y", lambda c: L("y", c) + L("xy", c), r":math:`L_Y=L_y+L_{xy}` (step-size rule (S)). Spec §1.4.")


def V(mu: sp.Expr | None = None) -> sp.Expr:
    r""":math:`V(\mu)=2(d_x+2)G^2+\frac{\ell_x^2\mu^2}{2}d_x(d_x+2)(d_x+4)`: the Gaussian ZO noise bound.

    It is L3(b) at an iterate (:math:`\|\nabla_xf_i\|\le G`, :math:`m=d_x`, :math:`\ell=\ell_x`), built from the
    coefficients of L3(b) (``COEFFS['L3b_grad']``, ``COEFFS['L3b_mu']``):
    ``E[||xi_{t,k}||^2 | F_{t,k}] <= V(mu)/q``. Spec §1.4 and L3 "How it is applied". Case independent.
    """
    mu = _S["mu"] if mu is None else sp.sympify(mu)
    dx, G = _S["d_x"], _S["G"]
    return (COEFFS["L3b_grad"] * (dx + 2) * G**2
            + COEFFS["L3b_mu"] * ell("x") ** 2 * mu**2 * dx * (dx + 2) * (dx + 4))


def beta_R(mu: sp.Expr | None = None) -> sp.Expr:
    r"""Rademacher bias bound :math:`\beta_R(\mu)=\frac12\ell_x\mu d_x` (R2(b): L3(a) at :math:`\|u\|^2=d_x`)."""
    mu = _S["mu"] if mu is None else sp.sympify(mu)
    return COEFFS["L3a_factor"] * ell("x") * mu * _S["d_x"]


def V_R(mu: sp.Expr | None = None) -> sp.Expr:
    r""":math:`V_R(\mu)=d_x\,(G+\tfrac12\ell_x\mu d_x)^2`: the Rademacher ZO noise bound (R3(b) at an iterate)."""
    return COEFFS["R3b_dim"] * _S["d_x"] * (_S["G"] + beta_R(mu)) ** 2


def law_terms(law: str = "gaussian", mu: sp.Expr | None = None) -> dict[str, sp.Expr]:
    r"""The estimator's three quantities in L4–L6 for one direction law (see the module docstring):
    ``beta`` (:math:`\ge\|\mathbb E[\hat g\mid\mathcal F]-\nabla_xf_i\|`), ``G_nu``
    (:math:`\ge\|\mathbb E[\hat g\mid\mathcal F]\|`) and ``V`` (:math:`\ge\mathbb E\|\hat g_1\|^2`)."""
    mu = _S["mu"] if mu is None else sp.sympify(mu)
    if check_law(law) == "gaussian":
        return {"beta": COEFFS["L2b_factor"] * ell("x") * mu * sp.sqrt(_S["d_x"]), "G_nu": _S["G"], "V": V(mu)}
    b = beta_R(mu)
    return {"beta": b, "G_nu": _S["G"] + b, "V": V_R(mu)}


# ------------------------------------------------------------------------------------------ display symbols
#: Abstract symbols standing for the derived constants, used only to *render* formulas compactly (LaTeX and
#: text); the evaluable expressions always use the definitions above. ``expand_display`` maps them back.
DISPLAY: dict[str, sp.Symbol] = {k: sp.Symbol(k, real=True, positive=True) for k in (
    "ell_x", "ell_y", "ell_xy", "L_x", "L_y", "L_xy", "L_X", "L_Y", "V", "V_R", "G_nu", "beta", "G_plus",
    "c_omega", "A_omega", "B_omega", "kappa_0", "kappa_1", "kappa_2")}
_DISPLAY_LATEX = {
    "ell_x": r"\ell_x", "ell_y": r"\ell_y", "ell_xy": r"\ell_{xy}", "L_x": "L_x", "L_y": "L_y", "L_xy": "L_{xy}",
    "L_X": "L_X", "L_Y": "L_Y", "V": r"V(\mu)", "V_R": r"V_R(\mu)", "G_nu": r"G_\nu", "beta": r"\beta(\mu)",
    "G_plus": "G_+", "c_omega": r"c_\omega", "A_omega": r"A_\omega",
    "B_omega": r"B_\omega", "kappa_0": r"\kappa_0", "kappa_1": r"\kappa_1", "kappa_2": r"\kappa_2"}
from hybridopt.theory.symbols import LATEX_NAMES as _LN  # noqa: E402

_LN.update({DISPLAY[k]: v for k, v in _DISPLAY_LATEX.items()})


def derived(case: str = "ii", display: bool = False) -> dict[str, sp.Expr]:
    """The derived constants of §1.4 for one case: definitions, or (``display=True``) their display symbols."""
    if display:
        return dict(DISPLAY)
    return {"ell_x": ell("x"), "ell_y": ell("y"), "ell_xy": ell("xy"), "L_x": L("x", case), "L_y": L("y", case),
            "L_xy": L("xy", case), "L_X": L_X(case), "L_Y": L_Y(case), "V": V(), "V_R": V_R(),
            "G_nu": _S["G"] + beta_R(), "G_plus": G_plus(case)}


def expand_display(expr: sp.Expr, case: str = "ii") -> sp.Expr:
    """Replace display symbols by their definitions (``V``, ``V_R``, ``G_nu`` first: they contain ``ell_x``).
    ``G_nu`` is the Rademacher one (the Gaussian :math:`G_\nu` is :math:`G`)."""
    d = derived(case)
    first = ("V", "V_R", "G_nu")
    expr = expr.subs({DISPLAY[k]: d[k] for k in first})
    return expr.subs({DISPLAY[k]: v for k, v in d.items() if k not in first})
