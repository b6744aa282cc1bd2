"""Data parallelism for HybridRR on ``torch.distributed`` (launch with ``torchrun``).

Every rank holds the full model and receives the same *global* mini-batch from an identically
seeded :class:`~hybridopt.sampling.RandomReshuffling`; it evaluates only its shard
(``tensor_split`` of the batch, so the union of the shards is the single-process batch).

* ZO block: all ranks regenerate the same directions from the shared step seed, so only the
  q projected gradients need to be combined: **one all-reduce of q (+1 loss) scalars per
  step**, whatever the model size.  Every rank then applies the identical update, so the
  weights stay bit-identical without ever being communicated.
* FO block: the (adapter) gradients are all-reduced in one flat buffer; the base model's
  gradients do not exist (it has ``requires_grad=False``).

Shard contributions are weighted by shard size / global batch size and summed, which equals
the single-process mean over the global batch up to floating-point summation order.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import torch


@dataclass
class CommStats:
    """Bytes sent into all-reduces, per block, accumulated since the last :meth:`reset`."""

    zo_bytes: int = 0
    fo_bytes: int = 0
    calls: int = 0
    per_step: list[tuple[int, int]] = field(default_factory=list)

    def end_step(self) -> None:
        self.per_step.append((self.zo_bytes, self.fo_bytes))
        self.zo_bytes = self.fo_bytes = 0


class Communicator:
    """Sum all-reduce over a ``torch.distributed`` process group, with byte accounting."""

    def __init__(self, group=None) -> None:
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised (launch with torchrun, or call "
                               "hybridopt.distributed.init_from_env())")
        self._dist = dist
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.stats = CommStats()

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's part of a global mini-batch (last dimension)."""
        if batch.shape[-1] < self.world_size:
            raise ValueError(f"global batch of {batch.shape[-1]} is smaller than the world size {self.world_size}")
        return torch.tensor_split(batch, self.world_size, dim=-1)[self.rank]

    def sum_(self, tensor: torch.Tensor, block: str) -> torch.Tensor:
        """In-place sum over ranks; ``block`` ('zo', 'fo', or anything else for evaluation and
        control traffic, not charged to a block) is charged the bytes."""
        self._dist.all_reduce(tensor, op=self._dist.ReduceOp.SUM, group=self.group)
        nbytes = tensor.numel() * tensor.element_size()
        if block == "zo":
            self.stats.zo_bytes += nbytes
        elif block == "fo":
            self.stats.fo_bytes += nbytes
        self.stats.calls += 1
        return tensor

    def sum_grads_(self, params: Sequence[torch.Tensor]) -> None:
        """Sum the gradients of ``params`` over ranks through one flat buffer."""
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.sum_(flat, "fo")
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def max_flag(self, value: int) -> int:
        """Largest ``value`` over ranks (e.g. a received signal), so all ranks stop together."""
        t = torch.tensor([int(value)], dtype=torch.int64, device=self.device)
        self._dist.all_reduce(t, op=self._dist.ReduceOp.MAX, group=self.group)
        return int(t.item())

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self._dist.get_backend(self.group) == "nccl" \
            else torch.device("cpu")


def world_from_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) set by torchrun (or 0, 0, 1)."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)))


def init_from_env(device: str = "cpu") -> Communicator | None:
    """Initialise the default process group from torchrun's environment (NCCL for CUDA devices,
    gloo for CPU) and return a :class:`Communicator`; ``None`` for a single process."""
    import torch.distributed as dist

    rank, local_rank, world = world_from_env()
    if world <= 1:
        return None
    if not dist.is_initialized():
        cuda = str(device).startswith("cuda")
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Communicator()
