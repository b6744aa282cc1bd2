"""The narrow interface between a problem and the optimizer (spec §1.1, f = (1/n) Σ f_i).

A problem exposes

* ``zo_params``  the zeroth-order block x (touched only through function values);
* ``fo_params``  the first-order block y (autograd);
* ``n``          the number of components f_i;
* ``replicate_shape``  leading dimensions of independent replicates (``()`` for one run);
* ``loss(batch, point=None)``  the mean of f_i over the component indices in ``batch`` at
  (x + s·u, y) for a :class:`~hybridopt.directions.Perturbation` ``point``, else at (x, y);
  shape ``replicate_shape``;
* ``pair_loss(batch, pair)``  (f_B(x + μu, y), f_B(x − μu, y)) for a
  :class:`~hybridopt.directions.Pair`, u drawn once for both;
* the pending ZO update (``set_pending``/``flush``): applied to x by the next probe sweep as
  it reaches each tensor, or by ``flush()``.

Either block may be empty.  Two implementations cover every use: :class:`TensorProblem` (a
function of explicit tensors: synthetic objectives, tests; updates applied at once, so x is
always readable) and :class:`ModuleProblem` (a ``torch.nn.Module``; updates folded into the
next sweep, flushed automatically before anyone else reads the model).
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence, runtime_checkable

import torch

from .chunked import chunkable
from .directions import Pair, Perturbation, default_context
from .module_sweep import ModuleSweep
from .pairs import PairInputs
from .sweep import SweepContext
from .zo_rules import ZOUpdate


@runtime_checkable
class Problem(Protocol):
    n: int
    zo_params: list[torch.Tensor]
    fo_params: list[torch.Tensor]
    replicate_shape: tuple[int, ...]
    #: True when the problem applies a pending update inside its next sweep
    folds_updates: bool

    def loss(self, batch: torch.Tensor, point: Perturbation | None = None) -> torch.Tensor:
        ...

    def pair_loss(self, batch: torch.Tensor, pair: Pair) -> tuple[torch.Tensor, torch.Tensor]:
        ...

    def bind(self, context: SweepContext) -> None:
        ...

    def set_pending(self, update: ZOUpdate | None) -> None:
        ...

    def flush(self) -> None:
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


class _Blocks:
    """What both problems share: the blocks, the sweep context and the pending update."""

    folds_updates = False

    def __init__(self, zo_params, fo_params, n) -> None:
        if int(n) < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n = int(n)
        self.zo_params, self.fo_params = list(zo_params), list(fo_params)
        _check_blocks(self.zo_params, self.fo_params)
        _freeze(self.zo_params, self.fo_params)
        self.context: SweepContext = default_context()
        self.pending: ZOUpdate | None = None

    def bind(self, context: SweepContext) -> None:
        """Make ``context`` this problem's default (an optimizer binds its own).  A sweep always
        uses the context of the directions it evaluates, so optimizers may share a problem."""
        self.context = context

    def set_pending(self, update: ZOUpdate | None) -> None:
        self.flush()
        self.pending = update

    def flush(self) -> None:
        """Apply the pending update now (one sweep over the tensors it has not reached)."""
        if self.pending is not None:
            update, self.pending = self.pending, None
            update.finish()

    def close(self) -> None:
        self.flush()


class TensorProblem(_Blocks):
    """Problem given by ``fn(xs, ys, batch) -> loss`` over explicit tensor lists.  Updates are
    applied at once (``folds_updates = False``): the tensors always hold the current x."""

    def __init__(self, fn: Callable[[list, list, torch.Tensor], torch.Tensor],
                 zo_params: Sequence[torch.Tensor], fo_params: Sequence[torch.Tensor], n: int,
                 replicate_shape: tuple[int, ...] = ()) -> None:
        super().__init__(zo_params, fo_params, n)
        self.fn = fn
        self.replicate_shape = tuple(replicate_shape)

    def set_pending(self, update: ZOUpdate | None) -> None:
        super().set_pending(update)
        self.flush()

    def _sweep(self, point: Perturbation) -> None:
        point.directions.context.counters.swept += sum(p.numel() for p in self.zo_params)

    def loss(self, batch: torch.Tensor, point: Perturbation | None = None) -> torch.Tensor:
        xs = self.zo_params
        if point is not None:
            self._sweep(point)
            xs = [point.apply(j, p) for j, p in enumerate(self.zo_params)]
        return self.fn(xs, self.fo_params, batch)

    def pair_loss(self, batch: torch.Tensor, pair: Pair) -> tuple[torch.Tensor, torch.Tensor]:
        self._sweep(pair)
        both = [pair.apply_pair(j, p) for j, p in enumerate(self.zo_params)]
        return (self.fn([a for a, _ in both], self.fo_params, batch),
                self.fn([b for _, b in both], self.fo_params, batch))


class ModuleProblem(_Blocks):
    """Problem over a ``torch.nn.Module``: ``loss_fn(model, batch) -> scalar`` (mean over ``batch``).

    A probe never writes the weights: during a sweep (:mod:`hybridopt.module_sweep`) each module
    owning ZO tensors reads ``p ± μu`` formed out of place for its own forward; large
    ``nn.Linear``/``nn.Embedding`` weights chunk by chunk.  A weight shared by several modules
    (tied embeddings) gets the same perturbation everywhere.  Every ZO tensor must be read
    through its owning module's forward; one that is not is reported (it would otherwise
    receive a meaningless update).  The model is put in ``eval()`` mode: f_i must be a
    deterministic function.

    **Paired probes** (the default estimator) call ``loss_fn`` with the model's batch doubled
    and then once more on the kept second half (:mod:`hybridopt.pairs` states the rules a model
    call must follow; ``pair_inputs`` replaces the default doubling).  The first paired probe is
    checked against two separate forwards (``check_pairs``), so a model that breaks the rules
    fails loudly instead of training on mixed probes.

    **Pending updates** are folded into the next sweep.  While one is pending, hooks on the
    model flush it before any other forward and in ``state_dict()``; call ``flush()`` (or the
    optimizer's) before reading the ZO tensors directly.  No hook stays installed once nothing is
    pending, and none during a ``loss()`` call but the sweep's own wrappers.
    """

    folds_updates = True

    def __init__(self, model: torch.nn.Module, loss_fn: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
                 zo_params: Sequence[torch.Tensor], fo_params: Sequence[torch.Tensor], n: int,
                 check_coverage: bool = True, check_pairs: bool = True,
                 pair_inputs: PairInputs | None = None) -> None:
        super().__init__(zo_params, fo_params, n)
        self.model, self.loss_fn = model, loss_fn
        self.replicate_shape: tuple[int, ...] = ()
        self.check_coverage, self.check_pairs, self.pair_inputs = check_coverage, check_pairs, pair_inputs
        model.eval()
        index = {id(p): j for j, p in enumerate(self.zo_params)}
        self.owners: dict[torch.nn.Module, list[tuple[str, int]]] = {}
        uses: dict[int, int] = {}
        for module in model.modules():
            for name, p in module._parameters.items():
                if p is not None and id(p) in index:
                    self.owners.setdefault(module, []).append((name, index[id(p)]))
                    uses[index[id(p)]] = uses.get(index[id(p)], 0) + 1
        missing = [j for j in range(len(self.zo_params)) if j not in uses]
        if missing:
            raise ValueError(f"{len(missing)} ZO tensor(s) are not parameters of the model")
        self.shared = {j for j, c in uses.items() if c > 1}
        self._names = {id(p): name for name, p in model.named_parameters(remove_duplicate=False)}
        self._sweep: ModuleSweep | None = None
        self._guards: list = []
        self._pairs_checked = False
        self._chunked: dict[int, tuple[SweepContext, dict]] = {}

    def chunked_for(self, context: SweepContext) -> dict[torch.nn.Module, int]:
        """The modules whose large Linear/Embedding weight ``context`` probes chunk by chunk."""
        key = id(context)
        if key not in self._chunked or self._chunked[key][0] is not context:
            self._chunked[key] = (context, {
                module: j for module, owned in self.owners.items() for name, j in owned
                if chunkable(module, name, self.zo_params[j], len(context.row_chunks(self.zo_params[j].shape)))})
        return self._chunked[key][1]

    @property
    def chunked(self) -> dict[torch.nn.Module, int]:
        return self.chunked_for(self.context)

    # -- pending updates and the hooks that flush them -------------------------------------------
    def set_pending(self, update: ZOUpdate | None) -> None:
        super().set_pending(update)
        if update is not None and not self._guards:
            for module in [self.model] + list(self.owners):
                self._guards.append(module.register_forward_pre_hook(self._guard))
                self._guards.append(module.register_state_dict_pre_hook(self._guard))

    def _guard(self, *args, **kwargs) -> None:
        if self._sweep is None and self.pending is not None:
            self.flush()

    def flush(self) -> None:
        super().flush()
        for handle in self._guards:
            handle.remove()
        self._guards.clear()

    def _consumed(self) -> None:
        if self.pending is not None and self.pending.done:
            self.pending = None
            self.flush()  # removes the guards

    # -- evaluations ------------------------------------------------------------------------------
    def loss(self, batch: torch.Tensor, point: Perturbation | None = None) -> torch.Tensor:
        if point is None:
            self.flush()
            return self.loss_fn(self.model, batch)
        with self._sweeping(point) as sweep:   # grad mode as the caller's (the optimizer's: no_grad)
            with sweep.installed():
                out = self.loss_fn(self.model, batch)
        return out

    def pair_loss(self, batch: torch.Tensor, pair: Pair) -> tuple[torch.Tensor, torch.Tensor]:
        with self._sweeping(pair) as sweep, torch.no_grad():
            with sweep.installed():
                plus = self.loss_fn(self.model, batch)
                with sweep.replay():
                    minus = self.loss_fn(self.model, batch)
        if self.check_pairs and not self._pairs_checked:
            self._check_pairs(batch, pair, plus, minus)
        return plus, minus

    class _Sweeping:
        def __init__(self, prob, point):
            self.prob, self.point = prob, point

        def __enter__(self):
            if self.prob._sweep is not None:
                raise RuntimeError("ModuleProblem.loss was called inside one of its own probe evaluations")
            self.prob._sweep = ModuleSweep(self.prob, self.point)
            return self.prob._sweep

        def __exit__(self, exc_type, exc, tb):
            prob, sweep = self.prob, self.prob._sweep
            try:
                if exc_type is None:
                    sweep.finish()
            finally:
                prob._sweep = None
            if exc_type is None:
                prob._consumed()
                prob._check_coverage(self.point)
            return False

    def _sweeping(self, point: Perturbation) -> "_Sweeping":
        return self._Sweeping(self, point)

    def _check_coverage(self, point: Perturbation) -> None:
        if self.check_coverage and len(point.applied) < len(self.zo_params):
            unused = [self._names.get(id(self.zo_params[j]), f"#{j}")
                      for j in range(len(self.zo_params)) if j not in point.applied]
            raise RuntimeError(
                "ZO parameters were not read through their module's forward, so they cannot be "
                f"perturbed: {', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}. Remove them "
                "from the ZO block or pass check_coverage=False.")

    def _check_pairs(self, batch, pair: Pair, plus: torch.Tensor, minus: torch.Tensor) -> None:
        """Once: the paired probe must equal two separate forwards up to the rounding of a
        batched forward (else the model does not follow the rules of :mod:`hybridopt.pairs`)."""
        counters = pair.directions.context.counters
        saved = counters.save()
        sep = [self.loss(batch, Perturbation(pair.directions, pair.probe, s)) for s in pair.scales]
        counters.restore(saved)
        low = max((p.dtype for p in self.zo_params), key=lambda d: torch.finfo(d).eps)
        tol = max(256 * torch.finfo(torch.float32).eps, 8 * torch.finfo(low).eps)
        for name, got, want in (("f(x+mu u)", plus, sep[0]), ("f(x-mu u)", minus, sep[1])):
            if not torch.allclose(got.double(), want.double(), rtol=tol, atol=tol):
                raise RuntimeError(
                    f"paired probes: {name} from the doubled batch is {got.tolist()} but {want.tolist()} from a "
                    "separate forward: this model's calls do not follow the pairing rules (batch-major inputs "
                    "and outputs, rows independent). Pass pair_inputs= to ModuleProblem or use "
                    "estimator='central'")
        self._pairs_checked = True

    def close(self) -> None:
        """Flush the pending update; no hook of this problem remains on the model."""
        self.flush()
