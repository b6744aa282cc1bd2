"""Direction-draw throughput: one full draw of the ZO block of smollm2-135m (its 273 tensor shapes,
134.5M elements; no model needed) per (law, CPU block size, draw threads), best of 3.

    python -m hybridopt.benchmarks.perf.draws [--laws gaussian,rademacher] [--blocks 15,17,20] [--threads 1,2]

Prints ns per drawn element.  The block size defines the direction streams
(:mod:`hybridopt.directions`), so a different one gives different (equally distributed) directions.
"""
from __future__ import annotations

import argparse
import time

import torch

from hybridopt.directions import Directions
from hybridopt.sweep import SweepContext

#: smollm2-135m: tied embedding, 30 layers (q, k, v, o, gate, up, down, two norms), final norm
SMOLLM2_SHAPES = ([(49152, 576)] + [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576),
                                    (576, 1536), (576,), (576,)] * 30 + [(576,)])


def draw_seconds(law: str, block: int, threads: int, shapes=SMOLLM2_SHAPES, reps: int = 3) -> float:
    params = [torch.zeros(s) for s in shapes]
    ctx = SweepContext(threads=threads, block={"cpu": block})
    d = Directions(law, 1234, params, context=ctx)
    best = float("inf")
    try:
        for _ in range(reps):
            t0 = time.perf_counter()
            for j, p in enumerate(params):
                d.fill(0, j, 0, p.numel(), torch.empty(p.numel()), scaled=False)
            best = min(best, time.perf_counter() - t0)
    finally:
        ctx.close()
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--laws", default="gaussian,rademacher")
    ap.add_argument("--blocks", default="15,17,20", help="log2 of the CPU block size (default 15,17,20)")
    ap.add_argument("--threads", default="1,2")
    a = ap.parse_args(argv)
    n = sum(torch.Size(s).numel() for s in SMOLLM2_SHAPES)
    print(f"{n:,} elements")
    for law in a.laws.split(","):
        for b in (int(v) for v in a.blocks.split(",")):
            for t in (int(v) for v in a.threads.split(",")):
                s = draw_seconds(law, 1 << b, t)
                print(f"{law:10s} block 2^{b:2d} threads {t}: {s:.3f} s  ({s / n * 1e9:.2f} ns/elem)", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
