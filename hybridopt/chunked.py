"""Perturbed forwards of large ``nn.Linear`` / ``nn.Embedding`` weights without a copy of them.

For a weight W of more than :data:`~hybridopt.directions.CHUNK_ELEMENTS` elements the probe
point W + sU is never formed whole (that would cost a temporary as large as the biggest
matrix, e.g. a tied 50k-vocabulary embedding):

* ``nn.Linear``    y[..., c] = x (W_c + sU_c)^T + b_c   over the row chunks c of W;
* ``nn.Embedding`` (W + sU)[ids] = W[ids] + s U[ids]     (only the looked-up rows of U).

Elementwise the perturbed weights are the same operation as :meth:`Perturbation.apply`
(one add, rounded once), so only the matmul's blocking can differ from a whole-tensor probe.
Used by :class:`~hybridopt.problem.ModuleProblem` for no-grad probes only.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .directions import Perturbation, row_chunks


def chunkable(module: torch.nn.Module, name: str, p: torch.Tensor) -> bool:
    """True when ``module``'s ``name`` parameter is probed chunk by chunk: an exact
    ``nn.Linear``/``nn.Embedding`` (subclasses may override ``forward``) whose weight spans
    more than one chunk, with no instance-level ``forward`` already installed."""
    if name != "weight" or "forward" in module.__dict__ or len(row_chunks(p.shape)) < 2:
        return False
    if type(module) is torch.nn.Linear:
        return True
    return type(module) is torch.nn.Embedding and module.max_norm is None


def perturbed_forward(module: torch.nn.Module, perturbation: Perturbation, j: int) -> Callable:
    """A ``forward`` for ``module`` at weight W + s u_j (W = its ``weight``, ZO tensor ``j``).
    The module's other parameters are read as they are at call time (the problem's
    pre-hook has already swapped in their perturbed values)."""
    weight = module._parameters["weight"]
    if type(module) is torch.nn.Embedding:
        def forward(ids: torch.Tensor) -> torch.Tensor:
            return perturbation.rows(j, weight, ids)
        return forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        bias = module.bias
        out = None
        for a, b, w in perturbation.chunks(j, weight):
            y = F.linear(x, w, None if bias is None else bias[a:b])
            if out is None:
                out = y.new_empty(y.shape[:-1] + (weight.shape[0],))
            out[..., a:b] = y
        return out
    return forward
