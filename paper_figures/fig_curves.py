"""Figure: fine-tuning curves — training loss and dev metric vs steps, per task, every method
and variant, mean over seeds with a 95% band (Student t, pointwise; one seed: the curve alone).

Reads ``DIR/runs/**/result.json`` only.  ``python -m hybridopt.paper_figures.fig_curves DIR``
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from . import derive, style
from .results import cells


def loss_window(steps: int) -> int:
    return max(1, steps // 10)


def draw(out: str | Path) -> list[Path]:
    out = Path(out)
    files: list[Path] = []
    for group, variants in cells(out).items():
        colors = style.cell_colors(variants.values())
        fig, axes = style.subplots(1, 2, scale=1.1)
        ax_l, ax_a = axes[0]
        drawn_l: list = []
        drawn_a: list = []
        for c in variants.values():
            kw = style.cell_kw(c, colors)
            col = kw["color"]
            same_loss = near_loss = None
            losses = [np.asarray(r.result.train_loss_curve, dtype=float) for r in c.runs]
            if all(len(x) for x in losses):
                w = loss_window(c.first.result.steps)
                m, lo, hi = derive.band([derive.smooth(x[:, 1], w) for x in losses])
                steps = losses[0][: len(m), 0]
                same_loss = style.coincident(drawn_l, steps, m)
                # a loss curve within 1% of an earlier one everywhere is as hidden as an identical one
                near_loss = None if same_loss else style.coincident(drawn_l, steps, m, rtol=0.01)
                drawn_l.append((c.short, steps, m))
                ax_l.plot(steps, m, **{**kw, **style.line_kw(same_loss or near_loss, 1.5), "marker": None})
                # the t-band is clipped to the quantity's range (a loss is >= 0; with few seeds it can overshoot)
                ax_l.fill_between(steps, np.maximum(lo, 0.0), hi, color=col, alpha=0.18, lw=0)
            devs = [np.asarray(r.result.dev_curve, dtype=float) for r in c.runs]
            m, lo, hi = derive.band([d[:, 1] for d in devs])
            steps = devs[0][: len(m), 0]
            same_dev = style.coincident(drawn_a, steps, m)
            drawn_a.append((c.short, steps, m))
            label = kw["label"]
            if same_dev and same_dev == same_loss:
                label += f"; same loss and dev curves as {same_dev}"
            elif same_dev or same_loss:
                label += f"; same {'dev' if same_dev else 'loss'} curve as {same_dev or same_loss}"
            if near_loss:
                label += f"; loss within 1% of {near_loss}"
            ax_a.plot(steps, 100 * m, **{**kw, **style.line_kw(same_dev, 1.3, 3.5), "label": label})
            if c.first.result.metric == "accuracy":
                lo, hi = np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)
            ax_a.fill_between(steps, 100 * lo, 100 * hi, color=col, alpha=0.15, lw=0)
        # one diverging run (loss 10-40 nats) would flatten every other curve at a linear scale
        lows = [m.min() for _, _, m in drawn_l if np.isfinite(m).any() and m.min() > 0]
        if lows and max(np.nanmax(m) for _, _, m in drawn_l) > 20 * min(lows):
            ax_l.set_yscale("log")
            # the t-band's lower end can reach 0 (clipped); at a log scale it is cut at half the smallest mean
            ax_l.set_ylim(bottom=0.5 * min(lows))
        first = next(iter(variants.values())).first.result
        seeds = sorted({s for c in variants.values() for s in c.seeds})
        ax_l.set_xlabel("training step")
        ax_l.set_ylabel("training loss (cross-entropy over candidates, nats)")
        ax_l.set_title(f"{style.task_label(group)}: training loss (moving average over "
                       f"{loss_window(first.steps)} steps)", fontsize=8)
        ax_a.set_xlabel("training step")
        ax_a.set_ylabel(f"dev {first.metric} (%)" if first.metric == "accuracy" else f"dev {first.metric}")
        ax_a.set_title(f"{style.task_label(group)}: dev {first.metric} (n = {first.sizes.dev} examples)", fontsize=8)
        # below the panels: the labels that say which curves coincide are long, and no data point is covered
        fig.legend(*ax_a.get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.02), ncol=2,
                   fontsize=6.5, frameon=False)
        band = "mean over seeds with 95% t-band" if len(seeds) > 1 else "one seed: no band"
        fig.suptitle(f"Fine-tuning on {style.task_label(group)} with {first.model} (batch {first.config['batch_size']}, "
                     f"seeds {', '.join(map(str, seeds))}; {band})", fontsize=9)
        files += style.save(fig, out / "figures", f"curves_{group}")
    return files


if __name__ == "__main__":  # pragma: no cover
    print("\n".join(map(str, draw(sys.argv[1]))))
