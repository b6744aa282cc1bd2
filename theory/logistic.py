r"""A user's own objective for ``hybridopt simulate --objective``: two-block logistic regression with
hand-certified constants (the example of ``theory/objective.py``; test ``tests/theory/test_objective.py``).

.. math::

   f_i(x,y)=\frac1m\sum_{k=1}^m\log\big(1+e^{-b_{ik}(\langle a_{ik},x\rangle+\langle c_{ik},y\rangle)}\big),
   \qquad b_{ik}\in\{\pm1\},

the ZO block x weighting "frozen" features :math:`a_{ik}\in\mathbb R^{d_x}`, the FO block y "adapter" features
:math:`c_{ik}\in\mathbb R^{d_y}`.  With :math:`M_i=[A_i\;C_i]` (rows :math:`(a_{ik},c_{ik})`) and
:math:`\sigma(t)=1/(1+e^{-t})`:

* :math:`\nabla f_i=-\frac1mM_i^\top(b\odot\sigma(-b\odot s))`, :math:`|\sigma|\le1`, so
  :math:`\|\nabla f_i\|\le\|M_i\|\sqrt m/m=\|M_i\|/\sqrt m` **everywhere** (A3(ii) with :math:`\mathcal Y=\mathbb R^{d_y}`);
* :math:`\nabla^2f_i=\frac1mM_i^\top\mathrm{diag}(\sigma(1-\sigma))M_i` with :math:`\sigma(1-\sigma)\le\frac14`, so HGS
  holds with :math:`L_{x,0}=\max_i\|A_i\|^2/(4m)`, :math:`L_{xy,0}=\max_i\|A_i\|\|C_i\|/(4m)`,
  :math:`L_{y,0}=\max_i\|C_i\|^2/(4m)` and every :math:`L_{\cdot,1}=0`; :math:`G=\max_i\|M_i\|/\sqrt m`;
* :math:`f\ge0`, so :math:`f_{\rm lb}=0`.

Spectral norms by float64 SVD times (1 + 1e−9).  Only ``loss``, ``constants`` and ``start`` are provided (the
protocol's minimum): the simulator measures ∇f by autograd.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["TwoBlockLogistic", "make"]

DT = torch.float64
CERT = 1.0 + 1e-9


class TwoBlockLogistic:
    """Two-block logistic regression (module docstring): n components of m labelled examples each."""

    f_lb = 0.0

    def __init__(self, seed: int = 0, n: int = 4, d_x: int = 8, d_y: int = 2, m: int = 8, scale_x: float = 1.0,
                 scale_y: float = 1.0, start_scale: float = 1.0) -> None:
        if min(n, d_x, d_y, m) < 1:
            raise ValueError("n, d_x, d_y, m must be >= 1")
        self.name = "logistic"
        self.n, self.d_x, self.d_y, self.m = int(n), int(d_x), int(d_y), int(m)
        g = np.random.default_rng(np.random.SeedSequence([0x106, int(seed)]))
        self.A = torch.tensor(g.standard_normal((n, m, d_x)) * scale_x / math.sqrt(d_x), dtype=DT)
        self.C = torch.tensor(g.standard_normal((n, m, d_y)) * scale_y / math.sqrt(d_y), dtype=DT)
        w = g.standard_normal(d_x + d_y)  # a planted separator, labels with 10% flips
        s = np.einsum("nmd,d->nm", np.concatenate([self.A.numpy(), self.C.numpy()], -1), w)
        flip = g.random((n, m)) < 0.1
        self.b = torch.tensor(np.where(np.sign(s) * np.where(flip, -1, 1) >= 0, 1.0, -1.0), dtype=DT)
        self.start_scale = float(start_scale)
        self._seed = int(seed)
        nA = torch.linalg.matrix_norm(self.A, ord=2)
        nC = torch.linalg.matrix_norm(self.C, ord=2)
        nM = torch.linalg.matrix_norm(torch.cat([self.A, self.C], -1), ord=2)
        c = lambda v: float(v) * CERT  # noqa: E731
        self._constants = dict(L_x0=c((nA**2).max() / (4 * m)), L_x1=0.0, L_y0=c((nC**2).max() / (4 * m)), L_y1=0.0,
                               L_xy0=c((nA * nC).max() / (4 * m)), L_xy1=0.0, G=c(nM.max() / math.sqrt(m)))

    def loss(self, i: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """f_i(x, y) for component indices ``i`` broadcast against the leading dimensions of x and y."""
        s = (self.A[i] @ x.unsqueeze(-1)).squeeze(-1) + (self.C[i] @ y.unsqueeze(-1)).squeeze(-1)
        return torch.nn.functional.softplus(-self.b[i] * s).mean(-1)

    def constants(self) -> dict:
        return dict(self._constants)

    def start(self, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        g = np.random.default_rng(np.random.SeedSequence([0x107, self._seed, int(seed)]))
        return (torch.tensor(g.standard_normal(self.d_x) * self.start_scale, dtype=DT),
                torch.tensor(g.standard_normal(self.d_y) * self.start_scale, dtype=DT))


def make(seed: int = 0, **params) -> TwoBlockLogistic:
    """The factory of ``hybridopt simulate --objective hybridopt.theory.logistic:make [--param k=v ...]``."""
    return TwoBlockLogistic(seed=seed, **params)
