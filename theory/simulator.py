"""The reshuffling-SGD simulator: HybridRR on Families A–D or a user's objective against Theorem L6/R6 (spec §6).

Every run goes through the shared optimizer core (:class:`hybridopt.HybridOptimizer` on the objective's
:class:`hybridopt.TensorProblem` (:func:`theory.objective.as_problem`, R replicates), :class:`hybridopt.RandomReshuffling`
with one permutation per replicate and epoch, batch size 1, :func:`hybridopt.train`); this module only chooses the
parameters (all of them from :func:`theory.bound.schedule`, the one source of η(ε), μ(ε), T_req) and measures.
Measurements, all exact (closed form, or autograd for a user's objective without ``grad``), float64:

* at every epoch start z_t and for every replicate r: ‖∇ₓf(z_t)‖², ‖∇ᵧf(z_t)‖², f(z_t);
* after every inner step (a ``train`` callback): the A3 monitor Ḡ(y_{t,k}) and the position of y_{t,k} in the
  invariant set (‖y‖∞/R_B, ‖y‖/R_C, ‖y‖∞/R_D) when the objective provides them.

From these, for a target ε: the replicate mean of the running average
Ā_T = (1/R) Σ_r (1/T) Σ_{t<T} ‖∇f(z_t^{(r)})‖², the epochs-to-ε T̂ = min{T : Ā_T ≤ ε²}, its 90% bootstrap
interval over replicates (each replicate has its own permutations and directions; resamples drawn once and reused
for every ε, so slope intervals are paired), the per-replicate crossing epochs (median: ``epochs_measured``), the
min-metric T̂_min = min{T : min_{t<T} E‖∇f(z_t)‖² ≤ ε²}, and the share of Σ_t E‖∇f(z_t)‖² carried by each block.

**Certified mode** checks the theorem as it is stated: η(ε), μ(ε) of L6(B) literally, the run continues to
``hold_multiple``·T_req(ε) epochs (default 2) and the result is max_{T_req ≤ T ≤ end} Ā_T against ε²
(``window``); ``holds`` is that maximum ≤ ε².  **Scaling mode** uses η = s·η(ε) (every branch scaled by one s per
instance), stops once T̂ is decided, and its slopes are fitted on ε ≤ ε₄.

Common random numbers: for a given instance every ε uses the same objective data, z₀, n, q, ω, law, the same
optimizer seed (ZO directions are a pure function of (seed, step)) and the same sampler seed (permutations), so
runs differ only in (η_x, η_y, μ).  Independent seeds are separate instances (``run_seed``).  Runs are independent
tasks and are spread over worker processes.  The sweep definitions (instances, grids, budgets) are data:
:data:`SWEEPS`, :func:`plan`.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from hybridopt.theory import objective as O
from hybridopt.theory.bound import evaluate_bound, evaluate_theorem, schedule as _schedule, step_caps
from hybridopt.theory.constants import check_law
from hybridopt.theory.families import DT, FAMILIES, make_family

#: ε-grid ratio between neighbours (spec §6: ε_j = ε_max 2^{-j/2}).
GRID_RATIO = 2 ** -0.5
#: smallest μ used (spec §6: raise μ(ε) to 1e-7 and flag the point).
MU_FLOOR = 1e-7
#: bootstrap resamples for the CIs (90% percentile intervals).
N_BOOT = 1000
CI = (0.05, 0.95)
#: certified runs continue to this multiple of T_req(ε) (the theorem holds for every T ≥ T_req).
HOLD_MULTIPLE = 2.0
#: direction draws of the sweeps: float32-rounded for the float64 x-block (``HybridConfig.direction_dtype``;
#: Gaussian normals are ~4× cheaper in float32; Rademacher signs are exact in any dtype).
SWEEP_DIRECTION_DTYPE = "float32"


# ------------------------------------------------------------------------------------ instances


@dataclass(frozen=True)
class Instance:
    """One problem and the randomness of its runs (fixed across ε: CRN).

    ``family``: 'A'–'D' (:mod:`theory.families`) or a user's ``'module:factory'`` (:mod:`theory.objective`);
    ``dims``: the family parameters / the factory's keyword arguments; ``law``: the ZO direction law.
    """

    family: str
    dims: dict
    data_seed: int = 0
    start_seed: int = 0
    q: int = 1
    omega: float = 1.0
    replicates: int = 32
    run_seed: int = 0
    law: str = "gaussian"

    def name(self) -> str:
        return self.family.upper() if self.family.upper() in FAMILIES else self.family

    def key(self) -> str:
        """The problem's identity (data, start, q, R): one set of constants.  Law and run seed are not part of
        it (they change the runs, not the constants)."""
        d = ",".join(f"{k}={v}" for k, v in sorted(self.dims.items()))
        s = "" if (self.data_seed, self.start_seed) == (0, 0) else f";data={self.data_seed},start={self.start_seed}"
        return f"{self.name()}({d};q={self.q},R={self.replicates}{s})"


_CACHE: dict = {}


def make_objective(family: str, seed: int = 0, **dims):
    """A family ('A'–'D') or a user's objective (``'module:factory'``, :func:`theory.objective.load`)."""
    if family.upper() in FAMILIES:
        return make_family(family, seed, **dims)
    return O.load(family, seed, **dims)


