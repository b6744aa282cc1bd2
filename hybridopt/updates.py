"""Update rule of the FO block: ``torch.optim`` SGD (the theorem's), SGD with momentum, or
AdamW, with weight decay on tensors of ndim >= 2 only (chosen by shape, not by names).

The ZO block's rules live in :mod:`hybridopt.zo_rules`.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .config import HybridConfig


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
