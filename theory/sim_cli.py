"""``hybridopt simulate``: run the reshuffling-SGD simulator and draw P1–P4 (spec §6).

    hybridopt simulate [--quick | --certified] [--family A|B|C|D] [--parts scaling,certified,p2,p3] [--out DIR]
                       [--workers N] [--fresh]
    hybridopt simulate --out DIR (--plots-only | --markdown | --resummarize)     # from DIR/simulation.json
    hybridopt simulate --objective module:factory [--param k=v ...] [--law gaussian|rademacher|both]
                       [--points 4] [--seeds 3] [--eps-frac 0.5] [--q 1] [--p2-epochs 300] [--out DIR]

Resumable: each finished task is kept in ``DIR/tasks/`` (:class:`TaskCache`), so rerunning the same command
after an interruption runs only the tasks that had not finished (``--fresh`` runs them all again).

Writes ``DIR/simulation.json`` (everything the figures need) and ``DIR/P*.png|pdf``; figures
are drawn from the JSON only (``--plots-only`` redraws them from an existing file).  ``--objective`` checks the
theorem on your own objective (the protocol of ``theory/objective.py``; example:
``--objective hybridopt.theory.logistic:make``): certified points run to 2·T_req and fixed-step curves against
B(T).
"""
from __future__ import annotations

import argparse
import ast
import math
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

SCHEMA = "hybridopt.simulation/2"
#: item 2 of issue #15: a slope is reported as meeting the standard when fitted on >= 6 points spanning >= 8x
#: in eps whose smallest measured T is >= 50 epochs.
FIT_STANDARD = dict(points=6, span=8.0, min_epochs=50)


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def _estimated_cost(task: dict) -> float:
    """Relative cost for longest-first scheduling: epochs × n × (1 + 0.6 q) × (1 + R·d_x·1e-5)."""
    from hybridopt.theory import simulator as S

    inst = S.Instance(**task["instance"])
    _, _, _, const = S.build(inst)
    hold = float(task.get("hold_multiple") or S.HOLD_MULTIPLE)
    if task["kind"] == "p1c":
        T = hold * max(S.schedule(const, e, 1.0, inst.law)["T_req"] for e in task["eps"]) * (1 + 0.05 * len(task["eps"]))
    elif task["kind"] in ("p1", "p3"):
        T = S.schedule(const, task["eps"], task["s"], inst.law)["T_req"]
        T = hold * T if task.get("mode") == "certified" else min(T / 20, task.get("cap") or math.inf)
    else:
        T = task["T"]
    return T * const["n"] * (1 + 0.6 * inst.q) * (1 + inst.replicates * const["d_x"] * 1e-5)


class TaskCache:
    """Finished tasks of a sweep, one file each under ``DIR/tasks/``, so that a rerun with the same ``--out``
    continues where an interrupted one stopped (every task is deterministic given its dict: its seeds are in it).

    A file holds the task dict and its result, written atomically when the task finishes; it is used only for a
    task dict equal to the one stored (a changed plan reruns the changed tasks).  JSON keeps ±inf/NaN and floats
    exactly (``repr`` round-trip); numpy arrays come back as lists, which the summary reads as it reads a
    ``simulation.json`` (``--resummarize``)."""

    def __init__(self, directory: Path | None):
        self.dir = None if directory is None else Path(directory)

    @staticmethod
    def key(task: dict) -> str:
        import hashlib
        import json

        return hashlib.sha256(json.dumps(task, sort_keys=True, default=str).encode()).hexdigest()[:20]

    def _path(self, task: dict) -> Path:
        return self.dir / f"{task['kind']}-{self.key(task)}.json"

    def get(self, task: dict):
        import json

        if self.dir is None or not self._path(task).exists():
            return None
        try:
            d = json.loads(self._path(task).read_text())
        except (OSError, ValueError):     # unreadable: run the task again
            return None
        return d["result"] if d.get("task") == json.loads(json.dumps(task, default=str)) else None

    def put(self, task: dict, result) -> None:
        import json

        from hybridopt.io import atomic_write

        if self.dir is None:
            return

        def plain(o):
            if isinstance(o, np.ndarray):
                return o.tolist()
            if isinstance(o, np.generic):
                return o.item()
            raise TypeError(f"not JSON serialisable: {type(o).__name__}")

        with atomic_write(self._path(task)) as fh:
            json.dump(dict(task=task, result=result), fh, default=plain)


