"""Figure: steps-to-target bars (the "up to 50% fewer steps" claim).

Target (per task): ``frac`` (default 0.95, from the scale preset) × the best dev accuracy of full
FT when it was run for the task, else of first-order PEFT.  Steps-to-target: the first evaluated
step at which a method's dev accuracy reaches the target (resolution: the evaluation interval).
Reads ``DIR/runs/*/*/result.json`` and ``DIR/scale.json`` only.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from . import derive, style
from .results import by_group, load_json, load_runs, reference_method


def target_fraction(out: Path) -> float:
    scale = load_json(Path(out) / "scale.json") or {}
    return float(scale.get("claims", {}).get("target_fraction", 0.95))


def steps_table(out: str | Path) -> dict[str, dict]:
    """``{group: {"ref": method, "target": acc, "steps": {method: step|None}, "budget": {method: steps}}}``."""
    out = Path(out)
    frac = target_fraction(out)
    table = {}
    for group, methods in by_group(load_runs(out)).items():
        ref = reference_method(methods)
        best = methods[ref]["dev_accuracy"]["best"] if ref else None
        table[group] = {"ref": ref, "target": derive.target_value(best, frac) if ref else None,
                        "steps": {m: derive.steps_to_target(r["dev_curve"], best, frac) if ref else None
                                  for m, r in methods.items()},
                        "budget": {m: r["steps"] for m, r in methods.items()},
                        "eval_every": {m: r["config"]["eval_every"] for m, r in methods.items()}}
    return table


def draw(out: str | Path) -> list[Path]:
    out = Path(out)
    table = steps_table(out)
    if not table:
        return []
    frac = target_fraction(out)
    fig, axes = style.subplots(1, len(table), scale=0.9)
    for ax, (group, t) in zip(axes[0], table.items()):
        ms = [m for m in style.METHODS if m in t["steps"]]
        x = np.arange(len(ms))
        for i, m in enumerate(ms):
            s = t["steps"][m]
            if s is None:
                ax.bar(i, t["budget"][m], color="none", edgecolor=style.COLORS[m], hatch="//", lw=1.2)
                ax.text(i, t["budget"][m], "not\nreached", ha="center", va="bottom", fontsize=7)
            else:
                ax.bar(i, s, color=style.COLORS[m], edgecolor="black", lw=0.5)
                ax.text(i, s, f"{s}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, [style.SHORT[m] for m in ms], rotation=30, ha="right")
        if ax is axes[0][0]:
            ax.set_ylabel("training steps to reach the target (lower is better)")
        budget = max(t["budget"].values())
        ax.axhline(budget, color="gray", ls=":", lw=1)
        ax.set_ylim(0, budget * 1.25)
        ref = style.SHORT.get(t["ref"], "none")
        tgt = "n/a" if t["target"] is None else f"{100 * t['target']:.1f}%"
        ax.set_title(f"{style.task_label(group)}\ntarget = {100 * frac:.0f}% of {ref}'s best dev accuracy = {tgt}",
                     fontsize=8)
    every = sorted({v for t in table.values() for v in t["eval_every"].values()})
    fig.suptitle("Steps to the target dev accuracy (hatched: not reached within the step budget = dotted line; "
                 "0: met before training; resolution: dev evaluated every "
                 f"{'/'.join(map(str, every))} steps)", fontsize=8, y=1.06)
    return style.save(fig, out / "figures", "steps_to_target")


if __name__ == "__main__":  # pragma: no cover
    print("\n".join(map(str, draw(sys.argv[1]))))
