"""Which tensors are zeroth-order and which first-order: the five methods as configurations.

The (base, adapter) split of a ``peft`` model is found by structure in
:func:`hybridopt.llm.parameter_blocks`; this module only maps a method to the two blocks.
"""
from __future__ import annotations

from typing import Sequence

import torch

from . import methods


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
    """Map a method name to (ZO block x, FO block y), as the method registry
    (:mod:`hybridopt.methods`) assigns the base and adapter groups."""
    m = methods.get(method)
    groups = {"base": unique(base), "adapter": unique(adapter)}
    if m.uses_adapter and not groups["adapter"]:
        raise ValueError(f"method {method!r} needs a PEFT module (the adapter block is empty)")
    if m.uses_base and not groups["base"]:
        raise ValueError(f"method {method!r} needs base weights (the base block is empty)")
    return ([p for g in m.zo for p in groups[g]], [p for g in m.fo for p in groups[g]])
