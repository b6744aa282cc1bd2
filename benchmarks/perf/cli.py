"""``hybridopt bench [--quick] [--model M] [--out DIR]``: writes DIR/bench.json and DIR/bench.md."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hybridopt.laws import LAWS


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


QUICK = dict(model="tiny-llama", batch=4, reps=3, warmup=1, memory_steps=1, threads=1)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hybridopt bench",
                description="Measure step time, ZO-pass time and peak memory of the five methods and a "
                            "MeZO reference step (interleaved rounds, medians).")
    p.add_argument("--quick", action="store_true", help="tiny-llama, batch 4, 3 rounds (seconds; for CI)")
    p.add_argument("--model", help="preset (smollm2-135m default, tiny-llama, ...) or shape:opt-1.3b / shape:llama-7b "
                                   "(randomly initialised)")
    p.add_argument("--out", default="bench_out", help="output directory (default: bench_out)")
    p.add_argument("--batch", type=int, help="mini-batch size (default 16; --quick 4)")
    p.add_argument("--seq-len", type=int, help="tokens per sequence for shape models (default 64); "
                                               "left-truncation length for SST-2 prompts")
    p.add_argument("--reps", type=int, help="timed rounds (default 5; --quick 3)")
    p.add_argument("--warmup", type=int, help="discarded rounds (default 1)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--dtype", help="float32 (default), bfloat16 or float16")
    p.add_argument("--device", help="cpu (default) or cuda")
    p.add_argument("--direction", choices=tuple(LAWS),
                   help="ZO direction law of the hybridopt methods (default gaussian, the theorem's)")
    p.add_argument("--shrink", action="store_true", help="shape models at a small size (tests)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory measurements")
    p.add_argument("--no-profile", action="store_true", help="skip the torch.profiler breakdown")
    p.add_argument("--memory-only", action="store_true", help="memory only (large shapes on CPU)")
    p.add_argument("--memory-steps", type=int, help="steps per memory measurement (default 2)")
    p.add_argument("--memory-items", help="comma-separated subset of: inference, fo-full, fo-peft, zo-full, "
                                          "zo-peft, hybrid, mezo-reference (default: all)")
    p.add_argument("--chunk-elements", type=int, help="the core's row-chunk limit (default 4194304)")
    return p


def config_from_args(a: argparse.Namespace):
    from .bench import BenchConfig

    kw = dict(QUICK) if a.quick else {}
    for k in ("model", "batch", "seq_len", "reps", "warmup", "threads", "dtype", "device", "memory_steps",
              "direction", "chunk_elements"):
        v = getattr(a, k)
        if v is not None:
            kw[k] = v
    kw["shrink"] = a.shrink
    kw["memory"] = not a.no_memory
    kw["profile"] = not a.no_profile
    kw["memory_only"] = a.memory_only
    if a.memory_items:
        from .bench import MEMORY_ITEMS
        items = tuple(i.strip() for i in a.memory_items.split(",") if i.strip())
        bad = [i for i in items if i not in MEMORY_ITEMS]
        if bad or not items:
            raise ValueError(f"--memory-items: unknown {', '.join(bad) or '(empty)'}; valid: {', '.join(MEMORY_ITEMS)}")
        kw["memory_items"] = items
    if a.memory_only and a.no_memory:
        raise ValueError("--memory-only and --no-memory exclude each other")
    cfg = BenchConfig(**kw)
    for k in ("batch", "reps"):
        if getattr(cfg, k) < 1:
            raise ValueError(f"--{k} must be >= 1")
    if cfg.warmup < 0:
        raise ValueError("--warmup must be >= 0")
    if cfg.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device available")
    return cfg


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    try:
        cfg = config_from_args(a)
    except ValueError as e:
        print(f"hybridopt bench: error: {e}", file=sys.stderr)
        return 2
    from hybridopt.io import write_json, write_text

    from .bench import markdown, run_bench

    out = Path(a.out)
    res = run_bench(cfg, log=lambda s: print(f"[bench] {s}", file=sys.stderr, flush=True))
    write_json(out / "bench.json", res)
    write_text(out / "bench.md", markdown(res))
    print(f"ratios ({cfg.model}, batch {cfg.batch}; medians of {cfg.reps} interleaved rounds):")
    for k, v in res["ratios"].items():
        g = res["goals"].get(k)
        tail = f"   goal {g['goal']}: {'met' if g['met'] else 'not met'}" if g and g["met"] is not None else ""
        print(f"  {k:<46} {v if isinstance(v, int) or v is None else f'{v:.3f}'}{tail}")
    for k, r in res.get("round_ratios", {}).items():
        lo, hi = r["ci95"]
        ci = f", mean {r['mean']:.3f} [95% t: {lo:.3f}, {hi:.3f}]" if lo is not None else ""
        print(f"  {k + ', round by round':<46} median {r['median']:.3f}{ci}")
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
