"""The prepared GPU check run by ``benchmarks/perf/gpu.sh`` (no network, no pretrained weights).

For each paper shape, randomly initialised in bf16 (OPT-1.3B: hidden 2048, 24 layers, 32 heads,
FFN 8192, vocab 50272; LLaMA-7B: hidden 4096, 32 layers, 32 heads, FFN 11008, vocab 32000):

1. the bf16 exact-restore check: after a paired and two separate probes of the core, every ZO
   tensor is bit-identical (``torch.equal``); MeZO's in-place +eps/-2eps/+eps is measured on the
   same weights (how many elements do not come back); two folded core steps then hold exactly the
   weights of their ZO log replayed on the initial ones;
2. the benchmark of :mod:`benchmarks.perf.bench` (five methods + MeZO reference, interleaved
   medians, ``torch.cuda.max_memory_allocated``), batch 16 x 64 tokens, Gaussian directions;
3. budget permitting, the same benchmark timing-only with Rademacher directions
   (``--fast-directions``), after both shapes' main phases.

Everything is written under ``--out`` as it finishes (``summary.json`` is rewritten after each
phase), so a run cut by the time limit keeps its completed parts.  ``--budget`` (seconds) skips
phases that would not fit.  ``--shrink`` builds the same architectures at a small size (CPU test),
with a small chunk limit so that the chunked probes and updates the full shapes take (embeddings,
FFN matrices) are exercised too.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from hybridopt.io import write_json, write_text
from hybridopt.sweep import CHUNK_ELEMENTS

from .bench import BenchConfig, build_workload, markdown, run_bench

SHAPE_ORDER = ("opt-1.3b", "llama-7b")


@torch.no_grad()
def exact_restore_check(cfg: BenchConfig) -> dict[str, Any]:
    """Core probes vs MeZO's in-place perturbation, on the zo-full block of a fresh model; then two
    folded core steps, whose weights must equal the ZO log replayed on the initial ones, bit for bit."""
    import hybridopt as ho

    from .mezo_reference import MeZOReference, named_subset

    wl = build_workload(cfg)
    zo, fo = ho.split_blocks("zo-full", wl.base, wl.adapter)
    prob = ho.ModuleProblem(wl.model, wl.loss_fn, zo, fo, n=wl.n)
    ctx = ho.SweepContext(chunk_elements=cfg.chunk_elements or ho.sweep.CHUNK_ELEMENTS)
    hc = ho.HybridConfig(lr_x=1e-3, mu=cfg.mu, seed=cfg.seed)   # large enough to move bf16 weights
    opt = ho.HybridOptimizer(prob, hc, context=ctx)
    snap = [p.detach().clone() for p in zo]
    dirs = opt.directions(10 ** 6)
    losses = [float(v) for v in prob.pair_loss(wl.batch, ho.Pair(dirs, 0, cfg.mu))]           # paired
    losses += [float(prob.loss(wl.batch, ho.Perturbation(dirs, 0, s * cfg.mu))) for s in (1, -1)]  # separate
    core_bad = sum(int(not torch.equal(a, b)) for a, b in zip(snap, zo))
    mezo = MeZOReference(wl.model, wl.loss_fn, named_subset(wl.model, zo), eps=cfg.mu, seed=cfg.seed)
    mezo.zo_random_seed = 12345
    for s in (1, -2, 1):
        mezo.perturb_parameters(s)
    mezo_bad_tensors = sum(int(not torch.equal(a, b)) for a, b in zip(snap, zo))
    mezo_bad_elems = sum(int((a != b).sum()) for a, b in zip(snap, zo))
    max_abs = max(float((a.float() - b.float()).abs().max()) for a, b in zip(snap, zo))
    for p, v in zip(zo, snap):          # back to the snapshot (MeZO's passes replaced .data)
        p.data = v.clone()
    prob = ho.ModuleProblem(wl.model, wl.loss_fn, zo, fo, n=wl.n)
    opt = ho.HybridOptimizer(prob, hc, context=ctx)
    for _ in range(2):
        opt.step(wl.batch)
    opt.flush()
    replay = [v.clone() for v in snap]
    ho.replay_zo_log(replay, opt.zo_log, hc)
    fold_exact = all(torch.equal(a, b) for a, b in zip(replay, zo))
    moved = sum(int((a != b).sum()) for a, b in zip(snap, zo))
    numel = sum(p.numel() for p in zo)
    out = {"model": cfg.model, "dtype": cfg.dtype, "device": cfg.device, "mu": cfg.mu, "zo_tensors": len(zo),
           "zo_elements": numel, "probe_losses_paired_then_separate": losses,
           "core_tensors_changed_by_probes": core_bad, "core_exact": core_bad == 0,
           "folded_steps_equal_replay": fold_exact, "elements_moved_by_two_steps": moved,
           "mezo_tensors_changed_by_plus_minus_plus": mezo_bad_tensors,
           "mezo_elements_changed": mezo_bad_elems, "mezo_fraction_changed": mezo_bad_elems / numel,
           "mezo_max_abs_drift": max_abs}
    opt.close()
    del wl, prob, opt, snap, zo, fo, mezo, replay
    gc.collect()
    if cfg.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


#: chunk limit of --shrink runs (the small shapes' embeddings and FFN matrices exceed it)
SHRUNK_CHUNK_ELEMENTS = 4096


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hybridopt.benchmarks.perf.gpu_check")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--shrink", action="store_true", help="small shapes (CPU test of the script)")
    p.add_argument("--budget", type=float, default=440.0, help="seconds for the whole check")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--shapes", default=",".join(SHAPE_ORDER))
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--fast-directions", default="rademacher",
                   help="after every shape's main (Gaussian) bench, a timing-only bench with these ZO "
                        "directions (comma-separated; '' for none), budget permitting")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    out = Path(a.out)
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    # the full shapes' big matrices are chunked: with --shrink, make the small ones chunked as well
    chunk = SHRUNK_CHUNK_ELEMENTS if a.shrink else None
    summary: dict[str, Any] = {"device": device, "shrink": a.shrink, "torch": torch.__version__,
                               "chunk_elements": chunk or CHUNK_ELEMENTS,
                               "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
                               "budget_s": a.budget, "phases": {}}

    def left() -> float:
        return a.budget - (time.perf_counter() - t0)

    def phase(name: str, est_s: float, fn):
        if left() < est_s:
            summary["phases"][name] = {"skipped": f"needs ~{est_s:.0f} s, {left():.0f} s left"}
        else:
            t = time.perf_counter()
            try:
                res = fn()
                summary["phases"][name] = {"ok": True, "seconds": time.perf_counter() - t, **res}
            except Exception as e:  # noqa: BLE001 - recorded, the next phase still runs
                summary["phases"][name] = {"ok": False, "error": f"{type(e).__name__}: {e}",
                                           "traceback": traceback.format_exc()[-4000:]}
            if device.startswith("cuda"):
                gc.collect()
                torch.cuda.empty_cache()
        summary["elapsed_s"] = time.perf_counter() - t0
        write_json(out / "summary.json", summary)
        print(f"[gpu_check] {name}: {summary['phases'][name].get('ok', 'skipped')} "
              f"({summary['elapsed_s']:.0f} s elapsed)", flush=True)

    shapes = [s for s in a.shapes.split(",") if s]
    # Rough costs on an H200 (startup excluded): restore ~10-30 s, bench 40-120 s per shape.
    est = {"opt-1.3b": (20, 60), "llama-7b": (40, 150)}
    for shape in shapes:
        cfg = BenchConfig(model=f"shape:{shape}", dtype="bfloat16", device=device, batch=a.batch,
                          seq_len=a.seq_len, reps=a.reps, warmup=1, memory=not a.no_memory, memory_steps=2,
                          profile=not a.no_profile, shrink=a.shrink, chunk_elements=chunk)
        r_est, b_est = (1, 1) if a.shrink else est.get(shape, (60, 200))

        def restore(cfg=cfg, shape=shape):
            res = exact_restore_check(cfg)
            write_json(out / shape / "restore.json", res)
            return {"core_exact": res["core_exact"], "folded_steps_equal_replay": res["folded_steps_equal_replay"],
                    "mezo_elements_changed": res["mezo_elements_changed"]}

        def bench(cfg=cfg, shape=shape):
            res = run_bench(cfg, log=lambda s: print(f"[bench {shape}] {s}", flush=True))
            write_json(out / shape / "bench.json", res)
            write_text(out / shape / "bench.md", markdown(res))
            return {"ratios": res["ratios"]}

        phase(f"{shape}/restore", r_est, restore)
        phase(f"{shape}/bench", b_est, bench)
    # Timing-only runs with other direction laws, after every shape's main phases (skipped first).
    for direction in [d for d in a.fast_directions.split(",") if d]:
        for shape in shapes:
            cfg = BenchConfig(model=f"shape:{shape}", dtype="bfloat16", device=device, batch=a.batch,
                              seq_len=a.seq_len, reps=a.reps, warmup=1, memory=False, profile=False,
                              shrink=a.shrink, direction=direction, chunk_elements=chunk)

            def fast(cfg=cfg, shape=shape, direction=direction):
                res = run_bench(cfg, log=lambda s: print(f"[bench {shape} {direction}] {s}", flush=True))
                write_json(out / shape / f"bench-{direction}.json", res)
                write_text(out / shape / f"bench-{direction}.md", markdown(res))
                return {"ratios": res["ratios"]}

            phase(f"{shape}/bench-{direction}", 1 if a.shrink else est.get(shape, (60, 200))[1] * 0.6, fast)
    ok = all(v.get("ok", True) for v in summary["phases"].values())
    print(f"[gpu_check] done in {time.perf_counter() - t0:.0f} s; wrote {out / 'summary.json'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
