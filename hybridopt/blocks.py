"""Which tensors are zeroth-order and which first-order: the five methods as configurations."""
from __future__ import annotations

from typing import Sequence

import torch

from .types import METHODS


def _unique(params) -> list[torch.Tensor]:
    seen, out = set(), []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def parameter_blocks(model: torch.nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(base, adapter) by structure: a ``peft`` model marks its adapter trainable and freezes
    the base, so the split is read from ``requires_grad``, never from parameter names.
    Call it right after wrapping the model (an optimizer later changes ``requires_grad``)."""
    params = _unique(model.parameters())
    return [p for p in params if not p.requires_grad], [p for p in params if p.requires_grad]


def split_blocks(method: str, base: Sequence[torch.Tensor], adapter: Sequence[torch.Tensor]
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Map a method name to (ZO block x, FO block y).

    ========  =================  ================
    method    ZO block x         FO block y
    ========  =================  ================
    fo-full   —                  base + adapter
    fo-peft   —                  adapter
    zo-full   base + adapter     —
    zo-peft   adapter            —
    hybrid    base               adapter
    ========  =================  ================
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    base, adapter = _unique(base), _unique(adapter)
    if method in ("fo-peft", "zo-peft", "hybrid") and not adapter:
        raise ValueError(f"method {method!r} needs a PEFT module (the adapter block is empty)")
    if method in ("zo-full", "fo-full", "hybrid") and not base:
        raise ValueError(f"method {method!r} needs base weights (the base block is empty)")
    return {
        "fo-full": ([], base + adapter),
        "fo-peft": ([], adapter),
        "zo-full": (base + adapter, []),
        "zo-peft": (adapter, []),
        "hybrid": (base, adapter),
    }[method]
