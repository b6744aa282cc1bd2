"""One HybridRR step (spec §2, inner loop body), for any :class:`~hybridopt.problem.Problem`.

For a mini-batch B (the spec's case is |B| = 1) at z_t = (x_t, y_t):

    g_r = [f_B(x_t + μu_r, y_t) − f_B(x_t − μu_r, y_t)] / (2μ)    ZO block, r = 1..q  (estimator)
    h   = ∇_y f_B(x_t, y_t)                                         FO block, autograd, unperturbed point
    x_{t+1} = x_t − η_x (1/q) Σ_r g_r u_r ,  y_{t+1} = y_t − η_y h     both read z_t (Jacobi)

Cost per step (q = 1, paired estimator, :class:`~hybridopt.problem.ModuleProblem`): one forward
over a doubled batch for both probes, during which each ZO tensor is read once, gets the
*previous* step's update written and is perturbed for the probes; the update x_{t+1} is then
left pending for the next sweep.  So the ZO block's memory is passed over **once** per step and
each direction is drawn **twice** (for the probe pair, and regenerated for the update), against
four passes for MeZO's published step.  The FO gradient is taken after the probes, at the same
z_t.  ``StepStats`` reports the draws, writes and passes of every step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .config import HybridConfig, lr_multiplier
from .directions import Directions
from .distributed import Communicator
from .estimators import Estimate, get_estimator
from .problem import Problem
from .rng import step_seed
from .sweep import SweepContext
from .updates import make_fo_optimizer
from .zo_rules import ZOUpdate, make_rule


@dataclass
class StepStats:
    """What one step did.  ``loss`` is f_B at the unperturbed point when it was evaluated (FO
    block present, or forward estimator), else the mean of the 2q probe values (= f_B up to
    O(μ²)).  ``projected`` holds the q projected gradients g_r (device tensor); with Gaussian
    directions E[g_r²] = ‖∇ₓf_B‖² + O(μ²).  ``fo_grad_sq`` = ‖∇_y f_B‖² exactly (before the FO
    update).  ``curvature``: the q second differences [f(x+μu_r) + f(x−μu_r) − 2f(x)]/μ² =
    u_rᵀ∇²ₓf u_r + O(μ²), when f(x) was evaluated (central estimators with an FO block).

    ``zo_draws`` / ``zo_writes`` / ``zo_passes``: elements of directions drawn, of ZO weights
    written, and of ZO weights read or written by the ZO machinery (whole tensors), during this
    step, each divided by the size of the ZO block (the FO forward's own reads of the weights are
    not counted); ``zo_row_draws`` / ``zo_row_reads``: the same for embedding lookups, which
    draw and read only the looked-up rows.  ``zo_change`` = −η_x (1/q) Σ_r g_r², the first-order predicted change of f_B from
    the step's ZO update (g_r estimating ⟨∇ₓf_B, u_r⟩; SGD rule only); ``fo_change`` =
    ⟨∇_y f_B, y_{t+1} − y_t⟩ (exact first-order prediction of the FO update; with
    ``track_changes=True``)."""

    step: int
    loss: torch.Tensor
    projected: torch.Tensor | None
    fo_grad_sq: torch.Tensor | None
    curvature: torch.Tensor | None
    zo_evals: int
    fo_grads: int
    zo_passes: float
    lr_x: float
    lr_y: float
    zo_draws: float = 0.0
    zo_writes: float = 0.0
    zo_row_draws: float = 0.0
    zo_row_reads: float = 0.0
    zo_change: torch.Tensor | None = None
    fo_change: torch.Tensor | None = None


@dataclass
class ZOLogEntry:
    """Everything needed to redo step ``step``'s ZO update: the seed of its directions, the
    estimate's coefficients γ_r = g_r/q (shape (q, *replicates)), η_x and the decay factor."""

    step: int
    seed: int
    gamma: torch.Tensor
    lr: float
    decay: float

    def to_tuple(self) -> tuple:
        return (self.step, self.seed, self.gamma, self.lr, self.decay)

    @classmethod
    def from_tuple(cls, t: Sequence) -> "ZOLogEntry":
        return cls(*t)