def build(inst: Instance) -> tuple:
    """(objective, x0, y0, constants) with constants keyed by the theory's symbol names (L_x0 … G, n, d_x, d_y,
    q, omega, Delta) plus ``grad0`` = ‖∇f(z₀)‖, the block norms and ``f_lb``."""
    k = (inst.family, tuple(sorted(inst.dims.items())), inst.data_seed, inst.start_seed)
    if k not in _CACHE:
        F = make_objective(inst.family, inst.data_seed, **inst.dims)
        x0, y0 = F.start(inst.start_seed)
        x0, y0 = torch.as_tensor(x0, dtype=DT), torch.as_tensor(y0, dtype=DT)
        fv, gx, gy = O.value_and_grad(F, x0, y0)
        c = O.check_constants(F)
        f_lb = float(getattr(F, "f_lb", 0.0))
        g0 = float(torch.sqrt(gx.pow(2).sum() + gy.pow(2).sum()))
        if g0 > c["G"] * (1 + 1e-9):
            raise ValueError(f"objective {F.name!r}: ||grad f(z0)|| = {g0:.6g} exceeds the certified G = {c['G']:.6g} "
                             "(A3 implies ||grad f|| <= G on the cylinder)")
        c.update(Delta=float(fv) - f_lb, grad0=g0, grad0_x=float(gx.norm()), grad0_y=float(gy.norm()), f_lb=f_lb)
        _CACHE[k] = (F, x0, y0, c)
    F, x0, y0, c = _CACHE[k]
    return F, x0, y0, dict(c, q=inst.q, omega=inst.omega)


def schedule(const: dict, eps: float, s: float = 1.0, law: str = "gaussian") -> dict:
    """:func:`theory.bound.schedule` with μ floored at :data:`MU_FLOOR` (flagged: float64 cancellation)."""
    sch = _schedule(const, eps, s, law=law)
    sch["mu_flagged"] = sch["mu"] < MU_FLOOR
    sch["mu"] = max(sch["mu"], MU_FLOOR)
    return sch


def choose_s(const: dict, eps_max: float, top_factor: float, law: str = "gaussian") -> float:
    """s (two significant digits, rounded down, ≥ 1) with s·η(ε_max) = top_factor·κ₀: the largest grid ε runs at
    ``top_factor`` times the (S) cap, smaller ε at (ε/ε_max)² of that."""
    th = evaluate_theorem(const, eps_max, law=law)
    s = top_factor * th["kappa0"] / th["eta"]
    if s <= 1:
        return 1.0
    p = 10 ** (math.floor(math.log10(s)) - 1)
    return float(math.floor(s / p) * p)


# ------------------------------------------------------------------------------- one HybridRR run


def _sampler(n: int, R: int, seed: int, perms: torch.Tensor | None):
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

    smp = _Recording(n, 1, seed=seed, replicates=R)
    smp.log = None
    return smp


class Rescaled:
    """An objective ``F`` in the coordinates (x̃, ỹ) = (x/c_r, y/c_r), one scale c_r > 0 per replicate r.

    Why: a certified point needs ~10³–10⁴ epochs at a tiny step, and on small instances a step costs the core's
    per-call overhead, not arithmetic; one run can carry every ε of a grid as replicate groups instead.  It is an
    exact change of variables: the two-point estimate of x̃ ↦ F(c x̃, c ỹ) with radius μ is c·ĝ, ĝ the estimate
    of F at x = c x̃ with radius μc and the same direction, and ∇_ỹ = c ∇_yF; so one core step (η_x, η_y, μ) moves
    x = c x̃ by −η_x c² ĝ and y = c ỹ by −η_y c² ∇_yF(x, y): HybridRR on F with (η_x c², η_y c², μ c).  A grid
    whose schedule scales as (η_x, η_y, μ) ∝ (ε², ε², ε) (the κ₂ε² branch with μ = μ_a ε) is one run with
    c = ε/ε₀.  The measurements and the monitor are taken at the real point (c x̃, c ỹ).
    """

    def __init__(self, F, scale: torch.Tensor) -> None:
        self.F, self.c = F, torch.as_tensor(scale, dtype=DT)
        self.name, self.n, self.d_x, self.d_y = F.name, F.n, F.d_x, F.d_y

    def loss(self, i, x, y):
        c = self.c.reshape(-1, *([1] * (x.dim() - 1)))
        return self.F.loss(i, x * c, y * c)

    def constants(self) -> dict:
        return self.F.constants()

    def start(self, seed: int = 0):
        return self.F.start(seed)


