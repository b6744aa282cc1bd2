"""Figure: fine-tuning curves — training loss and dev accuracy vs steps, per task, every method.

Reads ``DIR/runs/*/*/result.json`` only.  ``python -m hybridopt.paper_figures.fig_curves DIR``
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from . import style
from .results import by_group, load_runs


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (window shrinks at the start), so the curve starts at step 1."""
    c = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def draw(out: str | Path) -> list[Path]:
    out = Path(out)
    files: list[Path] = []
    for group, methods in by_group(load_runs(out)).items():
        fig, axes = style.subplots(1, 2, scale=1.05)
        ax_l, ax_a = axes[0]
        for m in style.METHODS:
            r = methods.get(m)
            if r is None:
                continue
            lc = np.asarray(r["train_loss_curve"], dtype=float)
            if len(lc):
                w = max(1, len(lc) // 10)
                ax_l.plot(lc[:, 0], lc[:, 1], color=style.COLORS[m], alpha=0.18, lw=0.7)
                ax_l.plot(lc[:, 0], smooth(lc[:, 1], w), **style.method_kw(m, marker=None, lw=1.6))
            dc = np.asarray(r["dev_curve"], dtype=float)
            if len(dc):
                ax_a.plot(dc[:, 0], 100 * dc[:, 1], **style.method_kw(m, ms=4, lw=1.4))
        any_run = next(iter(methods.values()))
        ax_l.set_xlabel("training step")
        ax_l.set_ylabel("training loss (cross-entropy over candidates, nats)")
        ax_l.set_title(f"{style.task_label(group)}: training loss (faint: per step; solid: moving average)",
                       fontsize=8)
        ax_a.set_xlabel("training step")
        ax_a.set_ylabel("dev accuracy (%)")
        ax_a.set_title(f"{style.task_label(group)}: dev accuracy (n = {any_run['sizes']['dev']} examples)",
                       fontsize=8)
        ax_a.legend(loc="best", fontsize=7)
        fig.suptitle(f"Fine-tuning on {style.task_label(group)} with {any_run['model']} "
                     f"(batch {any_run['config']['batch_size']}, seed {any_run['seeds']['seed']})", fontsize=9)
        files += style.save(fig, out / "figures", f"curves_{group}")
    return files


if __name__ == "__main__":  # pragma: no cover
    print("\n".join(map(str, draw(sys.argv[1]))))
