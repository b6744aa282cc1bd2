"""Every symbol of the theory, named as in the spec (``shared/theory/spec.md`` §0, §1.4, §3, §7).

The sympy ``Symbol`` names equal the keys of :data:`SYMBOLS`, so a plain ``dict[str, float]`` keyed by these
names evaluates any expression of :mod:`theory.constants`, :mod:`theory.lemmas` and :mod:`theory.bound`
(``expr.subs({SYMBOLS[k]: v for k, v in values.items()})`` or the lemma/theorem ``evaluate`` helpers).

Global quantities (spec §1, §2, §7):
  ``n, d_x, d_y, q`` (positive integers), ``L_x0, L_x1, L_y0, L_y1, L_xy0, L_xy1`` (HGS constants, >= 0),
  ``G`` (gradient bound, > 0), ``Delta`` (initial gap, > 0), ``eta_x, eta_y, mu`` (step sizes, smoothing radius),
  ``omega`` (step ratio of L6(B)), ``eps`` (target accuracy), ``T`` (epochs).
Local quantities of single lemmas:
  ``m, ell`` (L2/L3: dimension and gradient-Lipschitz constant of a generic phi),
  ``g0, hx, hy, s, theta`` (L1: ||grad f_i(z)||, ||h_x||, ||h_y||, segment parameter, radius),
  ``unorm, gnorm, gmu_norm`` (L3: ||u||, ||grad phi(x)||, ||grad phi_mu(x)||), ``k`` (L4: inner step).

Note: this is the package's own formalization; see ``theory/README.md``.
"""
from __future__ import annotations

import sympy as sp

__all__ = ["SYMBOLS", "LATEX_NAMES", "latex", "sym"]

_POS_INT = dict(integer=True, positive=True)
_NONNEG = dict(real=True, nonnegative=True)
_POS = dict(real=True, positive=True)

_SPECS: dict[str, dict] = {
    # problem sizes
    "n": _POS_INT, "d_x": _POS_INT, "d_y": _POS_INT, "q": _POS_INT, "T": _POS_INT,
    # HGS constants (Definition 1.1) and the gradient bound G (A3)
    "L_x0": _NONNEG, "L_x1": _NONNEG, "L_y0": _NONNEG, "L_y1": _NONNEG, "L_xy0": _NONNEG, "L_xy1": _NONNEG,
    "G": _POS, "Delta": _POS,
    # algorithm / theorem parameters
    "eta_x": _POS, "eta_y": _POS, "mu": _POS, "omega": _POS, "eps": _POS,
    # L2/L3 generic instance
    "m": _POS_INT, "ell": _NONNEG,
    # L1 local quantities
    "g0": _NONNEG, "hx": _NONNEG, "hy": _NONNEG, "s": _NONNEG, "theta": _POS,
    # L3 local quantities
    "unorm": _NONNEG, "gnorm": _NONNEG, "gmu_norm": _NONNEG,
    # L4 inner step index
    "k": dict(integer=True, nonnegative=True),
}

#: name -> sympy Symbol (with assumptions). The symbol's ``.name`` equals its key.
SYMBOLS: dict[str, sp.Symbol] = {name: sp.Symbol(name, **a) for name, a in _SPECS.items()}

#: LaTeX spelling of every symbol, as in the spec.
LATEX_NAMES: dict[sp.Symbol, str] = {
    SYMBOLS[k]: v for k, v in {
        "n": "n", "d_x": "d_x", "d_y": "d_y", "q": "q", "T": "T",
        "L_x0": "L_{x,0}", "L_x1": "L_{x,1}", "L_y0": "L_{y,0}", "L_y1": "L_{y,1}",
        "L_xy0": "L_{xy,0}", "L_xy1": "L_{xy,1}", "G": "G", "Delta": r"\Delta",
        "eta_x": r"\eta_x", "eta_y": r"\eta_y", "mu": r"\mu", "omega": r"\omega", "eps": r"\varepsilon",
        "m": "m", "ell": r"\ell", "g0": "g_0", "hx": r"\|h_x\|", "hy": r"\|h_y\|", "s": "s",
        "theta": r"\theta", "unorm": r"\|u\|", "gnorm": r"\|\nabla\varphi(x)\|",
        "gmu_norm": r"\|\nabla\varphi_\mu(x)\|", "k": "k",
    }.items()
}


def sym(name: str) -> sp.Symbol:
    """Return ``SYMBOLS[name]`` (KeyError names the unknown symbol)."""
    try:
        return SYMBOLS[name]
    except KeyError:
        raise KeyError(f"unknown theory symbol {name!r}; known: {sorted(SYMBOLS)}") from None


def latex(expr) -> str:
    """LaTeX of a sympy expression with the spec's symbol spelling (``L_{x,0}``, ``\\varepsilon``, ...)."""
    return sp.latex(sp.sympify(expr), symbol_names=LATEX_NAMES)


# Convenience module attributes: ``from theory.symbols import n, d_x, G, ...``.
globals().update(SYMBOLS)
