"""Figure: steps and training seconds to the target dev metric, per task and method/variant:
per-seed points (hollow: not reached, drawn at budget + one evaluation interval, or the whole
training time), the mean and its 95% t-interval.

Target (per task and seed): ``frac`` (from the scale preset) × the best dev metric of the
reference run of the same seed (full FT when it was run for the task, else first-order PEFT);
steps-to-target: the first evaluated step that reaches it (resolution: the evaluation interval);
seconds-to-target: the training seconds up to that step (evaluations excluded).  Reads
``DIR/runs/**/result.json`` and ``DIR/scale.json`` only.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from . import derive, style
from .results import cells, common_seeds, load_json, reference


def target_fraction(out: Path) -> float:
    scale = load_json(Path(out) / "scale.json") or {}
    return float(scale.get("claims", {}).get("target_fraction", 0.95))


def table(out: str | Path) -> dict[str, dict]:
    """``{group: {"ref": Cell, "rows": {variant: {"seeds", "steps", "seconds", "reached", "cell"}}}}``."""
    out = Path(out)
    frac = target_fraction(out)
    res = {}
    for group, variants in cells(out).items():
        ref = reference(variants)
        if ref is None:
            continue
        rows = {}
        for v, c in variants.items():
            seeds = common_seeds(c, ref)
            if not seeds:
                continue
            runs = {r.seed: r.result for r in c.runs}
            refs = {r.seed: r.result for r in ref.runs}
            rr = [derive.run_to_target(runs[s], refs[s], frac) for s in seeds]
            rows[v] = {"cell": c, "seeds": seeds, "steps": [s for s, _ in rr], "reached": [ok for _, ok in rr],
                       "seconds": [derive.seconds_to_step(runs[s], st) for s, (st, _) in zip(seeds, rr)]}
        res[group] = {"ref": ref, "rows": rows}
    return res


def draw(out: str | Path) -> list[Path]:
    out = Path(out)
    tab = table(out)
    if not tab:
        return []
    frac = target_fraction(out)
    fig, axes = style.subplots(2, len(tab), scale=0.95)
    for col, (group, t) in enumerate(tab.items()):
        colors = style.cell_colors([r["cell"] for r in t["rows"].values()])
        for row, unit, ylab in ((0, "steps", "training steps to the target"),
                                (1, "seconds", "training seconds to the target")):
            ax = axes[row][col]
            names = list(t["rows"])
            for i, v in enumerate(names):
                r = t["rows"][v]
                vals = np.asarray(r[unit], dtype=float)
                c = colors[v]
                jitter = np.linspace(-0.12, 0.12, len(vals)) if len(vals) > 1 else np.zeros(1)
                for x, y, ok in zip(i + jitter, vals, r["reached"]):
                    ax.plot(x, y, "o", ms=4, mfc=c if ok else "none", mec=c, alpha=0.9)
                iv = derive.interval(vals)
                ax.errorbar(i + 0.28, iv.mean, yerr=iv.half if iv.half is not None else None, fmt="_", color="black",
                            ms=10, capsize=3, lw=1)
            ax.set_xticks(np.arange(len(names)), [t["rows"][v]["cell"].short for v in names], rotation=35,
                          ha="right", fontsize=6.5)
            ax.set_ylim(bottom=0)
            if derive.met_untrained([st for r in t["rows"].values() for st in r["steps"]]):
                # nothing to count (derive.NO_TARGET): say so rather than draw an empty axis
                ax.text(0.5, 0.5, "every run meets the target at step 0:\nthe untrained model reaches it, "
                        "nothing to count", transform=ax.transAxes, ha="center", va="center", fontsize=7.5,
                        color="0.3")
            if col == 0:
                ax.set_ylabel(ylab + " (lower is better)")
            if row == 0:
                ref = t["ref"].short
                ax.set_title(f"{style.task_label(group)}: target = {100 * frac:.0f}% of {ref}'s best dev metric "
                             f"(same seed)", fontsize=7.5)
    # two lines: one task column is narrower than the sentence
    fig.suptitle("Steps and training seconds to the target (points: seeds; black: mean ± 95% t-interval)\n"
                 "hollow = not reached, drawn at budget + one eval interval / the whole training time",
                 fontsize=8, y=1.03)
    return style.save(fig, out / "figures", "steps_to_target")


if __name__ == "__main__":  # pragma: no cover
    print("\n".join(map(str, draw(sys.argv[1]))))
