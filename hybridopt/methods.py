"""The method registry: the five methods are configurations of one optimizer.

A method says which of the model's two parameter groups — the **base** weights and the
**adapter** (PEFT module) — form the zeroth-order block x and which the first-order block y
(spec §2).  Everything that needs to know about methods (the core's block split, configs,
the benchmark, reports and figures) reads this table; adding a method is one entry here.

========  =================  ================  ===================================
method    ZO block x         FO block y        label
========  =================  ================  ===================================
fo-full   —                  base + adapter    FT (first-order, all weights)
fo-peft   —                  adapter           PEFT (first-order, LoRA)
zo-full   base + adapter     —                 MeZO (zeroth-order, all weights)
zo-peft   adapter            —                 MeZO-LoRA (zeroth-order, LoRA)
hybrid    base               adapter           Hybrid (ZO base + FO LoRA)
========  =================  ================  ===================================
"""
from __future__ import annotations

from dataclasses import dataclass

#: the two parameter groups a method assigns to blocks
GROUPS = ("base", "adapter")


@dataclass(frozen=True)
class Method:
    """One method: the parameter groups of its ZO and FO blocks, and how reports name it."""

    name: str
    zo: tuple[str, ...]
    fo: tuple[str, ...]
    label: str
    short: str
    #: the method trains a PEFT module (one must be attached); the full methods train the base
    #: weights, plus an adapter only if the model happens to carry one
    peft: bool

    @property
    def has_zo(self) -> bool:
        return bool(self.zo)

    @property
    def has_fo(self) -> bool:
        return bool(self.fo)

    @property
    def uses_adapter(self) -> bool:
        """True when the method needs a PEFT module attached to the model."""
        return self.peft

    @property
    def uses_base(self) -> bool:
        return "base" in self.zo + self.fo

    @property
    def first_order_only(self) -> bool:
        return self.has_fo and not self.has_zo

    @property
    def zeroth_order_only(self) -> bool:
        return self.has_zo and not self.has_fo


REGISTRY: dict[str, Method] = {m.name: m for m in (
    Method("fo-full", zo=(), fo=("base", "adapter"), label="FT (first-order, all weights)", short="FT",
           peft=False),
    Method("fo-peft", zo=(), fo=("adapter",), label="PEFT (first-order, LoRA)", short="PEFT",
           peft=True),
    Method("zo-full", zo=("base", "adapter"), fo=(), label="MeZO (zeroth-order, all weights)",
           short="MeZO", peft=False),
    Method("zo-peft", zo=("adapter",), fo=(), label="MeZO-LoRA (zeroth-order, LoRA)",
           short="MeZO-LoRA", peft=True),
    Method("hybrid", zo=("base",), fo=("adapter",), label="Hybrid (ZO base + FO LoRA)", short="Hybrid",
           peft=True),
)}

#: method names in the registry's order (the order of tables and legends)
METHODS: tuple[str, ...] = tuple(REGISTRY)
#: the paper's method and the first-order references it is compared with, in order of preference
HYBRID = "hybrid"
FO_REFERENCES: tuple[str, ...] = tuple(m.name for m in REGISTRY.values() if m.first_order_only)


def get(name: str) -> Method:
    """The registered method ``name``; an unknown name fails with the valid ones listed."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(METHODS)}") from None