def hybrid_run(F, x0, y0, eta_x: float, eta_y: float, mu: float, q: int, replicates: int,
               seed: int = 0, epochs: int = 1, stop: Callable[[int, dict], bool] | None = None,
               on_epoch: Callable[[int, dict], None] | None = None, record: bool = False,
               perms: torch.Tensor | None = None, monitor: bool = True,
               direction_dtype: str = "auto", law: str = "gaussian", scale: torch.Tensor | None = None,
               groups: int = 1) -> dict:
    """Run HybridRR through the optimizer core for at most ``epochs`` epochs on an objective ``F``.

    ``on_epoch(t, m)`` is called with the exact measurements m at every epoch start z_t
    (t = 0, 1, …; keys gx2, gy2, f: arrays (R,)); ``stop(t, m)`` after it ends the run early.
    ``record=True`` keeps every iterate: x (T, n+1, R, d_x), y (T, n+1, R, d_y), idx (T, n, R)
    (the component index of each inner step) and the optimizer (to regenerate directions).
    ``scale`` (R,): run replicate r with steps (η_x c_r², η_y c_r²) and radius μ c_r (:class:`Rescaled`);
    iterates, measurements and the monitor are in F's own coordinates.
    Returns the monitor per epoch: gbar_max (max over k and the replicates of each of ``groups`` equal groups of
    Ḡ(y_{t,k}), shape (epochs,) or (epochs, groups); NaN if the objective has no ``gbar``) and dom_max (the same
    for its ``domain_ratio``; 0 if it has none), and ``epochs_run``.
    """
    from hybridopt import HybridConfig, HybridOptimizer, train

    R, n = int(replicates), F.n
    if scale is None:
        prob = O.as_problem(F, x0, y0, replicates=R)
        real = lambda v: v  # noqa: E731
    else:
        cc = torch.as_tensor(scale, dtype=DT).reshape(R, 1)
        x0r = torch.as_tensor(x0, dtype=DT).expand(R, F.d_x) / cc
        y0r = torch.as_tensor(y0, dtype=DT).expand(R, F.d_y) / cc
        prob = O.as_problem(Rescaled(F, cc[:, 0]), x0r, y0r, replicates=R)
        real = lambda v: v * cc  # noqa: E731
    cfg = HybridConfig(lr_x=float(eta_x), lr_y=float(eta_y), mu=float(mu), q=int(q), seed=int(seed),
                       direction=check_law(law), direction_dtype=direction_dtype)
    opt = HybridOptimizer(prob, cfg, keep_zo_log=False)
    smp = _sampler(n, R, seed, perms)
    x, y = prob.zo_params[0], prob.fo_params[0]
    if record:
        smp.log = []
        X = [[real(x).clone()]]
        Y = [[real(y.detach()).clone()]]
    gmax = torch.full((R,), -math.inf, dtype=DT)
    dmax = torch.zeros(R, dtype=DT)
    gbar = getattr(F, "gbar", None) if monitor else None
    dom = getattr(F, "domain_ratio", None) if monitor else None
    if dom is not None and dom(y0.unsqueeze(0)) is None:
        dom = None

    def watch(y_now: torch.Tensor) -> None:
        nonlocal gmax, dmax
        yd = real(y_now.detach())
        if gbar is not None:
            gmax = torch.maximum(gmax, gbar(yd))
        if dom is not None:
            dmax = torch.maximum(dmax, dom(yd))

    def callback(stats, epoch, trace):
        if monitor:
            watch(y)
        if record:
            if len(X[-1]) == n + 1:
                X.append([X[-1][-1]])
                Y.append([Y[-1][-1]])
            X[-1].append(real(x).clone())
            Y[-1].append(real(y.detach()).clone())
        return False

    gbar_hist, dom_hist = [], []
    t = 0
    for t in range(epochs + 1):
        fv, gx, gy = O.value_and_grad(F, real(x), real(y.detach()))
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
            gm = gmax.reshape(groups, -1).amax(1)
            gbar_hist.append(gm.numpy().copy() if gbar is not None else np.full(groups, math.nan))
            dom_hist.append(dmax.reshape(groups, -1).amax(1).numpy().copy())
    gh, dh = np.asarray(gbar_hist).reshape(-1, groups), np.asarray(dom_hist).reshape(-1, groups)
    out = dict(epochs_run=t, gbar_max=gh[:, 0] if groups == 1 else gh, dom_max=dh[:, 0] if groups == 1 else dh,
               optimizer=opt, has_gbar=gbar is not None, has_domain=dom is not None)
    if record:
        T = len(X) if len(X[-1]) == n + 1 else len(X) - 1
        out["x"] = torch.stack([torch.stack(e) for e in X[:T]])
        out["y"] = torch.stack([torch.stack(e) for e in Y[:T]])
        b = torch.stack(smp.log)[: T * n, :, 0]  # (T n, R)
        out["idx"] = b.reshape(T, n, R)
    return out


