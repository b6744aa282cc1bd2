"""The ZO estimators: projected gradients g_r from function values (spec §2, ĝ).

With directions u_1..u_q and micro-batches B_i of weights w_i (Σ w_i = this rank's share):

==========  ===========================================================  =============  =========
estimator   g_r                                                           forwards/dir   theorem's
==========  ===========================================================  =============  =========
paired      Σ_i w_i [f_i(x+μu_r) − f_i(x−μu_r)] / (2μ), both points in    1 (2× batch)   yes
            one forward over a doubled batch (u_r drawn once)
central     the same value from two forwards                              2              yes
forward     Σ_i w_i [f_i(x+μu_r) − f_i(x)] / μ, f(x) from the FO forward    1              no
            (hybrid) or one more forward
==========  ===========================================================  =============  =========

``paired`` and ``central`` are the same estimator (equal up to the rounding of a batched
forward); ``paired`` is the default.  An estimator *probes* (the sweeps, which also apply the
previous step's pending update) and then *estimates* from the probe values and, where it has
them, the losses at the unperturbed point (for ``forward``, and for the curvature diagnostic
[f(x+μu) + f(x−μu) − 2f(x)]/μ² = uᵀ∇²ₓf u + O(μ²) of the central ones).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .directions import Directions, Pair, Perturbation

#: (micro-batch indices, weight in this rank's batch mean)
Micro = Sequence[tuple[torch.Tensor, float]]


@dataclass
class Probes:
    """Probe values per direction and micro-batch: ``plus[r][i]``, ``minus[r][i]`` (or None)."""

    plus: list[list[torch.Tensor]]
    minus: list[list[torch.Tensor]] | None


@dataclass
class Estimate:
    projected: torch.Tensor              # (q, *replicate_shape)
    value: torch.Tensor                  # f_B: the mean of the 2q probe values (central: f_B + O(μ²)), or f_B(x)
    curvature: torch.Tensor | None       # (q, *R) second differences, when f_B(x) was given
    evals: int                           # function evaluations (component-level)


class Estimator:
    name = ""
    theorem = False
    #: needs f_B at the unperturbed point (it costs a forward when there is no FO block)
    needs_base = False

    def probe(self, problem, micro: Micro, directions: Directions, q: int, mu: float) -> Probes:
        raise NotImplementedError

    def estimate(self, probes: Probes, base: list[torch.Tensor] | None, micro: Micro, mu: float,
                 dtype: torch.dtype) -> Estimate:
        raise NotImplementedError


class _Central(Estimator):
    theorem = True

    def estimate(self, probes, base, micro, mu, dtype):
        g, curv, mean = [], [], 0.0
        for plus, minus in zip(probes.plus, probes.minus):
            acc, second = 0.0, 0.0
            for i, ((_, w), fp, fm) in enumerate(zip(micro, plus, minus)):
                fp, fm = fp.to(dtype), fm.to(dtype)
                acc = acc + w * (fp - fm) / (2 * mu)
                mean = mean + w * (fp + fm) / 2
                if base is not None:
                    second = second + w * (fp + fm - 2 * base[i].to(dtype))
            g.append(acc)
            curv.append(second / mu ** 2)
        q, total = len(g), sum(c.shape[-1] for c, _ in micro)
        return Estimate(torch.stack(g), mean / q, torch.stack(curv) if base is not None else None, 2 * q * total)


class PairedCentral(_Central):
    """f(x+μu) and f(x−μu) from one doubled-batch forward per direction and micro-batch."""

    name = "paired"

    def probe(self, problem, micro, directions, q, mu):
        plus, minus = [], []
        for r in range(q):
            pm = [problem.pair_loss(c, Pair(directions, r, mu)) for c, _ in micro]
            plus.append([a for a, _ in pm])
            minus.append([b for _, b in pm])
        return Probes(plus, minus)


class Central(_Central):
    """The same estimator from two separate forwards per direction (+μ, then −μ)."""

    name = "central"

    def probe(self, problem, micro, directions, q, mu):
        plus = [[problem.loss(c, Perturbation(directions, r, mu)) for c, _ in micro] for r in range(q)]
        minus = [[problem.loss(c, Perturbation(directions, r, -mu)) for c, _ in micro] for r in range(q)]
        return Probes(plus, minus)


class Forward(Estimator):
    """One-sided differences; f(x) is the FO forward's when the method has an FO block (one
    perturbed forward per direction instead of two).  Outside the theorem."""

    name, needs_base = "forward", True

    def probe(self, problem, micro, directions, q, mu):
        return Probes([[problem.loss(c, Perturbation(directions, r, mu)) for c, _ in micro] for r in range(q)], None)

    def estimate(self, probes, base, micro, mu, dtype):
        g = [sum(w * (fp.to(dtype) - f0.to(dtype)) / mu for (_, w), fp, f0 in zip(micro, plus, base))
             for plus in probes.plus]
        total = sum(c.shape[-1] for c, _ in micro)
        value = sum(w * f0.to(dtype) for (_, w), f0 in zip(micro, base))
        return Estimate(torch.stack(g), value, None, len(g) * total)


#: name -> estimator
ESTIMATORS: dict[str, Estimator] = {e.name: e for e in (PairedCentral(), Central(), Forward())}


def get_estimator(name: str) -> Estimator:
    try:
        return ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown estimator {name!r}; valid: {', '.join(ESTIMATORS)}") from None