def run_tasks(tasks: list[dict], workers: int, progress: bool = True, cache: TaskCache | None = None) -> list[dict]:
    """Run every task (longest first) on ``workers`` processes; results in task order (a certified group
    contributes one record per ε).  With a :class:`TaskCache`, tasks already in it are not run again and each
    finished task is stored as soon as it ends."""
    from tqdm import tqdm

    from hybridopt.theory import simulator as S

    cache = cache or TaskCache(None)
    results: list = [cache.get(t) for t in tasks]
    order = sorted((i for i in range(len(tasks)) if results[i] is None), key=lambda i: -_estimated_cost(tasks[i]))
    if len(order) < len(tasks):
        print(f"hybridopt simulate: {len(tasks) - len(order)} of {len(tasks)} tasks already finished in {cache.dir}; "
              "continuing", file=sys.stderr)
    bar = tqdm(total=len(tasks), initial=len(tasks) - len(order), desc="simulate", unit="run",
               disable=not progress, file=sys.stderr)
    if workers <= 1 or len(order) <= 1:
        _worker_init()
        for i in order:
            results[i] = S.run_task(tasks[i])
            cache.put(tasks[i], results[i])
            bar.update(1)
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init) as ex:
            futs = {ex.submit(S.run_task, tasks[i]): i for i in order}
            for f in as_completed(futs):
                results[futs[f]] = f.result()
                cache.put(tasks[futs[f]], results[futs[f]])
                bar.update(1)
    bar.close()
    return [r for res in results for r in (res if isinstance(res, list) else [res])]


def _fit(eps: np.ndarray, T: np.ndarray) -> float:
    return float(np.polyfit(np.log(eps), np.log(T), 1)[0])


def granularity(eps: np.ndarray, T: np.ndarray) -> float:
    """The epoch-granularity effect on a fitted slope: the largest change of the LS slope when one point's T̂
    moves by ±1 epoch (T̂ is an integer: an interval narrower than this is not resolved by the measurement)."""
    base = _fit(eps, T)
    out = 0.0
    for j in range(len(T)):
        for d in (-1.0, 1.0):
            t = T.copy()
            t[j] = max(t[j] + d, 1.0)
            out = max(out, abs(_fit(eps, t) - base))
    return out


def _groups(runs: list[dict]) -> list[tuple]:
    return sorted({(r["family"], r["mode"], r["instance"], r.get("law", "gaussian")) for r in runs})


def slopes(runs: list[dict]) -> list[dict]:
    """Least-squares slope of log T̂ on log ε per (family, mode, instance, law), over non-censored points with
    ε ≤ ε₄ and ε ≤ G; 90% CI from the paired bootstrap over replicates (same resamples for every ε); the
    epoch-granularity effect (:func:`granularity`); the same for the min-metric (reported, never compared with −4).
    Certified groups with several seeds are fitted on seed 0."""
    out = []
    for fam, mode, inst, law in _groups(runs):
        pts = [r for r in runs if (r["family"], r["mode"], r["instance"], r.get("law", "gaussian")) == (fam, mode, inst, law)
               and r["in_fit_regime"] and not r["censored"] and r.get("run_seed", 0) == min(
                   x.get("run_seed", 0) for x in runs if x["instance"] == inst)]
        pts.sort(key=lambda r: -r["eps"])
        rec = dict(family=fam, mode=mode, instance=inst, law=law, n_points=len(pts),
                   eps_range=[min((r["eps"] for r in pts), default=None), max((r["eps"] for r in pts), default=None)])
        rec["eps_span"] = (rec["eps_range"][1] / rec["eps_range"][0]) if pts else None
        rec["min_epochs"] = min((r["epochs_mean_curve"] for r in pts), default=None)
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
            gr = granularity(e, T)
            rec[metric] = dict(slope=_fit(e, T), ci=ci, boot_ok_fraction=float(good.mean()), granularity=gr,
                               ci_narrower_than_granularity=bool(ci[0] is not None and (ci[1] - ci[0]) / 2 < gr))
        s = rec["epochs"]["slope"]
        rec["accept"] = bool(mode == "scaling" and s is not None and len(pts) >= 4 and rec["eps_span"] >= 4 * (1 - 1e-9)
                             and -4.4 <= s <= -3.6)
        rec["meets_fit_standard"] = bool(len(pts) >= FIT_STANDARD["points"] and rec["eps_span"] is not None
                                         and rec["eps_span"] >= FIT_STANDARD["span"] * (1 - 1e-9)
                                         and (rec["min_epochs"] or 0) >= FIT_STANDARD["min_epochs"])
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