def trajectory(F, x0, y0, eta_x: float, eta_y: float, mu: float, q: int, T: int,
               replicates: int = 1, seed: int = 0, perms: torch.Tensor | None = None,
               law: str = "gaussian") -> dict:
    """Every iterate of T epochs of HybridRR run by the core (for the lemma tests).

    Returns x (T, n+1, R, d_x), y (T, n+1, R, d_y), idx (T, n, R), and ``u(t, k)`` -> the
    (q, R, d_x) directions of inner step k of epoch t (regenerated from the core's seeds).
    ``perms``: optional (T, R, n) permutations instead of the sampler's uniform draws.
    """
    if perms is not None:
        perms = torch.as_tensor(perms, dtype=torch.long).expand(T, replicates, F.n)
    out = hybrid_run(F, x0, y0, eta_x, eta_y, mu, q, replicates, seed=seed, epochs=T, record=True,
                     perms=perms, monitor=False, law=law)
    opt = out.pop("optimizer")
    n = F.n

    def u(t: int, k: int) -> torch.Tensor:
        d = opt.directions(t * n + k)
        return torch.stack([d.u(r, 0) for r in range(q)])

    out["u"] = u
    return out


# ------------------------------------------------------------------------------- epochs-to-ε


class Crossing:
    """Online T̂ for one ε: mean curve, bootstrap resamples, per-replicate and min-metric, block sums, and (from
    ``window_from`` = T_req on) the running maximum of Ā_T for the certified check."""

    def __init__(self, eps: float, R: int, boot_w: np.ndarray, window_from: int | None = None) -> None:
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
        self.share0 = None
        self.window_from = window_from
        self.win_max = -math.inf
        self.win_boot_max = np.full(self.W.shape[0], -math.inf)

    def update(self, t: int, m: dict) -> None:
        g = m["gx2"] + m["gy2"]
        T = t + 1
        self.S += g
        self.Sx += m["gx2"]
        self.Sy += m["gy2"]
        if self.share0 is None:
            self.share0 = float(m["gx2"].mean() / max(g.mean(), 1e-300))
        A = self.S / T
        Am = float(A.mean())
        self.curve.append(Am)
        self.curve_x.append(float(self.Sx.mean() / T))
        self.curve_y.append(float(self.Sy.mean() / T))
        self.gmean.append(float(g.mean()))
        if self.T_mean is None and Am <= self.e2:
            self.T_mean = T
        if self.T_min is None and g.mean() <= self.e2:
            self.T_min = T
        self.T_rep[(self.T_rep < 0) & (A <= self.e2)] = T
        bA, bg = self.W @ A, self.W @ g
        self.T_boot[(self.T_boot < 0) & (bA <= self.e2)] = T
        self.T_boot_min[(self.T_boot_min < 0) & (bg <= self.e2)] = T
        if self.window_from is not None and T >= self.window_from:
            self.win_max = max(self.win_max, Am)
            np.maximum(self.win_boot_max, bA, out=self.win_boot_max)

    def done(self) -> bool:
        return (self.T_mean is not None and (self.T_boot > 0).all() and (self.T_boot_min > 0).all()
                and (self.T_rep > 0).mean() >= 0.5)

    def block_share(self) -> dict:
        """Share of Σ_t E‖∇f(z_t)‖² carried by each block over the epochs run, and the x-share at z₀."""
        tot = max(float(self.S.mean()), 1e-300)
        return dict(x=float(self.Sx.mean()) / tot, y=float(self.Sy.mean()) / tot, x_at_start=self.share0)


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


def _monitor(out: dict, G: float) -> dict:
    mon_t, mon_g = _block_max(out["gbar_max"]) if out["has_gbar"] else ([], [])
    _, mon_d = _block_max(out["dom_max"]) if out["has_domain"] else ([], [])
    ok = bool((not out["has_gbar"] or (out["gbar_max"] <= G * (1 + 1e-9)).all())
              and (out["dom_max"] <= 1 + 1e-12).all())
    return dict(epoch=mon_t, gbar_max=mon_g, dom_max=mon_d, G=G, ok=ok, has_gbar=out["has_gbar"],
                has_domain=out["has_domain"])


