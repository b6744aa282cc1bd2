"""Figure: memory and speed per method, from the run records (peak memory, seconds per step,
training tokens per second).  Reads ``DIR/runs/*/*/result.json`` only.

Peak memory is the run's own process peak (each run is a separate process in ``reproduce``):
resident set size on CPU (includes the Python runtime and the model), ``max_memory_allocated``
on CUDA.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from . import style
from .results import by_group, load_runs

METRICS = (("peak_memory_bytes", "peak memory (GiB)", 2.0**-30),
           ("seconds_per_step", "time per training step (s, median)", 1.0),
           ("tokens_per_second", "training throughput (tokens / s)", 1.0))


def draw(out: str | Path) -> list[Path]:
    out = Path(out)
    groups = by_group(load_runs(out))
    if not groups:
        return []
    fig, axes = style.subplots(1, len(METRICS), scale=0.95)
    width = 0.8 / len(groups)
    for ax, (key, label, mult) in zip(axes[0], METRICS):
        for gi, (group, methods) in enumerate(groups.items()):
            for i, m in enumerate(style.METHODS):
                r = methods.get(m)
                if r is None or r.get(key) is None:
                    continue
                ax.bar(i + (gi - (len(groups) - 1) / 2) * width, r[key] * mult, width=width * 0.95,
                       color=style.COLORS[m], edgecolor="black", lw=0.4, alpha=1.0 - 0.25 * gi)
        ax.set_xticks(np.arange(len(style.METHODS)), [style.SHORT[m] for m in style.METHODS], rotation=30,
                      ha="right")
        ax.set_ylabel(label)
    any_run = next(iter(next(iter(groups.values())).values()))
    order = ", ".join(style.task_label(g) for g in groups)
    fig.suptitle(f"Memory and speed per method ({any_run['model']}, {any_run['machine']['device']}, "
                 f"torch threads: {any_run['machine']['cpu_threads']}); bars within a method, left to right: {order}",
                 fontsize=9)
    return style.save(fig, out / "figures", "memory_speed")


if __name__ == "__main__":  # pragma: no cover
    print("\n".join(map(str, draw(sys.argv[1]))))
