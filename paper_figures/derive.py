"""Every quantity the figures and the report derive from result files, as pure functions.

The report records, for each number it prints, the operation named here and the (file, key)
of its inputs (:mod:`paper_figures.ledger`); the CI test recomputes each one from the files.
So a function here must depend on its arguments only (JSON values), never on global state.

Definitions (stated in the report too):

* **steps-to-target** – the first evaluated step whose dev accuracy reaches ``frac`` times the
  reference run's best dev accuracy (reference: full FT when it was run for the task, else the
  best first-order method present); ``None`` when never reached.  Resolution: ``eval_every``.
* **stationarity proxies** – per step, the runner records ``fo_grad_sq`` = ‖∇ᵧf_B(z_t)‖² (exact,
  autograd, PEFT block y) and ``zo_grad_sq_est`` = mean_r g_r² with
  g_r = [f_B(x+μu_r,y) − f_B(x−μu_r,y)]/(2μ): for Gaussian u_r, E[g_r²] = ‖∇ₓf_B‖² + O(μ²) (base
  block x).  The per-epoch value is the mean over the epoch's steps; the plotted quantity is the
  running average over epochs, (1/T) Σ_{t<T} (per-epoch value), as in L6(A).
* **estimated constants** (:func:`estimate_constants`) – see its docstring; *estimated along the
  run, not certified*.
"""
from __future__ import annotations

import math
import statistics
from typing import Any, Sequence

import numpy as np


# ---- plain operations -----------------------------------------------------------------------------

def get(v: Any) -> Any:
    return v


def ratio(a: float, b: float) -> float | None:
    return None if a is None or b in (None, 0) else a / b


def reduction(a: float, b: float) -> float | None:
    """1 − a/b: the fraction of b's steps that a saves (positive: a needs fewer)."""
    r = ratio(a, b)
    return None if r is None else 1.0 - r


def gib(x: float) -> float | None:
    return None if x is None else x / 2**30


def mean(*vals: float) -> float | None:
    vals = [v for v in vals if v is not None]
    return statistics.fmean(vals) if vals else None


def total(*vals: float) -> float:
    return float(sum(v for v in vals if v is not None))


def count(values: Sequence) -> int:
    return len(values)


def count_true(values: Sequence[dict], field: str) -> int:
    return sum(1 for v in values if v.get(field))


def minutes(seconds: float) -> float | None:
    return None if seconds is None else seconds / 60


def last_step(curve: Sequence[Sequence[float]]) -> int | None:
    return int(curve[-1][0]) if curve else None


def final_loss(curve: Sequence[Sequence[float]], window: int = 10) -> float | None:
    """Mean training loss over the last ``window`` steps."""
    tail = [l for _, l in curve[-window:]]
    return statistics.fmean(tail) if tail else None


def first_loss(curve: Sequence[Sequence[float]], window: int = 10) -> float | None:
    head = [l for _, l in curve[:window]]
    return statistics.fmean(head) if head else None


def steps_to_target(dev_curve: Sequence[Sequence[float]], ref_best: float, frac: float) -> int | None:
    """First evaluated step with dev accuracy ≥ frac · ref_best (None: not reached)."""
    if ref_best is None:
        return None
    target = frac * ref_best
    for step, acc in dev_curve:
        if acc >= target - 1e-12:
            return int(step)
    return None


def steps_reduction(dev_a: Sequence[Sequence[float]], dev_b: Sequence[Sequence[float]], ref_best: float,
                    frac: float) -> float | None:
    """1 − (steps-to-target of a) / (steps-to-target of b)."""
    return reduction(steps_to_target(dev_a, ref_best, frac), steps_to_target(dev_b, ref_best, frac))


def target_value(ref_best: float, frac: float) -> float | None:
    return None if ref_best is None else frac * ref_best


# ---- stationarity and the L6(A) bound with estimated constants -----------------------------------

def per_epoch(epoch: Sequence[int], values: Sequence[float]) -> tuple[list[int], list[float]]:
    """Mean of ``values`` per epoch (epochs in increasing order); the two lists must align."""
    if len(values) != len(epoch):
        epoch = list(epoch)[: len(values)]
    groups: dict[int, list[float]] = {}
    for e, v in zip(epoch, values):
        groups.setdefault(int(e), []).append(float(v))
    keys = sorted(groups)
    return keys, [statistics.fmean(groups[k]) for k in keys]


def running_average(values: Sequence[float]) -> list[float]:
    c = np.cumsum(np.asarray(values, dtype=float))
    return list(c / np.arange(1, len(c) + 1))


def stationarity_curves(result: dict) -> dict[str, list[float]]:
    """Running averages over epochs T = 1..E of the per-epoch mean proxies of both blocks."""
    st = result["stationarity"]
    out: dict[str, list[float]] = {}
    for name, key in (("y", "fo_grad_sq"), ("x", "zo_grad_sq_est")):
        if st.get(key):
            ep, vals = per_epoch(st["epoch"], st[key])
            out[f"{name}_epoch_mean"] = vals
            out[name] = running_average(vals)
            out["T"] = [i + 1 for i in range(len(ep))]
    return out