def _p1_record(inst: Instance, F, const: dict, task: dict, sch: dict, cr: Crossing, monitor: dict, cap: int,
               epochs_run: int, wall: float, cpu: float, batched: int = 1) -> dict:
    """The result record of one P1 point (one ε of one instance and seed)."""
    eps, s, mode = task["eps"], task["s"], task["mode"]
    lo, hi, hi_cens = _ci(cr.T_boot)
    lo_m, hi_m, _ = _ci(cr.T_boot_min)
    rep = np.where(cr.T_rep > 0, cr.T_rep.astype(float), np.inf)
    med = float(np.median(rep))
    window = holds = None
    if mode == "certified":
        e2 = eps * eps
        T_req = sch["T_req"]
        A_req = cr.curve[T_req - 1] if len(cr.curve) >= T_req else None
        window = dict(start=T_req, end=len(cr.curve), hold_multiple=len(cr.curve) / T_req, max_mean=cr.win_max,
                      max_boot_hi=float(np.quantile(cr.win_boot_max, CI[1])), ratio=cr.win_max / e2,
                      A_at_T_req=A_req, A_at_T_req_ratio=None if A_req is None else A_req / e2)
        holds = bool(len(cr.curve) >= T_req and cr.win_max <= e2)
    return dict(
        family=F.name, mode=mode, instance=inst.key(), law=inst.law, run_seed=inst.run_seed, eps=eps, s=s,
        epochs_measured=None if not math.isfinite(med) else med,
        epochs_mean_curve=cr.T_mean, epochs_ci=[lo, hi], ci_censored=hi_cens,
        epochs_bound=sch["T_req"], epochs_bound_certified=sch["T_req_certified"],
        censored=cr.T_mean is None, holds=holds, window=window,
        holds_upper=None if window is None else bool(holds and window["max_boot_hi"] <= eps * eps),
        cap=cap, epochs_run=int(epochs_run), replicates_crossed=float((cr.T_rep > 0).mean()),
        min_metric_epochs=cr.T_min, min_metric_ci=[lo_m, hi_m],
        eta_x=sch["eta_x"], eta_y=sch["eta_y"], mu=sch["mu"], mu_flagged=sch["mu_flagged"],
        regime=sch["regime"], S_factor=sch["S_factor"], S=sch["S"],
        # η = s·η(ε) scales all three branches, so the κ₂ (ε²) branch is active exactly when the
        # theorem's own regime is −4 (ε ≤ ε₄); only such points (and ε ≤ G) enter the slope fit.
        in_fit_regime=bool(sch["regime"] == -4 and eps <= const["G"]),
        eps4=sch["eps4"], C_Delta_over_eps4=sch["C"] * const["Delta"] / eps ** 4,
        block_share=cr.block_share(), monitor=monitor,
        # kept in memory for paired bootstrap slopes, dropped before writing JSON
        _boot=cr.T_boot, _boot_min=cr.T_boot_min,
        wall_s=wall / batched, cpu_s=cpu / batched, batched=batched, steps=int(epochs_run) * F.n,
        d_x=F.d_x, q=inst.q,
    )


def epochs_to_eps(task: dict) -> dict:
    """One P1 point.  Scaling mode: run until Ā_T ≤ ε² is decided for the mean, every bootstrap resample and at
    least half of the replicates, or until the cap (then the point is censored).  Certified mode: run to
    ``hold_multiple``·T_req(ε) and record max_{T_req ≤ T ≤ end} Ā_T (the theorem's statement)."""
    t0, c0 = time.perf_counter(), time.process_time()
    torch.set_num_threads(1)
    inst = Instance(**task["instance"])
    F, x0, y0, const = build(inst)
    sch = schedule(const, task["eps"], task["s"], inst.law)
    certified = task["mode"] == "certified"
    hold = float(task.get("hold_multiple") or HOLD_MULTIPLE)
    cap = int(math.ceil(hold * sch["T_req"])) if certified else int(task["cap"])
    cr = Crossing(task["eps"], inst.replicates, boot_weights(inst.replicates),
                  window_from=sch["T_req"] if certified else None)
    out = hybrid_run(F, x0, y0, sch["eta_x"], sch["eta_y"], sch["mu"], inst.q, inst.replicates,
                     seed=inst.run_seed, epochs=cap, on_epoch=cr.update,
                     stop=None if certified else (lambda t, m: cr.done()),
                     direction_dtype=SWEEP_DIRECTION_DTYPE, law=inst.law)
    return _p1_record(inst, F, const, task, sch, cr, _monitor(out, const["G"]), cap, out["epochs_run"],
                      time.perf_counter() - t0, time.process_time() - c0)


def scales_as_eps(schs: list[dict], eps: list[float]) -> bool:
    """Whether the schedules of a grid scale as (η_x, η_y, μ) ∝ (ε², ε², ε) (one run with :class:`Rescaled`)."""
    e0, s0 = eps[0], schs[0]
    return all(not s["mu_flagged"] and math.isclose(s["eta_x"], s0["eta_x"] * (e / e0) ** 2, rel_tol=1e-12)
               and math.isclose(s["eta_y"], s0["eta_y"] * (e / e0) ** 2, rel_tol=1e-12)
               and math.isclose(s["mu"], s0["mu"] * (e / e0), rel_tol=1e-12) for s, e in zip(schs, eps))


