"""Figure: how much of each step's progress each block makes — per hybrid variant, the
accumulated predicted decrease of the mini-batch loss from the FO (adapter) updates and from the
ZO (base) updates (first order, and the quadratic model along the probe directions), and the ZO
block's share of the total, over steps; mean over seeds with a 95% t-band.  Reads
``changes`` of ``DIR/runs/**/result.json`` only (:class:`benchmarks.schema.Changes`).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from matplotlib import ticker

from . import derive, style
from .results import cells, hybrids


def accumulated(result, block: str, order: str = "first") -> np.ndarray | None:
    ch = result.changes
    vals = {"zo": ch.zo_second if order == "second" else ch.zo_first, "fo": ch.fo_first}[block]
    return -np.cumsum(np.asarray(vals, dtype=float)) if vals else None


def linthresh(curves: list[np.ndarray]) -> float:
    """The linear range of a symmetric log axis: a tenth of the smallest non-zero |value| shown
    at the end of a curve, so every curve's end is on the logarithmic part."""
    ends = [abs(float(c[-1])) for c in curves if len(c) and c[-1] != 0]
    return max(min(ends) / 10, 1e-12) if ends else 1.0


class _OutsideLinear(ticker.Locator):
    """The ticks of ``inner`` without those strictly inside (−linthresh, linthresh), 0 kept."""

    def __init__(self, inner: ticker.Locator, lt: float) -> None:
        self.inner, self.lt = inner, lt

    def set_axis(self, axis) -> None:
        super().set_axis(axis)
        self.inner.set_axis(axis)

    def _keep(self, ticks) -> list[float]:
        return [t for t in ticks if t == 0 or abs(t) >= self.lt * (1 - 1e-9)]   # the tick at ±linthresh stays

    def __call__(self):
        return self._keep(self.inner())

    def tick_values(self, vmin, vmax):
        return self._keep(self.inner.tick_values(vmin, vmax))


def draw(out: str | Path) -> list[Path]:
    out = Path(out)
    files: list[Path] = []
    for group, variants in cells(out).items():
        hs = [h for h in hybrids(variants) if all(r.result.changes.zo_first and r.result.changes.fo_first
                                                   for r in h.runs)]
        if not hs:
            continue
        colors = style.cell_colors(variants.values())
        fig, axes = style.subplots(1, 2, scale=1.1)
        ax_d, ax_s = axes[0]
        seen = {ax_d: [], ax_s: []}
        for h in hs:
            col = colors[h.variant]
            fo = [accumulated(r.result, "fo") for r in h.runs]
            zo1 = [accumulated(r.result, "zo") for r in h.runs]
            zo2 = [accumulated(r.result, "zo", "second") for r in h.runs]
            for arr, ls, what in ((fo, "-", "FO (adapter)"), (zo1, "--", "ZO (base), 1st order"),
                                  (zo2, ":", "ZO (base), quadratic")):
                if any(a is None for a in arr):
                    continue
                m, lo, hi = derive.band(arr)
                x = np.arange(1, len(m) + 1)
                ax_d.plot(x, m, color=col, ls=ls, lw=1.4, label=f"{h.short}: {what}")
                ax_d.fill_between(x, lo, hi, color=col, alpha=0.12, lw=0)
                seen[ax_d].append(m)
            for arr, ls, what in ((zo1, "--", "1st order"), (zo2, ":", "quadratic")):
                if any(a is None for a in arr):
                    continue
                shares = [100 * z / (z + f) for z, f in zip(arr, fo)]
                m, lo, hi = derive.band(shares)
                x = np.arange(1, len(m) + 1)
                ax_s.plot(x, m, color=col, ls=ls, lw=1.5, label=f"{h.label}, {what}")
                ax_s.fill_between(x, lo, hi, color=col, alpha=0.12, lw=0)
                seen[ax_s].append(m)
        for ax in (ax_d, ax_s):
            lt = linthresh(seen[ax])
            ax.set_yscale("symlog", linthresh=lt)
            # decades inside the linear range sit on top of 0's label: keep 0 and the logarithmic part only
            ax.yaxis.set_major_locator(_OutsideLinear(ax.yaxis.get_major_locator(), lt))
            ax.set_xlabel("training step")
        ax_s.axhline(0, color="black", lw=0.8)
        ax_d.set_ylabel("accumulated predicted decrease of f_B (nats)")
        ax_d.set_title("per block: −Σ predicted change of the step's batch loss", fontsize=8)
        ax_d.legend(fontsize=5.5, loc="upper left", ncol=1)
        ax_s.set_ylabel("ZO share of the accumulated decrease (%)")
        ax_s.set_title("ZO share = D_zo / (D_zo + D_fo) (symmetric log scale)", fontsize=8)
        ax_s.legend(fontsize=6, loc="best")
        nseeds = len(hs[0].runs)
        fig.suptitle(f"{style.task_label(group)}: contribution of each block to the decrease of the mini-batch loss "
                     f"(predicted; mean over {nseeds} seed(s), 95% t-band)", fontsize=9)
        files += style.save(fig, out / "figures", f"contributions_{group}")
    return files


if __name__ == "__main__":  # pragma: no cover
    print("\n".join(map(str, draw(sys.argv[1]))))
