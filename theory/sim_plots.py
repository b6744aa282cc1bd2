"""Figures P1–P4 of spec §6, drawn from ``simulation.json`` only (never re-runs anything).

    python -m hybridopt.theory.sim_plots DIR/simulation.json [OUTDIR]
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hybridopt.io import save_with  # noqa: E402
from hybridopt.theory.bound import T_req_for, evaluate_theorem  # noqa: E402

MODE_STYLE = {"certified": dict(marker="s", color="tab:green"), "scaling": dict(marker="o", color="tab:blue")}


def _treq(c: dict, eps: np.ndarray, s: float, law: str) -> np.ndarray:
    """T_req of the schedule s·η(ε) that was run (the theorem's when s = 1), from ``theory.bound``."""
    th = evaluate_theorem(c, eps, law=law)
    return np.asarray(T_req_for(c, s * th["eta"], eps), float)


def _breakpoints(c: dict, law: str) -> list[tuple[float, str]]:
    th = evaluate_theorem(c, 1.0, law=law)
    k0, k1, k2 = th["kappa0"], th["kappa1"], th["kappa2"]
    e23 = k0 / k1  # κ₀ = κ₁ε
    e34 = k1 / k2  # κ₁ε = κ₂ε²
    if e34 < e23:  # three regimes: −4 below e34, −3 between, −2 above e23
        return [(e34, "−4|−3"), (e23, "−3|−2")]
    return [(math.sqrt(k0 / k2), "−4|−2")]  # κ₁ε is never the min: ε₄ = √(κ₀/κ₂)


def _save(fig, out: Path, stem: str) -> list[Path]:
    files = []
    for ext in ("png", "pdf"):
        path = out / f"{stem}.{ext}"
        save_with(path, lambda fh, e=ext: fig.savefig(fh, format=e, dpi=130, bbox_inches="tight"))
        files.append(path)
    plt.close(fig)
    return files


def _fit_line(pts: list[dict], key: str):
    ok = [r for r in pts if r[key] is not None]
    if len(ok) < 2:
        return None
    e = np.array([r["eps"] for r in ok])
    T = np.array([r[key] for r in ok], float)
    a, b = np.polyfit(np.log(e), np.log(T), 1)
    return e, a, b


def _law(r: dict) -> str:
    return r.get("law", "gaussian")


def _p1_panel(ax, runs, slopes, consts, mode, metric, law="gaussian"):
    key = "epochs_mean_curve" if metric == "epochs" else "min_metric_epochs"
    ci_key = "epochs_ci" if metric == "epochs" else "min_metric_ci"
    rr = [r for r in runs if r["mode"] == mode and _law(r) == law and r.get("run_seed", 0) == 0]
    if not rr:
        ax.text(0.5, 0.5, f"{mode} mode not run in this sweep", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    insts = sorted({r["instance"] for r in rr})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, inst in enumerate(insts):
        col = colors[j % len(colors)]
        pts = sorted([r for r in rr if r["instance"] == inst], key=lambda r: r["eps"])
        c = consts[inst]
        s = pts[0]["s"]
        e = np.array([r["eps"] for r in pts])
        for r in pts:
            y = r[key]
            fit = r["in_fit_regime"] and not r["censored"]
            mk = "o" if fit else "^"
            if y is None:
                ax.plot(r["eps"], r["cap"], "x", color=col, ms=8)
                continue
            lo, hi = r[ci_key]
            yerr = [[y - (lo if lo is not None else y)], [(hi if hi is not None else y) - y]]
            ax.errorbar(r["eps"], y, yerr=yerr, fmt=mk, color=col, mfc=col if fit else "none", capsize=3, ms=5)
        if metric == "epochs":
            lo_e = e.min() / 1.6
            hi_e = e.max() * 1.6
            bps = [b for b in _breakpoints(c, law) if b[0] < 30 * e.max()]
            if bps:
                hi_e = max(hi_e, 1.6 * max(b[0] for b in bps))
            grid = np.geomspace(lo_e, hi_e, 300)
            lab = "T_req(ε)" if mode == "certified" else f"T_req(ε) with s·η (s={s:g}; not a guarantee)"
            ax.plot(grid, _treq(c, grid, s, law), "-", color=col, lw=1.2, alpha=0.8, label=f"{lab}\n[{_short(inst)}]")  # two lines: side-by-side legends overlapped
            for bp, name in bps:
                ax.axvline(bp, color=col, ls=":", lw=0.8)
                ax.text(bp, _treq(c, np.array([bp]), s, law)[0], f" {name}", color=col, fontsize=7, va="bottom")
            if mode == "certified":
                Cc = evaluate_theorem(c, 1.0, law=law)["C"]
                ax.plot(grid, Cc * c["Delta"] / grid ** 4, "--", color="gray", lw=1,
                        label=f"C·Δ/ε⁴ (C={Cc:.3g})")
        fitpts = [r for r in pts if r["in_fit_regime"] and not r["censored"]]
        fl = _fit_line(fitpts, key)
        sl = next((x for x in slopes if x["instance"] == inst and x["mode"] == mode
                   and x.get("law", "gaussian") == law), None)
        if fl is not None and sl is not None:
            ef, a, b = fl
            g = np.geomspace(ef.min(), ef.max(), 50)
            info = sl["epochs" if metric == "epochs" else "min_metric"]
            ci = info["ci"]
            cis = "" if ci[0] is None else f" [{ci[0]:.2f}, {ci[1]:.2f}]"
            ax.plot(g, np.exp(b) * g ** a, "-", color=col, lw=2.5, alpha=0.45,
                    label=f"LS fit: slope {info['slope']:.2f}{cis} (90% CI)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    # minor labels at 2 and 5 only (matplotlib's default labels every minor tick: they overlapped)
    ax.xaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2.0, 5.0)))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("target ε  (stop when mean running average of ‖∇f‖² ≤ ε²)" if metric == "epochs"
                  else "target ε  (stop when min_t E‖∇f(z_t)‖² ≤ ε²)")
    ax.set_ylabel("epochs to ε, T̂(ε)")
    ax.grid(True, which="both", alpha=0.25)
    # below the axes: inside, the legend covered the large-T̂ points at small ε
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)