def certified_group(task: dict) -> list[dict]:
    """Certified points of one instance and seed, every ε of ``task['eps']`` a replicate group of one core run
    (:class:`Rescaled`, exact), each run to ≥ ``hold_multiple``·T_req(ε): the run lasts until the smallest ε's
    window ends, so the larger ε are checked over a longer window [T_req(ε), end]."""
    t0, c0 = time.perf_counter(), time.process_time()
    torch.set_num_threads(1)
    inst = Instance(**task["instance"])
    F, x0, y0, const = build(inst)
    eps = list(task["eps"])
    schs = [schedule(const, e, 1.0, inst.law) for e in eps]
    if not scales_as_eps(schs, eps):
        raise ValueError("certified_group: the schedule does not scale as (eps^2, eps^2, eps) on this grid")
    R, k = inst.replicates, len(eps)
    hold = float(task.get("hold_multiple") or HOLD_MULTIPLE)
    cap = max(int(math.ceil(hold * s["T_req"])) for s in schs)
    crs = [Crossing(e, R, boot_weights(R), window_from=s["T_req"]) for e, s in zip(eps, schs)]

    def on_epoch(t, m):
        for j, cr in enumerate(crs):
            cr.update(t, {key: v[j * R:(j + 1) * R] for key, v in m.items()})

    scale = torch.tensor(np.repeat([e / eps[0] for e in eps], R), dtype=DT)
    s0 = schs[0]
    out = hybrid_run(F, x0, y0, s0["eta_x"], s0["eta_y"], s0["mu"], inst.q, R * k, seed=inst.run_seed,
                     epochs=cap, on_epoch=on_epoch, direction_dtype=SWEEP_DIRECTION_DTYPE, law=inst.law,
                     scale=scale, groups=k)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    recs = []
    for j, (e, sch, cr) in enumerate(zip(eps, schs, crs)):
        view = dict(out, gbar_max=out["gbar_max"][:, j], dom_max=out["dom_max"][:, j])
        rec = _p1_record(inst, F, const, dict(task, eps=e, s=1.0), sch, cr, _monitor(view, const["G"]), cap,
                         out["epochs_run"], wall, cpu, batched=k)
        recs.append(rec)
    return recs


# --------------------------------------------------------------------------------- P2, P3 tasks


def fixed_steps(task: dict) -> dict:
    """One P2 curve: Ā_T (and per block) at fixed (η_x, η_y, μ, q) = ``factor`` × the caps of (S) against B(T) of
    L6(A) (R6(A) for Rademacher directions)."""
    t0, c0 = time.perf_counter(), time.process_time()
    torch.set_num_threads(1)
    inst = Instance(**task["instance"])
    F, x0, y0, const = build(inst)
    # (S) alone: it implies the invariance caps of the families (Lemmas 4.3, 4.4, D), so a run at its caps is
    # inside the theorem, and a wrong (S) shows up as a monitor crossing
    cap_x, cap_y = step_caps(const)
    eta_x, eta_y = cap_x * task["factor"], cap_y * task["factor"]
    cr = Crossing(1e-300, inst.replicates, boot_weights(inst.replicates, B=1))
    out = hybrid_run(F, x0, y0, eta_x, eta_y, task["mu"], inst.q, inst.replicates, seed=inst.run_seed,
                     epochs=task["T"], on_epoch=cr.update, direction_dtype=SWEEP_DIRECTION_DTYPE, law=inst.law)
    Tall = np.arange(1, len(cr.curve) + 1)
    ball = evaluate_bound(const, Tall, eta_x, eta_y, task["mu"], law=inst.law, require_S=False)
    ratio = np.asarray(cr.curve) / ball["B"]
    Tg, A = _downsample(cr.curve)
    Tg = np.asarray(Tg)
    _, Ax = _downsample(cr.curve_x)
    _, Ay = _downsample(cr.curve_y)
    return dict(family=F.name, instance=inst.key(), law=inst.law, label=task["label"], factor=task["factor"],
                eta_x=eta_x, eta_y=eta_y, mu=task["mu"], q=inst.q, T=(Tg + 1).tolist(), A=A, A_x=Ax, A_y=Ay,
                B=ball["B"][Tg].tolist(), B_x=ball["B_x"][Tg].tolist(), B_y=ball["B_y"][Tg].tolist(),
                B_inf=ball["B_inf"], below_bound=bool(np.all(ratio <= 1)), max_ratio=float(ratio.max()),
                block_share=cr.block_share(), monitor_ok=_monitor(out, const["G"])["ok"],
                wall_s=time.perf_counter() - t0, cpu_s=time.process_time() - c0)


def p3_point(task: dict) -> dict:
    """One P3 point: T̂ at a fixed ε (κ₂ branch) for one (d_x, q); the P1 machinery, tagged."""
    r = epochs_to_eps(dict(task, mode="scaling"))
    r.pop("_boot", None)
    r.pop("_boot_min", None)
    r.update(kind="p3", axis=task["axis"], sweep_label=task["label"], d_x=r["d_x"], q=r["q"],
             T_req_certified=r.pop("epochs_bound_certified"))
    return r


def run_task(task: dict) -> dict | list[dict]:
    """Run one task; a certified group (``kind='p1c'``) returns one record per ε."""
    kind = task["kind"]
    if kind == "p1":
        return epochs_to_eps(task)
    if kind == "p1c":
        return certified_group(task)
    if kind == "p2":
        return fixed_steps(task)
    if kind == "p3":
        return p3_point(task)
    raise ValueError(f"unknown task kind {kind!r}")


