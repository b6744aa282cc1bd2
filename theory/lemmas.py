r"""Lemmas L1–L6(A) of spec §3, one :class:`Inequality` object per inequality.

Each object has ``name``, ``spec`` (section reference), ``lhs`` (a sympy expression where the left-hand side is a
formula, else a plain-text description of the measured quantity), ``rhs`` (sympy), ``condition`` (extra hypotheses),
``tested_by`` (test functions), and the methods ``latex()``, ``evaluate(values)`` (the RHS as a float),
``evaluate_lhs(values)`` (formula LHS only) and ``lambdify()`` (vectorised, keyword arguments named by symbol).

Objects: ``L1a, L1b, L1c_x, L1c_y, L1d`` (HGS calculus), ``L2a, L2b`` (Gaussian smoothing), ``L3a, L3b, L3c``
(ZO second moment), ``L4a, L4b, L4c_x, L4c_y`` (drift), ``L5`` (one-epoch descent), ``L6A, L6A_x, L6A_y``
(fixed-step bound); and the Rademacher analogues of ``theory/RADEMACHER.md`` (u uniform on
:math:`\{\pm1\}^m`, :math:`\|u\|^2=m` exactly): ``R2a, R2b`` (value and gradient bias), ``R3a`` (pointwise
error under HGS, deterministic radius), ``R3b`` (second moment), ``R4b`` (x-drift), ``R5``, ``R6A, R6A_x, R6A_y``.
The module-level objects use A3 case ``'ii'`` (:math:`G_+=G`); ``lemma_set('i')`` returns the case-``'i'``
versions (only L5/R5 and L6A/R6A depend on the case; the others use the raw HGS constants, :math:`G` and
:math:`\ell_x`).

Numerical coefficients of the statements live in :data:`COEFFS` (the table of :mod:`theory.constants`, shared
with :mod:`theory.bound` and :func:`theory.constants.V`) so that the mutation tests (spec §5, M1–M16) can perturb
exactly one of them everywhere it is used: ``with mutated('M2'): ...`` (or ``mutated(L1b_factor=Rational(1, 4))``)
rebuilds the module-level objects of this module and of :mod:`theory.bound` with the perturbed constant and
restores them afterwards. Code that must see a mutation looks the objects up at call time (``lemmas.L1b``,
``bound.evaluate_theorem``), not through ``from theory.lemmas import L1b``.

Notation of L1 (spec §3): :math:`\Lambda^x_j=L_{x,j}\|h_x\|+L_{xy,j}\|h_y\|`,
:math:`\Lambda^y_j=L_{xy,j}\|h_x\|+L_{y,j}\|h_y\|`, :math:`\Lambda_j=\Lambda^x_j+\Lambda^y_j`,
:math:`q_j=L_{x,j}\|h_x\|^2+2L_{xy,j}\|h_x\|\|h_y\|+L_{y,j}\|h_y\|^2`,
:math:`\bar g=g_0e^{\Lambda_1}+\Lambda_0E_1(\Lambda_1)`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from hybridopt.theory import bound as _bound
from hybridopt.theory.constants import COEFFS, DEFAULT_COEFFS, DISPLAY, E1, NUMPY_MODULES, V, V_R, beta_R, check_case
from hybridopt.theory.symbols import SYMBOLS, latex as _latex

__all__ = [
    "Inequality", "COEFFS", "DEFAULT_COEFFS", "MUTATIONS", "lemma_set", "mutated", "rebuild", "helpers",
    "NAMES", "L1a", "L1b", "L1c_x", "L1c_y", "L1d", "L2a", "L2b", "L3a", "L3b", "L3c",
    "L4a", "L4b", "L4c_x", "L4c_y", "L5", "L6A", "L6A_x", "L6A_y",
    "R2a", "R2b", "R3a", "R3b", "R4b", "R5", "R6A", "R6A_x", "R6A_y",
]

_S = SYMBOLS
R = sp.Rational


@dataclass(frozen=True, eq=False)
class Inequality:
    r"""One inequality ``lhs <= rhs`` of the spec.

    Attributes:
      name: e.g. ``'L1a'``.
      spec: section reference (e.g. ``'spec §3 L1(a)'``), also quoted in ``description``.
      rhs: sympy expression in :data:`theory.symbols.SYMBOLS`.
      lhs: sympy expression when the LHS is a formula (``L1d``), else a plain-text description.
      lhs_latex: LaTeX of the LHS.
      description: one sentence.
      condition: hypotheses beyond the lemma's assumptions ('' if none).
      tested_by: test functions (``file::function``) that check it.
      rhs_display: compact expression with display symbols (:math:`L_x`, :math:`V(\mu)`, ...), for rendering.
    """

    name: str
    spec: str
    rhs: sp.Expr
    lhs: sp.Expr | str
    lhs_latex: str
    description: str = ""
    condition: str = ""
    tested_by: tuple[str, ...] = ()
    rhs_display: sp.Expr | None = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ rendering
    def latex(self) -> str:
        """``lhs \\le rhs`` in LaTeX (RHS in display symbols when available)."""
        rhs = self.rhs_display if self.rhs_display is not None else self.rhs
        s = f"{self.lhs_latex} \\le {_latex(rhs)}"
        return s

    def __repr__(self):
        return f"<{self.name}: {self.lhs if isinstance(self.lhs, str) else sp.sstr(self.lhs)} <= {sp.sstr(self.rhs)}>"

    # ------------------------------------------------------------------ numerics
    @property
    def symbols(self) -> tuple[str, ...]:
        """Names of the symbols the RHS depends on (sorted)."""
        return tuple(sorted(s.name for s in self.rhs.free_symbols))

    def _fn(self, which: str):
        if which not in self._cache:
            expr = self.rhs if which == "rhs" else self.lhs
            if not isinstance(expr, sp.Expr):
                raise TypeError(f"{self.name}: the LHS is a description, not a formula: {self.lhs!r}")
            names = tuple(sorted(s.name for s in expr.free_symbols))
            f = sp.lambdify([_S[k] for k in names], expr, modules=NUMPY_MODULES)
            self._cache[which] = (names, f)
        return self._cache[which]

    def _call(self, which: str, values: Mapping[str, float]):
        names, f = self._fn(which)
        missing = [k for k in names if k not in values]
        if missing:
            raise KeyError(f"{self.name}.{which} needs values for {missing} (all needed: {list(names)})")
        args = [np.asarray(values[k], dtype=np.float64) for k in names]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return f(*args)

    def lambdify(self):
        """Vectorised RHS: ``f(**arrays)`` with keyword arrays named by symbol (extra keywords ignored)."""
        def f(**values):
            out = self._call("rhs", values)
            return np.asarray(out, dtype=np.float64)[()] if np.ndim(out) == 0 else np.asarray(out, np.float64)
        f.__name__ = f"{self.name}_rhs"
        f.__doc__ = f"RHS of {self.name} ({self.spec}); arguments: {', '.join(self.symbols)}"
        return f

    def evaluate(self, values: Mapping[str, float]) -> float:
        """RHS at ``values`` (a ``dict[str, float]``); KeyError names the missing symbols."""
        return float(self._call("rhs", values))

    def evaluate_lhs(self, values: Mapping[str, float]) -> float:
        """LHS at ``values`` when the LHS is a formula (``L1d``); TypeError otherwise."""
        return float(self._call("lhs", values))


# ------------------------------------------------------------------------------------------- coefficients
# The coefficient table itself lives in theory.constants (COEFFS, DEFAULT_COEFFS, re-exported here), so that V(mu)
# and the theorem's schedule read the same constants as the lemmas.

#: Mutation table (spec §5 M1–M8, issue #15 M9–M14 and M17, theory/RADEMACHER.md M15–M16): id -> coefficient overrides.
#: Each must turn a named test red on a concrete instance (``tests/theory/test_mutations.py``).
MUTATIONS: dict[str, dict[str, sp.Expr]] = {
    "M1": {"L1_growth": sp.Integer(0)},      # drop e^{Lambda_1} in gbar (use g0 + Lambda_0)
    "M2": {"L1b_factor": R(1, 4)},           # 1/2 -> 1/4 in L1(b)
    "M3": {"L2a_factor": R(1, 4)},           # ell mu^2 m/2 -> ell mu^2 m/4 in L2(a)
    "M4": {"L3b_grad": R(1, 2)},             # 2(m+2) -> (m+2)/2 in L3(b)
    "M5": {"L3b_mu": R(1, 8)},               # m(m+2)(m+4)/2 -> m(m+2)(m+4)/8 in L3(b)
    "M6": {"L4b_kpow": sp.Integer(1)},       # k^2 G^2 -> k G^2 in L4(b)
    "M7": {"L4a_factor": R(1, 2)},           # k eta_y G -> k eta_y G / 2 in L4(a)
    "M8": {"q0_cross": sp.Integer(0)},       # drop 2 L_xy0 |h_x||h_y| from q0
    "M9": {"L1c_x_growth": sp.Integer(0)},   # drop Lambda^x_1 gbar from L1(c)_x
    "M10": {"q1_cross": sp.Integer(0)},      # drop 2 L_xy1 |h_x||h_y| from q1
    "M11": {"kappa0_x": sp.Integer(3)},      # kappa_0: 1/(6 n L_X) -> 1/(3 n L_X) (eta(eps) then breaks (S))
    "M12": {"L3b_grad": sp.Integer(1)},      # V(mu): 2(d_x+2) G^2 -> (d_x+2) G^2 (the factor 2 of L3(b))
    "M13": {"kappa2_scale": sp.Integer(100)},  # kappa_2 -> 100 kappa_2 in eta(eps): term (ii) of L6(B) > c eps^2/5
    "M14": {"T_req_factor": R(1, 5)},        # T_req(eps) -> T_req/100: the simulator's certified window fails
    "M15": {"L3a_factor": R(1, 4)},          # Rademacher bias 1/2 ell mu m -> 1/4 ell mu m (R2(b), R3, V_R)
    "M16": {"R3b_dim": R(1, 2)},             # R3(b): m (|grad phi| + beta)^2 -> (m/2) (...)^2
    "M17": {"mu_scale": sp.Integer(1000)},   # mu(eps) -> 1000 mu(eps): the simulator's certified window fails
}

NAMES = ("L1a", "L1b", "L1c_x", "L1c_y", "L1d", "L2a", "L2b", "L3a", "L3b", "L3c",
         "L4a", "L4b", "L4c_x", "L4c_y", "L5", "L6A", "L6A_x", "L6A_y",
         "R2a", "R2b", "R3a", "R3b", "R4b", "R5", "R6A", "R6A_x", "R6A_y")

_T2 = "tests/theory/test_extremal.py"
_T0 = "tests/theory/test_symbolic.py"
_T8 = "tests/theory/test_theorem.py"
_M = "tests/theory/test_mutations.py::test_mutation_is_caught"
_T67 = "tests/theory/test_descent_and_theorem.py"
_LF = "tests/theory/test_lemmas_families.py"
_RD = "tests/theory/test_rademacher.py"
_SIM = "tests/theory/test_simulator.py"
#: where each lemma is tested in this package's ``tests/theory``.
TESTED_BY: dict[str, tuple[str, ...]] = {
    "L1a": (f"{_T2}::test_T2_L1a_E1", f"{_T2}::test_T2_L1a_E2", f"{_T2}::test_T2_L1_E6", f"{_M}[M1]"),
    "L1b": (f"{_T2}::test_T2_L1bc_E2", f"{_T2}::test_T2_L1bc_E1_small_h", f"{_T2}::test_T2_L1_E6", f"{_M}[M2]",
            f"{_M}[M8]", f"{_M}[M10]"),
    "L1c_x": (f"{_T2}::test_T2_L1bc_E2", f"{_T2}::test_T2_L1bc_E1_small_h", f"{_T2}::test_T2_L1_E6",
              f"{_LF}::test_T2_L1c_x_family_D_hgs_part", f"{_M}[M9]"),
    "L1c_y": (f"{_T2}::test_T2_L1bc_E2", f"{_T2}::test_T2_L1bc_E1_small_h", f"{_T2}::test_T2_L1_E6"),
    "L1d": (f"{_T2}::test_T2_L1d", f"{_T0}::test_S8_E1_facts"),
    "L2a": (f"{_T2}::test_T3_L2a_E3", f"{_T2}::test_T3_L2ab_E4", f"{_M}[M3]"),
    "L2b": (f"{_T2}::test_T3_L2ab_E4",),
    "L3a": (f"{_T2}::test_T4_L3a_E4",),
    "L3b": (f"{_T2}::test_T4_L3bc_E5", f"{_T2}::test_T4_L3bc_E4", f"{_T2}::test_T4_L3b_E4_tilted",
            f"{_T0}::test_S1_gaussian_moments", f"{_M}[M4]", f"{_M}[M5]", f"{_M}[M12]"),
    "L3c": (f"{_T2}::test_T4_L3bc_E5", f"{_T2}::test_T4_L3bc_E4", f"{_T0}::test_S2_L3c_polynomial"),
    "L4a": (f"{_T2}::test_T5_L4a_E5", f"{_M}[M7]"),
    "L4b": (f"{_T2}::test_T5_L4b_E5", f"{_M}[M6]"),
    "L4c_x": (f"{_T0}::test_S3_index_sums",),
    "L4c_y": (f"{_T0}::test_S3_index_sums",),
    "L5": (f"{_T0}::test_S4_assembly_identity", f"{_T0}::test_S5_absorption",
           f"{_T67}::test_T6c_L5_one_epoch_descent", f"{_T67}::test_T6c_falsification_shrunk_calE"),
    "L6A": (f"{_T0}::test_S6_theorem_terms", f"{_T8}::test_T8_parameter_choices_exact",
            f"{_T8}::test_T8_kappa0_branch_satisfies_S", f"{_T67}::test_T7_L6A_fixed_step_bound",
            f"{_SIM}::test_certified_window_and_T_req_mutation", f"{_M}[M11]", f"{_M}[M13]", f"{_M}[M14]",
            f"{_M}[M17]"),
    "L6A_x": (f"{_T0}::test_S6_theorem_terms", f"{_T67}::test_T7_L6A_fixed_step_bound"),
    "L6A_y": (f"{_T0}::test_S6_theorem_terms", f"{_T67}::test_T7_L6A_fixed_step_bound"),
    "R2a": (f"{_RD}::test_R2a_exact_enumeration",),
    "R2b": (f"{_RD}::test_R2b_R3b_exact_enumeration", f"{_M}[M15]"),
    "R3a": (f"{_RD}::test_R3a_pointwise_hgs_on_families", f"{_RD}::test_R3a_pointwise_E6"),
    "R3b": (f"{_RD}::test_R2b_R3b_exact_enumeration", f"{_RD}::test_R3b_on_families_mc", f"{_M}[M16]"),
    "R4b": (f"{_RD}::test_R4b_drift_E5",),
    "R5": (f"{_RD}::test_R_assembly_identity", f"{_RD}::test_R5_one_epoch_descent"),
    "R6A": (f"{_RD}::test_R6_theorem_terms", f"{_T8}::test_T8_parameter_choices_exact"),
    "R6A_x": (f"{_RD}::test_R6_theorem_terms",),
    "R6A_y": (f"{_RD}::test_R6_theorem_terms",),
}


#: display symbols of the L1 helpers (rendering only).
_LD = {k: sp.Symbol(k, nonnegative=True) for k in ("Lam0", "Lam1", "Lamx0", "Lamx1", "Lamy0", "Lamy1", "q_0", "q_1",
                                                    "gbar")}
from hybridopt.theory.symbols import LATEX_NAMES as _LN  # noqa: E402

_LN.update({_LD["Lam0"]: r"\Lambda_0", _LD["Lam1"]: r"\Lambda_1", _LD["Lamx0"]: r"\Lambda^x_0",
            _LD["Lamx1"]: r"\Lambda^x_1", _LD["Lamy0"]: r"\Lambda^y_0", _LD["Lamy1"]: r"\Lambda^y_1",
            _LD["q_0"]: "q_0", _LD["q_1"]: "q_1", _LD["gbar"]: r"\bar g"})


def helpers(coeffs: Mapping[str, sp.Expr] | None = None) -> dict[str, sp.Expr]:
    r"""The L1 helper expressions ``Lamx0, Lamx1, Lamy0, Lamy1, Lam0, Lam1, q0, q1, gbar`` (spec §3, §7)."""
    c = dict(COEFFS if coeffs is None else coeffs)
    hx, hy, g0 = _S["hx"], _S["hy"], _S["g0"]
    out = {}
    for j in (0, 1):
        Lx, Ly, Lxy = _S[f"L_x{j}"], _S[f"L_y{j}"], _S[f"L_xy{j}"]
        out[f"Lamx{j}"] = Lx * hx + Lxy * hy
        out[f"Lamy{j}"] = Lxy * hx + Ly * hy
        out[f"Lam{j}"] = out[f"Lamx{j}"] + out[f"Lamy{j}"]
        out[f"q{j}"] = Lx * hx**2 + c[f"q{j}_cross"] * Lxy * hx * hy + Ly * hy**2
    a = c["L1_growth"] * out["Lam1"]
    out["gbar"] = g0 * sp.exp(a) + out["Lam0"] * E1(a)
    return out


def lemma_set(case: str = "ii") -> dict[str, Inequality]:
    """Build every lemma object for A3 case ``case`` (``'i'`` or ``'ii'``) from the current :data:`COEFFS`."""
    check_case(case)
    c = COEFFS
    h = helpers(c)
    S = _S
    s, g0, theta = S["s"], S["g0"], S["theta"]
    m, ell, mu = S["m"], S["ell"], S["mu"]
    G, n, q, k = S["G"], S["n"], S["q"], S["k"]
    eta_x, eta_y = S["eta_x"], S["eta_y"]
    Vd = DISPLAY["V"]
    a1 = c["L1_growth"] * s * h["Lam1"]
    out = {}

    def add(name, spec, rhs, lhs, lhs_latex, description, condition="", rhs_display=None):
        out[name] = Inequality(name=name, spec=spec, rhs=sp.sympify(rhs), lhs=lhs, lhs_latex=lhs_latex,
                               description=f"{description} ({spec})", condition=condition,
                               tested_by=TESTED_BY.get(name, ()), rhs_display=rhs_display)

    seg = "HGS holds on the segment [z, z+h]"
    D = _LD
    ad = c["L1_growth"] * s * D["Lam1"]
    add("L1a", "spec §3 L1(a)", g0 * sp.exp(a1) + s * h["Lam0"] * E1(a1),
        "g(s) = ||grad f_i(z + s h)||, s in [0, 1]", r"\|\nabla f_i(z+sh)\|",
        "gradient growth along a segment (Grönwall)", seg, rhs_display=g0 * sp.exp(ad) + s * D["Lam0"] * E1(ad))
    add("L1b", "spec §3 L1(b)", c["L1b_factor"] * (h["q0"] + h["q1"] * h["gbar"]),
        "|f_i(z+h) - f_i(z) - <grad f_i(z), h>|",
        r"\left|f_i(z+h)-f_i(z)-\langle\nabla f_i(z),h\rangle\right|", "two-sided descent inequality", seg,
        rhs_display=c["L1b_factor"] * (D["q_0"] + D["q_1"] * D["gbar"]))
    add("L1c_x", "spec §3 L1(c)", h["Lamx0"] + c["L1c_x_growth"] * h["Lamx1"] * h["gbar"],
        "||grad_x f_i(z+h) - grad_x f_i(z)||", r"\|\nabla_x f_i(z+h)-\nabla_x f_i(z)\|",
        "x-block gradient difference", seg, rhs_display=D["Lamx0"] + c["L1c_x_growth"] * D["Lamx1"] * D["gbar"])
    add("L1c_y", "spec §3 L1(c)", h["Lamy0"] + c["L1c_y_growth"] * h["Lamy1"] * h["gbar"],
        "||grad_y f_i(z+h) - grad_y f_i(z)||", r"\|\nabla_y f_i(z+h)-\nabla_y f_i(z)\|",
        "y-block gradient difference", seg, rhs_display=D["Lamy0"] + c["L1c_y_growth"] * D["Lamy1"] * D["gbar"])
    add("L1d", "spec §3 L1(d)", sp.exp(theta) * g0 + E1(theta) * h["Lam0"], h["gbar"],
        r"\bar g=g_0e^{\Lambda_1}+\Lambda_0E_1(\Lambda_1)", "radius condition",
        r"Lambda_1(h) <= theta (theta = 1/4 gives G_+ = (2e^{1/4}-1)G)",
        rhs_display=sp.exp(theta) * g0 + E1(theta) * D["Lam0"])
    phi = "phi: R^m -> R has an ell-Lipschitz gradient, u ~ N(0, I_m)"
    add("L2a", "spec §3 L2(a)", c["L2a_factor"] * ell * mu**2 * m,
        "|phi_mu(x) - phi(x)|", r"|\varphi_\mu(x)-\varphi(x)|", "Gaussian smoothing: value bias", phi)
    add("L2b", "spec §3 L2(b)", c["L2b_factor"] * ell * mu * sp.sqrt(m),
        "||grad phi_mu(x) - grad phi(x)||", r"\|\nabla\varphi_\mu(x)-\nabla\varphi(x)\|",
        "Gaussian smoothing: gradient bias", phi)
    add("L3a", "spec §3 L3(a)", c["L3a_factor"] * ell * mu * S["unorm"] ** 2,
        "|(phi(x+mu u) - phi(x-mu u))/(2 mu) - <grad phi(x), u>| (pointwise in u)",
        r"\left|\frac{\varphi(x+\mu u)-\varphi(x-\mu u)}{2\mu}-\langle\nabla\varphi(x),u\rangle\right|",
        "two-point estimator, pointwise error", phi)
    add("L3b", "spec §3 L3(b)",
        c["L3b_grad"] * (m + 2) * S["gnorm"] ** 2 + c["L3b_mu"] * ell**2 * mu**2 * m * (m + 2) * (m + 4),
        "E||g1_hat||^2, g1_hat = (phi(x+mu u) - phi(x-mu u))/(2 mu) u", r"\mathbb E\|\hat g_1\|^2",
        "second moment of the one-direction estimator", phi)
    add("L3c", "spec §3 L3(c)",
        c["L3c_a"] * (m + 2) * S["gmu_norm"] ** 2 + c["L3c_b"] * m * (m + 2) * (m + 12) * mu**2 * ell**2,
        "E||g1_hat||^2 (in terms of ||grad phi_mu(x)||)", r"\mathbb E\|\hat g_1\|^2",
        "second moment, a(m)||grad phi_mu||^2 + b(m) mu^2 ell^2 form", phi)
    drift = "A2, A3; (S) not needed; any F_{t,0}-measurable permutation"
    add("L4a", "spec §3 L4(a)", c["L4a_factor"] * k * eta_y * G,
        "||y_{t,k} - y_t|| (almost surely)", r"\|y_{t,k}-y_t\|", "y-drift inside an epoch", drift)
    add("L4b", "spec §3 L4(b)", c["L4b_factor"] * eta_x**2 * (k ** c["L4b_kpow"] * G**2 + k * V() / q),
        "E[||x_{t,k} - x_t||^2 | F_{t,0}]", r"\mathbb E\left[\|x_{t,k}-x_t\|^2\,\middle|\,\mathcal F_{t,0}\right]",
        "x-drift inside an epoch", drift,
        rhs_display=c["L4b_factor"] * eta_x**2 * (k ** c["L4b_kpow"] * G**2 + k * Vd / q))
    add("L4c_x", "spec §3 L4(c)", 2 * eta_x**2 * (G**2 * n**3 / 3 + V() * n**2 / (2 * q)),
        "sum_{k<n} E[||x_{t,k} - x_t||^2 | F_{t,0}]",
        r"\sum_{k=0}^{n-1}\mathbb E\left[\|x_{t,k}-x_t\|^2\,\middle|\,\mathcal F_{t,0}\right]",
        "summed x-drift", drift, rhs_display=2 * eta_x**2 * (G**2 * n**3 / 3 + Vd * n**2 / (2 * q)))
    add("L4c_y", "spec §3 L4(c)", eta_y**2 * G**2 * n**3 / 3,
        "sum_{k<n} ||y_{t,k} - y_t||^2", r"\sum_{k=0}^{n-1}\|y_{t,k}-y_t\|^2", "summed y-drift", drift)
    lhs5 = ("E[f(z_{t+1}) | F_{t,0}] - f(z_t) + (n eta_x/4)||grad_x f(z_t)||^2 + (n eta_y/4)||grad_y f(z_t)||^2",
            r"\mathbb E[f(z_{t+1})\mid\mathcal F_{t,0}]-f(z_t)+\frac{n\eta_x}{4}\|\nabla_xf(z_t)\|^2"
            r"+\frac{n\eta_y}{4}\|\nabla_yf(z_t)\|^2")
    add("L5", "spec §3 L5", _bound.calE_expr(case), *lhs5,
        "one-epoch descent", f"A1-A3, (S), A3 case ({case})", rhs_display=_bound.calE_expr(case, display=True))
    lhsA = r"\frac1T\sum_{t=0}^{T-1}\mathbb E\|\nabla%s(z_t)\|^2"
    for pre, law, spec in (("L6A", "gaussian", "spec §3 L6(A)"), ("R6A", "rademacher", "theory/RADEMACHER.md R6(A)")):
        for suffix, block in (("", None), ("_x", "x"), ("_y", "y")):
            add(pre + suffix, spec, _bound.bound_expr(case, block, law=law),
                f"(1/T) sum_{{t<T}} E||grad{'' if block is None else '_' + block} f(z_t)||^2",
                lhsA % (" f" if block is None else f"_{block}f"),
                "fixed-step bound B(T)" + ("" if block is None else f", {block}-block form")
                + ("" if law == "gaussian" else ", Rademacher directions"),
                f"A1-A3, (S), A3 case ({case})" + ("" if law == "gaussian" else ", u uniform on {-1,+1}^{d_x}"),
                rhs_display=_bound.bound_expr(case, block, display=True, law=law))

    # ---- Rademacher directions (theory/RADEMACHER.md): u uniform on {-1,+1}^m, ||u||^2 = m exactly
    rad = "phi: R^m -> R has an ell-Lipschitz gradient, u uniform on {-1,+1}^m (||u||^2 = m)"
    bR = c["L3a_factor"] * ell * mu * m          # L3(a) at ||u||^2 = m: the deterministic bound on the remainder
    add("R2a", "theory/RADEMACHER.md R2(a)", c["R2a_factor"] * ell * mu**2 * m,
        "|E phi(x + mu u) - phi(x)|", r"|\mathbb E\,\varphi(x+\mu u)-\varphi(x)|",
        "Rademacher perturbation: value bias", rad)
    add("R2b", "theory/RADEMACHER.md R2(b)", bR,
        "||E g_q_hat - grad phi(x)|| (the estimator's bias; E g_hat is not the gradient of one smoothing)",
        r"\|\mathbb E\,\hat g_q-\nabla\varphi(x)\|", "Rademacher estimator: gradient bias", rad)
    # R3(a) under HGS at z, h = (mu u, 0), ||h|| = mu sqrt(d_x) deterministically: |b| <= L1b(h) / mu
    r_ = mu * sp.sqrt(S["d_x"])
    hgs_r = {S["hx"]: r_, S["hy"]: 0}
    add("R3a", "theory/RADEMACHER.md R3(a)", (c["L1b_factor"] * (h["q0"] + h["q1"] * h["gbar"])).subs(hgs_r) * 2 / (2 * mu),
        "|(f_i(x+mu u, y) - f_i(x-mu u, y))/(2 mu) - <grad_x f_i(z), u>| (every u in {-1,+1}^{d_x}, g0 = ||grad f_i(z)||)",
        r"\left|\frac{f_i(x+\mu u,y)-f_i(x-\mu u,y)}{2\mu}-\langle\nabla_xf_i(z),u\rangle\right|",
        "Rademacher two-point estimator, pointwise error under HGS (deterministic radius mu sqrt(d_x))",
        "HGS on the ball of radius mu sqrt(d_x) around x (at y); no gradient bound on the x-line is needed; "
        "gbar = g0 e^{Lambda_1} + Lambda_0 E_1(Lambda_1) with Lambda_j = (L_xj + L_xyj) mu sqrt(d_x)",
        rhs_display=c["L1b_factor"] * mu * S["d_x"] * (S["L_x0"] + S["L_x1"] * D["gbar"]) * 2)
    add("R3b", "theory/RADEMACHER.md R3(b)", c["R3b_dim"] * m * (S["gnorm"] + bR) ** 2,
        "E||g1_hat||^2 (Rademacher u)", r"\mathbb E\|\hat g_1\|^2",
        "second moment of the one-direction estimator, Rademacher directions", rad)
    GnR, VR = S["G"] + beta_R(), V_R()
    add("R4b", "theory/RADEMACHER.md R4(b)", c["L4b_factor"] * eta_x**2 * (k ** c["L4b_kpow"] * GnR**2 + k * VR / q),
        "E[||x_{t,k} - x_t||^2 | F_{t,0}] (Rademacher directions)",
        r"\mathbb E\left[\|x_{t,k}-x_t\|^2\,\middle|\,\mathcal F_{t,0}\right]",
        "x-drift inside an epoch, Rademacher directions", drift + "; u uniform on {-1,+1}^{d_x}",
        rhs_display=c["L4b_factor"] * eta_x**2 * (k ** c["L4b_kpow"] * DISPLAY["G_nu"] ** 2
                                                  + k * DISPLAY["V_R"] / q))
    add("R5", "theory/RADEMACHER.md R5", _bound.calE_expr(case, law="rademacher"), *lhs5,
        "one-epoch descent, Rademacher directions", f"A1-A3, (S), A3 case ({case}), u uniform on {{-1,+1}}^{{d_x}}",
        rhs_display=_bound.calE_expr(case, display=True, law="rademacher"))
    return {k_: out[k_] for k_ in NAMES}


def rebuild() -> None:
    """Rebuild the module-level (case 'ii') objects of this module and of :mod:`theory.bound` from the current
    :data:`COEFFS`."""
    _bound.rebuild()
    globals().update(lemma_set("ii"))


@contextlib.contextmanager
def mutated(mutation: str | None = None, **overrides):
    """Temporarily perturb coefficients (``mutated('M3')`` or ``mutated(L2a_factor=Rational(1, 4))``).

    The module-level lemma and theorem objects are rebuilt inside the block and restored on exit; the numeric
    caches of :mod:`theory.bound` are keyed by the coefficient table, so evaluations inside the block see the
    mutation too.
    """
    changes = dict(MUTATIONS[mutation]) if mutation is not None else {}
    changes.update({k: sp.sympify(v) for k, v in overrides.items()})
    unknown = set(changes) - set(DEFAULT_COEFFS)
    if unknown:
        raise KeyError(f"unknown coefficients {sorted(unknown)}; known: {sorted(DEFAULT_COEFFS)}")
    saved = dict(COEFFS)
    COEFFS.update(changes)
    rebuild()
    try:
        yield
    finally:
        COEFFS.clear()
        COEFFS.update(saved)
        rebuild()


# module-level objects, case 'ii'
L1a = L1b = L1c_x = L1c_y = L1d = L2a = L2b = L3a = L3b = L3c = None  # for linters; set by rebuild()
L4a = L4b = L4c_x = L4c_y = L5 = L6A = L6A_x = L6A_y = None
R2a = R2b = R3a = R3b = R4b = R5 = R6A = R6A_x = R6A_y = None
rebuild()
