"""Figure: the ZO block's effect, paired — hybrid minus first-order PEFT of the *same seed*
(same adapter initialisation, batches and probe directions: only the ZO updates of the base
differ), for the training loss (moving average) and the dev metric, per hybrid variant: thin
lines one seed each, bold the mean with its 95% t-band.  Below zero (loss) / above zero (dev):
the ZO block helped.  Reads ``DIR/runs/**/result.json`` only.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from . import derive, style
from .fig_curves import loss_window
from .results import baseline, cells, common_seeds, hybrids


def pairs(variants) -> list[tuple]:
    """(hybrid cell, PEFT cell, common seeds) for every hybrid variant with a PEFT run."""
    base = baseline(variants)
    if base is None:
        return []
    return [(h, base, common_seeds(h, base)) for h in hybrids(variants) if common_seeds(h, base)]


def draw(out: str | Path) -> list[Path]:
    out = Path(out)
    files: list[Path] = []
    for group, variants in cells(out).items():
        ps = pairs(variants)
        if not ps:
            continue
        colors = style.cell_colors(variants.values())
        fig, axes = style.subplots(1, 2, scale=1.1)
        ax_l, ax_a = axes[0]
        for h, b, seeds in ps:
            col = colors[h.variant]
            hr = {r.seed: r.result for r in h.runs}
            br = {r.seed: r.result for r in b.runs}
            w = loss_window(hr[seeds[0]].steps)
            dl, dd = [], []
            for s in seeds:
                lh = np.asarray(hr[s].train_loss_curve, dtype=float)[:, 1]
                lb = np.asarray(br[s].train_loss_curve, dtype=float)[:, 1]
                n = min(len(lh), len(lb))
                dl.append(derive.smooth(lh[:n], w) - derive.smooth(lb[:n], w))
                ch, cb = np.asarray(hr[s].dev_curve, dtype=float), np.asarray(br[s].dev_curve, dtype=float)
                k = min(len(ch), len(cb))
                dd.append(100 * (ch[:k, 1] - cb[:k, 1]))
                ax_l.plot(np.arange(1, n + 1), dl[-1], color=col, lw=0.5, alpha=0.45)
                ax_a.plot(ch[:k, 0], dd[-1], color=col, lw=0.5, alpha=0.45)
            m, lo, hi = derive.band(dl)
            x = np.arange(1, len(m) + 1)
            ax_l.plot(x, m, color=col, lw=1.6, label=f"{h.label} − {b.short}")
            ax_l.fill_between(x, lo, hi, color=col, alpha=0.18, lw=0)
            m, lo, hi = derive.band(dd)
            x = np.asarray(hr[seeds[0]].dev_curve, dtype=float)[: len(m), 0]
            ax_a.plot(x, m, color=col, lw=1.6, marker="o", ms=3, label=f"{h.label} − {b.short}")
            ax_a.fill_between(x, lo, hi, color=col, alpha=0.15, lw=0)
        for ax in (ax_l, ax_a):
            ax.axhline(0, color="black", lw=0.8)
            ax.set_xlabel("training step")
        first = ps[0][0].first.result
        ax_l.set_ylabel("Δ training loss, hybrid − PEFT (nats; < 0: ZO helped)")
        ax_l.set_title(f"{style.task_label(group)}: paired Δ of the training loss (moving average over {w} steps)",
                       fontsize=8)
        ax_a.set_ylabel(f"Δ dev {first.metric}, hybrid − PEFT (points; > 0: ZO helped)")
        ax_a.set_title(f"{style.task_label(group)}: paired Δ of dev {first.metric} (n = {first.sizes.dev})", fontsize=8)
        ax_a.legend(fontsize=6.5, loc="best")
        nseeds = len(ps[0][2])
        fig.suptitle(f"{style.task_label(group)}: the ZO block's effect, paired by seed (common random numbers; thin: "
                     f"one seed each, {nseeds} seeds; bold: mean with 95% t-band)", fontsize=9)
        files += style.save(fig, out / "figures", f"paired_{group}")
    return files


if __name__ == "__main__":  # pragma: no cover
    print("\n".join(map(str, draw(sys.argv[1]))))