# ----------------------------------------------------------------------------------------- plan


def _inst(family, dims, **kw) -> dict:
    return asdict(Instance(family=family, dims=dict(dims), **kw))


def _laws(inst: dict, laws=("gaussian", "rademacher")) -> list[dict]:
    return [dict(inst, law=law) for law in laws]


#: The sweeps.  ``mode='scaling'`` specs: ``points`` grid values ε_max·2^{-j/2}, ``top_factor`` (η at the largest
#: ε in units of the (S) cap κ₀: fixes s), ``cap``/``caps`` epoch budgets (hitting one = censored).
#: ``mode='certified'`` specs: ``points`` grid values (ratio ``ratio``) from ``eps_max_frac``·‖∇f(z₀)‖, ``seeds``
#: independent run seeds, each run to ``hold_multiple``·T_req.  Settings were chosen on this machine
#: (SIMULATOR.md): ZO-dominant instances (‖∇ₓf‖² carries most of ‖∇f‖² along the run) with n ≥ 4 for the
#: slope fits, whose largest ε has T̂ ≥ 50 epochs so that one epoch of granularity moves the slope by ≤ 0.02.
def _sweeps() -> dict:
    # ZO-dominant (the x-block carries ~97% of sum_t ||grad f||^2), n = 4, L_x1, L_xy1 > 0: the slope instance
    D_zo = _inst("D", dict(n=4, d_x=32, d_y=2, m=4, start_scale=1.0, beta=0.3, a_scale=0.5, theta=0.1))
    # certified instances: d_x = 1 and n = 1 keep T_req ~ 10^3 epochs (T_req ∝ (d_x+2) G^2 Δ L_X / ε^4 does not
    # depend on n in the κ₂ regime; G / ||grad f(z0)|| is smallest with one component); all ZO-dominant at z0
    A_cert = _inst("A", dict(n=1, d_x=1, d_y=1, m=1, beta=0.0, sigma_x=3.0, sigma_y=0.5), data_seed=1, start_seed=3, q=8)
    B_cert = _inst("B", dict(n=1, d_x=1, d_y=1, m=1, sigma_x=2.0, theta=0.5, kappa=0.1, delta=0.25), data_seed=5,
                   q=8)
    D_cert = _inst("D", dict(n=1, d_x=1, d_y=1, m=1, sigma_x=2.0, theta=0.02, beta=0.3, a_scale=0.5, delta=0.25,
                             start_scale=0.5), data_seed=4, start_seed=3, q=8)
    cert = lambda inst, **kw: dict(dict(mode="certified", instance=inst, points=6, ratio=2 ** -0.0625, seeds=3,  # noqa: E731
                                        eps_max_frac=0.95, hold_multiple=HOLD_MULTIPLE), **kw)
    certified = [cert(i) for i in (_laws(D_cert) + _laws(A_cert) + [B_cert])]
    full = dict(p1=[dict(mode="scaling", instance=i, points=7, top_factor=5.0, caps=[400_000] * 7)
                    for i in _laws(D_zo)] + certified,
                p2=[dict(instance=_inst("D", dict(n=4, d_x=16, d_y=2, m=4), q=q), factor=f, mu=mu, T=1000, label=lab)
                    for f, mu, q, lab in ((1.0, 1e-3, 1, "caps of (S), mu=1e-3"), (0.1, 1e-3, 1, "caps/10, mu=1e-3"),
                                          (0.01, 1e-3, 1, "caps/100, mu=1e-3"), (1.0, 1e-1, 1, "caps of (S), mu=1e-1"),
                                          (1.0, 1e-3, 4, "caps of (S), mu=1e-3, q=4"))],
                p3=[dict(axis="d_x", label="d_x sweep (q=1)", top_factor=3, cap=3000,
                         instances=[_inst("A", dict(n=1, d_x=d, d_y=4, m=4, sigma_x=0.05)) for d in (4, 16, 64, 256)]),
                    dict(axis="q", label="q sweep (d_x=64)", top_factor=3, cap=3000,
                         instances=[_inst("A", dict(n=1, d_x=64, d_y=4, m=4, sigma_x=0.05), q=q) for q in (1, 2, 4, 8)])])
    quick = dict(p1=[dict(mode="scaling", instance=i, points=3, top_factor=5.0, cap=4000) for i in _laws(D_zo)]
                 + [cert(dict(D_cert, law="rademacher"), points=2, seeds=1)],
                 # the full sweep's first three fixed-step runs, shortened: the P2 figure at the quick scale
                 p2=[dict(spec, T=300) for spec in full["p2"][:3]], p3=[])
    return dict(quick=quick, full=full, certified=dict(p1=certified, p2=[], p3=[]))


SWEEPS = _sweeps()


