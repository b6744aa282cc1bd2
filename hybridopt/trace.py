"""What a run records, step by step (values stay on the device until read)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .optimizer import StepStats


@dataclass
class Trace:
    """Per-step loss, epoch, oracle counts and ZO parameter passes; ``projected`` holds the
    q projected gradients of each ZO step, ``fo_grad_sq`` the squared FO-block gradient."""

    steps: list[int] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    _losses: list[torch.Tensor] = field(default_factory=list)
    _projected: list[torch.Tensor] = field(default_factory=list)
    _fo_grad_sq: list[torch.Tensor] = field(default_factory=list)
    zo_evals: list[int] = field(default_factory=list)
    fo_grads: list[int] = field(default_factory=list)
    zo_passes: list[int] = field(default_factory=list)

    def record(self, stats: StepStats, epoch: int) -> None:
        self.steps.append(stats.step)
        self.epochs.append(epoch)
        self._losses.append(stats.loss)
        if stats.projected is not None:
            self._projected.append(stats.projected)
        if stats.fo_grad_sq is not None:
            self._fo_grad_sq.append(stats.fo_grad_sq)
        self.zo_evals.append(stats.zo_evals)
        self.fo_grads.append(stats.fo_grads)
        self.zo_passes.append(stats.zo_passes)

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def loss_tensor(self) -> torch.Tensor:
        """Losses as one tensor, shape (steps, *replicate_shape) (one host sync)."""
        return torch.stack(self._losses).cpu() if self._losses else torch.empty(0)

    @property
    def losses(self) -> list:
        return self.loss_tensor.tolist()

    @property
    def projected(self) -> torch.Tensor:
        return torch.stack(self._projected).cpu() if self._projected else torch.empty(0)

    @property
    def fo_grad_sq(self) -> torch.Tensor:
        """||∇_y f_B||² per step (FO block present)."""
        return torch.stack(self._fo_grad_sq).cpu() if self._fo_grad_sq else torch.empty(0)

    def to_dict(self) -> dict:
        return {"steps": self.steps, "epochs": self.epochs, "loss": self.losses,
                "zo_evals": self.zo_evals, "fo_grads": self.fo_grads, "zo_passes": self.zo_passes}