def _short(inst: str) -> str:
    return inst if len(inst) < 60 else inst[:57] + "…"


def _stem(fam: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in fam)


def plot_p1(data: dict, out: Path) -> list[Path]:
    """P1 per family: one panel per (mode, law) run — certified first — and the min-metric of the first."""
    files = []
    for fam in sorted({r["family"] for r in data["runs"]}):
        runs = [r for r in data["runs"] if r["family"] == fam]
        panels = [(m, law) for m in ("certified", "scaling") for law in ("gaussian", "rademacher")
                  if any(r["mode"] == m and _law(r) == law for r in runs)]
        fig, axes = plt.subplots(1, len(panels) + 1, figsize=(6.2 * (len(panels) + 1), 6.2), squeeze=False)
        for ax, (mode, law) in zip(axes[0], panels):
            _p1_panel(ax, runs, data["slopes"], data["constants"], mode, "epochs", law)
            th = "L6(B)" if law == "gaussian" else "R6(B)"
            ax.set_title(f"Family {fam}, {mode} mode, {law} directions"
                         + (f": η = s·η(ε) of {th}" if mode == "scaling" else f": {th} step sizes literally"), fontsize=9)
        ax = axes[0][-1]
        mode, law = next((p for p in panels if p[0] == "scaling"), panels[0])
        _p1_panel(ax, runs, data["slopes"], data["constants"], mode, "min", law)
        ax.set_title(f"min-metric, {mode}/{law} (bounded by L6, slope not predicted)", fontsize=9)
        fig.suptitle(f"P1 — epochs-to-ε vs ε, Family {fam}  (filled: fitted, ε ≤ ε₄; open △: above ε₄, not "
                     f"fitted; ×: censored at cap; bars: 90% bootstrap CI over replicates; certified: seed 0)",
                     fontsize=9)
        files += _save(fig, out, f"P1_family{_stem(fam)}")
    return files


