"""Figure: LLM hybrid runs against the theorem's fixed-step bound B(T) of L6(A).

For one hybrid run per task (the plain ``hybrid`` variant if present, else the first hybrid
variant; its first seed): the running averages over epochs T of the measured stationarity proxies —
‖∇ᵧf‖² (exact, PEFT block y) and the unbiased ZO estimate of ‖∇ₓf‖² (base block x) — with the
per-block bounds B_y(T), B_x(T) evaluated at constants *estimated along the run*
(:func:`paper_figures.derive.estimate_constants`), left in absolute values, right normalised by
their value at T = 1 (the shape).  Reads ``DIR/runs/*/hybrid/result.json`` only.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from matplotlib import ticker

from . import derive, style
from .results import cells, hybrids

NOTE = ("Constants ESTIMATED along this run, not certified: Δ from the first-epoch loss, G from observed "
        "gradient norms,\nL_x from ZO curvature probes / d_x, L_y from the step-to-step variation of ‖∇ᵧf‖, "
        "L_xy = √(L_x L_y). The bound is not a guarantee here.")


def hybrid_runs(out: Path) -> list:
    """One run per group: the plain hybrid's (else the first hybrid variant's) first seed, with
    stationarity records."""
    runs = []
    for variants in cells(out).values():
        hs = hybrids(variants)
        hs = [variants["hybrid"]] if "hybrid" in variants else hs
        if hs and hs[0].first.result.stationarity.fo_grad_sq:
            runs.append(hs[0].first)
    return runs


def draw(out: str | Path) -> list[Path]:
    out = Path(out)
    files: list[Path] = []
    for r in hybrid_runs(out):
        cur = derive.stationarity_curves(r.result)
        if not cur.get("T"):
            continue
        b = derive.bound_curves(r.result)
        T = np.asarray(cur["T"], dtype=float)
        c = b["constants"]
        fig, axes = style.subplots(1, 2, scale=1.1)
        ax, axn = axes[0]
        for blk, lab in (("y", "‖∇ᵧf‖² (PEFT block, exact)"), ("x", "‖∇ₓf‖² (base block, ZO estimate)")):
            if blk not in cur:
                continue
            col = style.BLOCK_COLORS[blk]
            meas = np.asarray(cur[blk])
            bnd = np.asarray(b[f"B_{blk}"])
            ax.plot(T, meas, "o-", color=col, ms=3, label=f"measured running avg. of {lab}")
            ax.plot(T, bnd, "--", color=col, lw=1.2, label=f"estimated bound B_{blk}(T)")
            axn.plot(T, meas / meas[0], "o-", color=col, ms=3, label=f"measured, {blk}-block")
            axn.plot(T, bnd / bnd[0], "--", color=col, lw=1.2, label=f"B_{blk}(T) / B_{blk}(1)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("epochs T (one epoch = %d steps)" % int(c["n"]))
        ax.set_ylabel("running average over epochs of ‖∇f‖² (nats²)")
        ax.set_title("absolute values (log–log)", fontsize=8)
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
        axn.set_xscale("log")
        axn.set_yscale("log")
        axn.set_xlabel("epochs T")
        axn.set_ylabel("value / value at T = 1")
        share = (4 * c["Delta"] / c["n"]) / (4 * c["Delta"] / c["n"] + 4 * b["calE"] / c["n"])
        axn.set_title("shape: each curve divided by its value at T = 1\nbound ∝ 4Δ/(nT) + 4E/n; the 1/T part is "
                      f"{share:.1e} of B(1) (the floor B(∞) dominates)", fontsize=8)
        axn.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
        for a in (ax, axn):
            if len(T) <= 12:
                a.set_xticks(T, [f"{int(t)}" for t in T])
                a.xaxis.set_minor_formatter(ticker.NullFormatter())
            else:
                a.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        fig.text(0.5, -0.2, NOTE, ha="center", va="top", fontsize=7, color="darkred")
        fig.suptitle(f"Hybrid on {style.task_label(r.group)} ({r.result.model}, {r.variant}, seed {r.seed}): stationarity vs the L6(A) bound "
                     f"(η_x={c['eta_x']:.0e}, η_y={c['eta_y']:.0e}, μ={c['mu']:.0e}, q={int(c['q'])}, "
                     f"d_x={int(c['d_x']):,})", fontsize=9, y=1.07)
        files += style.save(fig, out / "figures", f"bound_{r.group}")
    return files


if __name__ == "__main__":  # pragma: no cover
    print("\n".join(map(str, draw(sys.argv[1]))))
