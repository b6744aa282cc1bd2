r"""Derived constants of spec §1.4 and §7 (sympy), plus the function :math:`E_1`.

For :math:`a\in\{x,y,xy\}`:

.. math::

   \ell_a = L_{a,0}+L_{a,1}G,\qquad L_a = L_{a,0}+L_{a,1}G_+,\qquad L_X=L_x+L_{xy},\qquad L_Y=L_y+L_{xy},

   V(\mu)=2(d_x+2)G^2+\tfrac{\ell_x^2\mu^2}{2}d_x(d_x+2)(d_x+4),

with :math:`G_+=(2e^{1/4}-1)G` under A3(i) (case ``'i'``) and :math:`G_+=G` under A3(ii) (case ``'ii'``, the
default everywhere in ``theory``).

``L_X`` and ``L_Y`` are *case expressions*: they behave as the case-``'ii'`` sympy expression (``L_X.subs``,
``sympy.sympify(L_X)``, arithmetic) and ``L_X('i')`` returns the case-``'i'`` expression.
"""
from __future__ import annotations

import numpy as np
import sympy as sp

from hybridopt.theory.symbols import SYMBOLS

__all__ = ["E1", "E1_numpy", "G_PLUS_FACTOR_I", "G_plus", "ell", "L", "L_X", "L_Y", "V", "CASES", "check_case"]

CASES = ("i", "ii")
_S = SYMBOLS
#: :math:`2e^{1/4}-1\approx1.56805`, the factor of :math:`G_+` under A3(i) (L1*, proof step 5).
G_PLUS_FACTOR_I = 2 * sp.exp(sp.Rational(1, 4)) - 1


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
    r""":math:`V(\mu)=2(d_x+2)G^2+\frac{\ell_x^2\mu^2}{2}d_x(d_x+2)(d_x+4)`: the ZO noise bound (L3 at iterates).

    ``E[||xi_{t,k}||^2 | F_{t,k}] <= V(mu)/q``. Spec §1.4 and L3 "How it is applied". Case independent.
    """
    mu = _S["mu"] if mu is None else sp.sympify(mu)
    dx, G = _S["d_x"], _S["G"]
    return 2 * (dx + 2) * G**2 + ell("x") ** 2 * mu**2 / 2 * dx * (dx + 2) * (dx + 4)


# ------------------------------------------------------------------------------------------ display symbols
#: Abstract symbols standing for the derived constants, used only to *render* formulas compactly (LaTeX and
#: text); the evaluable expressions always use the definitions above. ``expand_display`` maps them back.
DISPLAY: dict[str, sp.Symbol] = {k: sp.Symbol(k, real=True, positive=True) for k in (
    "ell_x", "ell_y", "ell_xy", "L_x", "L_y", "L_xy", "L_X", "L_Y", "V", "G_plus", "c_omega", "A_omega",
    "B_omega", "kappa_0", "kappa_1", "kappa_2")}
_DISPLAY_LATEX = {
    "ell_x": r"\ell_x", "ell_y": r"\ell_y", "ell_xy": r"\ell_{xy}", "L_x": "L_x", "L_y": "L_y", "L_xy": "L_{xy}",
    "L_X": "L_X", "L_Y": "L_Y", "V": r"V(\mu)", "G_plus": "G_+", "c_omega": r"c_\omega", "A_omega": r"A_\omega",
    "B_omega": r"B_\omega", "kappa_0": r"\kappa_0", "kappa_1": r"\kappa_1", "kappa_2": r"\kappa_2"}
from hybridopt.theory.symbols import LATEX_NAMES as _LN  # noqa: E402

_LN.update({DISPLAY[k]: v for k, v in _DISPLAY_LATEX.items()})


def derived(case: str = "ii", display: bool = False) -> dict[str, sp.Expr]:
    """The derived constants of §1.4 for one case: definitions, or (``display=True``) their display symbols."""
    if display:
        return dict(DISPLAY)
    return {"ell_x": ell("x"), "ell_y": ell("y"), "ell_xy": ell("xy"), "L_x": L("x", case), "L_y": L("y", case),
            "L_xy": L("xy", case), "L_X": L_X(case), "L_Y": L_Y(case), "V": V(), "G_plus": G_plus(case)}


def expand_display(expr: sp.Expr, case: str = "ii") -> sp.Expr:
    """Replace display symbols by their definitions (``V`` last, since it contains ``ell_x``)."""
    d = derived(case)
    expr = expr.subs(DISPLAY["V"], d["V"])
    return expr.subs({DISPLAY[k]: v for k, v in d.items() if k != "V"})
