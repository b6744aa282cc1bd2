"""Figure: memory and speed per method/variant and task, from the run records (peak memory,
seconds per step, training tokens per second): the mean over seeds, with the range of the seeds
as an error bar.  Reads ``DIR/runs/**/result.json`` only.

Peak memory is the run's own process peak (each run is a separate process in ``reproduce``):
resident set size on CPU (includes the Python runtime and the model), ``max_memory_allocated``
on CUDA.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from . import style
from .results import cells

METRICS = (("peak_memory_bytes", "peak memory (GiB)", 2.0**-30),
           ("seconds_per_step", "time per training step (s, median)", 1.0),
           ("tokens_per_second", "training throughput (tokens / s)", 1.0))


def draw(out: str | Path) -> list[Path]:
    out = Path(out)
    groups = cells(out)
    if not groups:
        return []
    names = list(dict.fromkeys(v for vs in groups.values() for v in vs))
    fig, axes = style.subplots(1, len(METRICS), scale=1.0)
    width = 0.8 / len(groups)
    for ax, (key, label, mult) in zip(axes[0], METRICS):
        for gi, (group, variants) in enumerate(groups.items()):
            colors = style.cell_colors(variants.values())
            for i, v in enumerate(names):
                c = variants.get(v)
                vals = [getattr(r.result, key) for r in c.runs] if c else []
                if not vals or any(x is None for x in vals):
                    continue
                a = np.asarray(vals, dtype=float) * mult
                x = i + (gi - (len(groups) - 1) / 2) * width
                ax.bar(x, a.mean(), width=width * 0.95, color=colors[v], edgecolor="black", lw=0.4,
                       alpha=1.0 - 0.25 * gi)
                if len(a) > 1:
                    ax.errorbar(x, a.mean(), yerr=[[max(0.0, a.mean() - a.min())], [max(0.0, a.max() - a.mean())]], color="black",
                                lw=0.8, capsize=2)
        shorts = {v: next(vs[v].short for vs in groups.values() if v in vs) for v in names}
        ax.set_xticks(np.arange(len(names)), [shorts[v] for v in names], rotation=35, ha="right", fontsize=6.5)
        ax.set_ylabel(label)
    any_run = next(iter(next(iter(groups.values())).values())).first.result
    order = ", ".join(style.task_label(g) for g in groups)
    fig.suptitle(f"Memory and speed ({any_run.model}, {any_run.machine.device}, torch threads "
                 f"{any_run.machine.cpu_threads}); bars: mean over seeds, whiskers: range; within a method, "
                 f"left to right: {order}", fontsize=8)
    return style.save(fig, out / "figures", "memory_speed")


if __name__ == "__main__":  # pragma: no cover
    print("\n".join(map(str, draw(sys.argv[1]))))
