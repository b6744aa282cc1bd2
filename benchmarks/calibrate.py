"""``hybridopt reproduce --scale S --calibrate``: measure, on this machine, the numbers a preset's ``estimate``
block holds, from one short probe run per (task, method) of the preset.

A probe is the preset's own run configuration (model, batch size, max length, the method's overrides; the first
variant and seed of each method) cut to :data:`STEPS` steps and :data:`N_EVAL` dev and test examples, run the way
``reproduce`` runs it (``hybridopt finetune --config`` in its own process).  From its ``result.json``:

* seconds per step: the median of ``step_seconds`` without the first step (warm-up: allocation, first sweep);
* seconds per evaluated example: ``timing.eval_seconds`` / (dev evaluations × dev size + test size);
* seconds per run of overhead: wall − training − evaluation (imports, model load, writing results).

The block printed (and written to ``DIR/estimate.json``) goes into the preset as it is; ``--dry-run`` then
prints the plan with it.  Per-step costs differ by task (prompt lengths) and method, not by a hybrid's ``lr_x``.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from hybridopt.io import write_json

#: probe length: the first step is dropped, the median of the other four is kept
STEPS = 5
#: dev and test examples of a probe's evaluations
N_EVAL = 32


def sig(x: float) -> float:
    """Three significant digits (a fast model's seconds per example must not round to 0)."""
    return float(f"{x:.3g}")


def probe_jobs(scale: dict[str, Any]) -> list:
    """One probe per (task, method) of the preset: its first job, cut to a few steps and examples."""
    from .pipeline import plan_runs

    seen, out = set(), []
    for j in plan_runs(scale):
        if (j.task, j.method) in seen:
            continue
        seen.add((j.task, j.method))
        over = dict(j.overrides, steps=STEPS, eval_every=STEPS, n_dev=N_EVAL, n_test=N_EVAL, checkpoint_every=0)
        out.append(replace(j, group=j.task, variant=j.method, overrides=over))
    return out


def _split_sizes(tasks) -> dict[str, dict[str, int]]:
    from .tasks import load_splits

    sizes = {}
    for t in tasks:
        sp = load_splits(t, None, {"train": None, "dev": None, "test": None})
        sizes[t] = {"dev": len(sp["dev"]), "test": len(sp["test"])}
    return sizes


def measure(result: dict[str, Any]) -> dict[str, float]:
    """Seconds per step, per evaluated example and of overhead, from one probe's ``result.json``."""
    steps = result["step_seconds"][1:] or result["step_seconds"]
    t = result["timing"]
    n_eval = len(result["dev_curve"]) * result["sizes"]["dev"] + result["sizes"]["test"]
    return {"seconds_per_step": statistics.median(steps), "seconds_per_eval_example": t["eval_seconds"] / n_eval,
            "overhead_s": max(0.0, t["wall_seconds"] - t["train_seconds"] - t["eval_seconds"])}


def calibrate(scale: dict[str, Any], work: Path, progress: bool = False) -> dict[str, Any]:
    """Run every probe into ``work`` and return the preset's ``estimate`` block measured from them."""
    import json
    import os
    import platform

    from .pipeline import _loadavg, run_one

    work = Path(work)
    per, spe, over = {}, {}, []
    load0, t0 = _loadavg(), time.time()
    jobs = probe_jobs(scale)
    for j in jobs:
        rc, _ = run_one(j, work, dict(scale, isolate_runs=True), progress)
        if rc != 0:
            raise RuntimeError(f"calibration probe {j.task}/{j.method} failed (exit {rc}); see {j.run_dir(work)}")
        m = measure(json.loads((j.run_dir(work) / "result.json").read_text()))
        per[f"{j.task}/{j.method}"] = sig(m["seconds_per_step"])
        spe.setdefault(j.task, []).append(m["seconds_per_eval_example"])
        over.append(m["overhead_s"])
    batch = sorted({j.overrides.get("batch_size") for j in jobs})
    return {
        "how": (f"hybridopt reproduce --scale {scale['name']} --calibrate: one probe per (task, method) of this preset "
                f"({STEPS} steps, {N_EVAL} dev and test examples, batch {', '.join(map(str, batch))}, each in its own "
                f"process, one after another) on {platform.machine()} with {os.cpu_count()} CPU threads, "
                f"{time.strftime('%Y-%m-%d')}, load average {load0} at the start, {time.time() - t0:.0f} s in all: "
                f"the median step without the first, evaluation seconds per evaluated example (the median over "
                f"the task's methods), wall minus training and evaluation per run (the median)"),
        "seconds_per_step": per,
        "seconds_per_eval_example": {t: sig(statistics.median(v)) for t, v in spe.items()},
        "split_sizes": _split_sizes(sorted({j.task for j in jobs})),
        "seconds_per_run_overhead": round(statistics.median(over)),
    }


def main(scale: dict[str, Any], out: Path, progress: bool) -> int:
    """``--calibrate``: probes into ``out``, the block to ``out/estimate.json`` and stdout, and the preset's total
    estimate under it."""
    import json
    import sys

    from .pipeline import _duration, estimate_seconds, plan_runs

    try:
        block = calibrate(scale, out, progress)
    except RuntimeError as e:
        print(f"hybridopt reproduce: error: {e}", file=sys.stderr)
        return 1
    write_json(out / "estimate.json", block)
    print(json.dumps(block, indent=2))
    new = dict(scale, estimate={**scale.get("estimate", {}), **block})
    runs = plan_runs(new)
    total = sum(estimate_seconds(j, new) for j in runs)
    print(f"reproduce: preset {scale['name']!r} with this estimate: {_duration(total)} for all "
          f"{len(runs)} runs (put the block into the preset's \"estimate\")", file=sys.stderr)
    return 0
