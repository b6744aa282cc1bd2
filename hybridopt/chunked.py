"""Probes of large ``nn.Linear`` / ``nn.Embedding`` weights without a copy of them.

For a weight W of more than ``SweepContext.chunk_elements`` elements the probe points W ± μU
are never formed whole (that would cost a temporary as large as the biggest matrix, e.g. a
tied 50k-vocabulary embedding).  In a sweep (:mod:`hybridopt.module_sweep`):

* ``nn.Linear``:  for each row chunk c of W — apply the pending update to W_c in place, draw
  U_c once, then y_h[..., c] = x_h (W_c ± μU_c)ᵀ + b_c for each half h of the batch;
* ``nn.Embedding``: (W ± μU)[ids] = W'[ids] ± μ U[ids], where W' = W after the pending update,
  read out of place; only the direction blocks holding the looked-up rows are drawn.

Elementwise the perturbed weights are the same operations as a whole-tensor probe (one
product μU, one sum, each rounded once), so only the matmul's blocking can differ.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # pragma: no cover
    from .module_sweep import ModuleSweep


def chunkable(module: torch.nn.Module, name: str, p: torch.Tensor, chunks: int) -> bool:
    """True when ``module``'s ``name`` parameter is probed chunk by chunk: an exact
    ``nn.Linear``/``nn.Embedding`` (subclasses may override ``forward``) whose weight spans
    more than one chunk."""
    if name != "weight" or chunks < 2:
        return False
    if type(module) is torch.nn.Linear:
        return True
    return type(module) is torch.nn.Embedding and module.max_norm is None


def linear_forward(sweep: "ModuleSweep", module: torch.nn.Linear, j: int, xs: list[torch.Tensor],
                   signs: list[float], biases: list[torch.Tensor | None]) -> list[torch.Tensor]:
    weight = module._parameters["weight"]
    ctx, d, pending = sweep.context, sweep.directions, sweep.pending
    sweep._touch(j)
    outs = [x.new_empty(x.shape[:-1] + (weight.shape[0],)) for x in xs]
    for k, (a, b) in enumerate(d.plan(j)):
        if pending is not None:
            pending.apply_chunk(j, k)
        shape = (b - a,) + tuple(weight.shape[1:])
        with ctx.arena.lease("chunk-su", shape, d.draw_dtype(j), weight.device) as su, \
                ctx.arena.lease("chunk-p", shape, weight.dtype, weight.device) as pw:
            d.chunk(sweep.point.probe, j, a, b, su, factor=sweep.mu)   # μ·u, one rounding per element
            w = weight.detach()[a:b]
            for x, s, bias, out in zip(xs, signs, biases, outs):
                with ctx.phase("perturb"):
                    (torch.add if s > 0 else torch.sub)(w, su, out=pw)
                out[..., a:b] = F.linear(x, pw, None if bias is None else bias[a:b])
    return outs


def embedding_forward(sweep: "ModuleSweep", module: torch.nn.Embedding, j: int, xs: list[torch.Tensor],
                      signs: list[float]) -> list[torch.Tensor]:
    weight = module._parameters["weight"]
    pending, d = sweep.pending, sweep.directions
    ids = xs[0] if len(xs) == 1 else torch.cat([x.reshape(-1) for x in xs])
    sweep._touch(j, rows_only=ids.numel() * weight.shape[1])
    base = pending.rows(j, ids) if pending is not None else weight.detach()[ids]
    su = d.rows(sweep.point.probe, j, ids)  # one draw of the touched blocks serves both halves
    outs, start = [], 0
    with sweep.context.phase("perturb"):
        su.mul_(sweep.mu)
        for x, s in zip(xs, signs):
            n = x.numel()
            part = (slice(None),) if len(xs) == 1 else (slice(start, start + n),)
            out = (torch.add if s > 0 else torch.sub)(base[part], su[part]).to(weight.dtype)
            outs.append(out.view(tuple(x.shape) + (weight.shape[1],)))
            start += n
    return outs
