r"""Assumptions A1, HGS (A2) and A3 of spec §1 as checkable objects.

Each object's ``check(source, i, x, y, constants) -> Report`` evaluates its inequalities at the
point(s) z = (x, y) for component i and reports, per inequality, LHS, RHS, margin and holds.

``source`` is anything that provides the local derivatives of f_i:

* a :class:`theory.families.Family` (or any object with ``hessian_blocks(i, x, y)``,
  ``grad_i(i, x, y)`` and, where needed, ``f_i``, ``in_domain``, ``gbar``); or
* a mapping with the callables ``'hessian_blocks'``, ``'grad'`` (and optionally ``'f'``,
  ``'in_domain'``, ``'gbar'``) with the same signatures — e.g. an extremal instance E1–E5.

Points may carry leading replicate dimensions; LHS/RHS/margin are then numpy arrays and
``holds`` requires every entry to hold.  ``constants`` is a dict keyed ``L_x0, …, L_xy1, G``
(plus ``f_lb`` for A1, default 0).

Pass rule (spec §5, deterministic): LHS ≤ RHS·(1 + rtol) + atol with rtol = 1e−9, atol = 1e−12;
``margin`` = RHS·(1 + rtol) + atol − LHS.

Definition 1.1 (HGS), for a ∈ {x, y, xy}:  ‖∇²_aa f_i(z)‖ ≤ L_{a,0} + L_{a,1}‖∇f_i(z)‖
(∇²_xy for a = xy), with the *full* component gradient on the right (Remark 3).
A3(i): ‖∇f_i(x, y)‖ ≤ G at the iterates' y (checked at the given points; the "for all x" is
the caller's sampling).  A3(ii): y ∈ 𝒴, ‖∇f_i(z)‖ ≤ G and HGS at z ∈ 𝒞 = R^{d_x} × 𝒴.
A1: f_i(z) ≥ f_lb (C² and the infimum cannot be checked pointwise).
Monitor (A3, spec §6 P4): ‖∇f_i(z)‖ ≤ Ḡ(y) ≤ G.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch

__all__ = ["Inequality", "Report", "Assumption", "HGSBlock", "HGS_X", "HGS_Y", "HGS_XY", "HGS",
           "A1", "LowerBound", "HGSAll", "A3i", "A3ii", "Monitor", "A3_I", "A3_II", "MONITOR", "ASSUMPTIONS",
           "RTOL", "ATOL", "spectral_norm"]

RTOL, ATOL = 1e-9, 1e-12


def _np(v) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        return v.detach().to(torch.float64).cpu().numpy()
    return np.asarray(v, dtype=np.float64)


def spectral_norm(M) -> np.ndarray:
    """Spectral norm of the trailing 2-D matrices (float64 SVD); 0 for empty blocks."""
    M = torch.as_tensor(M, dtype=torch.float64) if not isinstance(M, torch.Tensor) else M.to(torch.float64)
    if M.shape[-1] == 0 or M.shape[-2] == 0:
        return np.zeros(M.shape[:-2])
    return _np(torch.linalg.matrix_norm(M.detach(), ord=2))


@dataclass(frozen=True)
class Inequality:
    """One inequality LHS ≤ RHS at one or several points (arrays broadcast)."""

    name: str
    lhs: np.ndarray
    rhs: np.ndarray
    rtol: float = RTOL
    atol: float = ATOL

    @property
    def margin(self) -> np.ndarray:
        """RHS(1 + rtol) + atol − LHS (≥ 0 iff the inequality holds)."""
        return self.rhs * (1.0 + self.rtol) + self.atol - self.lhs

    @property
    def holds(self) -> bool:
        m = self.margin
        return bool(np.all(np.isfinite(m)) and np.all(m >= 0))

    @property
    def ratio(self) -> float:
        """max LHS/RHS (inf if RHS = 0 < LHS); the tightness of the inequality."""
        lhs, rhs = np.broadcast_arrays(self.lhs, self.rhs)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(rhs > 0, lhs / rhs, np.where(lhs > 0, np.inf, 0.0))
        return float(np.max(r)) if r.size else 0.0

    def __str__(self) -> str:
        return (f"{self.name}: lhs={np.max(self.lhs):.6g} rhs={np.min(self.rhs):.6g} "
                f"min margin={np.min(self.margin):.3g} {'ok' if self.holds else 'VIOLATED'}")


@dataclass
class Report:
    """The inequalities checked by one assumption at one set of points."""

    assumption: str
    items: list[Inequality] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return all(it.holds for it in self.items)

    def __getitem__(self, name: str) -> Inequality:
        for it in self.items:
            if it.name == name:
                return it
        raise KeyError(f"{self.assumption} has no inequality {name!r}; has {[it.name for it in self.items]}")

    def failures(self) -> list[Inequality]:
        return [it for it in self.items if not it.holds]

    def __str__(self) -> str:
        return f"{self.assumption}: " + ("holds" if self.holds else "VIOLATED") + "".join(
            f"\n  {it}" for it in self.items)

    def assert_holds(self) -> None:
        if not self.holds:
            raise AssertionError(str(self))


def _get(source: Any, name: str, required: bool = True) -> Callable | None:
    alias = {"grad": "grad_i", "f": "f_i"}
    if isinstance(source, Mapping):
        fn = source.get(name) or source.get(alias.get(name, name))
    else:
        fn = getattr(source, alias.get(name, name), None) or getattr(source, name, None)
    if fn is None and required:
        raise TypeError(f"source provides no {name!r} callable")
    return fn


def _grad_norm(source, i, x, y) -> np.ndarray:
    gx, gy = _get(source, "grad")(i, x, y)
    gx = torch.as_tensor(gx, dtype=torch.float64)
    gy = torch.as_tensor(gy, dtype=torch.float64)
    return _np(torch.sqrt((gx * gx).sum(-1) + (gy * gy).sum(-1)))


class Assumption:
    """Base class: ``check(source, i, x, y, constants) -> Report``."""

    name = "?"

    def check(self, source, i, x, y, constants: Mapping[str, float]) -> Report:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<assumption {self.name}>"


class HGSBlock(Assumption):
    """One inequality of Definition 1.1: ‖∇²_{block} f_i(z)‖ ≤ L_{a,0} + L_{a,1}‖∇f_i(z)‖."""

    _POS = {"x": 0, "xy": 1, "y": 2}

    def __init__(self, block: str) -> None:
        if block not in self._POS:
            raise ValueError(f"block must be 'x', 'y' or 'xy', got {block!r}")
        self.block = block
        self.name = f"HGS-{block}"

    def inequality(self, H, gnorm, constants) -> Inequality:
        lhs = spectral_norm(H[self._POS[self.block]])
        a = self.block
        rhs = float(constants[f"L_{a}0"]) + float(constants[f"L_{a}1"]) * gnorm
        return Inequality(self.name, lhs, np.asarray(rhs, dtype=np.float64))

    def check(self, source, i, x, y, constants) -> Report:
        H = _get(source, "hessian_blocks")(i, x, y)
        return Report(self.name, [self.inequality(H, _grad_norm(source, i, x, y), constants)])


class HGSAll(Assumption):
    """Definition 1.1 at z: the three block inequalities HGS-x, HGS-y, HGS-xy."""

    name = "HGS"

    def check(self, source, i, x, y, constants) -> Report:
        H = _get(source, "hessian_blocks")(i, x, y)
        g = _grad_norm(source, i, x, y)
        return Report(self.name, [b.inequality(H, g, constants) for b in (HGS_X, HGS_Y, HGS_XY)])


class LowerBound(Assumption):
    """A1 (lower bound part): f_i(z) ≥ f_lb, written f_lb ≤ f_i(z); f_lb = constants.get('f_lb', 0)."""

    name = "A1"

    def check(self, source, i, x, y, constants) -> Report:
        fv = _np(_get(source, "f")(i, x, y))
        flb = float(constants.get("f_lb", 0.0)) if hasattr(constants, "get") else 0.0
        return Report(self.name, [Inequality("f_lb <= f_i(z)", np.full_like(fv, flb), fv)])


class A3i(Assumption):
    """A3(i) at the given points: ‖∇f_i(x, y)‖ ≤ G (the caller samples x along the whole line)."""

    name = "A3(i)"

    def check(self, source, i, x, y, constants) -> Report:
        return Report(self.name, [Inequality("||grad f_i|| <= G", _grad_norm(source, i, x, y),
                                             np.asarray(float(constants["G"])))])


class A3ii(Assumption):
    """A3(ii) at z: y ∈ 𝒴 (``in_domain``, reported as 0 ≤ 0 or 1 ≤ 0), ‖∇f_i(z)‖ ≤ G, HGS at z."""

    name = "A3(ii)"

    def check(self, source, i, x, y, constants) -> Report:
        dom = _get(source, "in_domain", required=False)
        inside = True if dom is None else bool(dom(y))
        items = [Inequality("y in Y", np.asarray(0.0 if inside else 1.0), np.asarray(0.0), 0.0, 0.0)]
        items += A3_I.check(source, i, x, y, constants).items
        items += HGS.check(source, i, x, y, constants).items
        return Report(self.name, items)


class Monitor(Assumption):
    """A3 monitor (spec §4/§6): ‖∇f_i(x, y)‖ ≤ Ḡ(y) (validity of the monitor) and Ḡ(y) ≤ G."""

    name = "A3-monitor"

    def check(self, source, i, x, y, constants) -> Report:
        gb = _np(_get(source, "gbar")(y))
        return Report(self.name, [
            Inequality("||grad f_i|| <= Gbar(y)", _grad_norm(source, i, x, y), gb),
            Inequality("Gbar(y) <= G", gb, np.asarray(float(constants["G"])))])


HGS_X, HGS_Y, HGS_XY = HGSBlock("x"), HGSBlock("y"), HGSBlock("xy")
HGS = HGSAll()
A1 = LowerBound()
A3_I, A3_II, MONITOR = A3i(), A3ii(), Monitor()
#: name -> assumption object.
ASSUMPTIONS = {a.name: a for a in (HGS_X, HGS_Y, HGS_XY, HGS, A1, A3_I, A3_II, MONITOR)}
