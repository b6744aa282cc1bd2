"""Direction-draw throughput on smollm2-135m's ZO block (its 273 tensor shapes, 134.5M elements; no
model needed): the counter generator's compiled kernel and its torch reference, beside torch's own
``normal_`` (mt19937 + Box–Muller) and a plain in-place pass over the same memory, per thread count,
best of 3, measured side by side in one run.

    python -m hybridopt.benchmarks.perf.draws [--laws gaussian,rademacher] [--threads 1,2] [--reference]

Prints ns per element and each row's ratio to the plain pass (the memory floor of any draw).
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import torch

from hybridopt import counter
from hybridopt.directions import Directions

#: smollm2-135m: tied embedding, 30 layers (q, k, v, o, gate, up, down, two norms), final norm
SMOLLM2_SHAPES = ([(49152, 576)] + [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576),
                                    (576, 1536), (576,), (576,)] * 30 + [(576,)])


def _best(fn: Callable[[], None], reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def timings(laws: list[str], threads: int, reference: bool, shapes=SMOLLM2_SHAPES, reps: int = 3) -> dict[str, float]:
    """Seconds for one full draw of the block per item (kernel and reference per law, torch's
    ``normal_``, an in-place ``mul_(1.0)`` pass), at ``threads`` torch threads."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    params = [torch.zeros(s) for s in shapes]
    outs = [torch.empty(p.numel()) for p in params]
    out: dict[str, float] = {}
    try:
        out["pass"] = _best(lambda: [o.mul_(1.0) for o in outs], reps)
        out["torch normal_"] = _best(lambda: [o.normal_() for o in outs], reps)
        for law in laws:
            d = Directions(law, 1234, params)

            def draw():
                for j, p in enumerate(params):
                    d.fill(0, j, 0, p.numel(), outs[j], scaled=False)
            if counter.kernel() is not None:
                out[f"{law} kernel"] = _best(draw, reps)
            if reference or counter.kernel() is None:
                with counter.reference_only():
                    out[f"{law} reference"] = _best(draw, 1)
    finally:
        torch.set_num_threads(old)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--laws", default="gaussian,rademacher")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reference", action="store_true", help="also time the torch reference (slow; one rep)")
    a = ap.parse_args(argv)
    n = sum(torch.Size(s).numel() for s in SMOLLM2_SHAPES)
    print(f"{n:,} elements; kernel: {'yes' if counter.kernel() is not None else 'no (' + counter.why_not() + ')'}")
    for t in (int(v) for v in a.threads.split(",")):
        res = timings(a.laws.split(","), t, a.reference)
        for name, s in res.items():
            print(f"threads {t}  {name:22s} {s / n * 1e9:6.2f} ns/elem  {s / res['pass']:6.2f}x the pass", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