def _grid(const: dict, points: int, eps_max: float | None = None, eps_max_frac: float = 0.5,
          ratio: float = GRID_RATIO) -> list[float]:
    """ε_j = ε_max·ratio^j, ε_max = min(G, eps_max_frac·‖∇f(z₀)‖) (spec §6: frac = 1/2, ratio = 2^{-1/2}; the
    certified sweeps use a larger frac and a finer ratio so that a point costs few epochs) unless given."""
    e0 = eps_max if eps_max is not None else min(const["G"], eps_max_frac * const["grad0"])
    return [float(e0 * ratio ** j) for j in range(points)]


def _p3_tasks(spec: dict) -> list[dict]:
    """One ε for every instance of a P3 sweep (the smallest grid top over the instances, times
    2^{-1/2}), and one s: the one that puts the largest η (cheapest point) at ``top_factor``·κ₀."""
    consts = [build(Instance(**i))[3] for i in spec["instances"]]
    eps = GRID_RATIO * min(min(c["G"], c["grad0"] / 2) for c in consts)
    s = min(choose_s(c, eps, spec["top_factor"]) for c in consts)
    return [dict(kind="p3", axis=spec["axis"], label=spec["label"], instance=i, eps=float(eps), s=s,
                 cap=spec["cap"]) for i in spec["instances"]]


def p1_tasks(spec: dict, sweep_id: int = 0) -> list[dict]:
    """The tasks of one P1 spec (one per ε, and per seed in certified mode)."""
    inst = Instance(**spec["instance"])
    _, _, _, const = build(inst)
    grid = _grid(const, spec["points"], spec.get("eps_max"), spec.get("eps_max_frac", 0.5),
                 spec.get("ratio", GRID_RATIO))
    if spec["mode"] == "certified":
        # one core run per seed carries the whole grid when the schedule scales as (eps^2, eps^2, eps)
        schs = [schedule(const, e, 1.0, inst.law) for e in grid]
        groups = [grid] if scales_as_eps(schs, grid) else [[e] for e in grid]
        return [dict(kind="p1c" if len(g) > 1 else "p1", sweep=sweep_id, mode="certified",
                     instance=dict(spec["instance"], run_seed=seed), **({"eps": g} if len(g) > 1 else {"eps": g[0]}),
                     s=1.0, cap=None, hold_multiple=spec.get("hold_multiple"))
                for seed in range(spec.get("seeds", 1)) for g in groups]
    s = choose_s(const, grid[0], spec["top_factor"], inst.law)
    caps = spec.get("caps") or [spec.get("cap")] * len(grid)
    return [dict(kind="p1", sweep=sweep_id, mode="scaling", instance=spec["instance"], eps=e, s=s, cap=cap)
            for e, cap in zip(grid, caps)]


def plan(mode: str, families: list[str] | None = None) -> list[dict]:
    """The task list of a sweep ('quick', 'full' or 'certified'), optionally restricted to some
    families (P3 runs Family A only)."""
    sw = SWEEPS[mode]
    fams = {f.upper() for f in families} if families else None
    tasks = []
    for sweep_id, spec in enumerate(sw["p1"]):
        if fams and Instance(**spec["instance"]).name() not in fams:
            continue
        tasks += p1_tasks(spec, sweep_id)
    for spec in sw.get("p2", []):
        if fams and Instance(**spec["instance"]).name() not in fams:
            continue
        tasks.append(dict(kind="p2", **spec))
    for spec in sw.get("p3", []):
        if fams and "A" not in fams:
            continue
        tasks += _p3_tasks(spec)
    return tasks


def objective_plan(spec: str, params: dict | None = None, points: int = 4, seeds: int = 3,
                   eps_max_frac: float = 0.5, ratio: float = GRID_RATIO, laws=("gaussian",), q: int = 1,
                   replicates: int = 32, hold_multiple: float = HOLD_MULTIPLE, p2_T: int = 300,
                   p2_factors=(1.0, 0.1, 0.01), p2_mus=(1e-3, 1e-2, 1e-1), data_seed: int = 0,
                   start_seed: int = 0) -> list[dict]:
    """Tasks checking the theorem on a user's objective ``module:factory``: certified points (``points`` ε values
    from ``eps_max_frac``·‖∇f(z₀)‖, ``seeds`` seeds, each run to ``hold_multiple``·T_req) and fixed-step curves
    (P2: every factor × the caps of (S) with every μ, ``p2_T`` epochs; none if 0) for every law."""
    tasks = []
    for law in laws:
        inst = _inst(spec, params or {}, q=q, replicates=replicates, law=law, data_seed=data_seed,
                     start_seed=start_seed)
        tasks += p1_tasks(dict(mode="certified", instance=inst, points=points, seeds=seeds, ratio=ratio,
                               eps_max_frac=eps_max_frac, hold_multiple=hold_multiple))
        tasks += [dict(kind="p2", instance=inst, factor=f, mu=mu, T=p2_T,
                       label=f"caps x {f:g}, mu={mu:g}" + ("" if law == "gaussian" else f", {law}"))
                  for f in p2_factors for mu in p2_mus if p2_T > 0]
    return tasks
