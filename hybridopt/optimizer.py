"""One HybridRR step (spec §2, inner loop body), for any :class:`~hybridopt.problem.Problem`.

For a mini-batch B (the spec's case is |B| = 1) at z = (x, y):

    h  = ∇_y f_B(x, y)                                          (FO block, autograd, unperturbed point)
    g_r = [f_B(x + μ u_r, y) - f_B(x - μ u_r, y)] / (2μ)        (central; r = 1..q)
    x <- x - η_x (1/q) Σ_r g_r u_r ,   y <- y - η_y h             (Jacobi: both read z)

Cost per step with q directions and M micro-batches: 2qM perturbed forwards (each perturbs
on the fly, see :mod:`hybridopt.directions`) + 1 update sweep over the ZO block, i.e. 3 sweeps
that generate directions for q = M = 1 (MeZO's published step makes 4 in-place passes).  The
projected gradients g_r never leave the device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .config import HybridConfig, lr_multiplier
from .directions import Directions, Perturbation
from .distributed import Communicator
from .problem import Problem
from .rng import step_seed
from .updates import apply_zo_update, make_fo_optimizer


@dataclass
class StepStats:
    """What one step did. ``loss`` is f_B at the unperturbed point when it was evaluated
    (FO block present, or forward estimator), else the mean of the 2q probe values (= f_B
    up to O(μ²)).  ``projected`` holds the q projected gradients g_r (device tensor); with
    Gaussian directions E[g_r²] = ||∇_x f_B||² + O(μ²), an estimate of the ZO block's squared
    gradient.  ``fo_grad_sq`` = ||∇_y f_B||² exactly (before the FO update).  ``curvature``
    holds the q second differences [f(x+μu_r) + f(x-μu_r) - 2 f(x)]/μ² = u_rᵀ∇²ₓf u_r + O(μ²)
    when f(x) was evaluated (central estimator with an FO block), else None."""

    step: int
    loss: torch.Tensor
    projected: torch.Tensor | None
    fo_grad_sq: torch.Tensor | None
    curvature: torch.Tensor | None
    zo_evals: int
    fo_grads: int
    zo_passes: int
    lr_x: float
    lr_y: float


@dataclass
class ZOLogEntry:
    """Everything needed to redo step ``step``'s ZO update: x <- decay·x + Σ_r coeffs[r] u_r."""

    step: int
    seed: int
    coeffs: torch.Tensor
    decay: float


