"""Probes of ``nn.Linear`` / large ``nn.Embedding`` weights in a sweep, without a copy of them.

For a weight W of more than ``SweepContext.chunk_elements`` elements the probe points W ± μU
are never formed whole (that would cost a temporary as large as the biggest matrix, e.g. a
tied 50k-vocabulary embedding).  In a sweep (:mod:`hybridopt.module_sweep`):

* ``nn.Linear`` (every exact one, in one chunk when small): for each row chunk c of W — apply
  the pending update to W_c in place, form W_c + μU_c and W_c − μU_c side by side from one draw
  of U_c (one pass over W_c with the compiled kernel, :meth:`Directions.pair`),
  then Y[h, :, c] = X_h (W_c ± μU_c)ᵀ + b_c for both halves h of a paired probe in **one batched
  matmul** (the halves of the doubled batch are the two batch entries of X), so the outputs need
  no concatenation (and each half's product is the same ``mm`` as a separate forward's);
* ``nn.Embedding``: (W ± μU)[ids] = W'[ids] ± μ U[ids], where W' = W after the pending update,
  read out of place; only the looked-up rows of the direction are drawn.

Elementwise the perturbed weights are the same operations as a whole-tensor probe (one
product μU, one sum, each rounded once), so only the matmul's blocking can differ.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # pragma: no cover
    from .module_sweep import ModuleSweep


def chunkable(module: torch.nn.Module, name: str, p: torch.Tensor, chunks: int) -> bool:
    """True when ``module``'s ``name`` parameter is probed by this module's forwards: the weight of
    an exact ``nn.Linear`` (subclasses may override ``forward``), or of an exact ``nn.Embedding``
    that spans more than one chunk (a small one is perturbed whole, by the generic path)."""
    if name != "weight":
        return False
    if type(module) is torch.nn.Linear:
        return True
    return chunks >= 2 and type(module) is torch.nn.Embedding and module.max_norm is None


def linear_forward(sweep: "ModuleSweep", module: torch.nn.Linear, j: int, x: torch.Tensor,
                   signs: list[float], biases: list[torch.Tensor | None]) -> torch.Tensor:
    """The module's output at W ± μU (one sign: ``x``'s output; two: the doubled batch's, its
    first half at + and second at −) for ZO weight ``j``; ``biases[h]`` is half h's bias."""
    weight = module._parameters["weight"]
    ctx, d, pending = sweep.context, sweep.directions, sweep.pending
    sweep._touch(j)
    n_out, halves = weight.shape[0], len(signs)
    # paired: X[h] = half h's rows, flattened (the doubled batch's first dimension is 2B)
    X = x if halves == 1 else x.reshape(2, -1, x.shape[-1])
    bias = biases[0] if halves == 1 else (None if biases[0] is None else torch.stack(biases).unsqueeze(1))
    chunks = d.plan(j)
    out = None if len(chunks) == 1 else X.new_empty(X.shape[:-1] + (n_out,))
    # μ·u (when not fused into the pair) is drawn into the last perturbed slot when it has the
    # draw's dtype (fp32/fp64): that slot is written last, in place, so the scratch is two chunks
    inplace = d.draw_dtype(j) == weight.dtype
    for k, (a, b) in enumerate(chunks):
        if pending is not None:
            pending.apply_chunk(j, k)
        shape = (b - a,) + tuple(weight.shape[1:])
        with ctx.arena.lease("chunk-p", (halves,) + shape, weight.dtype, weight.device) as pw, \
                (contextlib.nullcontext(None) if inplace else
                 ctx.arena.lease("chunk-su", shape, d.draw_dtype(j), weight.device)) as su:
            w = weight.detach()[a:b]
            if halves == 2:            # both points from one draw (one pass with the kernel)
                d.pair(sweep.point.probe, j, a, b, w, pw[0], pw[1], sweep.mu if signs[0] > 0 else -sweep.mu, su)
            else:
                su = pw[0] if su is None else su
                d.chunk(sweep.point.probe, j, a, b, su, factor=sweep.mu)   # μ·u, one rounding per element
                with ctx.phase("perturb"):
                    (torch.add if signs[0] > 0 else torch.sub)(w, su, out=pw[0])
            if halves == 1:
                y = F.linear(X, pw[0], None if bias is None else bias[a:b])
            elif bias is None:
                y = torch.bmm(X, pw.transpose(1, 2))
            else:
                y = torch.baddbmm(bias[..., a:b], X, pw.transpose(1, 2))
        if out is None:
            out = y
        else:
            out[..., a:b] = y
    return out.view(x.shape[:-1] + (n_out,))


def embedding_forward(sweep: "ModuleSweep", module: torch.nn.Embedding, j: int, xs: list[torch.Tensor],
                      signs: list[float]) -> list[torch.Tensor]:
    weight = module._parameters["weight"]
    pending, d = sweep.pending, sweep.directions
    ids = xs[0] if len(xs) == 1 else torch.cat([x.reshape(-1) for x in xs])
    sweep._touch(j, rows_only=ids.numel() * weight.shape[1])
    base = pending.rows(j, ids) if pending is not None else weight.detach()[ids]
    su = d.rows(sweep.point.probe, j, ids)  # one draw of the looked-up rows serves both halves
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
