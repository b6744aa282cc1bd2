"""A faithful re-implementation of MeZO's published ZO-SGD step, for comparison only.

Written in this repository from the published description (MeZO, Malladi et al., NeurIPS 2023,
``large_models/trainer.py``: ``zo_step`` / ``zo_perturb_parameters`` / ``zo_update``), not copied:

* a fresh seed per step, ``seed = np.random.randint(1e9)``;
* every pass over the parameters re-seeds the **global** RNG with ``torch.manual_seed(seed)`` and
  regenerates ``z = torch.normal(mean=0, std=1, size=p.shape, dtype=p.dtype)`` tensor by tensor;
* **4 out-of-place passes** per step: ``p.data = p.data + eps*z`` (+1), forward, (-2), forward,
  (+1) to restore, then the update ``p.data = p.data - lr*(g*z + wd*p.data)`` (no weight decay
  for names containing ``bias`` / ``layer_norm`` / ``layernorm``);
* forwards under ``model.eval()`` + ``torch.inference_mode()``;
* ``projected_grad = ((L+ - L-) / (2 eps)).item()``: one host synchronisation per step.

It is used by :mod:`benchmarks.perf.bench` as the peer baseline measured in the same run, and by
the bf16 exact-restore check (the in-place +eps/-2eps/+eps does not restore bf16 weights).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

#: passes over the trainable parameters per published step (+eps, -2eps, +eps, update)
PASSES_PER_STEP = 4
_NO_DECAY = ("bias", "layer_norm", "layernorm")


class MeZOReference:
    """MeZO's step over ``named_params`` (``(name, parameter)`` pairs, the "requires_grad" set)."""

    def __init__(self, model: torch.nn.Module, loss_fn: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
                 named_params: Sequence[tuple[str, torch.nn.Parameter]], lr: float = 1e-7, eps: float = 1e-3,
                 weight_decay: float = 0.0, seed: int = 0) -> None:
        self.model, self.loss_fn = model, loss_fn
        self.named_params = list(named_params)
        self.lr, self.eps, self.weight_decay = float(lr), float(eps), float(weight_decay)
        self.np_rng = np.random.RandomState(seed)
        self.zo_random_seed = 0
        self.projected_grad = 0.0
        self.passes = 0

    def perturb_parameters(self, scaling_factor: float = 1.0) -> None:
        torch.manual_seed(self.zo_random_seed)
        for _, p in self.named_params:
            z = torch.normal(mean=0, std=1, size=p.data.size(), device=p.data.device, dtype=p.data.dtype)
            p.data = p.data + scaling_factor * z * self.eps
        self.passes += 1

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        with torch.inference_mode():
            loss = self.loss_fn(self.model, batch)
        return loss.detach()

    def update(self) -> None:
        torch.manual_seed(self.zo_random_seed)
        for name, p in self.named_params:
            z = torch.normal(mean=0, std=1, size=p.data.size(), device=p.data.device, dtype=p.data.dtype)
            if not any(k in name for k in _NO_DECAY):
                p.data = p.data - self.lr * (self.projected_grad * z + self.weight_decay * p.data)
            else:
                p.data = p.data - self.lr * (self.projected_grad * z)
        self.passes += 1

    def step(self, batch: torch.Tensor) -> torch.Tensor:
        """One published MeZO step; returns the loss at +eps (as MeZO's trainer logs it)."""
        self.passes = 0
        self.zo_random_seed = int(self.np_rng.randint(1000000000))
        self.perturb_parameters(scaling_factor=1)
        loss1 = self.forward(batch)
        self.perturb_parameters(scaling_factor=-2)
        loss2 = self.forward(batch)
        self.projected_grad = ((loss1 - loss2) / (2 * self.eps)).item()
        self.perturb_parameters(scaling_factor=1)
        self.update()
        return loss1


def named_subset(model: torch.nn.Module, params: Sequence[torch.Tensor]) -> list[tuple[str, torch.nn.Parameter]]:
    """``(name, p)`` for the given tensors, in ``model.named_parameters()`` order (tied weights once)."""
    want = {id(p) for p in params}
    return [(n, p) for n, p in model.named_parameters() if id(p) in want]