class HybridOptimizer:
    """Hybrid zeroth-/first-order optimizer over a problem's two blocks."""

    #: ZO blocks up to this many elements (times q) keep each step's directions in memory
    #: instead of regenerating them for every sweep (small synthetic problems only).
    CACHE_LIMIT = 1 << 22

    def __init__(self, problem: Problem, config: HybridConfig | None = None, keep_zo_log: bool = True,
                 cache_directions: bool | None = None, comm: "Communicator | None" = None) -> None:
        """``cache_directions``: None chooses by size (:attr:`CACHE_LIMIT`); the result is
        bit-identical either way, only memory and time differ.  ``comm``: a
        :class:`~hybridopt.distributed.Communicator` for data parallelism (each rank evaluates
        its shard of the global batch; see :mod:`hybridopt.distributed`)."""
        if comm is not None and problem.replicate_shape:
            raise ValueError("data parallelism does not combine with replicate-batched problems")
        self.problem = problem
        self.comm = comm
        self.acc_dtype = _acc_dtype(problem)
        self.config = config or HybridConfig()
        self.step_count = 0
        self.fo_opt = make_fo_optimizer(problem.fo_params, self.config)
        self.keep_zo_log = keep_zo_log
        self.zo_log: list[ZOLogEntry] = []
        if cache_directions is None:
            size = sum(p.numel() for p in problem.zo_params) * self.config.q
            cache_directions = size <= self.CACHE_LIMIT
        self.cache_directions = cache_directions

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
                          cache=self.cache_directions, dtype=self.config.direction_dtype)

    def _micro_batches(self, batch: torch.Tensor) -> list[torch.Tensor]:
        m = min(self.config.grad_accum, batch.shape[-1])
        return [c for c in torch.tensor_split(batch, m, dim=-1) if c.shape[-1] > 0]

    def step(self, batch: torch.Tensor) -> StepStats:
        """One step on the (global) mini-batch ``batch`` of component indices."""
        cfg, prob, comm = self.config, self.problem, self.comm
        t = self.step_count
        mult = lr_multiplier(cfg, t)
        lr_x, lr_y = cfg.lr_x * mult, cfg.lr_y * mult
        total = batch.shape[-1]
        local = comm.shard(batch) if comm is not None else batch
        share = local.shape[-1] / total  # this rank's weight in the global batch mean
        micro = self._micro_batches(local)
        weights = [share * (c.shape[-1] / local.shape[-1]) for c in micro]
        has_zo, has_fo = bool(self.zo_params), bool(self.fo_params)
        zo_evals = fo_grads = passes = 0
        acc_dtype = self.acc_dtype

        # FO block: gradient at the unperturbed point (accumulated over micro-batches).
        base_losses: list[torch.Tensor] | None = None
        fo_grad_sq = None
        if has_fo:
            self.fo_opt.zero_grad(set_to_none=True)
            base_losses = []
            for c, w in zip(micro, weights):
                loss = prob.loss(c)
                (loss.sum() * w).backward()
                base_losses.append(loss.detach())
            if comm is not None:
                comm.sum_grads_(self.fo_params)
            fo_grads = total
            r = len(prob.replicate_shape)
            fo_grad_sq = sum(p.grad.detach().pow(2).flatten(r).sum(-1) for p in self.fo_params
                             if p.grad is not None)

        projected = curvature = None
        loss = None
        if base_losses is not None:
            loss = sum(w * l.to(acc_dtype) for w, l in zip(weights, base_losses))
        if has_zo:
            dirs = self.directions(t)
            with torch.no_grad():
                if cfg.estimator == "forward" and base_losses is None:
                    base_losses = [prob.loss(c) for c in micro]
                    loss = sum(w * l.to(acc_dtype) for w, l in zip(weights, base_losses))
                    zo_evals += total
                g, curv, probe_sum = [], [], 0.0
                for r in range(cfg.q):
                    acc, second = 0.0, 0.0
                    for i, (c, w) in enumerate(zip(micro, weights)):
                        f_plus = prob.loss(c, Perturbation(dirs, r, cfg.mu)).to(acc_dtype)
                        if cfg.estimator == "central":
                            f_minus = prob.loss(c, Perturbation(dirs, r, -cfg.mu)).to(acc_dtype)
                            acc = acc + w * (f_plus - f_minus) / (2 * cfg.mu)
                            probe_sum = probe_sum + w * (f_plus + f_minus) / 2
                            if base_losses is not None:
                                second = second + w * (f_plus + f_minus - 2 * base_losses[i].to(acc_dtype))
                            passes += 2
                        else:
                            acc = acc + w * (f_plus - base_losses[i].to(acc_dtype)) / cfg.mu
                            passes += 1
                    g.append(acc)
                    curv.append(second / cfg.mu ** 2)
                projected = torch.stack(g)
                if cfg.estimator == "central" and base_losses is not None:
                    curvature = torch.stack(curv)
                if loss is None:  # ZO only, central: f_B ~ mean of the 2q probe values
                    loss = probe_sum / cfg.q
                if comm is not None:  # the ZO block's only communication: q + 1 scalars
                    both = comm.sum_(torch.cat([projected.reshape(-1), loss.reshape(-1)]), "zo")
                    projected, loss = both[:cfg.q].reshape(projected.shape), both[cfg.q:].reshape(loss.shape)
                    curvature = None  # a diagnostic; not worth a second all-reduce
                zo_evals += total * cfg.q * (2 if cfg.estimator == "central" else 1)
                coeffs = projected * (-lr_x / cfg.q)
                decay = 1.0 - lr_x * cfg.weight_decay_x
                apply_zo_update(self.zo_params, dirs, coeffs, decay)
                passes += 1
                if self.keep_zo_log:
                    self.zo_log.append(ZOLogEntry(t, dirs.seed, coeffs.detach().clone(), decay))
        elif comm is not None:
            loss = comm.sum_(loss.reshape(-1), "fo").reshape(loss.shape)

        if has_fo:
            for group in self.fo_opt.param_groups:
                group["lr"] = lr_y
            self.fo_opt.step()
        if comm is not None:
            comm.stats.end_step()
        self.step_count += 1
        return StepStats(t, loss.detach(), projected, fo_grad_sq, curvature, zo_evals, fo_grads, passes, lr_x, lr_y)

    def flush(self) -> None:
        """Apply any ZO update still pending, so the ZO tensors hold x_t.  Call it before reading
        the ZO block's tensors directly (model forwards and ``state_dict()`` of a
        :class:`~hybridopt.problem.ModuleProblem`'s model flush by themselves)."""

    def close(self) -> None:
        """Flush, then remove every hook the optimizer and its problem installed."""
        self.flush()

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Optimizer state (the parameters themselves are the problem's): step counter, FO
        optimizer state and, if kept, the ZO log."""
        return {"step": self.step_count, "config": self.config.to_dict(),
                "fo_opt": None if self.fo_opt is None else self.fo_opt.state_dict(),
                "zo_log": [(e.step, e.seed, e.coeffs, e.decay) for e in self.zo_log]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["config"] != self.config.to_dict():
            diff = sorted(k for k in state["config"] if state["config"][k] != self.config.to_dict().get(k))
            raise ValueError(f"checkpoint was made with a different optimizer config (differs in: {', '.join(diff)})")
        self.step_count = int(state["step"])
        if self.fo_opt is not None:
            self.fo_opt.load_state_dict(state["fo_opt"])
        self.zo_log = [ZOLogEntry(*e) for e in state["zo_log"]]


def _acc_dtype(prob: Problem) -> torch.dtype:
    # Differences of losses are formed in at least float32 (bf16 losses would lose g entirely).
    for p in list(prob.zo_params) + list(prob.fo_params):
        if p.dtype == torch.float64:
            return torch.float64
    return torch.float32


def replay_zo_log(params: Sequence[torch.Tensor], log: Sequence[ZOLogEntry], config: HybridConfig,
                  replicate_shape: tuple[int, ...] = ()) -> None:
    """Rebuild the ZO block from its initial value and the log of (seed, coefficients):
    x_T = updates applied in order.  Bit-identical to the live run (same function, same order)."""
    for e in log:
        dirs = Directions(config.direction, e.seed, params, q=config.q, replicate_shape=replicate_shape,
                          dtype=config.direction_dtype)
        apply_zo_update(params, dirs, e.coeffs, e.decay)
