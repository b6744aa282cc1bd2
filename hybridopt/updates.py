"""Update rules of the two blocks.

ZO block (spec §2): x <- (1 - η_x λ_x) x - η_x · (1/q) Σ_r g_r u_r, applied in **one sweep** over
the ZO tensors, regenerating each u_r from its seed chunk by chunk (the q directions are
summed in float32 and rounded into the tensor once).  Weight decay λ_x acts only on tensors with ndim >= 2
(matrices), chosen by structure.  The coefficients c_r = -η_x g_r / q stay on the device.

FO block: ``torch.optim`` SGD (the theorem's), SGD with momentum, or Adam, with weight decay
on tensors of ndim >= 2 only.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .config import HybridConfig
from .directions import CHUNK_SLOT, WORKSPACE, Directions, chunk_of


def _broadcast(c: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return c.reshape(c.shape + (1,) * (like.dim() - c.dim()))


@torch.no_grad()
def apply_zo_update(params: Sequence[torch.Tensor], directions: Directions, coeffs: torch.Tensor,
                    decay: float = 1.0) -> None:
    """x_j <- decay_j * x_j + Σ_r coeffs[r] * u_r(j) for every ZO tensor j, in one sweep.

    ``coeffs`` has shape (q, *replicate_shape).  ``decay`` applies to tensors with
    ndim > len(replicate_shape) + 1 (matrices); it is 1 for the theorem's method.
    This one function is used both by the optimizer and by :func:`replay_zo_log`, which is
    what makes a replay bit-identical.
    """
    r = len(directions.replicate_shape)
    q = coeffs.shape[0]
    for j, p in enumerate(params):
        if decay != 1.0 and p.dim() - r >= 2:
            p.mul_(decay)
        if q == 1:  # one fused pass: p += c * u, rounded once into p's dtype
            c = None
            for a, b, u in directions.chunks(0, j, WORKSPACE, slot=CHUNK_SLOT):
                if c is None:
                    c = _broadcast(coeffs[0].to(torch.promote_types(u.dtype, p.dtype)), u)
                chunk_of(p, a, b).addcmul_(u, c)
            continue
        # q > 1: the q direction streams walk the chunk plan in lockstep (own slots each).
        streams = [directions.chunks(probe, j, WORKSPACE, slot=CHUNK_SLOT if probe == 0 else 10 + probe)
                   for probe in range(q)]
        for parts in zip(*streams):
            acc = None
            for probe, (a, b, u) in enumerate(parts):
                wide = u.double() if p.dtype == torch.float64 and u.dtype != p.dtype else u
                term = wide * _broadcast(coeffs[probe].to(wide.dtype), wide)
                acc = term if acc is None else acc.add_(term)
            chunk_of(p, a, b).add_(acc)  # a low-precision p is rounded once


def make_fo_optimizer(params: Sequence[torch.Tensor], cfg: HybridConfig) -> torch.optim.Optimizer | None:
    """torch.optim optimizer for the FO block, weight decay on matrices only (by shape)."""
    params = list(params)
    if not params:
        return None
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [g for g in ({"params": decay, "weight_decay": cfg.weight_decay_y},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    if cfg.fo_optimizer == "adam":
        return torch.optim.AdamW(groups, lr=cfg.lr_y, betas=cfg.betas, eps=cfg.adam_eps)
    momentum = cfg.momentum if cfg.fo_optimizer == "momentum" else 0.0
    # SGD's weight decay is L2 (coupled); with plain SGD the two coincide.
    return torch.optim.SGD(groups, lr=cfg.lr_y, momentum=momentum)
