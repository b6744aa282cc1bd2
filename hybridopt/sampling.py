"""Random reshuffling (spec §2): one fresh permutation π_t of [n] per epoch, walked without
replacement in mini-batches.  The state (epoch, position, permutation, generator) is saved
and restored exactly, so a resumed run draws the same batches."""
from __future__ import annotations

from typing import Any

import torch

from .rng import mix


class RandomReshuffling:
    """Mini-batches of component indices from per-epoch permutations.

    With ``replicates=R`` each replicate walks its own permutation and batches have shape
    (R, b); otherwise (b,).  The last batch of an epoch is shorter when ``batch_size`` does
    not divide ``n`` (``drop_last=True`` drops it instead, so the epoch's tail is unseen).
    """

    def __init__(self, n: int, batch_size: int = 1, seed: int = 0, replicates: int | None = None,
                 drop_last: bool = False) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= n:
            raise ValueError(f"batch_size must be an integer in [1, n={n}], got {batch_size!r}")
        if replicates is not None and (not isinstance(replicates, int) or replicates < 1):
            raise ValueError(f"replicates must be None or an integer >= 1, got {replicates!r}")
        self.n, self.batch_size, self.replicates, self.drop_last = n, batch_size, replicates, drop_last
        self.seed = int(seed)
        self._gen = torch.Generator().manual_seed(mix(self.seed, 0x5EED))
        self.epoch = 0
        self.position = 0
        self.perm: torch.Tensor | None = None
        self.batch_epoch = 0  # epoch of the batch most recently returned

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def _new_perm(self) -> torch.Tensor:
        if self.replicates is None:
            return torch.randperm(self.n, generator=self._gen)
        return torch.stack([torch.randperm(self.n, generator=self._gen) for _ in range(self.replicates)])

    def next_batch(self) -> torch.Tensor:
        if self.perm is None:
            self.perm = self._new_perm()
            self.position = 0
        end = min(self.position + self.batch_size, self.n)
        batch = self.perm[..., self.position:end]
        self.batch_epoch = self.epoch
        self.position = end
        left = self.n - self.position
        if left == 0 or (self.drop_last and left < self.batch_size):
            self.epoch += 1
            self.perm = None
            self.position = 0
        return batch

    def __iter__(self):
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "batch_size": self.batch_size, "replicates": self.replicates,
                "drop_last": self.drop_last, "seed": self.seed, "epoch": self.epoch,
                "position": self.position, "batch_epoch": self.batch_epoch,
                "perm": None if self.perm is None else self.perm.clone(),
                "generator": self._gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("n", "batch_size", "replicates", "drop_last"):
            if state[key] != getattr(self, key):
                raise ValueError(f"sampler state has {key}={state[key]!r}, this sampler {getattr(self, key)!r}")
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]
        self.batch_epoch = state["batch_epoch"]
        self.perm = None if state["perm"] is None else state["perm"].clone()
        self._gen.set_state(state["generator"])
