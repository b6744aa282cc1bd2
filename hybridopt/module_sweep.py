"""One evaluation of a :class:`~hybridopt.problem.ModuleProblem` at a probe point: a *sweep*.

While the problem's ``loss_fn`` runs, every module that owns ZO tensors has its ``forward``
wrapped (instance attribute, removed in ``finally``) so that its tensors read as ``p ± μu``,
formed out of place in arena memory for the duration of that module's call:

* **single point** (central/forward estimators): one sign;
* **paired probe** (the default estimator): the problem's model is called with its batch
  doubled (:mod:`hybridopt.pairs`); each owner module draws u for its tensors *once*, runs its
  original forward on the first half of its inputs with p + μu and on the second half with
  p − μu, and concatenates the outputs.  ``nn.Linear`` weights (both halves in one batched
  matmul) and large ``nn.Embedding`` weights go chunk by chunk (:mod:`hybridopt.chunked`).
  The model output's second half is kept and the ``loss_fn`` is run a second time on it (its
  model calls replayed, no forward) to give f(x − μu).

The **pending update** of the previous step (:class:`~hybridopt.zo_rules.ZOUpdate`), if any, is
applied to each tensor (chunk) right before its first probe draw in this sweep, so reading x,
writing x_{t+1} and forming x_{t+1} ± μu_{t+1} is one pass over that memory; an embedding
lookup reads the updated rows out of place and leaves the in-place write to the sweep's later
full use of the tensor (a tied output layer) or to the end of the sweep.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable

import torch

from .chunked import embedding_forward, linear_forward
from .directions import Perturbation
from .pairs import cat_outputs, double_inputs, signature, split_inputs, split_output

if TYPE_CHECKING:  # pragma: no cover
    from .problem import ModuleProblem


class ModuleSweep:
    def __init__(self, problem: "ModuleProblem", point: Perturbation) -> None:
        self.problem, self.point = problem, point
        self.directions = point.directions
        self.pending = problem.pending
        self.context = point.directions.context   # the evaluating optimizer's (problems may be shared)
        self.paired = len(point.scales) == 2
        self.mu = abs(point.scale)
        self.half: int | None = None      # which sign (index into point.scales) the running call uses
        self.in_root = False
        self.rows = 0                     # rows of the doubled batch inside a paired root call
        self.stash: list[tuple[tuple, Any]] = []
        self.replaying = False
        self.swept: set[int] = set()      # ZO tensors this sweep has read or written whole
        self._shared: dict[int, torch.Tensor] = {}   # ±μu of tied tensors, kept for the whole sweep
        self._shared_leases: list = []
        self._saved: list[tuple[torch.nn.Module, Any]] = []
        # With autograd on (an FO gradient at a perturbed point, outside the theorem), the forward
        # may keep the perturbed tensors for backward: fresh tensors then, no arena, no chunking.
        self.grad = torch.is_grad_enabled()

    # -- installing the wrappers ---------------------------------------------------------------
    @contextlib.contextmanager
    def installed(self):
        prob = self.problem
        try:
            for module, owned in prob.owners.items():
                self._wrap(module, self._owner_forward(module, owned, self._original(module)))
            if self.paired:
                root = prob.model
                self._wrap(root, self._root_forward(root.forward))
            yield self
        finally:
            for module, old in reversed(self._saved):
                if old is None:
                    module.__dict__.pop("forward", None)
                else:
                    module.forward = old
            self._saved.clear()
            for lease in reversed(self._shared_leases):
                lease.release()
            self._shared_leases.clear()
            self._shared.clear()

    def _original(self, module: torch.nn.Module) -> Callable:
        return module.__dict__.get("forward") or type(module).forward.__get__(module)

    def _wrap(self, module: torch.nn.Module, fn: Callable) -> None:
        self._saved.append((module, module.__dict__.get("forward")))
        module.forward = fn

    # -- the root call of a paired probe ---------------------------------------------------------
    def _root_forward(self, inner: Callable) -> Callable:
        pair_inputs = self.problem.pair_inputs or double_inputs

        def forward(*args, **kwargs):
            if self.replaying:
                if not self.stash:
                    raise RuntimeError("paired probes: loss_fn called the model more often for f(x - mu u) "
                                       "than for f(x + mu u); it must be deterministic")
                sig, second = self.stash.pop(0)
                if sig != signature(args, kwargs):
                    raise RuntimeError("paired probes: loss_fn called the model with other inputs the second "
                                       "time; it must be deterministic")
                return second
            if self.in_root:
                return inner(*args, **kwargs)
            args2, kwargs2, B = pair_inputs(args, kwargs)
            self.in_root, self.rows = True, 2 * B
            try:
                out = inner(*args2, **kwargs2)
            finally:
                self.in_root = False
            first, second = split_output(out, B)
            self.stash.append((signature(args, kwargs), second))
            return first
        return forward

    @contextlib.contextmanager
    def replay(self):
        self.replaying = True
        try:
            yield
        finally:
            self.replaying = False
        if self.stash:
            raise RuntimeError("paired probes: loss_fn called the model fewer times for f(x - mu u) than for "
                               "f(x + mu u); it must be deterministic")

    # -- a module owning ZO tensors -------------------------------------------------------------
    def _owner_forward(self, module: torch.nn.Module, owned: list[tuple[str, int]], orig: Callable) -> Callable:
        prob = self.problem
        chunked = None if self.grad else prob.chunked_for(self.context).get(module)

        def forward(*args, **kwargs):
            if self.replaying:
                raise RuntimeError("paired probes: loss_fn ran a ZO module outside a call of the problem's model")
            if self.paired and self.half is None and not self.in_root:
                raise RuntimeError("paired probes: a module with ZO weights ran outside a call of the problem's "
                                   "model, so its batch was not doubled; call the model in loss_fn, or use "
                                   "estimator='central'")
            if self.paired and self.half is None:
                halves = [0, 1]                      # split this call's doubled batch: + then -
            else:
                halves = [self.half or 0]            # one point, or inside a half of an outer split
            if chunked is not None:
                return self._chunked_call(module, owned, chunked, orig, halves, args, kwargs)
            return self._generic_call(module, owned, orig, halves, args, kwargs)
        return forward

    def _touch(self, j: int, rows_only: int | None = None) -> None:
        """Count the sweep's reads of tensor j: the whole tensor once, or the rows it looked up."""
        if rows_only is not None:
            self.context.counters.rows_read += rows_only
        elif j not in self.swept:
            self.swept.add(j)
            self.context.counters.swept += self.problem.zo_params[j].numel()
        self.point.applied.add(j)

    def _su(self, j: int, p: torch.Tensor, lease_name: str):
        """μ·u_j in a lease (float32/float64), after applying the pending update to tensor j."""
        if self.pending is not None and self.pending.pending(j):
            self.pending.apply_tensor(j)
        self._touch(j)
        d = self.directions
        lease = self._lease(lease_name, p.shape, d.draw_dtype(j), p.device)
        with torch.no_grad():
            su = d.u(self.point.probe, j, out=lease.tensor, factor=self.mu)
        return lease, su

    def _lease(self, name: str, shape, dtype, device):
        if self.grad:
            return _Fresh(torch.empty(shape, dtype=dtype, device=device))
        return self.context.arena.lease(name, shape, dtype, device)

    def _shared_su(self, j: int, p: torch.Tensor) -> torch.Tensor:
        if j not in self._shared:
            lease, su = self._su(j, p, f"shared-su-{j}")
            self._shared_leases.append(lease)
            self._shared[j] = su
        return self._shared[j]

    def _sign(self, h: int) -> float:
        return 1.0 if self.point.scales[h] > 0 else -1.0

    def _generic_call(self, module, owned, orig, halves, args, kwargs):
        """Run ``orig`` once per half with the module's ZO tensors replaced by p ± μu."""
        prob, ctx = self.problem, self.context
        leases, sus = [], {}
        try:
            for name, j in owned:
                p = module._parameters[name]
                if j in prob.shared:
                    sus[name] = self._shared_su(j, p)
                else:
                    lease, sus[name] = self._su(j, p, f"su-{j}")
                    leases.append(lease)
            inputs = [(args, kwargs)] if len(halves) == 1 else split_inputs(args, kwargs, self.rows)
            outs = []
            for h, (a, kw) in zip(halves, inputs):
                plus = self._sign(h) > 0
                swapped, plea = [], []
                try:
                    for name, _ in owned:
                        p = module._parameters[name]
                        lease = self._lease(f"p-{name}", p.shape, p.dtype, p.device)
                        plea.append(lease)
                        with ctx.phase("perturb"), torch.no_grad():
                            op = torch.add if plus else torch.sub
                            op(p.detach(), sus[name], out=lease.tensor)
                        swapped.append((name, p))
                        module._parameters[name] = lease.tensor
                    prev, self.half = self.half, h
                    try:
                        outs.append(orig(*a, **kw))
                    finally:
                        self.half = prev
                finally:
                    for name, p in swapped:
                        module._parameters[name] = p
                    for lease in reversed(plea):
                        lease.release()
            return outs[0] if len(outs) == 1 else cat_outputs(outs)
        finally:
            for lease in reversed(leases):
                lease.release()

    def _chunked_call(self, module, owned, j, orig, halves, args, kwargs):
        """Large Linear/Embedding weight ``j``: chunk by chunk (other owned tensors, e.g. a ZO
        bias, are small and perturbed whole)."""
        prob = self.problem
        bias = [(name, jj) for name, jj in owned if name != "weight"]
        leases, su_bias = [], None
        try:
            for name, jj in bias:
                p = module._parameters[name]
                if jj in prob.shared:
                    su_bias = self._shared_su(jj, p)
                else:
                    lease, su_bias = self._su(jj, p, f"su-{jj}")
                    leases.append(lease)
            x = args[0] if args else next(iter(kwargs.values()))
            if len(halves) == 2 and x.shape[0] % self.rows:
                raise RuntimeError(f"paired probes: {type(module).__name__} got {x.shape[0]} rows, not a multiple "
                                   f"of the doubled batch ({self.rows}); use estimator='central'")
            signs = [self._sign(h) for h in halves]
            if isinstance(module, torch.nn.Embedding):
                xs = [x] if len(halves) == 1 else [x[: x.shape[0] // 2], x[x.shape[0] // 2:]]
                outs = embedding_forward(self, module, j, xs, signs)
                return outs[0] if len(outs) == 1 else torch.cat(outs)
            b = module.bias
            biases = [None if b is None else (b if su_bias is None else torch.add(b.detach(), s * su_bias).to(b.dtype))
                      for s in signs]
            return linear_forward(self, module, j, x, signs, biases)
        finally:
            for lease in reversed(leases):
                lease.release()

    # -- after the loss -------------------------------------------------------------------------
    def finish(self) -> None:
        """Apply what the sweep did not reach of the pending update (e.g. an untied embedding,
        read only by lookups): part of this sweep, so a tensor is counted once."""
        if self.pending is None:
            return
        for j in range(len(self.problem.zo_params)):
            if self.pending.pending(j):
                if j not in self.swept:  # e.g. read only by lookups: its in-place pass is this one
                    self.swept.add(j)
                    self.context.counters.swept += self.problem.zo_params[j].numel()
                self.pending.apply_tensor(j)


class _Fresh:
    """A lease-like holder of a fresh tensor (autograd may keep it beyond the module's call)."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def release(self) -> None:
        pass
