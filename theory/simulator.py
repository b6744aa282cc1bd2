"""The reshuffling-SGD simulator: HybridRR on Families A–C against Theorem L6 (spec §6).

Every run goes through the shared optimizer core (:class:`hybridopt.HybridOptimizer` on
``family.as_problem(x0, y0, replicates=R)``, :class:`hybridopt.RandomReshuffling` with one
permutation per replicate and epoch, batch size 1, :func:`hybridopt.train`); this module only
chooses the parameters and measures.  Measurements, all exact (closed form, float64):

* at every epoch start z_t and for every replicate r: ‖∇ₓf(z_t)‖², ‖∇ᵧf(z_t)‖², f(z_t);
* after every inner step (a ``train`` callback): the A3 monitor Ḡ(y_{t,k}) and, for B and C,
  the position of y_{t,k} in the invariant set (‖y‖∞/R_B, ‖y‖/R_C).

From these, for a target ε: the replicate mean of the running average
Ā_T = (1/R) Σ_r (1/T) Σ_{t<T} ‖∇f(z_t^{(r)})‖², the epochs-to-ε T̂ = min{T : Ā_T ≤ ε²}, its
90% bootstrap interval over replicates (resamples drawn once and reused for every ε, so slope
intervals are paired), the per-replicate crossing epochs (median reported as
``epochs_measured``), and the min-metric T̂_min = min{T : min_{t<T} E‖∇f(z_t)‖² ≤ ε²}.

Common random numbers: for a given instance every ε uses the same family data, z₀, n, q, ω,
the same optimizer seed (ZO directions are a pure function of (seed, step), see
:mod:`hybridopt.rng`) and the same sampler seed (permutations), so runs differ only in
(η_x, η_y, μ).  Runs are independent tasks and are spread over worker processes.

Modes (spec §6, P1): ``certified`` uses η(ε), μ(ε) of L6(B) literally (s = 1); ``scaling``
uses η_x = min{κ₀, κ₁ε, s κ₂ε²}, η_y = ω η_x with a fixed reported s and fits the slope only
on ε ≤ ε₄(s).  The sweep definitions (instances, grids, budgets) are data: :func:`plan`.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from hybridopt.theory.bound import evaluate_bound, evaluate_theorem
from hybridopt.theory.families import DT, Family, make_family

#: ε-grid ratio between neighbours (spec §6: ε_j = ε_max 2^{-j/2}).
GRID_RATIO = 2 ** -0.5
#: smallest μ used (spec §6: raise μ(ε) to 1e-7 and flag the point).
MU_FLOOR = 1e-7
#: bootstrap resamples for the CIs (90% percentile intervals).
N_BOOT = 1000
CI = (0.05, 0.95)
#: direction draws of the sweeps (P1–P3): float32-rounded Gaussians for the float64 x-block
#: (``HybridConfig.direction_dtype``); RNG dominates a step at d_x = 10⁴ and float32 normals are
#: ~4× cheaper.  :func:`trajectory` (the lemma tests) keeps exact float64 draws.
SWEEP_DIRECTION_DTYPE = "float32"


# ------------------------------------------------------------------------------------ instances


@dataclass(frozen=True)
class Instance:
    """One synthetic problem and the randomness of its runs (fixed across ε: CRN)."""

    family: str
    dims: dict
    data_seed: int = 0
    start_seed: int = 0
    q: int = 1
    omega: float = 1.0
    replicates: int = 32
    run_seed: int = 0

    def key(self) -> str:
        d = ",".join(f"{k}={v}" for k, v in sorted(self.dims.items()))
        return f"{self.family}({d};q={self.q},R={self.replicates})"


_FAMILY_CACHE: dict = {}


def build(inst: Instance) -> tuple[Family, torch.Tensor, torch.Tensor, dict]:
    """(family, x0, y0, constants) with constants keyed by the theory's symbol names
    (L_x0 … G, n, d_x, d_y, q, omega, Delta) plus ``grad0`` = ‖∇f(z₀)‖ and the block norms."""
    k = (inst.family, tuple(sorted(inst.dims.items())), inst.data_seed, inst.start_seed)
    if k not in _FAMILY_CACHE:
        F = make_family(inst.family, inst.data_seed, **inst.dims)
        x0, y0 = F.default_start(inst.start_seed)
        gx, gy = F.grad(x0, y0)
        c = F.constants()
        c.update(Delta=float(F.delta(x0, y0)), grad0=float(torch.sqrt(gx.pow(2).sum() + gy.pow(2).sum())),
                 grad0_x=float(gx.norm()), grad0_y=float(gy.norm()), f_lb=0.0)
        _FAMILY_CACHE[k] = (F, x0, y0, c)
    F, x0, y0, c = _FAMILY_CACHE[k]
    c = dict(c, q=inst.q, omega=inst.omega)
    return F, x0, y0, c


def schedule(const: dict, eps: float, s: float = 1.0) -> dict:
    """L6(B) parameters at ε with the step size multiplied by s: η_x = s·η(ε), η_y = ω η_x.

    s = 1 is the theorem's schedule (certified mode).  s > 1 (scaling mode) multiplies every
    branch of η(ε) = min{κ₀, κ₁ε, κ₂ε²}, so the regimes (and ε₄) are those of the theorem and
    η ∝ ε² on ε ≤ ε₄.  (Spec §6 keeps κ₀, κ₁ unscaled; with the certified, worst-case L_X that
    pins the largest fitted ε to hundreds of epochs, see SIMULATOR.md.)
    Returns eta_x, eta_y, mu (μ(ε), floored at 1e-7 and flagged), T_req (the formula with
    this η; a guarantee only for s = 1), T_req_certified, regime (−4/−3/−2), eps4, kappas, C,
    and S_factor = η_x / κ₀ (> 1: the step exceeds the rule (S)).
    """
    th = evaluate_theorem(const, eps)
    k0, k1, k2 = th["kappa0"], th["kappa1"], th["kappa2"]
    eta = float(s * th["eta"])
    mu = float(th["mu"])
    cw = min(1.0, const["omega"])
    treq = math.ceil(20 * const["Delta"] / (cw * const["n"] * eta * eps ** 2))
    return dict(eta_x=eta, eta_y=const["omega"] * eta, mu=max(mu, MU_FLOOR), mu_flagged=mu < MU_FLOOR,
                T_req=treq, T_req_certified=int(th["T_req"]), regime=int(th["regime"]),
                eps4=float(th["eps4"]), kappa0=float(k0), kappa1=float(k1), kappa2=float(k2),
                C=float(th["C"]), S_factor=eta / float(k0))


def choose_s(const: dict, eps_max: float, top_factor: float) -> float:
    """s (two significant digits, rounded down, ≥ 1) with s·η(ε_max) = top_factor·κ₀: the
    largest grid ε runs at ``top_factor`` times the (S) cap, smaller ε at (ε/ε_max)² of that."""
    th = evaluate_theorem(const, eps_max)
    s = top_factor * th["kappa0"] / th["eta"]
    if s <= 1:
        return 1.0
    p = 10 ** (math.floor(math.log10(s)) - 1)
    return float(math.floor(s / p) * p)


# ------------------------------------------------------------------------------- one HybridRR run


def _sampler(F: Family, R: int, seed: int, perms: torch.Tensor | None):
    from hybridopt import RandomReshuffling

    class _Recording(RandomReshuffling):
        """The core's sampler, optionally with prescribed permutations (spec §2: any
        𝓕_{t,0}-measurable choice is allowed) and a log of the batches it handed out."""

        log: list

        def _new_perm(self):
            if perms is not None:
                return perms[min(self.epoch, perms.shape[0] - 1)].clone()
            return super()._new_perm()

        def next_batch(self):
            b = super().next_batch()
            if self.log is not None:
                self.log.append(b.clone())
            return b

    smp = _Recording(F.n, 1, seed=seed, replicates=R)
    smp.log = None
    return smp


def hybrid_run(F: Family, x0, y0, eta_x: float, eta_y: float, mu: float, q: int, replicates: int,
               seed: int = 0, epochs: int = 1, stop: Callable[[int, dict], bool] | None = None,
               on_epoch: Callable[[int, dict], None] | None = None, record: bool = False,
               perms: torch.Tensor | None = None, monitor: bool = True,
               direction_dtype: str = "auto") -> dict:
    """Run HybridRR through the optimizer core for at most ``epochs`` epochs.

    ``on_epoch(t, m)`` is called with the exact measurements m at every epoch start z_t
    (t = 0, 1, …; keys gx2, gy2, f: arrays (R,)); ``stop(t, m)`` after it ends the run early.
    ``record=True`` keeps every iterate: x (T, n+1, R, d_x), y (T, n+1, R, d_y), idx (T, n, R)
    (the component index of each inner step) and the optimizer (to regenerate directions).
    Returns the monitor per epoch: gbar_max (max over k and r of Ḡ(y_{t,k})) and dom_max
    (max of ‖y‖∞/R_B or ‖y‖/R_C; 0 for A), and ``epochs_run``.
    """
    from hybridopt import HybridConfig, HybridOptimizer, train

    R, n = int(replicates), F.n
    prob = F.as_problem(x0, y0, replicates=R)
    cfg = HybridConfig(lr_x=float(eta_x), lr_y=float(eta_y), mu=float(mu), q=int(q), seed=int(seed),
                       direction_dtype=direction_dtype)
    opt = HybridOptimizer(prob, cfg, keep_zo_log=False)
    smp = _sampler(F, R, seed, perms)
    x, y = prob.zo_params[0], prob.fo_params[0]
    if record:
        smp.log = []
        X = [[x.clone()]]
        Y = [[y.detach().clone()]]
    gmax = torch.full((R,), -math.inf, dtype=DT)
    dmax = torch.zeros(R, dtype=DT)
    dom = _domain_ratio(F)

    def watch(y_now: torch.Tensor) -> None:
        nonlocal gmax, dmax
        yd = y_now.detach()
        gmax = torch.maximum(gmax, F.gbar(yd))
        if dom is not None:
            dmax = torch.maximum(dmax, dom(yd))

    def callback(stats, epoch, trace):
        if monitor:
            watch(y)
        if record:
            if len(X[-1]) == n + 1:
                X.append([X[-1][-1]])
                Y.append([Y[-1][-1]])
            X[-1].append(x.clone())
            Y[-1].append(y.detach().clone())
        return False

    gbar_hist, dom_hist = [], []
    t = 0
    for t in range(epochs + 1):
        with torch.no_grad():
            gx, gy = F.grad(x, y.detach())
            fv = F.f(x, y.detach())
        m = dict(gx2=gx.pow(2).sum(-1).numpy(), gy2=gy.pow(2).sum(-1).numpy(), f=fv.numpy())
        if on_epoch is not None:
            on_epoch(t, m)
        if t == epochs or (stop is not None and stop(t, m)):
            break
        if monitor:
            gmax.fill_(-math.inf)
            dmax.zero_()
            watch(y)  # y_{t,0}
        train(opt, smp, n, callback)
        if monitor:
            gbar_hist.append(float(gmax.max()))
            dom_hist.append(float(dmax.max()))
    out = dict(epochs_run=t, gbar_max=np.asarray(gbar_hist), dom_max=np.asarray(dom_hist), optimizer=opt)
    if record:
        T = len(X) if len(X[-1]) == n + 1 else len(X) - 1
        out["x"] = torch.stack([torch.stack(e) for e in X[:T]])
        out["y"] = torch.stack([torch.stack(e) for e in Y[:T]])
        b = torch.stack(smp.log)[: T * n, :, 0]  # (T n, R)
        out["idx"] = b.reshape(T, n, R)
    return out


def _domain_ratio(F: Family):
    if F.name == "B":
        return lambda y: y.abs().amax(-1) / F.R_B
    if F.name == "C":
        return lambda y: y.norm(dim=-1) / F.R_C
    return None


def trajectory(F: Family, x0, y0, eta_x: float, eta_y: float, mu: float, q: int, T: int,
               replicates: int = 1, seed: int = 0, perms: torch.Tensor | None = None) -> dict:
    """Every iterate of T epochs of HybridRR run by the core (for the lemma tests).

    Returns x (T, n+1, R, d_x), y (T, n+1, R, d_y), idx (T, n, R), and ``u(t, k)`` -> the
    (q, R, d_x) directions of inner step k of epoch t (regenerated from the core's seeds).
    ``perms``: optional (T, R, n) permutations instead of the sampler's uniform draws.
    """
    if perms is not None:
        perms = torch.as_tensor(perms, dtype=torch.long).expand(T, replicates, F.n)
    out = hybrid_run(F, x0, y0, eta_x, eta_y, mu, q, replicates, seed=seed, epochs=T, record=True,
                     perms=perms, monitor=False)
    opt = out.pop("optimizer")
    n = F.n

    def u(t: int, k: int) -> torch.Tensor:
        d = opt.directions(t * n + k)
        return torch.stack([d.u(r, 0) for r in range(q)])

    out["u"] = u
    return out


# ------------------------------------------------------------------------------- epochs-to-ε


class Crossing:
    """Online T̂ for one ε: mean curve, bootstrap resamples, per-replicate and min-metric."""

    def __init__(self, eps: float, R: int, boot_w: np.ndarray) -> None:
        self.e2 = eps * eps
        self.W = boot_w  # (B, R) resample weights (rows sum to 1)
        self.S = np.zeros(R)
        self.Sx = np.zeros(R)
        self.Sy = np.zeros(R)
        self.T_mean = None
        self.T_min = None
        self.T_rep = np.full(R, -1)
        self.T_boot = np.full(self.W.shape[0], -1)
        self.T_boot_min = np.full(self.W.shape[0], -1)
        self.curve: list[float] = []  # Ā_T, T = 1, 2, …
        self.curve_x: list[float] = []
        self.curve_y: list[float] = []
        self.gmean: list[float] = []  # E‖∇f(z_t)‖², t = 0, 1, …

    def update(self, t: int, m: dict) -> None:
        g = m["gx2"] + m["gy2"]
        T = t + 1
        self.S += g
        self.Sx += m["gx2"]
        self.Sy += m["gy2"]
        A = self.S / T
        self.curve.append(float(A.mean()))
        self.curve_x.append(float(self.Sx.mean() / T))
        self.curve_y.append(float(self.Sy.mean() / T))
        self.gmean.append(float(g.mean()))
        if self.T_mean is None and A.mean() <= self.e2:
            self.T_mean = T
        if self.T_min is None and g.mean() <= self.e2:
            self.T_min = T
        self.T_rep[(self.T_rep < 0) & (A <= self.e2)] = T
        bA, bg = self.W @ A, self.W @ g
        self.T_boot[(self.T_boot < 0) & (bA <= self.e2)] = T
        self.T_boot_min[(self.T_boot_min < 0) & (bg <= self.e2)] = T

    def done(self) -> bool:
        return (self.T_mean is not None and (self.T_boot > 0).all() and (self.T_boot_min > 0).all()
                and (self.T_rep > 0).mean() >= 0.5)


def boot_weights(R: int, seed: int = 12345, B: int = N_BOOT) -> np.ndarray:
    g = np.random.default_rng(seed)
    idx = g.integers(0, R, size=(B, R))
    W = np.zeros((B, R))
    np.add.at(W, (np.arange(B)[:, None], idx), 1.0 / R)
    return W


def _ci(vals: np.ndarray) -> tuple[float | None, float | None, bool]:
    """Percentile CI of bootstrap crossing epochs; censored resamples (−1) count as +∞."""
    v = np.where(vals > 0, vals.astype(float), np.inf)
    lo, hi = np.quantile(v, CI[0]), np.quantile(v, CI[1])
    return (None if not np.isfinite(lo) else float(lo), None if not np.isfinite(hi) else float(hi),
            bool(not np.isfinite(hi)))


def _downsample(arr, k: int = 120) -> tuple[list[int], list[float]]:
    """(index, value) pairs of ``arr`` on a log-spaced grid (first, last and ≤ k points)."""
    a = np.asarray(arr, dtype=float)
    if len(a) == 0:
        return [], []
    idx = np.unique(np.concatenate([np.geomspace(1, len(a), k).astype(int) - 1, [0, len(a) - 1]]))
    return idx.tolist(), a[idx].tolist()


def _block_max(arr, k: int = 120) -> tuple[list[int], list[float]]:
    """Max of ``arr`` over consecutive blocks (≤ k blocks): a crossing is never hidden."""
    a = np.asarray(arr, dtype=float)
    if len(a) == 0:
        return [], []
    edges = np.unique(np.linspace(0, len(a), min(k, len(a)) + 1).astype(int))
    return edges[:-1].tolist(), [float(a[i:j].max()) for i, j in zip(edges[:-1], edges[1:])]


def epochs_to_eps(task: dict) -> dict:
    """One P1 point: run until Ā_T ≤ ε² is decided for the mean, every bootstrap resample and
    at least half of the replicates, or until the cap (then the point is censored)."""
    t0, c0 = time.perf_counter(), time.process_time()
    torch.set_num_threads(1)
    inst = Instance(**task["instance"])
    F, x0, y0, const = build(inst)
    eps, s, mode = task["eps"], task["s"], task["mode"]
    sch = schedule(const, eps, s)
    cap = int(task["cap"]) if task.get("cap") else 2 * sch["T_req"]
    cr = Crossing(eps, inst.replicates, boot_weights(inst.replicates))
    out = hybrid_run(F, x0, y0, sch["eta_x"], sch["eta_y"], sch["mu"], inst.q, inst.replicates,
                     seed=inst.run_seed, epochs=cap, on_epoch=cr.update, stop=lambda t, m: cr.done(),
                     direction_dtype=SWEEP_DIRECTION_DTYPE)
    out.pop("optimizer")
    lo, hi, hi_cens = _ci(cr.T_boot)
    lo_m, hi_m, _ = _ci(cr.T_boot_min)
    rep = np.where(cr.T_rep > 0, cr.T_rep.astype(float), np.inf)
    med = float(np.median(rep))
    censored = cr.T_mean is None
    T_est = cr.T_mean
    holds = None
    if mode == "certified":
        holds = bool(not censored and hi is not None and hi <= sch["T_req"] and med <= sch["T_req"])
    mon_t, mon_g = _block_max(out["gbar_max"])
    _, mon_d = _block_max(out["dom_max"])
    return dict(
        family=inst.family, mode=mode, instance=inst.key(), eps=eps, s=s,
        epochs_measured=None if not math.isfinite(med) else med,
        epochs_mean_curve=T_est, epochs_ci=[lo, hi], ci_censored=hi_cens,
        epochs_bound=sch["T_req"], epochs_bound_certified=sch["T_req_certified"],
        censored=bool(censored), holds=holds, cap=cap, epochs_run=int(out["epochs_run"]),
        replicates_crossed=float((cr.T_rep > 0).mean()),
        min_metric_epochs=cr.T_min, min_metric_ci=[lo_m, hi_m],
        eta_x=sch["eta_x"], eta_y=sch["eta_y"], mu=sch["mu"], mu_flagged=sch["mu_flagged"],
        regime=sch["regime"], S_factor=sch["S_factor"],
        # η = s·η(ε) scales all three branches, so the κ₂ (ε²) branch is active exactly when the
        # theorem's own regime is −4 (ε ≤ ε₄); only such points (and ε ≤ G) enter the slope fit.
        in_fit_regime=bool(sch["regime"] == -4 and eps <= const["G"]),
        eps4=sch["eps4"], C_Delta_over_eps4=const_C(const) * const["Delta"] / eps ** 4,
        monitor=dict(epoch=mon_t, gbar_max=mon_g, dom_max=mon_d, G=const["G"],
                     ok=bool((out["gbar_max"] <= const["G"] * (1 + 1e-9)).all()
                             and (out["dom_max"] <= 1 + 1e-12).all())),
        # kept in memory for paired bootstrap slopes, dropped before writing JSON
        _boot=cr.T_boot, _boot_min=cr.T_boot_min,
        wall_s=time.perf_counter() - t0, cpu_s=time.process_time() - c0, steps=int(out["epochs_run"]) * F.n,
        d_x=F.d_x, q=inst.q,
    )


def const_C(const: dict) -> float:
    return float(evaluate_theorem(const, 1.0)["C"])


# --------------------------------------------------------------------------------- P2, P3 tasks


def fixed_steps(task: dict) -> dict:
    """One P2 curve: Ā_T (and per block) at fixed (η_x, η_y, μ, q) against B(T) of L6(A)."""
    t0, c0 = time.perf_counter(), time.process_time()
    torch.set_num_threads(1)
    inst = Instance(**task["instance"])
    F, x0, y0, const = build(inst)
    th = evaluate_theorem(const, 1.0)
    n = const["n"]
    cap_x = 1.0 / (6 * n * th["L_X"])
    cap_y = min(1.0 / (4 * n * th["L_Y"]), F.step_cap_y())
    eta_x, eta_y = cap_x * task["factor"], cap_y * task["factor"]
    cr = Crossing(1e-300, inst.replicates, boot_weights(inst.replicates, B=1))
    out = hybrid_run(F, x0, y0, eta_x, eta_y, task["mu"], inst.q, inst.replicates, seed=inst.run_seed,
                     epochs=task["T"], on_epoch=cr.update, direction_dtype=SWEEP_DIRECTION_DTYPE)
    Tg, A = _downsample(cr.curve)
    T = np.asarray(Tg) + 1
    b = evaluate_bound(const, T, eta_x, eta_y, task["mu"])
    _, Ax = _downsample(cr.curve_x)
    _, Ay = _downsample(cr.curve_y)
    below = bool(np.all(np.asarray(cr.curve) <= evaluate_bound(const, np.arange(1, len(cr.curve) + 1),
                                                                eta_x, eta_y, task["mu"])["B"]))
    return dict(family=inst.family, instance=inst.key(), label=task["label"], factor=task["factor"],
                eta_x=eta_x, eta_y=eta_y, mu=task["mu"], q=inst.q, T=T.tolist(), A=A, A_x=Ax, A_y=Ay,
                B=np.atleast_1d(b["B"]).tolist(), B_x=np.atleast_1d(b["B_x"]).tolist(),
                B_y=np.atleast_1d(b["B_y"]).tolist(), B_inf=b["B_inf"], below_bound=below,
                max_ratio=float(np.max(np.asarray(cr.curve) / evaluate_bound(
                    const, np.arange(1, len(cr.curve) + 1), eta_x, eta_y, task["mu"])["B"])),
                monitor_ok=bool((out["gbar_max"] <= const["G"] * (1 + 1e-9)).all()),
                wall_s=time.perf_counter() - t0, cpu_s=time.process_time() - c0)


def p3_point(task: dict) -> dict:
    """One P3 point: T̂ at a fixed ε (κ₂ branch) for one (d_x, q); the P1 machinery, tagged."""
    r = epochs_to_eps(dict(task, mode="scaling"))
    r.pop("_boot", None)
    r.pop("_boot_min", None)
    r.update(kind="p3", axis=task["axis"], sweep_label=task["label"], d_x=r["d_x"], q=r["q"],
             T_req_certified=r.pop("epochs_bound_certified"))
    return r


def run_task(task: dict) -> dict:
    kind = task["kind"]
    if kind == "p1":
        return epochs_to_eps(task)
    if kind == "p2":
        return fixed_steps(task)
    if kind == "p3":
        return p3_point(task)
    raise ValueError(f"unknown task kind {kind!r}")


# ----------------------------------------------------------------------------------------- plan


def _inst(family, dims, **kw) -> dict:
    return asdict(Instance(family=family, dims=dict(dims), **kw))


#: The sweeps.  Certified instances are tiny (the theorem's η is tiny); scaling instances
#: carry the ε-range.  ``top_factor``: η at the largest grid ε in units of the (S) cap κ₀
#: (fixes s); ``cap``: epoch budget per point (hitting it = censored); ``caps``: optional
#: per-grid-point budgets (the tail of an 8-point grid, where T̂ ∝ ε⁻⁴ is out of reach, gets a
#: smaller budget and is reported censored).  Settings were tuned on this machine (SIMULATOR.md):
#: n = 1 for the d_x = 10⁴ instance (one step per epoch: the same per-epoch contraction at half
#: the steps of n = 2), top factors at which T̂(ε_max) ≈ 6–20 epochs (smaller T̂(ε_max) is
#: dominated by the t = 0 term of the running average, ‖∇f(z₀)‖²/T ≥ 4ε_max²/T, slope −2).
def _sweeps() -> dict:
    A_big = _inst("A", dict(n=1, d_x=10_000, d_y=4, m=4, sigma_x=0.02))
    B_mid = _inst("B", dict(n=2, d_x=50, d_y=4, m=4))
    C_mid = _inst("C", dict(n=2, p1=8, p2=8, r=2, m=4))
    A_cert = _inst("A", dict(n=2, d_x=4, d_y=1, m=1, beta=0.5), start_seed=2, q=4)
    B_cert = _inst("B", dict(n=1, d_x=2, d_y=1, m=2, sigma_x=0.5, theta=1.0), q=4)
    certified = [dict(mode="certified", instance=A_cert, points=2),
                 dict(mode="certified", instance=B_cert, points=1)]
    quick = dict(p1=[
        dict(mode="scaling", instance=A_big, points=5, top_factor=6, cap=2500),
        dict(mode="scaling", instance=C_mid, points=5, top_factor=20, cap=2000),
    ], p2=[], p3=[])
    tail = lambda cap, k, small: [cap] * k + [small] * (8 - k)  # noqa: E731
    p3_d = [_inst("A", dict(n=1, d_x=d, d_y=4, m=4, sigma_x=0.05)) for d in (4, 16, 64, 256)]
    p3_q = [_inst("A", dict(n=1, d_x=64, d_y=4, m=4, sigma_x=0.05), q=q) for q in (1, 2, 4, 8)]
    full = dict(p1=[
        dict(mode="scaling", instance=A_big, points=8, top_factor=6, caps=tail(2500, 5, 600)),
        dict(mode="scaling", instance=B_mid, points=8, top_factor=20, caps=tail(6000, 5, 1000)),
        dict(mode="scaling", instance=C_mid, points=8, top_factor=20, caps=tail(6500, 6, 1500)),
    ] + certified, p2=[
        dict(instance=_inst("A", dict(n=4, d_x=20, d_y=2, m=4)), factor=f, mu=mu, T=T, label=lab)
        for f, mu, T, lab in ((1.0, 1e-3, 1000, "caps of (S), mu=1e-3"), (0.1, 1e-3, 1000, "caps/10, mu=1e-3"),
                              (0.01, 1e-3, 1000, "caps/100, mu=1e-3"), (1.0, 1e-1, 1000, "caps of (S), mu=1e-1"))
    ], p3=[
        # η ∝ q/(d_x+2) through the κ₂ branch: one s per sweep (set at the cheapest point), one ε
        dict(axis="d_x", label="d_x sweep (q=1)", instances=p3_d, top_factor=3, cap=3000),
        dict(axis="q", label="q sweep (d_x=64)", instances=p3_q, top_factor=3, cap=3000),
    ])
    return dict(quick=quick, full=full, certified=dict(p1=certified, p2=[], p3=[]))


SWEEPS = _sweeps()


def _grid(const: dict, points: int, eps_max: float | None = None, eps_max_frac: float = 0.5) -> list[float]:
    """ε_j = ε_max 2^{-j/2}, ε_max = min(G, eps_max_frac·‖∇f(z₀)‖) (spec §6: frac = 1/2; the
    tests use a larger frac so that a certified point costs few epochs) unless given."""
    e0 = eps_max if eps_max is not None else min(const["G"], eps_max_frac * const["grad0"])
    return [float(e0 * GRID_RATIO ** j) for j in range(points)]


def _p3_tasks(spec: dict) -> list[dict]:
    """One ε for every instance of a P3 sweep (the smallest grid top over the instances, times
    2^{-1/2}), and one s: the one that puts the largest η (cheapest point) at ``top_factor``·κ₀."""
    consts = [build(Instance(**i))[3] for i in spec["instances"]]
    eps = GRID_RATIO * min(min(c["G"], c["grad0"] / 2) for c in consts)
    s = min(choose_s(c, eps, spec["top_factor"]) for c in consts)
    return [dict(kind="p3", axis=spec["axis"], label=spec["label"], instance=i, eps=float(eps), s=s,
                 cap=spec["cap"]) for i in spec["instances"]]


def plan(mode: str, families: list[str] | None = None) -> list[dict]:
    """The task list of a sweep ('quick', 'full' or 'certified'), optionally restricted to some
    families (P3 runs Family A only)."""
    sw = SWEEPS[mode]
    fams = {f.upper() for f in families} if families else None
    tasks = []
    for sweep_id, spec in enumerate(sw["p1"]):
        inst = Instance(**spec["instance"])
        if fams and inst.family not in fams:
            continue
        _, _, _, const = build(inst)
        grid = _grid(const, spec["points"], spec.get("eps_max"), spec.get("eps_max_frac", 0.5))
        s = choose_s(const, grid[0], spec["top_factor"]) if spec["mode"] == "scaling" else 1.0
        caps = spec.get("caps") or [spec.get("cap")] * len(grid)
        for e, cap in zip(grid, caps):
            tasks.append(dict(kind="p1", sweep=sweep_id, mode=spec["mode"], instance=spec["instance"], eps=e, s=s,
                              cap=cap))
    for spec in sw.get("p2", []):
        if fams and spec["instance"]["family"] not in fams:
            continue
        tasks.append(dict(kind="p2", **spec))
    for spec in sw.get("p3", []):
        if fams and "A" not in fams:
            continue
        tasks += _p3_tasks(spec)
    return tasks