def certified_summary(cert: list[dict]) -> dict:
    """The theorem as stated, over every certified run: the fraction whose max_{T_req ≤ T ≤ end} Ā_T ≤ ε²
    (``bound_holds_fraction``), per family and law, the failures, the window ratios max Ā/ε² and
    Ā(T_req)/ε², and the looseness T_req/T̂."""
    out = dict(runs=len(cert), holds=sum(bool(r["holds"]) for r in cert), failures=[])
    by = {}
    for r in cert:
        k = f"{r['family']}/{r.get('law', 'gaussian')}"
        b = by.setdefault(k, dict(runs=0, holds=0, holds_upper=0, points=set(), seeds=set(), max_ratio=0.0,
                                  max_ratio_at_T_req=0.0, looseness=[], instance=r["instance"]))
        b["runs"] += 1
        b["holds"] += bool(r["holds"])
        b["holds_upper"] += bool(r.get("holds_upper"))
        b["points"].add(round(r["eps"], 12))
        b["seeds"].add(r.get("run_seed", 0))
        w = r["window"] or {}
        b["max_ratio"] = max(b["max_ratio"], w.get("ratio") or 0.0)
        b["max_ratio_at_T_req"] = max(b["max_ratio_at_T_req"], w.get("A_at_T_req_ratio") or 0.0)
        b["window_multiple"] = min(b.get("window_multiple", math.inf), w.get("hold_multiple") or math.inf)
        if r["epochs_mean_curve"]:
            b["looseness"].append(r["epochs_bound"] / r["epochs_mean_curve"])
        if not r["holds"]:
            out["failures"].append(dict(family=r["family"], law=r.get("law"), eps=r["eps"], seed=r.get("run_seed"),
                                        ratio=w.get("ratio")))
    for b in by.values():
        b["points"], b["seeds"] = len(b["points"]), len(b["seeds"])
        b["looseness"] = float(np.median(b["looseness"])) if b["looseness"] else None
    out["by_family_law"] = by
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
            for law in sorted({r.get("law", "gaussian") for r in runs}):
                rr = [r for r in runs if r["family"] == fam and r["mode"] == mode and r.get("law", "gaussian") == law
                      and r["epochs_mean_curve"]]
                if rr:
                    c = consts[rr[0]["instance"]]
                    vals = [(r["epochs_ci"][1] or r["epochs_mean_curve"]) * r["eps"] ** 4 / c["Delta"] for r in rr]
                    d[mode if law == "gaussian" else f"{mode}/{law}"] = dict(
                        C_prime=float(max(vals)), C_theorem=float(rr[0]["C_Delta_over_eps4"] * rr[0]["eps"] ** 4 / c["Delta"]),
                        instance=rr[0]["instance"], s=rr[0]["s"], law=law)
        tight[fam] = d
    shares = {}
    for r in runs + p2:
        k = f"{r['instance']}/{r.get('law', 'gaussian')}"
        b = shares.setdefault(k, dict(x=[], x_at_start=None))
        b["x"].append(r["block_share"]["x"])
        b["x_at_start"] = r["block_share"]["x_at_start"]
    shares = {k: dict(x_mean=float(np.mean(v["x"])), x_min=float(np.min(v["x"])), x_max=float(np.max(v["x"])),
                      y_mean=float(1 - np.mean(v["x"])), x_at_start=v["x_at_start"], runs=len(v["x"]))
              for k, v in shares.items()}
    for r in runs:   # the bootstrap crossing epochs stay in the JSON (``--resummarize`` refits from them)
        for k in ("_boot", "_boot_min"):
            if k in r:
                r[k] = np.asarray(r[k]).tolist()
    cpu = float(sum(r.get("cpu_s", 0.0) for r in results))
    crit = max((r.get("cpu_s", 0.0) * r.get("batched", 1) for r in results), default=0.0)
    workers = max(1, int(getattr(args, "workers", 1) or 1))
    return dict(
        schema=SCHEMA, quick=bool(getattr(args, "quick", False)), certified_only=bool(getattr(args, "certified", False)),
        objective=getattr(args, "objective", None),
        parts=list(getattr(args, "parts", None) or []) or None,
        families=sorted({r["family"] for r in runs} | {r["family"] for r in p2}),
        runs=runs, slopes=sl, fit_standard=FIT_STANDARD,
        bound_holds_fraction=(float(np.mean(holds)) if holds else None),
        bound_holds_by_family={f: float(np.mean([bool(r["holds"]) for r in cert if r["family"] == f]))
                               for f in sorted({r["family"] for r in cert})},
        certified=certified_summary(cert) if cert else None,
        looseness=(float(np.median(loose_c)) if loose_c else None),
        looseness_scaling=(float(np.median(loose_s)) if loose_s else None),
        tight_constant=tight, block_share=shares,
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


def resummarize(path: Path) -> dict:
    """Recompute the summary of an existing ``simulation.json`` from its runs (nothing is run)."""
    import json
    import types

    from hybridopt.io import write_json

    d = json.loads(Path(path).read_text())
    results = d["runs"] + list(d.get("p2") or []) + list((d.get("p3") or {}).get("points") or [])
    args = types.SimpleNamespace(quick=d.get("quick"), certified=d.get("certified_only"), objective=d.get("objective"),
                                 parts=d.get("parts"),
                                 workers=d["timing"]["workers"], loadavg=d["timing"].get("loadavg"))
    new = summarize(results, [], d["constants"], args, d["timing"]["wall_s"], d["timing"]["epoch_s"])
    new["provenance"] = dict(d.get("provenance", {}), resummarized_at=_git_sha())
    write_json(Path(path), new)
    return new


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
    sch = S.schedule(const, const["grad0"] / 2, 1.0, inst.law)
    S.hybrid_run(F, x0, y0, sch["eta_x"], sch["eta_y"], sch["mu"], inst.q, inst.replicates, epochs=1, law=inst.law)
    t = time.perf_counter()
    S.hybrid_run(F, x0, y0, sch["eta_x"], sch["eta_y"], sch["mu"], inst.q, inst.replicates, epochs=reps, law=inst.law)
    return (time.perf_counter() - t) / reps


def instance_constants(tasks) -> dict[str, dict]:
    """Certified constants of every instance in ``tasks`` with the theorem's derived quantities (evaluated at
    ε = ‖∇f(z₀)‖/2, per law: the keys without suffix are the Gaussian L6, ``*_rademacher`` the R6 ones), keyed by
    instance."""
    from hybridopt.theory import simulator as S

    consts = {}
    for t in tasks:
        inst = S.Instance(**t["instance"])
        if inst.key() in consts:
            continue
        c = S.build(inst)[3]
        rec = dict(c)
        for law, sfx in (("gaussian", ""), ("rademacher", "_rademacher")):
            th = S.evaluate_theorem(c, c["grad0"] / 2, law=law)
            rec.update({k + sfx: float(th[k]) for k in ("C", "eps4", "kappa0", "kappa1", "kappa2", "L_X", "L_Y",
                                                        "ell_x", "c_w", "A_w", "B_w", "Vbar")})
        consts[inst.key()] = rec
    return consts


def _param(text: str) -> tuple[str, object]:
    k, sep, v = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--param expects k=v, got {text!r}")
    try:
        return k, ast.literal_eval(v)
    except (ValueError, SyntaxError):
        return k, v


#: the parts of a sweep (``--parts``), each a predicate on a task
PARTS = {"scaling": lambda t: t["kind"] == "p1" and t.get("mode") == "scaling",
         "certified": lambda t: t["kind"] in ("p1", "p1c") and t.get("mode") == "certified",
         "p2": lambda t: t["kind"] == "p2", "p3": lambda t: t["kind"] == "p3"}


def _parts(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise argparse.ArgumentTypeError(f"unknown part(s) {bad or text!r}; choose from {sorted(PARTS)}")
    return parts


def select_parts(tasks: list[dict], parts) -> list[dict]:
    """The tasks of a plan that belong to one of ``parts`` (keys of :data:`PARTS`); all of them if None."""
    if not parts:
        return list(tasks)
    return [t for t in tasks if any(PARTS[p](t) for p in parts)]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hybridopt simulate", description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("--quick", action="store_true", help="the short smoke sweep (fewer ε, smaller budgets)")
    p.add_argument("--certified", action="store_true",
                   help="only the certified-mode points (L6(B) step sizes literally, tiny instances)")
    p.add_argument("--family", choices=["A", "B", "C", "D"], action="append",
                   help="only this family (repeatable; default: all)")
    p.add_argument("--parts", type=_parts, default=None, metavar="PART[,PART]",
                   help="only these parts of the sweep: scaling (P1 slopes), certified (P1 certified windows), p2, p3 "
                        "(comma-separated; default: all)")
    p.add_argument("--objective", metavar="MODULE:FACTORY",
                   help="check the theorem on your own objective (theory/objective.py protocol)")
    p.add_argument("--param", type=_param, action="append", default=[], metavar="K=V",
                   help="keyword argument of the objective factory (repeatable; values are Python literals)")
    p.add_argument("--law", choices=["gaussian", "rademacher", "both"], default="gaussian",
                   help="--objective: direction law(s) of the ZO estimator (default gaussian)")
    p.add_argument("--data-seed", type=int, default=0, help="--objective: the factory's seed (default 0)")
    p.add_argument("--start-seed", type=int, default=0, help="--objective: the seed of start(seed) (default 0)")
    p.add_argument("--points", type=int, default=4, help="--objective: certified ε values (default 4)")
    p.add_argument("--seeds", type=int, default=3, help="--objective: independent run seeds per ε (default 3)")
    p.add_argument("--eps-frac", type=float, default=0.5, help="--objective: largest ε / ‖∇f(z₀)‖ (default 0.5)")
    p.add_argument("--q", type=int, default=1, help="--objective: directions per step (default 1)")
    p.add_argument("--replicates", type=int, default=32, help="--objective: replicates per run (default 32)")
    p.add_argument("--p2-epochs", type=int, default=300,
                   help="--objective: epochs of each fixed-step curve, 0 for none (default 300)")
    p.add_argument("--out", default="simulation", help="output directory (default: ./simulation)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    p.add_argument("--plots-only", action="store_true", help="redraw the figures from DIR/simulation.json")
    p.add_argument("--markdown", action="store_true",
                   help="print the result tables of DIR/simulation.json as Markdown (SIMULATOR.md's tables), run nothing")
    p.add_argument("--resummarize", action="store_true",
                   help="recompute the summary (slopes, certified windows, shares) of DIR/simulation.json from its "
                        "runs, without running anything, then redraw the figures")
    p.add_argument("--fresh", action="store_true",
                   help="run every task again (default: tasks finished by an earlier run into DIR/tasks/ are reused, "
                        "so an interrupted sweep continues)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out)
    from hybridopt.theory import sim_plots

    if args.plots_only or args.resummarize or args.markdown:
        path = out / "simulation.json"
        if not path.exists():
            print(f"hybridopt simulate: {path} does not exist; run the simulation first", file=sys.stderr)
            return 2
        if args.markdown:
            import json

            print(markdown(json.loads(path.read_text())))
            return 0
        if args.resummarize:
            resummarize(path)
        files = sim_plots.plot_all(path, out)
        print("\n".join(str(f) for f in files))
        return 0

    from hybridopt.io import write_json
    from hybridopt.theory import simulator as S

    t0 = time.perf_counter()
    load0 = os.getloadavg() if hasattr(os, "getloadavg") else None
    if args.objective:
        laws = ("gaussian", "rademacher") if args.law == "both" else (args.law,)
        try:
            tasks = S.objective_plan(args.objective, dict(args.param), points=args.points, seeds=args.seeds,
                                     eps_max_frac=args.eps_frac, laws=laws, q=args.q, replicates=args.replicates,
                                     p2_T=args.p2_epochs, data_seed=args.data_seed, start_seed=args.start_seed)
        except (ValueError, TypeError, KeyError, ImportError) as e:
            print(f"hybridopt simulate: {e}", file=sys.stderr)
            return 2
    else:
        tasks = S.plan("certified" if args.certified else "quick" if args.quick else "full", families=args.family)
        tasks = select_parts(tasks, args.parts)
    if not tasks:
        print("hybridopt simulate: nothing to run", file=sys.stderr)
        return 2
    cache = TaskCache(None if args.fresh else out / "tasks")
    results = run_tasks(tasks, args.workers, progress=not args.no_progress, cache=cache)
    wall = time.perf_counter() - t0
    if load0 is not None:
        args.loadavg = dict(start=list(load0), end=list(os.getloadavg()))
    consts = instance_constants(tasks)
    big = max({json_key(t["instance"]): t["instance"] for t in tasks}.values(),
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


def _fmt(v, f=".3g") -> str:
    return "n/a" if v is None else format(v, f)


def _table(head: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(map(str, r)) + " |" for r in rows]


def markdown(d: dict) -> str:
    """The result tables of a ``simulation.json`` in Markdown (slopes, certified windows, tight constants, P2, P3,
    timing): what SIMULATOR.md and the README quote, regenerated by ``hybridopt simulate --markdown --out DIR``."""
    out = []
    shares = d.get("block_share") or {}
    rows = []
    for s in d["slopes"]:
        e = s["epochs"]
        sh = shares.get(f"{s['instance']}/{s.get('law', 'gaussian')}", {})
        ci = "" if e.get("ci", [None])[0] is None else f" [{e['ci'][0]:.3f}, {e['ci'][1]:.3f}]"
        rows.append([s["family"], s.get("law", "gaussian"), s["mode"], s["n_points"], _fmt(s["eps_span"], ".2f") + "×",
                     s["min_epochs"], ("n/a" if e["slope"] is None else f"{e['slope']:.3f}") + ci,
                     _fmt(e.get("granularity"), ".3f"), _fmt(sh.get("x_mean"), ".3f"), s["accept"], s["meets_fit_standard"]])
    out += ["Slopes of log T̂ on log ε (90% paired bootstrap over replicates; ±1 epoch: the largest slope change when "
            "one T̂ moves by one epoch; x-share: mean share of Σ_t E‖∇f(z_t)‖² in the ZO block):", ""]
    out += _table(["family", "law", "mode", "points", "ε span", "min T̂", "slope [90% CI]", "±1 epoch", "x-share",
                   "accept (spec §6)", "issue-#15 standard"], rows)
    c = d.get("certified")
    if c:
        rows = []
        for k, b in c["by_family_law"].items():
            rr = [r for r in d["runs"] if r["mode"] == "certified" and f"{r['family']}/{r.get('law', 'gaussian')}" == k]
            g0 = d["constants"][rr[0]["instance"]]["grad0"]
            fr = sorted(r["eps"] / g0 for r in rr)
            tr = sorted(r["epochs_bound"] for r in rr)
            rows.append([k, b["points"], b["seeds"], f"{fr[0]:.3f}–{fr[-1]:.3f}", f"{tr[0]}–{tr[-1]}",
                         f"{b['holds']}/{b['runs']}", f"{b['max_ratio']:.3g}", f"{b['max_ratio_at_T_req']:.3g}",
                         _fmt(b["looseness"]), f"{b['window_multiple']:.2f}"])
        out += ["", f"Certified mode (the theorem as stated: max over T_req ≤ T ≤ end of the replicate-mean running "
                    f"average against ε²): {c['holds']}/{c['runs']} runs hold"
                    + ("" if not c["failures"] else f"; failures: {c['failures']}") + ".", ""]
        out += _table(["family/law", "ε values", "seeds", "ε / ‖∇f(z₀)‖", "T_req", "holds", "max Ā/ε² on the window",
                       "Ā(T_req)/ε²", "median T_req/T̂", "window ≥ × T_req"], rows)
    rows = [[f, m, f"{v['C_prime']:.3g}", f"{v['C_theorem']:.3g}", f"{v['C_theorem'] / v['C_prime']:.3g}", v["s"]]
            for f, dd in d["tight_constant"].items() for m, v in dd.items()]
    out += ["", "Empirically tight constant C′ = max over points of T̂_upper·ε⁴/Δ against the theorem's C "
                "(scaling rows: C is for s = 1):", ""]
    out += _table(["family", "mode/law", "C′", "C", "C/C′", "s"], rows)
    if d.get("p2"):
        out += ["", "P2 (fixed steps against B(T) of L6(A)/R6(A)):", ""]
        out += _table(["instance", "law", "configuration", "max Ā_T/B(T)", "x-share"],
                      [[r["instance"], r.get("law", "gaussian"), r["label"], f"{r['max_ratio']:.3g}",
                        f"{r['block_share']['x']:.3f}"] for r in d["p2"]])
    for f in (d.get("p3") or {}).get("fits", []):
        out.append(f"\nP3 {f['label']} at ε = {f['eps']:.3g}: slope {_fmt(f['slope'], '.2f')} (T_req "
                   f"{_fmt(f['slope_T_req'], '.2f')}; predicted {f['predicted']:+.0f}) on {f['n_points']} points.")
    tm = d["timing"]
    out.append(f"\nTiming: wall {tm['wall_s']:.0f} s on {tm['workers']} workers (load average {tm.get('loadavg')}); "
               f"task CPU {tm['task_cpu_s']:.0f} s, longest task {tm['longest_task_cpu_s']:.0f} s, idle-machine "
               f"estimate {tm['idle_estimate_s']:.0f} s; certified CPU {tm.get('certified_cpu_s', 0):.0f} s.")
    return "\n".join(out)


def report(d: dict) -> str:
    tm = d["timing"]
    lines = [f"wall {tm['wall_s']:.1f} s on {tm['workers']} worker(s) (load average {tm.get('loadavg')}); "
             f"ratio to one epoch: {tm['ratio_to_one_epoch']}; task CPU {tm.get('task_cpu_s', 0):.1f} s, "
             f"longest task {tm.get('longest_task_cpu_s', 0):.1f} s -> idle-machine estimate "
             f"{tm.get('idle_estimate_s', 0):.1f} s (+ start-up)"]
    for s in d["slopes"]:
        e = s["epochs"]
        sl = "n/a" if e["slope"] is None else (f"{e['slope']:.3f} [{_fmt(e['ci'][0], '.3f')}, {_fmt(e['ci'][1], '.3f')}]"
                                               f" (±1-epoch effect {e['granularity']:.3f})")
        lines.append(f"  {s['family']} {s['mode']:9s} {s.get('law', 'gaussian'):10s} {s['instance']}: slope {sl} on "
                     f"{s['n_points']} points, span {_fmt(s['eps_span'])}, min T {s['min_epochs']}, "
                     f"accept={s['accept']}, standard={s['meets_fit_standard']}")
    c = d.get("certified")
    if c:
        lines.append(f"  certified (max over [T_req, end] of the running average vs eps^2): {c['holds']}/{c['runs']} "
                     f"hold; failures: {c['failures'] or 'none'}")
        for k, b in c["by_family_law"].items():
            lines.append(f"    {k}: {b['holds']}/{b['runs']} ({b['points']} eps x {b['seeds']} seeds), max ratio "
                         f"{b['max_ratio']:.3g}, at T_req {b['max_ratio_at_T_req']:.3g}, looseness T_req/T "
                         f"{_fmt(b['looseness'])}, window >= {b['window_multiple']:.3g} T_req")
    for k, v in (d.get("block_share") or {}).items():
        lines.append(f"  share of sum_t E||grad f||^2 in the x-block, {k}: mean {v['x_mean']:.3f} "
                     f"[{v['x_min']:.3f}, {v['x_max']:.3f}], at z0 {_fmt(v['x_at_start'])}")
    for r in d.get("p2") or []:
        lines.append(f"  P2 {r['instance']} {r.get('law', 'gaussian')} {r['label']}: max A_T/B(T) = {r['max_ratio']:.3g}")
    for f in (d.get("p3") or {}).get("fits", []):
        lines.append(f"  P3 {f['label']} at eps={f['eps']:.3g}: slope {f['slope']} (T_req {f['slope_T_req']}; "
                     f"predicted {f['predicted']:+.0f}) on {f['n_points']} points")
    for f, v in d["tight_constant"].items():
        for m, c in v.items():
            lines.append(f"  {f} {m}: C' = {c['C_prime']:.3g} vs C = {c['C_theorem']:.3g} (s = {c['s']})")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
