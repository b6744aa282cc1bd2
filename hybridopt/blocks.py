"""Which tensors are zeroth-order and which first-order: the five methods as configurations.

The (base, adapter) split of a ``peft`` model is found by structure in
:func:`hybridopt.llm.parameter_blocks`; this module only maps a method to the two blocks.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .types import METHODS


def unique(params) -> list[torch.Tensor]:
    """Tensors in order of first appearance, each once (tied weights appear twice in a model)."""
    seen, out = set(), []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


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
    base, adapter = unique(base), unique(adapter)
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