def estimate_constants(result: dict) -> dict[str, float]:
    r"""Constants of L6(A) estimated along one hybrid run (**estimates, not certified bounds**).

    * ``n`` = steps per epoch (one component f_i per mini-batch), ``d_x`` = ZO block size,
      ``q`` = directions per step, μ, η_x = lr_x, η_y = lr_y from the run's configuration
      (with Adam on the FO block, η_y is the nominal learning rate, not an SGD step).
    * ``Delta`` = mean training loss over the first epoch − 0 (the classification cross-entropy
      is ≥ 0, so inf f ≥ 0).
    * ``G`` = sqrt( max_t ‖∇ᵧf_{B_t}‖² + max_epoch mean_epoch(g_r²) ): the largest observed exact
      y-gradient plus the largest per-epoch unbiased estimate of ‖∇ₓf_B‖² (single-step g² is a
      one-degree-of-freedom estimate, too noisy to take a maximum over).
    * ``L_x0`` = max_t |c_t| / d_x with c_t = mean_r [f(x+μu_r)+f(x−μu_r)−2f(x)]/μ² ≈ u_rᵀ∇²ₓf u_r
      and ‖u_r‖² ≈ d_x: the largest observed curvature along a random unit direction (an average
      eigenvalue, so it *under*-estimates the largest one).
    * ``L_y0`` = median_t | ‖h_{t+1}‖ − ‖h_t‖ | / (η_y ‖h_t‖), h_t = ∇ᵧf_{B_t}(z_t): the observed
      variation of the y-gradient norm per unit of y-step length η_y‖h_t‖ (exact for SGD; it also
      contains the mini-batch noise between consecutive batches, so it *over*-estimates).
    * ``L_xy0`` = sqrt(L_x0 · L_y0) (not probed; the bound |H_xy| ≤ sqrt(‖H_xx‖‖H_yy‖) of a
      positive semi-definite Hessian); ``L_x1 = L_y1 = L_xy1 = 0`` (no gradient-dependent part fitted).
    """
    st = result["stationarity"]
    opt = result["config"]["optimizer"]
    n = int(result["sizes"]["steps_per_epoch"])
    d_x = int(st.get("zo_dim") or result["sizes"]["zo_params"] or 1)
    eta_x, eta_y = float(opt["lr_x"]), float(opt["lr_y"])
    losses = [l for _, l in result["train_loss_curve"]]
    epochs = st["epoch"][: len(losses)]
    e0 = [l for l, e in zip(losses, epochs) if e == epochs[0]] or losses[:1]
    delta = statistics.fmean(e0)
    fo = [float(v) for v in st.get("fo_grad_sq") or []]
    zo_ep = per_epoch(st["epoch"], st["zo_grad_sq_est"])[1] if st.get("zo_grad_sq_est") else [0.0]
    G = math.sqrt((max(fo) if fo else 0.0) + max(zo_ep))
    curv = [abs(float(c)) for c in st.get("zo_curvature") or []]
    Lx = (max(curv) / d_x) if curv else 0.0
    norms = [math.sqrt(v) for v in fo]
    var = [abs(b - a) / (eta_y * a) for a, b in zip(norms, norms[1:]) if a > 0]
    Ly = statistics.median(var) if var else 0.0
    return {"n": float(n), "d_x": float(d_x), "q": float(opt.get("q", 1)), "mu": float(st["mu"]),
            "eta_x": eta_x, "eta_y": eta_y, "Delta": float(delta), "G": float(G),
            "L_x0": float(Lx), "L_x1": 0.0, "L_y0": float(Ly), "L_y1": 0.0,
            "L_xy0": float(math.sqrt(Lx * Ly)), "L_xy1": 0.0}


def bound_curves(result: dict, T: Sequence[float] | None = None) -> dict[str, Any]:
    """B(T), B_x(T), B_y(T) and B(∞) of L6(A) at the estimated constants, on ``T`` (default 1..E)."""
    from hybridopt.theory.bound import evaluate_bound

    c = estimate_constants(result)
    if T is None:
        T = stationarity_curves(result).get("T") or [1]
    # LLM runs (Adam on the adapter, hand-picked η_x) need not satisfy (S): the formula's values are
    # drawn anyway and ``S`` says whether L6(A) applies at the estimated constants
    b = evaluate_bound(c, np.asarray(T, dtype=float), c["eta_x"], c["eta_y"], c["mu"], require_S=False)
    arr = lambda v: list(np.broadcast_to(np.asarray(v, dtype=float), (len(T),)))  # noqa: E731
    return {"T": list(T), "B": arr(b["B"]), "B_x": arr(b["B_x"]), "B_y": arr(b["B_y"]),
            "B_inf": float(b["B_inf"]), "calE": float(b["calE"]), "S": bool(b["S"]), "constants": c}


def bound_const(result: dict, name: str) -> float:
    """One estimated constant (see :func:`estimate_constants`)."""
    return estimate_constants(result)[name]


def stationarity_final(result: dict, block: str) -> float | None:
    """Running average of the block's proxy at the last epoch."""
    cur = stationarity_curves(result).get(block)
    return cur[-1] if cur else None


def bound_final(result: dict, block: str) -> float | None:
    """The block's bound B_x or B_y at the last epoch, with the estimated constants."""
    if not stationarity_curves(result).get(block):
        return None
    return bound_curves(result)[f"B_{block}"][-1]


def bound_holds_fraction(result: dict, block: str) -> float | None:
    """Fraction of epochs T at which the block's running average ≤ its estimated bound."""
    cur = stationarity_curves(result).get(block)
    if not cur:
        return None
    b = bound_curves(result)[f"B_{block}"]
    return float(np.mean([m <= bb for m, bb in zip(cur, b)]))


def epochs_run(result: dict) -> int:
    return len(stationarity_curves(result).get("T") or [])


#: the operations a report entry may name
OPS = {name: fn for name, fn in dict(globals()).items()
       if callable(fn) and not name.startswith("_") and fn.__module__ == __name__
       and name not in ("per_epoch", "running_average")}