@dataclass
class _FOPass:
    losses: list[torch.Tensor]    # f at the unperturbed point, per micro-batch
    loss: torch.Tensor            # their weighted sum (this rank's share of f_B)
    grad_sq: torch.Tensor


class HybridOptimizer:
    """Hybrid zeroth-/first-order optimizer over a problem's two blocks."""

    #: ZO blocks up to this many elements (times q) keep each step's directions in memory
    #: instead of regenerating them for every sweep (small synthetic problems only).
    CACHE_LIMIT = 1 << 22

    def __init__(self, problem: Problem, config: HybridConfig | None = None, keep_zo_log: bool = True,
                 cache_directions: bool | None = None, comm: Communicator | None = None,
                 fold_updates: bool | None = None, context: SweepContext | None = None,
                 track_changes: bool = False) -> None:
        """``cache_directions``: None chooses by size (:attr:`CACHE_LIMIT`); ``fold_updates``:
        None = the problem's choice (folded for a ModuleProblem); ``context``: the sweep context
        (chunking, scratch memory, counters; a new one by default).  None of the three
        changes a single bit of the run, only its memory and time.  ``comm``: a
        :class:`~hybridopt.distributed.Communicator` for data parallelism."""
        if comm is not None and problem.replicate_shape:
            raise ValueError("data parallelism does not combine with replicate-batched problems")
        self.problem, self.comm = problem, comm
        self.config = config or HybridConfig()
        self.context = context if context is not None else SweepContext()
        problem.bind(self.context)
        self.estimator = get_estimator(self.config.estimator)
        self.rule = make_rule(self.config)
        self.rule_state = self.rule.init_state(problem.zo_params)
        self.fo_opt = make_fo_optimizer(problem.fo_params, self.config)
        self.acc_dtype = _acc_dtype(problem)
        self.step_count = 0
        self.keep_zo_log = keep_zo_log
        self.zo_log: list[ZOLogEntry] = []
        self.fold = problem.folds_updates if fold_updates is None else bool(fold_updates)
        self.track_changes = track_changes
        if cache_directions is None:
            cache_directions = sum(p.numel() for p in problem.zo_params) * self.config.q <= self.CACHE_LIMIT
        self.cache_directions = cache_directions
        self._zo_numel = max(1, sum(p.numel() for p in problem.zo_params))

    @property
    def zo_params(self) -> list[torch.Tensor]:
        return self.problem.zo_params

    @property
    def fo_params(self) -> list[torch.Tensor]:
        return self.problem.fo_params

    def directions(self, step: int) -> Directions:
        """The q directions of ``step`` (regenerated from the base seed and the step index)."""
        return Directions(self.config.direction, step_seed(self.config.seed, step), self.zo_params,
                          q=self.config.q, replicate_shape=self.problem.replicate_shape,
                          cache=self.cache_directions, dtype=self.config.direction_dtype, context=self.context)

    def learning_rates(self, step: int) -> tuple[float, float]:
        mult = lr_multiplier(self.config, step)
        return self.config.lr_x * mult, self.config.lr_y * mult

    # -- the step ---------------------------------------------------------------------------
    def step(self, batch: torch.Tensor) -> StepStats:
        """One step on the (global) mini-batch ``batch`` of component indices."""
        t, cfg = self.step_count, self.config
        lr_x, lr_y = self.learning_rates(t)
        micro = self._micro_batches(batch)
        self.context.counters.take()
        probes = est = fo = None
        if self.zo_params:   # f_B(x_t ± μu_r, y_t); the sweeps first finish x_t (the pending update)
            dirs = self.directions(t)
            with torch.no_grad():
                probes = self.estimator.probe(self.problem, micro, dirs, cfg.q, cfg.mu)
        if self.fo_params:   # h = ∇_y f_B(x_t, y_t), at the unperturbed point
            fo = self._fo_gradient(micro)
        if probes is not None:   # g_r, then x_{t+1} = x_t − η_x ĝ, left pending for the next sweep
            base = fo.losses if fo is not None else (self._values(micro) if self.estimator.needs_base else None)
            with torch.no_grad():
                est = self.estimator.estimate(probes, [b.detach() for b in base] if base else None, micro,
                                              cfg.mu, self.acc_dtype)
            loss = self._all_reduce(est, fo)
            self._schedule_update(t, dirs, est.projected, lr_x)
        else:
            loss = self._all_reduce(None, fo)
        fo_change = self._fo_update(lr_y) if fo is not None else None   # y_{t+1} = y_t − η_y h
        if self.comm is not None:
            self.comm.stats.end_step()
        self.step_count += 1
        return self._stats(t, batch.shape[-1], loss, est, fo, fo_change, lr_x, lr_y)

    def _micro_batches(self, batch: torch.Tensor) -> list[tuple[torch.Tensor, float]]:
        """This rank's shard of ``batch`` in ``grad_accum`` micro-batches, each with its weight
        in the global batch mean."""
        total = batch.shape[-1]
        local = self.comm.shard(batch) if self.comm is not None else batch
        m = min(self.config.grad_accum, local.shape[-1])
        parts = [c for c in torch.tensor_split(local, m, dim=-1) if c.shape[-1] > 0]
        return [(c, c.shape[-1] / total) for c in parts]

    def _fo_gradient(self, micro) -> _FOPass:
        self.fo_opt.zero_grad(set_to_none=True)
        losses = []
        for c, w in micro:
            loss = self.problem.loss(c)
            (loss.sum() * w).backward()
            losses.append(loss.detach())
        if self.comm is not None:
            self.comm.sum_grads_(self.fo_params)
        r = len(self.problem.replicate_shape)
        grad_sq = sum(p.grad.detach().pow(2).flatten(r).sum(-1) for p in self.fo_params if p.grad is not None)
        loss = sum(w * l.to(self.acc_dtype) for (_, w), l in zip(micro, losses))
        return _FOPass(losses, loss, grad_sq)

    def _values(self, micro) -> list[torch.Tensor]:
        with torch.no_grad():
            return [self.problem.loss(c) for c, _ in micro]

    def _all_reduce(self, est: Estimate | None, fo: _FOPass | None) -> torch.Tensor:
        """The step's loss; with data parallelism, the ZO block's only communication: one
        all-reduce of the q projected gradients and the loss."""
        loss = fo.loss if fo is not None else est.value
        if self.comm is None:
            return loss
        if est is None:
            return self.comm.sum_(loss.reshape(-1), "fo").reshape(loss.shape)
        q = est.projected.shape[0]
        both = self.comm.sum_(torch.cat([est.projected.reshape(-1), loss.reshape(-1)]), "zo")
        est.projected, est.curvature = both[:q].reshape(est.projected.shape), None  # curvature: diagnostic only
        return both[q:].reshape(loss.shape)

    def _schedule_update(self, t: int, dirs: Directions, projected: torch.Tensor, lr_x: float) -> None:
        gamma = projected / self.config.q
        decay = 1.0 - lr_x * self.config.weight_decay_x
        update = ZOUpdate(self.rule, self.rule_state, self.zo_params, dirs, gamma, lr_x, decay)
        if self.keep_zo_log:
            self.zo_log.append(ZOLogEntry(t, dirs.seed, gamma.detach().clone(), lr_x, decay))
        self.problem.set_pending(update)
        if not self.fold:
            self.problem.flush()

    def _fo_update(self, lr_y: float) -> torch.Tensor | None:
        before = [p.detach().clone() for p in self.fo_params] if self.track_changes else None
        for group in self.fo_opt.param_groups:
            group["lr"] = lr_y
        self.fo_opt.step()
        if before is None:
            return None
        r = len(self.problem.replicate_shape)
        return sum((p.grad.detach() * (p.detach() - b)).flatten(r).sum(-1)
                   for p, b in zip(self.fo_params, before) if p.grad is not None)

    def _stats(self, t, total, loss, est, fo, fo_change, lr_x, lr_y) -> StepStats:
        drawn, written, swept, rows_drawn, rows_read = self.context.counters.take()
        n = self._zo_numel
        zo_change = None
        if est is not None and self.rule.theorem:
            zo_change = -lr_x * est.projected.pow(2).mean(0)
        return StepStats(t, loss.detach(), None if est is None else est.projected,
                         None if fo is None else fo.grad_sq, None if est is None else est.curvature,
                         0 if est is None else est.evals + (total if self.estimator.needs_base and fo is None else 0),
                         0 if fo is None else total, swept / n, lr_x, lr_y, drawn / n, written / n,
                         rows_drawn / n, rows_read / n, zo_change, fo_change)

    # -- state -----------------------------------------------------------------------------------
    def flush(self) -> None:
        """Apply the ZO update still pending, so the ZO tensors hold x_t.  Needed only before
        reading the ZO tensors directly: a ModuleProblem's model flushes by itself before any
        forward that is not the optimizer's own and in ``state_dict()``."""
        self.problem.flush()

    def close(self) -> None:
        """Flush and remove every hook."""
        self.problem.flush()
        if hasattr(self.problem, "close"):
            self.problem.close()

    def state_dict(self) -> dict[str, Any]:
        """Optimizer state (the parameters themselves are the problem's; flushed first): step
        counter, FO optimizer state, the ZO rule's state and, if kept, the ZO log."""
        self.flush()
        return {"step": self.step_count, "config": self.config.to_dict(),
                "fo_opt": None if self.fo_opt is None else self.fo_opt.state_dict(),
                "zo_rule": [s.detach().clone() for s in self.rule_state],
                "zo_log": [e.to_tuple() for e in self.zo_log]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.config.to_dict()
        if state["config"] != mine:
            diff = sorted(k for k in set(state["config"]) | set(mine) if state["config"].get(k) != mine.get(k))
            raise ValueError(f"checkpoint was made with a different optimizer config (differs in: {', '.join(diff)})")
        self.flush()
        self.step_count = int(state["step"])
        if self.fo_opt is not None:
            self.fo_opt.load_state_dict(state["fo_opt"])
        for s, v in zip(self.rule_state, state.get("zo_rule", [])):
            s.copy_(v.to(s.device))
        self.zo_log = [ZOLogEntry.from_tuple(e) for e in state["zo_log"]]


def _acc_dtype(prob: Problem) -> torch.dtype:
    # Differences of losses are formed in at least float32 (bf16 losses would lose g entirely).
    for p in list(prob.zo_params) + list(prob.fo_params):
        if p.dtype == torch.float64:
            return torch.float64
    return torch.float32


@torch.no_grad()
def replay_zo_log(params: Sequence[torch.Tensor], log: Sequence[ZOLogEntry], config: HybridConfig,
                  replicate_shape: tuple[int, ...] = (), context: SweepContext | None = None,
                  state: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Rebuild the ZO block from its value before ``log`` and the log: the updates applied in
    order, the ZO rule replayed from ``state`` (its state at that point, e.g. momentum buffers as
    in ``optimizer.state_dict()["zo_rule"]``; default: the initial state) and returned.
    Bit-identical to the live run, folded or not (the same arithmetic on every element, see
    :mod:`hybridopt.zo_rules`), so a snapshot of (weights, rule state) plus the log after it
    rebuilds any later step."""
    rule = make_rule(config)
    fresh = rule.init_state(params)
    if state is not None:
        for s, v in zip(fresh, state):
            s.copy_(v.to(s.device))
    state = fresh
    for e in log:
        dirs = Directions(config.direction, e.seed, params, q=config.q, replicate_shape=replicate_shape,
                          dtype=config.direction_dtype, context=context)
        ZOUpdate(rule, state, params, dirs, e.gamma, e.lr, e.decay).finish(count_sweep=False)
    return state