def plot_p2(data: dict, out: Path) -> list[Path]:
    p2 = data.get("p2") or []
    if not p2:
        return []
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, r in enumerate(p2):
        col = colors[j % len(colors)]
        T = np.asarray(r["T"])
        for ax, a, b, name in ((axes[0], "A", "B", "‖∇f‖²"), (axes[1], "A_x", "B_x", "‖∇ₓf‖²"),
                               (axes[2], "A_y", "B_y", "‖∇ᵧf‖²")):
            ax.plot(T, r[a], "-", color=col, label=f"measured, {r['label']} (q={r['q']})")
            ax.plot(T, r[b], "--", color=col, lw=1, label="bound" if j == 0 else None)
            if a == "A":
                ax.axhline(r["B_inf"], color=col, ls=":", lw=0.8, label="floor B(∞)" if j == 0 else None)
            ax.set_title(f"running average of {name} vs T", fontsize=9)
    for ax, lab in zip(axes, ("(1/T)Σ E‖∇f(z_t)‖²  vs  B(T)", "(1/T)Σ E‖∇ₓf‖²  vs  (4Δ/(nT)+4·calE/n)/ηₓ",
                              "(1/T)Σ E‖∇ᵧf‖²  vs  (4Δ/(nT)+4·calE/n)/η_y")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("epochs T")
        ax.set_ylabel(lab, fontsize=8)
        ax.grid(True, which="both", alpha=0.25)
    axes[0].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    inst = p2[0]["instance"]
    fig.suptitle(f"P2 — fixed step sizes against L6(A), {inst} (solid: measured, dashed: bound, dotted: floor)", fontsize=9)
    return _save(fig, out, "P2_fixed_steps")


def plot_p4(data: dict, out: Path) -> list[Path]:
    fams = sorted({r["family"] for r in data["runs"]})
    if not fams:
        return []
    fig, axes = plt.subplots(2, len(fams), figsize=(5.5 * len(fams), 6.5), squeeze=False)
    for j, fam in enumerate(fams):
        runs = [r for r in data["runs"] if r["family"] == fam and r["monitor"]["epoch"]]
        if not runs:
            continue
        r = max(runs, key=lambda r: r["epochs_run"])  # the longest run of the family
        m = r["monitor"]
        t = np.asarray(m["epoch"]) + 1
        ax = axes[0][j]
        if m.get("has_gbar", True):
            ax.plot(t, m["gbar_max"], "-", lw=2.5 if fam == "A" else 1.5,
                    label="max over k, replicates of Ḡ(y_{t,k})" + ("  (Ḡ_A ≡ G: global bound, on the line)"
                                                                      if fam == "A" else ""))
        else:
            ax.text(0.5, 0.5, "no monitor Ḡ supplied by the objective", ha="center", va="center",
                    transform=ax.transAxes, fontsize=8)
        ax.axhline(m["G"], color="red", ls="--", label=f"G = {m['G']:.3g}")
        ax.set_xscale("log")
        ax.set_xlabel("epoch t")
        ax.set_ylabel("A3 monitor")
        ax.set_title(f"Family {fam}: {r['mode']}, ε={r['eps']:.3g} ({'ok' if m['ok'] else 'VIOLATED'})", fontsize=9)
        ax.legend(fontsize=7, loc="lower center" if fam == "A" else "center right")
        ax.grid(True, which="both", alpha=0.25)
        ax = axes[1][j]
        if m.get("has_domain", fam in ("B", "C", "D")):
            lab = {"B": "max ‖y_{t,k}‖∞ / R_B", "C": "max ‖y_{t,k}‖ / R_C", "D": "max ‖y_{t,k}‖∞ / R_D"}.get(
                fam, "max position of y_{t,k} in the invariant set")
            ax.plot(t, m["dom_max"], "-", label=lab)
            ax.axhline(1.0, color="red", ls="--", label="boundary of the invariant set")
            ax.set_xscale("log")
            ax.set_ylim(0, 1.1)
            ax.set_xlabel("epoch t")
            ax.set_ylabel("position in the invariant set")
            ax.legend(fontsize=7)
            ax.grid(True, which="both", alpha=0.25)
        else:
            ax.text(0.5, 0.5, f"{fam}: Y = R^{{d_y}} (no invariant set to monitor)", ha="center", va="center",
                    transform=ax.transAxes, fontsize=8)
            ax.set_axis_off()
    fig.suptitle("P4 — assumption monitor along the longest run of each family (a crossing voids the theorem)",
                 fontsize=9)
    return _save(fig, out, "P4_monitor")


def plot_p3(data: dict, out: Path) -> list[Path]:
    """P3: T̂ at one ε against d_x+2 and against q (log–log), T_req of the schedule run overlaid,
    fitted slopes against the predicted +1 / −1 (η ∝ q/(d_x+2) through the κ₂ branch)."""
    p3 = data.get("p3") or {}
    pts = p3.get("points") or []
    if not pts:
        return []
    axes_order = [a for a in ("d_x", "q") if any(p["axis"] == a for p in pts)]
    fig, axes = plt.subplots(1, len(axes_order), figsize=(6.2 * len(axes_order), 5.6), squeeze=False)
    for ax, axis in zip(axes[0], axes_order):
        pp = sorted([p for p in pts if p["axis"] == axis], key=lambda p: (p["d_x"], p["q"]))
        x = np.array([(p["d_x"] + 2) if axis == "d_x" else p["q"] for p in pp], float)
        fit = next((f for f in p3.get("fits", []) if f["axis"] == axis), {})
        for xi, p in zip(x, pp):
            if p["epochs_mean_curve"] is None:
                ax.plot(xi, p["cap"], "x", color="tab:red", ms=8)
                continue
            lo, hi = p["epochs_ci"]
            y = p["epochs_mean_curve"]
            ax.errorbar(xi, y, yerr=[[y - (lo or y)], [(hi or y) - y]], fmt="o", color="tab:blue", capsize=3,
                        mfc="tab:blue" if p["in_fit_regime"] else "none")
        ok = [(xi, p["epochs_mean_curve"]) for xi, p in zip(x, pp) if p["epochs_mean_curve"] is not None]
        if fit.get("slope") is not None and len(ok) >= 2:
            xs, ys = np.array(ok, float).T
            a, b = np.polyfit(np.log(xs), np.log(ys), 1)
            g = np.geomspace(xs.min(), xs.max(), 50)
            ax.plot(g, np.exp(b) * g ** a, "-", color="tab:blue", lw=2.5, alpha=0.4,
                    label=f"measured T̂: LS slope {fit['slope']:.2f} (predicted {fit['predicted']:+.0f})")
        ax.plot(x, [p["epochs_bound"] for p in pp], "s--", color="tab:green", ms=4,
                label=f"T_req with s·η (s={pp[0]['s']:g}; slope {fit.get('slope_T_req') or float('nan'):.2f})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.set_xlabel("d_x + 2  (Family A, P_i ∝ 1/√d_x)" if axis == "d_x" else "q  (directions per step)")
        ax.set_ylabel("epochs to ε, T̂")
        ax.set_title(f"{fit.get('label', axis)}, ε = {pp[0]['eps']:.3g}, "
                     f"η = s·κ₂ε² ∝ q/(d_x+2)", fontsize=9)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    fig.suptitle("P3 — dimension and query scaling at fixed ε in the ε⁻⁴ regime "
                 "(filled: κ₂ branch active; ×: censored; bars: 90% bootstrap CI)", fontsize=9)
    return _save(fig, out, "P3_dimension_q")


def plot_all(path, out=None) -> list[Path]:
    """Draw every figure from ``simulation.json`` into ``out`` (default: next to the file)."""
    path = Path(path)
    data = json.loads(path.read_text())
    out = Path(out) if out is not None else path.parent
    out.mkdir(parents=True, exist_ok=True)
    return plot_p1(data, out) + plot_p2(data, out) + plot_p3(data, out) + plot_p4(data, out)


if __name__ == "__main__":  # pragma: no cover
    print("\n".join(str(f) for f in plot_all(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)))
