"""The narrow interface between a problem and the optimizer (spec §1.1, f = (1/n) Σ f_i).

A problem exposes

* ``zo_params``  the zeroth-order block x (touched only through function values);
* ``fo_params``  the first-order block y (autograd);
* ``n``          the number of components f_i;
* ``replicate_shape``  leading dimensions of independent replicates (``()`` for one run);
* ``loss(batch, perturbation=None)``  the mean of f_i over the component indices in
  ``batch`` at (x + s*u, y) when a :class:`~hybridopt.directions.Perturbation` is given,
  else at (x, y).  Shape: ``replicate_shape``.

Either block may be empty.  Two implementations cover every use:
:class:`TensorProblem` (a function of explicit tensors: synthetic objectives, tests) and
:class:`ModuleProblem` (a ``torch.nn.Module``: perturbed weights are swapped in module by
module during the forward, so the stored weights are never written by a probe).
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence, runtime_checkable

import torch

from .chunked import chunkable, perturbed_forward
from .directions import WORKSPACE, Perturbation


@runtime_checkable
class Problem(Protocol):
    n: int
    zo_params: list[torch.Tensor]
    fo_params: list[torch.Tensor]
    replicate_shape: tuple[int, ...]

    def loss(self, batch: torch.Tensor, perturbation: Perturbation | None = None) -> torch.Tensor:
        ...


def _check_blocks(zo: Sequence[torch.Tensor], fo: Sequence[torch.Tensor]) -> None:
    ids = [id(p) for p in zo]
    if len(set(ids)) != len(ids):
        raise ValueError("the ZO block lists a tensor twice")
    fo_ids = [id(p) for p in fo]
    if len(set(fo_ids)) != len(fo_ids):
        raise ValueError("the FO block lists a tensor twice")
    if set(ids) & set(fo_ids):
        raise ValueError("a tensor is in both the ZO and the FO block")
    for p in fo:
        if not p.is_floating_point():
            raise ValueError("FO parameters must be floating point")


def _freeze(zo: Sequence[torch.Tensor], fo: Sequence[torch.Tensor]) -> None:
    # The ZO block never builds an autograd graph; the FO block always does.
    for p in zo:
        p.requires_grad_(False)
    for p in fo:
        p.requires_grad_(True)


class TensorProblem:
    """Problem given by ``fn(xs, ys, batch) -> loss`` over explicit tensor lists."""

    def __init__(self, fn: Callable[[list, list, torch.Tensor], torch.Tensor],
                 zo_params: Sequence[torch.Tensor], fo_params: Sequence[torch.Tensor], n: int,
                 replicate_shape: tuple[int, ...] = ()) -> None:
        if int(n) < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.fn, self.n = fn, int(n)
        self.zo_params, self.fo_params = list(zo_params), list(fo_params)
        self.replicate_shape = tuple(replicate_shape)
        _check_blocks(self.zo_params, self.fo_params)
        _freeze(self.zo_params, self.fo_params)

    def loss(self, batch: torch.Tensor, perturbation: Perturbation | None = None) -> torch.Tensor:
        xs = self.zo_params
        if perturbation is not None:
            xs = [perturbation.apply(j, p) for j, p in enumerate(self.zo_params)]
        return self.fn(xs, self.fo_params, batch)


class ModuleProblem:
    """Problem over a ``torch.nn.Module``: ``loss_fn(model, batch) -> scalar``.

    During a perturbed evaluation a forward pre-hook replaces each ZO weight of a module by
    ``w + s*u`` for the duration of that module's forward and puts the original tensor back
    afterwards (also on error).  A weight shared by several modules (tied embeddings) gets the
    same perturbed tensor everywhere.  The weight of a large ``nn.Linear``/``nn.Embedding`` is
    instead probed chunk by chunk by a temporary ``forward`` (:mod:`hybridopt.chunked`), so no
    probe holds a copy of a big matrix.  Every ZO tensor must be read through its owning
    module's forward; one that is not is reported (it would otherwise receive a meaningless
    update).  The model is put in ``eval()`` mode: f_i must be a deterministic function.
    """

    def __init__(self, model: torch.nn.Module, loss_fn: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
                 zo_params: Sequence[torch.Tensor], fo_params: Sequence[torch.Tensor], n: int,
                 check_coverage: bool = True) -> None:
        if int(n) < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.model, self.loss_fn, self.n = model, loss_fn, int(n)
        self.zo_params, self.fo_params = list(zo_params), list(fo_params)
        self.replicate_shape: tuple[int, ...] = ()
        self.check_coverage = check_coverage
        _check_blocks(self.zo_params, self.fo_params)
        _freeze(self.zo_params, self.fo_params)
        model.eval()
        index = {id(p): j for j, p in enumerate(self.zo_params)}
        self._owners: dict[torch.nn.Module, list[tuple[str, int]]] = {}
        uses: dict[int, int] = {}
        for module in model.modules():
            for name, p in module._parameters.items():
                if p is not None and id(p) in index:
                    self._owners.setdefault(module, []).append((name, index[id(p)]))
                    uses[index[id(p)]] = uses.get(index[id(p)], 0) + 1
        # Large Linear/Embedding weights: probed chunk by chunk (no whole copy), no-grad probes only.
        self._chunked = {module: j for module, owned in self._owners.items() for name, j in owned
                         if chunkable(module, name, self.zo_params[j])}
        missing = [j for j in range(len(self.zo_params)) if j not in uses]
        if missing:
            raise ValueError(f"{len(missing)} ZO tensor(s) are not parameters of the model")
        self._shared = {j for j, c in uses.items() if c > 1}
        # Each module's perturbed weights live in the shared workspace at fixed offsets (only one
        # module runs at a time); tied weights get their own tensor, alive for the whole forward.
        self._offsets: dict[tuple[int, int], int] = {}
        self._shared_offsets: dict[int, int] = {}
        for j in sorted(self._shared):
            self._shared_offsets[j] = sum(self.zo_params[k].numel() for k in self._shared_offsets)
        for module, owned in self._owners.items():
            offset = 0
            for name, j in owned:
                if j not in self._shared and self._chunked.get(module) != j:
                    self._offsets[(id(module), j)] = offset
                    offset += self.zo_params[j].numel()
        self._names = {id(p): name for name, p in model.named_parameters(remove_duplicate=False)}
        self._active: Perturbation | None = None
        self._chunking = False
        self._cache: dict[int, torch.Tensor] = {}
        self._swapped: list[tuple[torch.nn.Module, str, torch.Tensor]] = []
        for module in self._owners:
            module.register_forward_pre_hook(self._pre_hook)
            module.register_forward_hook(self._post_hook)

    def _perturbed(self, module: torch.nn.Module, j: int, p: torch.Tensor) -> torch.Tensor:
        if j in self._shared:  # its own workspace slots (2, 3), alive for the whole forward
            if j not in self._cache:
                self._cache[j] = (self._active.apply(j, p) if torch.is_grad_enabled() else
                                  self._active.apply(j, p, WORKSPACE, self._shared_offsets[j], slots=(2, 3)))
            return self._cache[j]
        if torch.is_grad_enabled():  # autograd may save the perturbed weight: no shared memory
            return self._active.apply(j, p)
        return self._active.apply(j, p, WORKSPACE, self._offsets[(id(module), j)])

    def _pre_hook(self, module, args):
        if self._active is None:
            return None
        skip = self._chunked.get(module) if self._chunking else None
        for name, j in self._owners[module]:
            if j == skip and name == "weight":
                continue
            orig = module._parameters[name]
            self._swapped.append((module, name, orig))
            module._parameters[name] = self._perturbed(module, j, orig)
        return None

    def _post_hook(self, module, args, output):
        if self._active is None:
            return None
        self._restore(module)
        return None

    def _restore(self, only: torch.nn.Module | None = None) -> None:
        keep = []
        for module, name, orig in reversed(self._swapped):
            if only is None or module is only:
                module._parameters[name] = orig
            else:
                keep.append((module, name, orig))
        self._swapped = list(reversed(keep))

    def loss(self, batch: torch.Tensor, perturbation: Perturbation | None = None) -> torch.Tensor:
        if perturbation is None:
            return self.loss_fn(self.model, batch)
        self._active = perturbation
        self._chunking = not torch.is_grad_enabled()  # autograd may save weights: whole swaps
        try:
            if self._chunking:
                for module, j in self._chunked.items():
                    module.forward = perturbed_forward(module, perturbation, j)
            out = self.loss_fn(self.model, batch)
        finally:
            self._active = None
            for module in self._chunked:
                module.__dict__.pop("forward", None)
            self._restore()
            self._cache.clear()
        if self.check_coverage and len(perturbation.applied) < len(self.zo_params):
            unused = [self._names.get(id(self.zo_params[j]), f"#{j}")
                      for j in range(len(self.zo_params)) if j not in perturbation.applied]
            raise RuntimeError(
                "ZO parameters were not read through their module's forward, so they cannot be "
                f"perturbed: {', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}. Remove them "
                "from the ZO block or pass check_coverage=False.")
        return out
