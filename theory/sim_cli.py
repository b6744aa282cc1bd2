"""``hybridopt simulate``: run the reshuffling-SGD simulator and draw P1–P4 (spec §6).

    hybridopt simulate [--quick | --certified] [--family A|B|C] [--out DIR] [--workers N] [--plots-only]

Writes ``DIR/simulation.json`` (everything the figures need) and ``DIR/P*.png|pdf``; figures
are drawn from the JSON only (``--plots-only`` redraws them from an existing file).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

SCHEMA = "hybridopt.simulation/1"


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def _estimated_cost(task: dict) -> float:
    """Relative cost for longest-first scheduling: T_req of the schedule × (R·d_x·q + overhead)."""
    from hybridopt.theory import simulator as S

    inst = S.Instance(**task["instance"])
    _, _, _, const = S.build(inst)
    if task["kind"] in ("p1", "p3"):
        T = S.schedule(const, task["eps"], task["s"])["T_req"]
        if task.get("cap"):
            T = min(T, task["cap"])
    else:
        T = task["T"]
    return T * const["n"] * (inst.replicates * const["d_x"] * inst.q * 1e-4 + 1.0)


def run_tasks(tasks: list[dict], workers: int, progress: bool = True) -> list[dict]:
    """Run every task (longest first) on ``workers`` processes; results in task order."""
    from tqdm import tqdm

    from hybridopt.theory import simulator as S

    order = sorted(range(len(tasks)), key=lambda i: -_estimated_cost(tasks[i]))
    results: list = [None] * len(tasks)
    bar = tqdm(total=len(tasks), desc="simulate", unit="run", disable=not progress, file=sys.stderr)
    if workers <= 1:
        _worker_init()
        for i in order:
            results[i] = S.run_task(tasks[i])
            bar.update(1)
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init) as ex:
            futs = {ex.submit(S.run_task, tasks[i]): i for i in order}
            for f in as_completed(futs):
                results[futs[f]] = f.result()
                bar.update(1)
    bar.close()
    return results


def _fit(eps: np.ndarray, T: np.ndarray) -> float:
    return float(np.polyfit(np.log(eps), np.log(T), 1)[0])


def slopes(runs: list[dict]) -> list[dict]:
    """Least-squares slope of log T̂ on log ε per (family, mode, instance), over non-censored
    points with ε ≤ ε₄ and ε ≤ G; 90% CI from the paired bootstrap (same resamples for every ε);
    the same for the min-metric (reported, never compared with −4)."""
    out = []
    keys = sorted({(r["family"], r["mode"], r["instance"]) for r in runs})
    for fam, mode, inst in keys:
        pts = [r for r in runs if (r["family"], r["mode"], r["instance"]) == (fam, mode, inst)
               and r["in_fit_regime"] and not r["censored"]]
        pts.sort(key=lambda r: -r["eps"])
        rec = dict(family=fam, mode=mode, instance=inst, n_points=len(pts),
                   eps_range=[min((r["eps"] for r in pts), default=None), max((r["eps"] for r in pts), default=None)])
        rec["eps_span"] = (rec["eps_range"][1] / rec["eps_range"][0]) if pts else None
        for metric, key, boot in (("epochs", "epochs_mean_curve", "_boot"), ("min_metric", "min_metric_epochs", "_boot_min")):
            ok = [r for r in pts if r[key] is not None]
            if len(ok) < 2:
                rec[metric] = dict(slope=None, ci=[None, None])
                continue
            e = np.array([r["eps"] for r in ok])
            T = np.array([r[key] for r in ok], dtype=float)
            B = np.stack([np.asarray(r[boot], dtype=float) for r in ok], 1)  # (N_BOOT, points)
            good = (B > 0).all(1)
            bs = [_fit(e, b) for b in B[good]]
            ci = [float(np.quantile(bs, 0.05)), float(np.quantile(bs, 0.95))] if bs else [None, None]
            rec[metric] = dict(slope=_fit(e, T), ci=ci, boot_ok_fraction=float(good.mean()))
        s = rec["epochs"]["slope"]
        rec["accept"] = bool(mode == "scaling" and s is not None and len(pts) >= 4 and rec["eps_span"] >= 4 * (1 - 1e-9)
                             and -4.4 <= s <= -3.6)
        out.append(rec)
    return out


def p3_fits(points: list[dict]) -> list[dict]:
    """Slope of log T̂ against log(d_x+2) (d_x sweep) or log q (q sweep), and the same for T_req
    (predicted +1 and −1 under η ∝ q/(d_x+2)); censored points are left out."""
    out = []
    for axis in sorted({p["axis"] for p in points}):
        pts = sorted([p for p in points if p["axis"] == axis], key=lambda p: (p["d_x"], p["q"]))
        ok = [p for p in pts if not p["censored"] and p["in_fit_regime"]]
        xv = lambda p: (p["d_x"] + 2) if axis == "d_x" else p["q"]  # noqa: E731
        rec = dict(axis=axis, label=pts[0]["sweep_label"], eps=pts[0]["eps"], s=pts[0]["s"], n_points=len(ok),
                   predicted=1.0 if axis == "d_x" else -1.0, slope=None, slope_T_req=None)
        if len(ok) >= 2:
            x = np.array([xv(p) for p in ok], float)
            rec["slope"] = _fit(x, np.array([p["epochs_mean_curve"] for p in ok], float))
            rec["slope_T_req"] = _fit(x, np.array([p["epochs_bound"] for p in ok], float))
            rec["x_range"] = [float(x.min()), float(x.max())]
        out.append(rec)
    return out


def summarize(results: list[dict], tasks: list[dict], consts: dict, args, wall: float, epoch_cost: dict) -> dict:
    runs = [r for r in results if "mode" in r and r.get("kind") != "p3"]
    p2 = [r for r in results if r.get("label") is not None and "mode" not in r]
    p3 = [r for r in results if r.get("kind") == "p3"]
    sl = slopes(runs)
    cert = [r for r in runs if r["mode"] == "certified"]
    holds = [bool(r["holds"]) for r in cert]
    loose_c = [r["epochs_bound"] / r["epochs_mean_curve"] for r in cert if r["epochs_mean_curve"]]
    loose_s = [r["epochs_bound"] / r["epochs_mean_curve"] for r in runs if r["mode"] == "scaling" and r["epochs_mean_curve"]]
    tight = {}
    for fam in sorted({r["family"] for r in runs}):
        d = {}
        for mode in ("certified", "scaling"):
            rr = [r for r in runs if r["family"] == fam and r["mode"] == mode and r["epochs_mean_curve"]]
            if rr:
                c = consts[rr[0]["instance"]]
                vals = [(r["epochs_ci"][1] or r["epochs_mean_curve"]) * r["eps"] ** 4 / c["Delta"] for r in rr]
                d[mode] = dict(C_prime=float(max(vals)), C_theorem=float(rr[0]["C_Delta_over_eps4"] * rr[0]["eps"] ** 4 / c["Delta"]),
                               instance=rr[0]["instance"], s=rr[0]["s"])
        tight[fam] = d
    for r in runs:
        r.pop("_boot", None)
        r.pop("_boot_min", None)
    cpu = float(sum(r.get("cpu_s", 0.0) for r in results))
    crit = max((r.get("cpu_s", 0.0) for r in results), default=0.0)
    workers = max(1, int(getattr(args, "workers", 1) or 1))
    return dict(
        schema=SCHEMA, quick=bool(getattr(args, "quick", False)), certified_only=bool(getattr(args, "certified", False)),
        families=sorted({r["family"] for r in runs}),
        runs=runs, slopes=sl,
        bound_holds_fraction=(float(np.mean(holds)) if holds else None),
        bound_holds_by_family={f: float(np.mean([bool(r["holds"]) for r in cert if r["family"] == f]))
                               for f in sorted({r["family"] for r in cert})},
        looseness=(float(np.median(loose_c)) if loose_c else None),
        looseness_scaling=(float(np.median(loose_s)) if loose_s else None),
        tight_constant=tight,
        constants=consts, p2=p2, p3=dict(points=p3, fits=p3_fits(p3)) if p3 else None,
        timing=dict(wall_s=wall, workers=workers, cpu_count=os.cpu_count(), epoch_s=epoch_cost,
                    ratio_to_one_epoch={k: wall / v for k, v in epoch_cost.items() if v > 0},
                    task_wall_s=float(sum(r.get("wall_s", 0.0) for r in results)),
                    # CPU seconds of the tasks (load-independent), and the wall time they imply on
                    # `workers` idle cores (list scheduling bound: max(total/workers, longest task))
                    task_cpu_s=cpu, longest_task_cpu_s=float(crit), idle_estimate_s=max(cpu / workers, crit),
                    loadavg=getattr(args, "loadavg", None), certified_cpu_s=float(sum(
                        r.get("cpu_s", 0.0) for r in runs if r["mode"] == "certified"))),
        provenance=dict(python=platform.python_version(), git=_git_sha(), argv=sys.argv[1:]),
    )


def _git_sha() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except Exception:  # pragma: no cover
        return None


def epoch_cost(inst_dict: dict, reps: int = 3) -> float:
    """Seconds of one HybridRR epoch (n steps + the exact measurement) on this instance."""
    import torch

    from hybridopt.theory import simulator as S

    torch.set_num_threads(1)
    inst = S.Instance(**inst_dict)
    F, x0, y0, const = S.build(inst)
    sch = S.schedule(const, const["grad0"] / 2, 1.0)
    S.hybrid_run(F, x0, y0, sch["eta_x"], sch["eta_y"], sch["mu"], inst.q, inst.replicates, epochs=1)
    t = time.perf_counter()
    S.hybrid_run(F, x0, y0, sch["eta_x"], sch["eta_y"], sch["mu"], inst.q, inst.replicates, epochs=reps)
    return (time.perf_counter() - t) / reps


def instance_constants(tasks) -> dict[str, dict]:
    """Certified constants of every instance in ``tasks`` with the theorem's derived quantities
    (evaluated at ε = ‖∇f(z₀)‖/2), keyed by instance."""
    from hybridopt.theory import simulator as S

    consts = {}
    for t in tasks:
        inst = S.Instance(**t["instance"])
        c = S.build(inst)[3]
        th = S.evaluate_theorem(c, c["grad0"] / 2)
        consts[inst.key()] = dict(c, **{k: float(th[k]) for k in ("C", "eps4", "kappa0", "kappa1", "kappa2",
                                                                  "L_X", "L_Y", "ell_x", "c_w", "A_w", "B_w")})
    return consts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hybridopt simulate", description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("--quick", action="store_true", help="the ≤ 60 s sweep (fewer ε, smaller instances)")
    p.add_argument("--certified", action="store_true",
                   help="only the certified-mode points (L6(B) step sizes literally, tiny instances)")
    p.add_argument("--family", choices=["A", "B", "C"], action="append",
                   help="only this family (repeatable; default: all)")
    p.add_argument("--out", default="simulation", help="output directory (default: ./simulation)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    p.add_argument("--plots-only", action="store_true", help="redraw the figures from DIR/simulation.json")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    from hybridopt.theory import sim_plots

    if args.plots_only:
        path = out / "simulation.json"
        if not path.exists():
            print(f"hybridopt simulate: {path} does not exist; run without --plots-only first", file=sys.stderr)
            return 2
        files = sim_plots.plot_all(path, out)
        print("\n".join(str(f) for f in files))
        return 0

    from hybridopt.io import write_json
    from hybridopt.theory import simulator as S

    t0 = time.perf_counter()
    load0 = os.getloadavg() if hasattr(os, "getloadavg") else None
    tasks = S.plan("certified" if args.certified else "quick" if args.quick else "full", families=args.family)
    if not tasks:
        print("hybridopt simulate: nothing to run", file=sys.stderr)
        return 2
    results = run_tasks(tasks, args.workers, progress=not args.no_progress)
    wall = time.perf_counter() - t0
    if load0 is not None:
        args.loadavg = dict(start=list(load0), end=list(os.getloadavg()))
    consts = instance_constants(tasks)
    big = max({json_key(t["instance"]): t["instance"] for t in tasks if t["kind"] in ("p1", "p3")}.values(),
              key=lambda i: S.Instance(**i).replicates * S.build(S.Instance(**i))[3]["d_x"])
    ec = {S.Instance(**big).key(): epoch_cost(big)}
    data = summarize(results, tasks, consts, args, wall, ec)
    write_json(out / "simulation.json", data)
    files = sim_plots.plot_all(out / "simulation.json", out)
    print(report(data))
    print("wrote", out / "simulation.json", "and", len(files), "figure files")
    return 0


def json_key(d: dict) -> str:
    import json

    return json.dumps(d, sort_keys=True)


def report(d: dict) -> str:
    tm = d["timing"]
    lines = [f"wall {tm['wall_s']:.1f} s on {tm['workers']} worker(s) (load average {tm.get('loadavg')}); "
             f"ratio to one epoch: {tm['ratio_to_one_epoch']}; task CPU {tm.get('task_cpu_s', 0):.1f} s, "
             f"longest task {tm.get('longest_task_cpu_s', 0):.1f} s -> idle-machine estimate "
             f"{tm.get('idle_estimate_s', 0):.1f} s (+ start-up)"]
    for s in d["slopes"]:
        e = s["epochs"]
        sl = "n/a" if e["slope"] is None else f"{e['slope']:.2f} [{e['ci'][0]}, {e['ci'][1]}]"
        lines.append(f"  {s['family']} {s['mode']:9s} {s['instance']}: slope {sl} on {s['n_points']} points, "
                     f"span {s['eps_span']}, accept={s['accept']}")
    lines.append(f"  certified bound holds: {d['bound_holds_fraction']} {d['bound_holds_by_family']}; "
                 f"looseness (median T_req/T̂): {d['looseness']}")
    for f in (d.get("p3") or {}).get("fits", []):
        lines.append(f"  P3 {f['label']} at eps={f['eps']:.3g}: slope {f['slope']} (T_req {f['slope_T_req']}; "
                     f"predicted {f['predicted']:+.0f}) on {f['n_points']} points")
    for f, v in d["tight_constant"].items():
        for m, c in v.items():
            lines.append(f"  {f} {m}: C' = {c['C_prime']:.3g} vs C = {c['C_theorem']:.3g} (s = {c['s']})")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
